//! Renderers turn decoded events into the bytes written to stdout, one file per output format:
//! the stream's here (text, json, csv), the snapshots' under snapshot/.

pub(crate) mod cells;
mod csv;
mod json;
mod record;
pub mod snapshot;
mod text;

use crate::alerts::Alert;
use crate::cli::OutputFormat;
use crate::clock::{Clock, LocalTime};
use crate::event::{Notice, Transition};
use crate::lifetimes::Connection;
use crate::losses::LostReason;

/// One output format. Renderers append to a buffer; the caller owns all I/O.
pub trait Renderer {
    /// What comes before the first record: a header row, if the format has one.
    fn begin(&mut self, out: &mut Vec<u8>);
    /// One transition.
    fn transition(&mut self, out: &mut Vec<u8>, transition: &Transition);
    /// A retransmit, reset or drop; `reason` names a drop's reason.
    fn notice(&mut self, out: &mut Vec<u8>, notice: &Notice, reason: Option<&str>);
    /// A connection that ended (--lifetimes).
    fn connection(&mut self, out: &mut Vec<u8>, connection: &Connection);
    /// A socket over its state's threshold.
    fn alert(&mut self, out: &mut Vec<u8>, alert: &Alert);
    /// Lost events, in the data stream if the format has a place for them; returns whether it did.
    fn lost(&mut self, out: &mut Vec<u8>, count: u64, reason: LostReason) -> bool;
}

/// Writes nothing (--quiet).
pub struct Quiet;

impl Renderer for Quiet {
    fn begin(&mut self, _out: &mut Vec<u8>) {}
    fn transition(&mut self, _out: &mut Vec<u8>, _transition: &Transition) {}
    fn notice(&mut self, _out: &mut Vec<u8>, _notice: &Notice, _reason: Option<&str>) {}
    fn connection(&mut self, _out: &mut Vec<u8>, _connection: &Connection) {}
    fn alert(&mut self, _out: &mut Vec<u8>, _alert: &Alert) {}
    fn lost(&mut self, _out: &mut Vec<u8>, _count: u64, _reason: LostReason) -> bool {
        false
    }
}

/// What the stream's rows are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    Transitions,
    /// One per ended connection (--lifetimes).
    Connections,
}

