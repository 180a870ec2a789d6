//! Snapshot renderers: a netstat-like text table, JSON lines and CSV rows.

use std::io::{self, Write};

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::record::{AlertRecord, Rfc3339Micros};
use crate::alerts::Alert;
use crate::clock::Clock;
use crate::lifetimes::Ending;
use crate::plural::counted;
use crate::report::{endpoint, Grouping, Holder, Pattern, Report};
use crate::sanitize;
use crate::table::{Age, Conn};
use crate::tcp_state::TcpState;

/// One output format for snapshots.
/// Each writes straight to `out` (buffered by the caller): a snapshot of 100,000 connections
/// is tens of megabytes, which need not be held in memory at once.
pub trait SnapshotRenderer {
    fn snapshot(&mut self, out: &mut dyn Write, report: &Report<'_>) -> io::Result<()>;
}

/// A short human duration: `850ms`, `12.3s`, `4m05s`, `2h07m`, `3d04h`.
pub fn short_duration(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{}.{}s", s, ms % 1000 / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

fn age_text(age: Option<Age>) -> String {
    match age {
        Some(Age::InState(ns)) => short_duration(ns),
        Some(Age::Idle(ns)) => format!("idle {}", short_duration(ns)),
        None => "-".to_string(),
    }
}

fn owner_text(owner: Option<crate::event::Owner>) -> String {
    owner.map_or("-".to_string(), |o| {
        format!("{}/{}", o.pid, sanitize::escape(o.comm.as_bytes()))
    })
}

fn foreign(c: &Conn) -> String {
    if c.state == TcpState::Listen {
        match c.remote {
            std::net::IpAddr::V4(_) => "0.0.0.0:*".to_string(),
            std::net::IpAddr::V6(_) => "[::]:*".to_string(),
        }
    } else {
        endpoint(c.remote, c.remote_port)
    }
}

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

/// Milliseconds with microsecond resolution, as in the transition records.
fn ms(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

/// A connection's fields in JSON and CSV.
#[derive(Serialize)]
struct ConnRecord<'a> {
    /// The snapshot's time: a CSV row's first column; JSON has it once per snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<&'a str>,
    family: &'static str,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    laddr: std::net::IpAddr,
    lport: u16,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    raddr: std::net::IpAddr,
    rport: u16,
    state: &'static str,
    pid: Option<u32>,
    comm: Option<std::borrow::Cow<'a, str>>,
    /// Time in the current state, when it was seen entering it.
    since_ms: Option<f64>,
    /// For sockets older than the tool: time since they last sent or received (a lower bound).
    idle_ms: Option<f64>,
    netns: u32,
    cgroup: u64,
    /// -i: smoothed RTT, retransmitted segments, unacknowledged segments and bytes.
    #[serde(skip_serializing_if = "Shown::hidden")]
    srtt_ms: Shown<f64>,
    #[serde(skip_serializing_if = "Shown::hidden")]
    retrans: Shown<u32>,
    #[serde(skip_serializing_if = "Shown::hidden")]
    unacked: Shown<u32>,
    #[serde(skip_serializing_if = "Shown::hidden")]
    bytes_in_flight: Shown<u32>,
}

/// A column present only when asked for (-i); null/empty inside it when unknown.
struct Shown<T> {
    on: bool,
    value: Option<T>,
}

impl<T> Shown<T> {
    fn new(on: bool, value: Option<T>) -> Shown<T> {
        Shown { on, value }
    }

    fn hidden(&self) -> bool {
        !self.on
    }
}

impl<T: Serialize> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'a> ConnRecord<'a> {
    fn new(c: &'a Conn, now_ns: u64, info: bool) -> ConnRecord<'a> {
        let figures = c
            .info
            .filter(|_| !matches!(c.state, TcpState::Listen | TcpState::TimeWait));
        let age = c.age(now_ns);
        ConnRecord {
            time: None,
            family: if c.is_ipv6() { "ipv6" } else { "ipv4" },
            laddr: c.local,
            lport: c.local_port,
            raddr: c.remote,
            rport: c.remote_port,
            state: c.state.name(),
            pid: c.owner.map(|o| o.pid),
            comm: c
                .owner
                .as_ref()
                .map(|o| sanitize::escape(o.comm.as_bytes())),
            since_ms: match age {
                Some(Age::InState(ns)) => Some(ms(ns)),
                _ => None,
            },
            idle_ms: match age {
                Some(Age::Idle(ns)) => Some(ms(ns)),
                _ => None,
            },
            netns: c.netns,
            cgroup: c.cgroup.unwrap_or(0),
            srtt_ms: Shown::new(info, figures.map(|i| f64::from(i.srtt_us) / 1_000.0)),
            retrans: Shown::new(info, figures.map(|i| i.retrans)),
            unacked: Shown::new(info, figures.map(|i| i.unacked)),
            bytes_in_flight: Shown::new(info, figures.map(|i| i.bytes_in_flight)),
        }
    }
}

/// Ended-connection counts, every kind, in a fixed order.
struct EndedCounts<'a>(&'a [u64]);

impl Serialize for EndedCounts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, n) in Ending::NAMES.iter().zip(self.0) {
            map.serialize_entry(name, n)?;
        }
        map.end()
    }
}

