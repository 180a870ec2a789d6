//! Snapshot text: a header line, the connection table (borders on a terminal, aligned
//! columns otherwise), the interval's transitions and the diagnoses.

use std::io::{self, Write};

use std::net::IpAddr;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::parts::{map_in_parts, write_in_rounds};
use super::{age_text, foreign, owner_text, SnapshotRenderer};
use crate::alerts::Alert;
use crate::lifetimes::Ending;
use crate::plural::counted;
use crate::render::cells::push_endpoint;
use crate::report::{endpoint, Grouping, Pattern, Report, ServiceCount};
use crate::sanitize;
use crate::services::Service;
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

    /// The optional columns this report needs.
    fn columns(&self, report: &Report<'_>) -> Columns {
        let first_netns = report.conns.first().map(|c| c.netns);
        Columns {
            netns: report.conns.iter().any(|c| Some(c.netns) != first_netns),
            service: report
                .conns
                .iter()
                .any(|c| c.service.as_deref().is_some_and(Service::is_named)),
            info: self.info,
        }
    }

    fn table(&self, out: &mut dyn Write, report: &Report<'_>) -> io::Result<()> {
        let columns = self.columns(report);
        let header = columns.header();
        if self.terminal {
            let rows = report
                .conns
                .iter()
                .map(|c| columns.row(c, report))
                .collect();
            return self.boxed(out, header, rows, report, columns.state_index());
        }
        plain_rows(out, &header, &columns, report)
    }

    /// On a terminal: comfy-table borders, the state coloured if asked for.
    fn boxed(
        &self,
        out: &mut dyn Write,
        header: Vec<&str>,
        rows: Vec<Vec<String>>,
        report: &Report<'_>,
        state: usize,
    ) -> io::Result<()> {
        let mut table = Table::new();
        table
            .load_style(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header);
        for (row, conn) in rows.into_iter().zip(&report.conns) {
            let mut cells: Vec<Cell> = row.into_iter().map(Cell::new).collect();
            if let (true, Some(color)) = (self.color, state_color(conn.state)) {
                cells[state] = Cell::new(conn.state.name()).fg(color);
            }
            table.add_row(cells);
        }
        if !self.color {
            table.force_no_tty();
        } else {
            table.enforce_styling();
        }
        writeln!(out, "{table}")
    }
}

/// The table's optional columns.
struct Columns {
    /// Sockets of more than one network namespace are shown: which one each is in.
    netns: bool,
    /// Some socket has a service, container or pod.
    service: bool,
    /// RTT, retransmit and in-flight columns (-i).
    info: bool,
}

impl Columns {
    fn header(&self) -> Vec<&'static str> {
        let mut header = Vec::new();
        if self.netns {
            header.push("Netns");
        }
        header.extend([
            "Proto",
            "Local Address",
            "Foreign Address",
            "State",
            "PID/Program name",
        ]);
        if self.service {
            header.push("Service");
        }
        header.push("In state");
        if self.info {
            header.extend(["RTT ms", "Retrans", "Unacked", "In flight"]);
        }
        header
    }

    /// Where the state is among the columns (for its colour).
    fn state_index(&self) -> usize {
        3 + usize::from(self.netns)
    }

    /// A row's cells as strings, for comfy-table.
    fn row(&self, c: &Conn, report: &Report<'_>) -> Vec<String> {
        let mut row = RowText::default();
        self.write_row(c, report, &mut row);
        row.cells().map(str::to_string).collect()
    }

    fn write_row(&self, c: &Conn, report: &Report<'_>, row: &mut RowText) {
        use std::fmt::Write as _;
        row.clear();
        // Writing into a String cannot fail.
        if self.netns {
            match report.netns_names.get(&c.netns) {
                Some(name) => row.text.push_str(name),
                None => _ = write!(row.text, "{}", c.netns),
            }
            row.end_cell();
        }
        row.text.push_str(if c.is_ipv6() { "tcp6" } else { "tcp" });
        row.end_cell();
        push_endpoint(&mut row.text, c.local, c.local_port);
        row.end_cell();
        match (c.state, c.remote) {
            (TcpState::Listen, IpAddr::V4(_)) => row.text.push_str("0.0.0.0:*"),
            (TcpState::Listen, IpAddr::V6(_)) => row.text.push_str("[::]:*"),
            _ => push_endpoint(&mut row.text, c.remote, c.remote_port),
        }
        row.end_cell();
        row.text.push_str(c.state.name());
        row.end_cell();
        match c.owner {
            Some(o) => {
                row.text.push_str(itoa::Buffer::new().format(o.pid));
                row.text.push('/');
                row.text.push_str(&sanitize::escape(o.comm.as_bytes()));
            }
            None => row.text.push('-'),
        }
        row.end_cell();
        if self.service {
            match &c.service {
                Some(service) => row.text.push_str(&service.label()),
                None => row.text.push('-'),
            }
            row.end_cell();
        }
        row.text.push_str(&age_text(c.age(report.now_ns)));
        row.end_cell();
        if self.info {
            for cell in info_cells(c) {
                row.text.push_str(&cell);
                row.end_cell();
            }
        }
    }
}

