//! Renderers turn decoded events into the bytes written to stdout, one per output format.

mod csv;
mod json;
mod record;
pub mod snapshot;
mod text;

use crate::cli::OutputFormat;
use crate::clock::{Clock, LocalTime};
use crate::config::Config;
use crate::event::Transition;

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The ring buffer was full: user space fell behind.
    RingBufferFull,
    /// The kernel skipped the BPF program (it was already running on that CPU).
    BpfRecursion,
}

impl LostReason {
    pub fn key(self) -> &'static str {
        match self {
            LostReason::RingBufferFull => "ring_buffer_full",
            LostReason::BpfRecursion => "bpf_recursion",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            LostReason::RingBufferFull => "ring buffer full",
            LostReason::BpfRecursion => "BPF program skipped by the kernel: recursion",
        }
    }
}

/// One output format. Renderers append to a buffer; the caller owns all I/O.
pub trait Renderer {
    /// What comes before the first record: a header row, if the format has one.
    fn begin(&mut self, out: &mut Vec<u8>);
    /// One transition.
    fn transition(&mut self, out: &mut Vec<u8>, transition: &Transition);
    /// Lost events, in the data stream if the format has a place for them; returns whether it did.
    fn lost(&mut self, out: &mut Vec<u8>, count: u64, reason: LostReason) -> bool;
}

/// The renderer for the configured format.
pub fn for_config(config: &Config, clock: Clock) -> Box<dyn Renderer> {
    for_format(config.output, clock, config.timestamp, config.wide)
}

/// The renderer of one format; `timestamp` and `wide` shape the text columns.
pub fn for_format(
    format: OutputFormat,
    clock: Clock,
    timestamp: bool,
    wide: bool,
) -> Box<dyn Renderer> {
    match format {
        OutputFormat::Text => Box::new(text::TextRenderer::new(
            clock,
            LocalTime::system(),
            timestamp,
            wide,
        )),
        OutputFormat::Json => Box::new(json::JsonRenderer::new(clock)),
        OutputFormat::Csv => Box::new(csv::CsvRenderer::new(clock)),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::net::IpAddr;

    use crate::clock::Clock;
    use crate::event::{Comm, Owner, Transition};
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
            netns: 4026531840,
            local: "127.0.0.1".parse::<IpAddr>().unwrap(),
            local_port: 63446,
            remote: "127.0.0.2".parse::<IpAddr>().unwrap(),
            remote_port: 80,
            old: TcpState::SynSent,
            new: TcpState::Established,
        }
    }

    /// An IPv6 socket first seen mid-life, owner unknown, with a hostile command name.
    pub fn unknown_owner_v6() -> Transition {
        Transition {
            old_since_ns: None,
            owner: None,
            cgroup: None,
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