/// Per-state counts in kernel state order.
struct Counts<'a>(&'a std::collections::BTreeMap<TcpState, u64>);

impl Serialize for Counts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (state, n) in self.0 {
            map.serialize_entry(state.name(), n)?;
        }
        map.end()
    }
}

/// Transition counts keyed `OLD->NEW`.
struct TransitionCounts<'a>(&'a std::collections::BTreeMap<(TcpState, TcpState), u64>);

impl Serialize for TransitionCounts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for ((a, b), n) in self.0 {
            map.serialize_entry(&format!("{a}->{b}"), n)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct HolderRecord<'a> {
    pid: Option<u32>,
    comm: Option<std::borrow::Cow<'a, str>>,
    count: u64,
    oldest_ms: Option<f64>,
    /// True when `oldest_ms` is an idle time (socket older than the tool), a lower bound.
    oldest_is_idle: bool,
}

impl<'a> HolderRecord<'a> {
    fn new(h: &'a Holder) -> HolderRecord<'a> {
        HolderRecord {
            pid: h.owner.map(|o| o.pid),
            comm: h
                .owner
                .as_ref()
                .map(|o| sanitize::escape(o.comm.as_bytes())),
            count: h.count,
            oldest_ms: h.oldest.map(|a| ms(a.ns())),
            oldest_is_idle: matches!(h.oldest, Some(Age::Idle(_))),
        }
    }
}

#[derive(Serialize)]
struct PatternRecord<'a> {
    by: &'static str,
    top: Vec<GroupRecord<'a>>,
}

#[derive(Serialize)]
struct GroupRecord<'a> {
    key: &'a str,
    count: u64,
}

impl<'a> PatternRecord<'a> {
    fn new(p: &'a Pattern) -> PatternRecord<'a> {
        PatternRecord {
            by: match p.by {
                Grouping::RemoteEndpoint => "remote_endpoint",
                Grouping::LocalPort => "local_port",
            },
            top: p
                .groups
                .iter()
                .map(|(key, count)| GroupRecord { key, count: *count })
                .collect(),
        }
    }
}

/// A snapshot's fields before its connections.
#[derive(Serialize)]
struct SnapshotHead<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: Rfc3339Micros,
    interval_ms: u128,
    counts: Counts<'a>,
    transitions: TransitionCounts<'a>,
    lost: u64,
}

/// A snapshot's fields after its connections.
#[derive(Serialize)]
struct SnapshotTail<'a> {
    close_wait: Vec<HolderRecord<'a>>,
    time_wait: Option<PatternRecord<'a>>,
    fin_wait2: Option<PatternRecord<'a>>,
    /// Connections that ended in the interval, by how they ended.
    ended: EndedCounts<'a>,
    alerts: Vec<AlertRecord<'a>>,
}

/// Below this many connections per thread, one thread writes them all: a thread costs more
/// than it saves.
const CONNS_PER_THREAD: usize = 20_000;

/// Connections read ahead of writing them (see write_conns).
const GATHERED: usize = 64;

/// One part of the connection list, as JSON objects separated by commas. Generic over the
/// writer so that serde_json's many small writes are inlined, not dynamic calls.
fn write_part<W: Write>(out: &mut W, part: &[&Conn], now_ns: u64, info: bool) -> io::Result<()> {
    // The connections are far apart in memory, in no order: reading a few dozen first, in a
    // short loop, lets the processor wait for them together instead of one by one.
    let mut records = Vec::with_capacity(GATHERED);
    for (n, gathered) in part.chunks(GATHERED).enumerate() {
        records.clear();
        records.extend(gathered.iter().map(|c| ConnRecord::new(c, now_ns, info)));
        for (i, record) in records.iter().enumerate() {
            if n > 0 || i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, record)?;
        }
    }
    Ok(())
}