/// Plain columns: one pass for the widths, one to write, each row into one reused string (a
/// table of 100,000 sockets held as a string per cell cost more than ss). A long table is
/// measured, and then written, on several threads at once.
fn plain_rows(
    out: &mut dyn Write,
    header: &[&str],
    columns: &Columns,
    report: &Report<'_>,
) -> io::Result<()> {
    let conns = &report.conns[..];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for part in map_in_parts(conns, |part| part_widths(columns, report, part))? {
        for (w, p) in widths.iter_mut().zip(part) {
            *w = (*w).max(p);
        }
    }
    let widths = &widths[..];
    let mut line = Vec::with_capacity(256);
    aligned(&mut line, header.iter().copied(), widths);
    out.write_all(&line)?;
    write_in_rounds(out, conns, |buf, part, _| {
        write_part(buf, columns, report, part, widths)
    })
}

/// The widest cell of each column among `conns`.
fn part_widths(columns: &Columns, report: &Report<'_>, conns: &[&Conn]) -> Vec<usize> {
    let mut row = RowText::default();
    let mut widths = Vec::new();
    for c in conns {
        columns.write_row(c, report, &mut row);
        widths.resize(widths.len().max(row.ends.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row.cells()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

fn write_part(
    out: &mut (impl Write + ?Sized),
    columns: &Columns,
    report: &Report<'_>,
    conns: &[&Conn],
    widths: &[usize],
) -> io::Result<()> {
    let mut row = RowText::default();
    let mut line = Vec::with_capacity(256);
    for c in conns {
        columns.write_row(c, report, &mut row);
        line.clear();
        aligned(&mut line, row.cells(), widths);
        out.write_all(&line)?;
    }
    Ok(())
}

/// One row's cells, written one after another into one string.
#[derive(Default)]
struct RowText {
    text: String,
    ends: Vec<usize>,
}

impl RowText {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    fn end_cell(&mut self) {
        self.ends.push(self.text.len());
    }

    fn cells(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let cell = &self.text[start..end];
            start = end;
            cell
        })
    }
}

/// One line of plain columns: each cell but the last padded to its column's width and two
/// spaces, no trailing blanks.
fn aligned<'a>(line: &mut Vec<u8>, cells: impl Iterator<Item = &'a str>, widths: &[usize]) {
    let mut previous = 0;
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            let pad = widths[i - 1].saturating_sub(previous) + 2;
            line.resize(line.len() + pad, b' ');
        }
        line.extend_from_slice(cell.as_bytes());
        previous = cell.chars().count();
    }
    while line.last() == Some(&b' ') {
        line.pop();
    }
    line.push(b'\n');
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

