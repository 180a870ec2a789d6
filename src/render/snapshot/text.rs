//! Snapshot text: a header line, the connection table (borders on a terminal, aligned
//! columns otherwise), the interval's transitions and the diagnoses.

use std::io::{self, Write};

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::{age_text, foreign, owner_text, SnapshotRenderer};
use crate::alerts::Alert;
use crate::lifetimes::Ending;
use crate::plural::counted;
use crate::report::{endpoint, Grouping, Pattern, Report};
use crate::table::Conn;
use crate::tcp_state::TcpState;

fn state_color(state: TcpState) -> Option<Color> {
    match state {
        TcpState::Established => Some(Color::Green),
        TcpState::Listen => Some(Color::Blue),
        TcpState::CloseWait => Some(Color::Red),
        TcpState::TimeWait | TcpState::FinWait2 => Some(Color::Yellow),
        _ => None,
    }
}

/// Text: a header line, the table, the interval's transitions and the diagnoses.
pub struct SnapshotText {
    /// On a terminal: comfy-table borders; otherwise plain aligned columns.
    terminal: bool,
    color: bool,
    summary: bool,
    /// RTT, retransmit and in-flight columns (-i).
    info: bool,
}

impl SnapshotText {
    pub fn new(terminal: bool, color: bool, summary: bool, info: bool) -> SnapshotText {
        SnapshotText {
            terminal,
            color,
            summary,
            info,
        }
    }