/// The connections as JSON objects separated by commas. A long list is cut into parts written
/// on several threads at once, then put out in order: with 100,000 connections, writing them
/// was most of the time a snapshot took.
fn write_conns(out: &mut impl Write, conns: &[&Conn], now_ns: u64, info: bool) -> io::Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(conns.len() / CONNS_PER_THREAD)
        .max(1);
    let mut parts = conns.chunks(conns.len().div_ceil(threads).max(1));
    let Some(first) = parts.next() else {
        return Ok(());
    };
    std::thread::scope(|scope| {
        // The other parts into memory, each on a thread of its own; the first straight out.
        let others: Vec<_> = parts
            .map(|part| {
                scope.spawn(move || {
                    let mut buf = Vec::with_capacity(part.len() * 256);
                    write_part(&mut buf, part, now_ns, info).map(|()| buf)
                })
            })
            .collect();
        write_part(out, first, now_ns, info)?;
        for other in others {
            let buf = other
                .join()
                .map_err(|_| io::Error::other("a snapshot writer thread panicked"))??;
            out.write_all(b",")?;
            out.write_all(&buf)?;
        }
        Ok(())
    })
}

/// JSON: one object per snapshot per line.
pub struct SnapshotJson {
    summary: bool,
    info: bool,
    clock: Clock,
}

impl SnapshotJson {
    pub fn new(summary: bool, info: bool, clock: Clock) -> SnapshotJson {
        SnapshotJson {
            summary,
            info,
            clock,
        }
    }
}