/// The renderer of one format; `timestamp` and `wide` shape the text columns.
pub fn for_format(
    format: OutputFormat,
    clock: Clock,
    timestamp: bool,
    wide: bool,
    rows: Rows,
) -> Box<dyn Renderer> {
    match format {
        OutputFormat::Text => Box::new(text::TextRenderer::new(
            clock,
            LocalTime::system(),
            timestamp,
            wide,
            rows,
        )),
        OutputFormat::Json => Box::new(json::JsonRenderer::new(clock)),
        OutputFormat::Csv => Box::new(csv::CsvRenderer::new(clock)),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::net::IpAddr;
    use std::sync::Arc;

    use std::time::Duration;

    use crate::alerts::{Alert, Alerts};
    use crate::clock::Clock;
    use crate::config::AlertRule;
    use crate::event::{Comm, ConnStats, Errno, Notice, NoticeKind, Owner, Transition};
    use crate::lifetimes::Connection;
    use crate::services::Service;
    use crate::table::ConnTable;
    use crate::tcp_state::TcpState;

    /// 2023-11-14T22:13:20Z at boot time 1 s.
    pub fn clock() -> Clock {
        Clock::with_offset_ns(1_700_000_000_000_000_000 - 1_000_000_000)
    }

    pub fn client_established() -> Transition {
        Transition {
            ts_ns: 1_000_000_000 + 123_456_789,
            old_since_ns: Some(1_000_000_000 + 123_456_789 - 1_373_000),
            skaddr: 0xffff_9fd7_e819_2000,
            twaddr: None,
            owner: Some(Owner {
                pid: 22384,
                comm: Comm::new(b"curl"),
            }),
            cgroup: Some(4321),
            service: Some(Arc::new(Service::from_path(
                "/system.slice/curl-test.service",
            ))),
            netns: 4026531840,
            local: "127.0.0.1".parse::<IpAddr>().unwrap(),
            local_port: 63446,
            remote: "127.0.0.2".parse::<IpAddr>().unwrap(),
            remote_port: 80,
            old: TcpState::SynSent,
            new: TcpState::Established,
            error: None,
            ended: None,
        }
    }

    /// A connect() refused: SYN_SENT -> CLOSE with ECONNREFUSED.
    pub fn refused() -> Transition {
        Transition {
            new: TcpState::Close,
            error: Some(Errno(libc::ECONNREFUSED as u16)),
            ..client_established()
        }
    }

    /// The client's connection ended by its TIME_WAIT after 0.5 s: 1000 bytes out, 20 in.
    pub fn connection() -> Connection {
        let last = Transition {
            old: TcpState::FinWait2,
            new: TcpState::TimeWait,
            twaddr: Some(0xffff_9fd7_e819_3000),
            ended: Some(Box::new(ConnStats {
                born_ns: Some(1_000_000_000 + 123_456_789 - 500_000_000),
                bytes_acked: 1002,
                bytes_received: 21,
                bytes_sent: 1000,
                bytes_retrans: 0,
                segs_out: 6,
                segs_in: 5,
                retrans: 0,
                srtt_us: 61,
                min_rtt_us: Some(23),
                local_closed_first: true,
                remote_closed_first: false,
                reset_sent: false,
                passive: false,
                fin_received: true,
                fin_acked: true,
            })),
            ..client_established()
        };
        Connection::from_transition(&last).unwrap()
    }

    pub fn retransmit() -> Notice {
        Notice {
            kind: NoticeKind::Retransmit,
            ts_ns: 1_000_000_000 + 123_456_789,
            skaddr: Some(0xffff_9fd7_e819_2000),
            owner: Some(Owner {
                pid: 22384,
                comm: Comm::new(b"curl"),
            }),
            cgroup: Some(4321),
            service: None,
            netns: 4026531840,
            local: "127.0.0.1".parse::<IpAddr>().unwrap(),
            local_port: 63446,
            remote: "127.0.0.2".parse::<IpAddr>().unwrap(),
            remote_port: 80,
            state: Some(TcpState::Established),
        }
    }

    /// A SYN to a closed port, dropped with no socket.
    pub fn drop_no_socket() -> Notice {
        Notice {
            kind: NoticeKind::Drop(2),
            skaddr: None,
            owner: None,
            cgroup: None,
            service: None,
            state: None,
            local_port: 9,
            remote_port: 40000,
            ..retransmit()
        }
    }

    /// A CLOSE_WAIT socket 31 s old against a 30 s rule.
    pub fn alert() -> Alert {
        let mut table = ConnTable::new(0);
        let t = Transition {
            old: TcpState::Established,
            new: TcpState::CloseWait,
            ..client_established()
        };
        table.apply(&t);
        let now_ns = t.ts_ns + 31_000_000_000;
        let mut alerts = Alerts::new(vec![AlertRule {
            state: TcpState::CloseWait,
            after: Duration::from_secs(30),
        }]);
        alerts.check(&table, now_ns).remove(0)
    }

    /// An IPv6 socket first seen mid-life, owner unknown, with a hostile command name.
    pub fn unknown_owner_v6() -> Transition {
        Transition {
            old_since_ns: None,
            owner: None,
            cgroup: None,
            service: None,
            local: "2001:db8::1".parse::<IpAddr>().unwrap(),
            remote: "2001:db8:ffff:ffff:ffff:ffff:ffff:2"
                .parse::<IpAddr>()
                .unwrap(),
            local_port: 443,
            remote_port: 50000,
            old: TcpState::Established,
            new: TcpState::CloseWait,
            ..client_established()
        }
    }

    pub fn hostile_comm() -> Transition {
        Transition {
            owner: Some(Owner {
                pid: 7,
                comm: Comm::new(b"a,\"b\x1b[31m"),
            }),
            ..client_established()
        }
    }
}
