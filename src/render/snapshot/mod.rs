//! Snapshot renderers, one file per format: a netstat-like text table, JSON lines and CSV
//! rows; what they share (the trait, the factory, the cells of a connection in words).

mod csv;
mod fields;
mod json;
mod parts;
mod text;

use std::io::{self, Write};

use crate::cli::OutputFormat;
use crate::clock::Clock;
use crate::event::Owner;
use crate::report::{endpoint, Report};
use crate::sanitize;
use crate::table::{Age, Conn};
use crate::tcp_state::TcpState;

pub use self::csv::SnapshotCsv;
pub use self::json::SnapshotJson;
pub use self::text::SnapshotText;

/// One output format for snapshots.
/// Each writes straight to `out` (buffered by the caller): a snapshot of 100,000 connections
/// is tens of megabytes, which need not be held in memory at once.
pub trait SnapshotRenderer {
    fn snapshot(&mut self, out: &mut dyn Write, report: &Report<'_>) -> io::Result<()>;
}

/// What a snapshot shows besides its format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// Only the counts and diagnoses, without the connection table (--summary).
    pub summary: bool,
    /// RTT, retransmit and in-flight columns (-i).
    pub info: bool,
    /// Text: stdout is a terminal (table borders).
    pub terminal: bool,
    /// Text: colour the states.
    pub color: bool,
}

/// The renderer of one format.
pub fn for_format(format: OutputFormat, style: Style, clock: Clock) -> Box<dyn SnapshotRenderer> {
    match format {
        OutputFormat::Text => Box::new(SnapshotText::new(
            style.terminal,
            style.color,
            style.summary,
            style.info,
        )),
        OutputFormat::Json => Box::new(SnapshotJson::new(style.summary, style.info, clock)),
        OutputFormat::Csv => Box::new(SnapshotCsv::new(style.info)),
    }
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

fn owner_text(owner: Option<Owner>) -> String {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::services::Service;
    use crate::table::tests::{socket, transition};
    use crate::table::ConnTable;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};
    use TcpState::*;

    pub fn table() -> ConnTable {
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
        old.holders = Some(2);
        t.seed([old]);
        t
    }

    /// A container's id, and its service.
    pub const CONTAINER: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

    /// A host's web service in namespace 7, and a container in namespace 8 ("blue") that
    /// leaks CLOSE_WAIT.
    pub fn node_table() -> ConnTable {
        let web = Arc::new(Service::from_path("/system.slice/web.service"));
        let container = Arc::new(Service::from_path(&format!(
            "/system.slice/docker-{CONTAINER}.scope"
        )));
        let mut t = ConnTable::new(0);
        let mut listen = transition(1, Close, Listen, 1_000_000_000);
        (listen.remote, listen.remote_port) = ("0.0.0.0".parse().unwrap(), 0);
        listen.service = Some(Arc::clone(&web));
        t.apply(&listen);
        for sk in [2, 3] {
            let mut leak = transition(sk, Established, CloseWait, sk * 1_000_000_000);
            (leak.netns, leak.remote_port) = (8, 5000 + sk as u16);
            leak.service = Some(Arc::clone(&container));
            t.apply(&leak);
        }
        t
    }

    pub fn report(t: &ConnTable) -> Report<'_> {
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
}