impl SnapshotRenderer for SnapshotJson {
    fn snapshot(&mut self, out: &mut dyn Write, r: &Report<'_>) -> io::Result<()> {
        let head = serde_json::to_vec(&SnapshotHead {
            kind: "snapshot",
            time: Rfc3339Micros(r.time),
            interval_ms: r.interval.as_millis(),
            counts: Counts(&r.counts),
            transitions: TransitionCounts(&r.transitions),
            lost: r.lost,
        })?;
        let tail = serde_json::to_vec(&SnapshotTail {
            close_wait: r.close_wait.iter().map(HolderRecord::new).collect(),
            time_wait: r.time_wait.as_ref().map(PatternRecord::new),
            fin_wait2: r.fin_wait2.as_ref().map(PatternRecord::new),
            ended: EndedCounts(&r.ended),
            alerts: r
                .alerts
                .iter()
                .map(|a| AlertRecord::new(a, &self.clock))
                .collect(),
        })?;
        // serde_json writes in small pieces: buffer them here, where the writes are inlined,
        // rather than make a dynamic call for each.
        let mut out = io::BufWriter::with_capacity(1 << 16, out);
        // One object: the head's fields, the connections, the tail's fields. Each part was
        // written as an object of its own; the braces between them are left out.
        out.write_all(head.strip_suffix(b"}").unwrap_or(&head))?;
        if !self.summary {
            out.write_all(br#","connections":["#)?;
            write_conns(&mut out, &r.conns, r.now_ns, self.info)?;
            out.write_all(b"]")?;
        }
        out.write_all(b",")?;
        out.write_all(tail.strip_prefix(b"{").unwrap_or(&tail))?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// CSV: one row per connection per snapshot, the snapshot's time first.
#[derive(Default)]
pub struct SnapshotCsv {
    header_written: bool,
    info: bool,
}

impl SnapshotCsv {
    pub fn new(info: bool) -> SnapshotCsv {
        SnapshotCsv {
            header_written: false,
            info,
        }
    }
}

impl SnapshotRenderer for SnapshotCsv {
    fn snapshot(&mut self, out: &mut dyn Write, r: &Report<'_>) -> io::Result<()> {
        let time = humantime::format_rfc3339_micros(r.time).to_string();
        let mut writer = csv::WriterBuilder::new()
            .has_headers(!self.header_written)
            .from_writer(&mut *out);
        for c in &r.conns {
            let row = ConnRecord {
                time: Some(&time),
                ..ConnRecord::new(c, r.now_ns, self.info)
            };
            writer.serialize(row).map_err(csv_io_error)?;
            self.header_written = true;
        }
        writer.flush()
    }
}

/// The csv crate's error as an io::Error that keeps the kind of a failed write (a closed pipe
/// must still read as one).
fn csv_io_error(err: csv::Error) -> io::Error {
    let kind = match err.kind() {
        csv::ErrorKind::Io(e) => e.kind(),
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::{socket, transition};
    use crate::table::ConnTable;
    use std::collections::BTreeMap;
    use std::time::{Duration, UNIX_EPOCH};
    use TcpState::*;

    fn table() -> ConnTable {
        let mut t = ConnTable::new(0);
        let mut listen = transition(1, Close, Listen, 1_000_000_000);
        listen.remote = "0.0.0.0".parse().unwrap();
        listen.remote_port = 0;
        t.apply(&listen);
        t.apply(&transition(2, Established, CloseWait, 2_000_000_000));
        let mut old = socket(3, Established, 1_000_000_000);
        old.local = "::1".parse().unwrap();
        old.remote = "::1".parse().unwrap();
        old.idle_ns = Some(61_000_000_000);
        t.seed([old]);
        t
    }

    fn report(t: &ConnTable) -> Report<'_> {
        let mut transitions = BTreeMap::new();
        transitions.insert((Established, CloseWait), 1);
        Report::new(
            t,
            transitions,
            0,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            14_500_000_000,
            Duration::from_secs(5),
        )
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(850_000_000), "850ms");
        assert_eq!(short_duration(12_345_000_000), "12.3s");
        assert_eq!(short_duration(245_000_000_000), "4m05s");
        assert_eq!(short_duration(7_620_000_000_000), "2h07m");
        assert_eq!(short_duration(273_600_000_000_000), "3d04h");
    }

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

    #[test]
    fn json_golden() {
        let t = table();
        let mut out = Vec::new();
        SnapshotJson::new(false, false, crate::render::fixtures::clock())
            .snapshot(&mut out, &report(&t))
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"type":"snapshot","time":"2023-11-14T22:13:20.000000Z","interval_ms":5000,"#,
                r#""counts":{"ESTABLISHED":1,"CLOSE_WAIT":1,"LISTEN":1},"#,
                r#""transitions":{"ESTABLISHED->CLOSE_WAIT":1},"lost":0,"connections":["#,
                r#"{"family":"ipv4","laddr":"127.0.0.1","lport":80,"raddr":"0.0.0.0","rport":0,"state":"LISTEN","pid":10,"comm":"srv","since_ms":13500.0,"idle_ms":null,"netns":7,"cgroup":1},"#,
                r#"{"family":"ipv6","laddr":"::1","lport":80,"raddr":"::1","rport":5000,"state":"ESTABLISHED","pid":null,"comm":null,"since_ms":null,"idle_ms":74500.0,"netns":7,"cgroup":1},"#,
                r#"{"family":"ipv4","laddr":"127.0.0.1","lport":80,"raddr":"127.0.0.2","rport":5000,"state":"CLOSE_WAIT","pid":10,"comm":"srv","since_ms":12500.0,"idle_ms":null,"netns":7,"cgroup":1}],"#,
                r#""close_wait":[{"pid":10,"comm":"srv","count":1,"oldest_ms":12500.0,"oldest_is_idle":false}],"#,
                r#""time_wait":null,"fin_wait2":null,"#,
                r#""ended":{"fin":0,"reset_sent":0,"reset_received":0,"refused":0,"timeout":0,"aborted":0,"error":0},"alerts":[]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn csv_golden() {
        let t = table();
        let mut renderer = SnapshotCsv::default();
        let mut out = Vec::new();
        renderer.snapshot(&mut out, &report(&t)).unwrap();
        renderer.snapshot(&mut out, &report(&t)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "one header, then three rows per snapshot");
        assert_eq!(
            lines[0],
            "time,family,laddr,lport,raddr,rport,state,pid,comm,since_ms,idle_ms,netns,cgroup"
        );
        assert_eq!(
            lines[2],
            "2023-11-14T22:13:20.000000Z,ipv6,::1,80,::1,5000,ESTABLISHED,,,,74500.0,7,1"
        );
        assert_eq!(lines[4], lines[1]);
    }

    /// Fails every write as a closed pipe does.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_reported_as_one_by_every_format() {
        let t = table();
        let renderers: [Box<dyn SnapshotRenderer>; 3] = [
            Box::new(SnapshotText::new(false, false, false, false)),
            Box::new(SnapshotJson::new(
                false,
                false,
                crate::render::fixtures::clock(),
            )),
            Box::new(SnapshotCsv::default()),
        ];
        for mut renderer in renderers {
            let err = renderer.snapshot(&mut ClosedPipe, &report(&t)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        }
    }

    #[test]
    fn a_long_connection_list_written_in_parts_is_whole_and_in_order() {
        let mut t = ConnTable::new(0);
        let count = 3 * CONNS_PER_THREAD + 7;
        t.seed((0..count as u64).map(|sk| {
            let mut s = socket(sk + 1, Established, 1_000);
            s.local_port = (sk % 60_000) as u16;
            s.remote_port = (sk / 60_000) as u16;
            s
        }));
        let r = report(&t);
        let mut out = Vec::new();
        write_conns(&mut out, &r.conns, r.now_ns, false).unwrap();
        let records: Vec<String> = r
            .conns
            .iter()
            .map(|c| serde_json::to_string(&ConnRecord::new(c, r.now_ns, false)).unwrap())
            .collect();
        assert_eq!(String::from_utf8(out).unwrap(), records.join(","));
        assert_eq!(records.len(), count);
    }
}