    fn table(&self, out: &mut dyn Write, report: &Report<'_>) -> io::Result<()> {
        let mut header = vec![
            "Proto",
            "Local Address",
            "Foreign Address",
            "State",
            "PID/Program name",
            "In state",
        ];
        if self.info {
            header.extend(["RTT ms", "Retrans", "Unacked", "In flight"]);
        }
        let rows: Vec<Vec<String>> = report
            .conns
            .iter()
            .map(|c| {
                let mut row = vec![
                    if c.is_ipv6() { "tcp6" } else { "tcp" }.to_string(),
                    endpoint(c.local, c.local_port),
                    foreign(c),
                    c.state.name().to_string(),
                    owner_text(c.owner),
                    age_text(c.age(report.now_ns)),
                ];
                if self.info {
                    row.extend(info_cells(c));
                }
                row
            })
            .collect();
        if self.terminal {
            let mut table = Table::new();
            table
                .load_style(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Disabled)
                .set_header(header.clone());
            for (row, conn) in rows.into_iter().zip(&report.conns) {
                let mut cells: Vec<Cell> = row.into_iter().map(Cell::new).collect();
                if let (true, Some(color)) = (self.color, state_color(conn.state)) {
                    cells[3] = Cell::new(conn.state.name()).fg(color);
                }
                table.add_row(cells);
            }
            if !self.color {
                table.force_no_tty();
            } else {
                table.enforce_styling();
            }
            return writeln!(out, "{table}");
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut line = |cells: &[&str]| -> io::Result<()> {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{:<width$}  ", cell, width = widths[i]));
                }
            }
            writeln!(out, "{}", text.trim_end())
        };
        line(&header)?;
        for row in &rows {
            line(&row.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(())
    }
}

/// The -i cells: `-` where the figures do not apply (listeners, TIME_WAIT) or were not read.
fn info_cells(c: &Conn) -> [String; 4] {
    match c.info {
        Some(i) if !matches!(c.state, TcpState::Listen | TcpState::TimeWait) => [
            format!("{:.3}", f64::from(i.srtt_us) / 1_000.0),
            i.retrans.to_string(),
            i.unacked.to_string(),
            i.bytes_in_flight.to_string(),
        ],
        _ => ["-", "-", "-", "-"].map(String::from),
    }
}

fn ended_text(r: &Report<'_>) -> Option<String> {
    let total: u64 = r.ended.iter().sum();
    if total == 0 {
        return None;
    }
    let parts: Vec<String> = Ending::NAMES
        .iter()
        .zip(r.ended)
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    Some(format!(
        "Connections ended in the last {}: {total} ({})",
        humantime::format_duration(r.interval),
        parts.join(", ")
    ))
}

fn alert_text(a: &Alert) -> String {
    let c = &a.conn;
    format!(
        "ALERT {} over {}: {} {} {} for {}",
        c.state,
        humantime::format_duration(a.rule.after),
        owner_text(c.owner),
        endpoint(c.local, c.local_port),
        foreign(c),
        age_text(Some(a.age))
    )
}

fn pattern_text(name: &str, pattern: &Pattern) -> String {
    let by = match pattern.by {
        Grouping::RemoteEndpoint => "remote endpoint",
        Grouping::LocalPort => "local port",
    };
    let groups: Vec<String> = pattern
        .groups
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!("{name} by {by}: {}", groups.join(", "))
}

impl SnapshotRenderer for SnapshotText {
    fn snapshot(&mut self, out: &mut dyn Write, r: &Report<'_>) -> io::Result<()> {
        let counts: Vec<String> = r.counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        writeln!(
            out,
            "{}  {}{}{}  lost {}",
            humantime::format_rfc3339_seconds(r.time),
            counted(r.total(), "socket"),
            if counts.is_empty() { "" } else { ": " },
            counts.join(", "),
            r.lost
        )?;
        if !self.summary {
            self.table(out, r)?;
        }
        let transitions: Vec<String> = r
            .transitions
            .iter()
            .map(|((a, b), n)| format!("{a}->{b} {n}"))
            .collect();
        writeln!(
            out,
            "Transitions in the last {}: {}",
            humantime::format_duration(r.interval),
            if transitions.is_empty() {
                "none".to_string()
            } else {
                transitions.join(", ")
            }
        )?;
        if !r.close_wait.is_empty() {
            let holders: Vec<String> = r
                .close_wait
                .iter()
                .map(|h| {
                    let oldest = h.oldest.map_or(String::new(), |a| {
                        format!(" (oldest {})", age_text(Some(a)))
                    });
                    format!("{} {}{}", owner_text(h.owner), h.count, oldest)
                })
                .collect();
            writeln!(out, "CLOSE_WAIT held by: {}", holders.join(", "))?;
        }
        for (name, pattern) in [("TIME_WAIT", &r.time_wait), ("FIN_WAIT2", &r.fin_wait2)] {
            if let Some(p) = pattern {
                writeln!(out, "{}", pattern_text(name, p))?;
            }
        }
        if let Some(ended) = ended_text(r) {
            writeln!(out, "{ended}")?;
        }
        for alert in &r.alerts {
            writeln!(out, "{}", alert_text(alert))?;
        }
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{report, table};
    use super::*;

    #[test]
    fn piped_text_golden() {
        let t = table();
        let mut out = Vec::new();
        SnapshotText::new(false, false, false, false)
            .snapshot(&mut out, &report(&t))
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2023-11-14T22:13:20Z  3 sockets: ESTABLISHED 1, CLOSE_WAIT 1, LISTEN 1  lost 0\n\
             Proto  Local Address  Foreign Address  State        PID/Program name  In state\n\
             tcp    127.0.0.1:80   0.0.0.0:*        LISTEN       10/srv            13.5s\n\
             tcp6   [::1]:80       [::1]:5000       ESTABLISHED  -                 idle 1m14s\n\
             tcp    127.0.0.1:80   127.0.0.2:5000   CLOSE_WAIT   10/srv            12.5s\n\
             Transitions in the last 5s: ESTABLISHED->CLOSE_WAIT 1\n\
             CLOSE_WAIT held by: 10/srv 1 (oldest 12.5s)\n\
             \n"
        );
    }

    #[test]
    fn summary_text_has_no_table() {
        let t = table();
        let mut out = Vec::new();
        SnapshotText::new(false, false, true, false)
            .snapshot(&mut out, &report(&t))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Proto"));
        assert!(text.starts_with("2023-11-14T22:13:20Z  3 sockets: "));
    }

    #[test]
    fn terminal_text_uses_a_table_and_colour_only_when_asked() {
        let t = table();
        let mut plain = Vec::new();
        SnapshotText::new(true, false, false, false)
            .snapshot(&mut plain, &report(&t))
            .unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert!(plain.contains("│ tcp6  ┆ [::1]:80"), "{plain}");
        assert!(!plain.contains('\x1b'));
        let mut colored = Vec::new();
        SnapshotText::new(true, true, false, false)
            .snapshot(&mut colored, &report(&t))
            .unwrap();
        assert!(String::from_utf8(colored).unwrap().contains('\x1b'));
    }
}