/// The destinations with the most ephemeral ports in use, as a share of the range.
fn port_pressure_text(r: &Report<'_>) -> Option<String> {
    const SHOWN: usize = 5;
    if r.port_pressure.is_empty() {
        return None;
    }
    let uses: Vec<String> = r
        .port_pressure
        .iter()
        .take(SHOWN)
        .map(|u| {
            format!(
                "{} -> {} {} of {} ({:.1}%)",
                u.local,
                endpoint(u.remote, u.remote_port),
                u.in_use,
                u.range,
                u.percent()
            )
        })
        .collect();
    Some(format!("Ephemeral ports in use: {}", uses.join(", ")))
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

/// `web.service 3 (oldest 12.5s), - 1`: groups by service, `-` for sockets of none.
fn services_text(groups: &[ServiceCount]) -> String {
    let parts: Vec<String> = groups
        .iter()
        .map(|g| {
            let name = g.service.as_ref().map_or("-".to_string(), |s| s.label());
            let oldest = g.oldest.map_or(String::new(), |a| {
                format!(" (oldest {})", age_text(Some(a)))
            });
            format!("{name} {}{oldest}", g.count)
        })
        .collect();
    parts.join(", ")
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
        for (name, groups) in [
            ("CLOSE_WAIT", &r.close_wait_services),
            ("TIME_WAIT", &r.time_wait_services),
        ] {
            if !groups.is_empty() {
                writeln!(out, "{name} by service: {}", services_text(groups))?;
            }
        }
        for (name, pattern) in [("TIME_WAIT", &r.time_wait), ("FIN_WAIT2", &r.fin_wait2)] {
            if let Some(p) = pattern {
                writeln!(out, "{}", pattern_text(name, p))?;
            }
        }
        if let Some(ended) = ended_text(r) {
            writeln!(out, "{ended}")?;
        }
        if let Some(ports) = port_pressure_text(r) {
            writeln!(out, "{ports}")?;
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
    fn namespaces_and_services_get_columns_when_there_are_several() {
        let t = super::super::tests::node_table();
        let mut r = report(&t);
        r.netns_names.insert(8, "blue".to_string());
        let mut out = Vec::new();
        SnapshotText::new(false, false, false, false)
            .snapshot(&mut out, &r)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2023-11-14T22:13:20Z  3 sockets: CLOSE_WAIT 2, LISTEN 1  lost 0\n\
             Netns  Proto  Local Address  Foreign Address  State       PID/Program name  Service       In state\n\
             7      tcp    127.0.0.1:80   0.0.0.0:*        LISTEN      10/srv            web.service   13.5s\n\
             blue   tcp    127.0.0.1:80   127.0.0.2:5002   CLOSE_WAIT  10/srv            4f3c2b1a0e9d  12.5s\n\
             blue   tcp    127.0.0.1:80   127.0.0.2:5003   CLOSE_WAIT  10/srv            4f3c2b1a0e9d  11.5s\n\
             Transitions in the last 5s: ESTABLISHED->CLOSE_WAIT 1\n\
             CLOSE_WAIT held by: 10/srv 2 (oldest 12.5s)\n\
             CLOSE_WAIT by service: 4f3c2b1a0e9d 2 (oldest 12.5s)\n\
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

#[cfg(test)]
mod parts_tests {
    use super::super::parts::MIN_PER_THREAD;
    use super::super::tests::report;
    use super::*;
    use crate::table::tests::socket;
    use crate::table::ConnTable;

    #[test]
    fn a_long_table_written_in_parts_is_whole_in_order_and_aligned_on_every_part() {
        let mut t = ConnTable::new(0);
        let count = 3 * MIN_PER_THREAD + 7;
        t.seed((0..count as u64).map(|sk| {
            let mut s = socket(sk + 1, TcpState::Established, 1_000);
            s.local_port = (sk % 60_000) as u16;
            s.remote_port = (sk / 60_000) as u16;
            // The widest address is in the last part: every part is padded to it.
            if sk + 1 == count as u64 {
                s.local = "fd00:1234:5678:9abc:def0:1234:5678:9abc".parse().unwrap();
            }
            s
        }));
        let r = report(&t);
        let columns = SnapshotText::new(false, false, false, false).columns(&r);
        let header = columns.header();
        let mut out = Vec::new();
        plain_rows(&mut out, &header, &columns, &r).unwrap();

        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for (w, p) in widths.iter_mut().zip(part_widths(&columns, &r, &r.conns)) {
            *w = (*w).max(p);
        }
        let mut expected = Vec::new();
        aligned(&mut expected, header.iter().copied(), &widths);
        write_part(&mut expected, &columns, &r, &r.conns, &widths).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, String::from_utf8(expected).unwrap());
        assert_eq!(text.lines().count(), count + 1);
        let state_at = |line: &str| line.find("ESTABLISHED");
        let first_row = text.lines().nth(1).unwrap();
        assert_eq!(state_at(first_row), state_at(text.lines().last().unwrap()));
        assert!(state_at(first_row).unwrap() > "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:0".len());
    }
}
