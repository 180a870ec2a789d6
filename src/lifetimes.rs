//! Connection summaries: one record per connection when it ends, from the transition that ended
//! it and the figures the kernel read from its socket then.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::event::{ConnStats, Errno, Notice, NoticeKind, Transition};
use crate::tcp_state::TcpState;

/// How long an ended connection waits for an RST its socket sends right after closing (close()
/// with unread data, or SO_LINGER 0, close first and then reset, on the same CPU at once).
const HOLD: Duration = Duration::from_millis(20);

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// FINs exchanged: an orderly close.
    Fin,
    /// This side reset it.
    ResetSent,
    /// The peer reset it.
    ResetReceived,
    /// A connect() answered with an RST.
    Refused,
    /// Retransmissions (of the SYN, data or keepalives) went unanswered.
    Timeout,
    /// Closed before any FIN or RST: e.g. a connect() given up by its process.
    Aborted,
    /// Another error the kernel left on the socket (e.g. EHOSTUNREACH from ICMP).
    Error(Errno),
}

impl Ending {
    /// Its name; for another error, the errno's (NAMES counts those under "error").
    pub fn name(self) -> String {
        match self {
            Ending::Error(e) => e.name(),
            other => Ending::NAMES[other.index()].to_string(),
        }
    }

    /// The names snapshots count by, in a fixed order.
    pub const NAMES: [&'static str; 7] = [
        "fin",
        "reset_sent",
        "reset_received",
        "refused",
        "timeout",
        "aborted",
        "error",
    ];

    /// Its index in NAMES.
    pub fn index(self) -> usize {
        match self {
            Ending::Fin => 0,
            Ending::ResetSent => 1,
            Ending::ResetReceived => 2,
            Ending::Refused => 3,
            Ending::Timeout => 4,
            Ending::Aborted => 5,
            Ending::Error(_) => 6,
        }
    }

    /// From the socket's error at close and what was seen of its life.
    pub fn classify(error: Option<Errno>, stats: &ConnStats) -> Ending {
        match error.map(|e| i32::from(e.0)) {
            Some(libc::ECONNREFUSED) => return Ending::Refused,
            Some(libc::ETIMEDOUT) => return Ending::Timeout,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => return Ending::ResetReceived,
            Some(_) => return Ending::Error(error.unwrap_or(Errno(0))),
            None => {}
        }
        if stats.reset_sent {
            Ending::ResetSent
        } else if stats.local_closed_first || stats.remote_closed_first {
            Ending::Fin
        } else {
            Ending::Aborted
        }
    }
}

/// Which side sent the first FIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Remote,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

/// One connection, from its start to the transition that ended it.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// The last transition: to CLOSE, or to TIME_WAIT (the timewait socket lives on).
    pub last: Transition,
    pub stats: ConnStats,
    pub ending: Ending,
}

impl Connection {
    /// None unless `t` ended a connection.
    pub fn from_transition(t: &Transition) -> Option<Connection> {
        let stats = *t.ended.as_deref()?;
        Some(Connection {
            ending: Ending::classify(t.error, &stats),
            last: t.clone(),
            stats,
        })
    }

    /// From its first SYN (or, accepted, its creation) to its end; None if it began before
    /// tracing.
    pub fn duration_ns(&self) -> Option<u64> {
        self.stats
            .born_ns
            .map(|born| self.last.ts_ns.saturating_sub(born))
    }

    pub fn closed_first(&self) -> Option<Side> {
        if self.stats.local_closed_first {
            Some(Side::Local)
        } else if self.stats.remote_closed_first {
            Some(Side::Remote)
        } else {
            None
        }
    }

    /// Payload bytes sent and acknowledged: the kernel counts sequence space, so a SYN (sent
    /// and answered, by a connect()) and an acknowledged FIN are one byte each.
    pub fn tx_bytes(&self) -> u64 {
        let s = &self.stats;
        let syn = u64::from(s.bytes_acked > 0 && !s.passive);
        s.bytes_acked.saturating_sub(syn + u64::from(s.fin_acked))
    }

    /// Payload bytes received: the kernel's count less the peer's FIN.
    pub fn rx_bytes(&self) -> u64 {
        let s = &self.stats;
        s.bytes_received.saturating_sub(u64::from(s.fin_received))
    }
}

/// Ended connections, each held briefly so that an RST sent just after its close is counted.
#[derive(Debug, Default)]
pub struct Lifetimes {
    held: VecDeque<(Instant, Connection)>,
}

impl Lifetimes {
    /// Takes a transition; keeps it if it ended a connection.
    pub fn transition(&mut self, t: &Transition, now: Instant) {
        if let Some(c) = Connection::from_transition(t) {
            self.held.push_back((now, c));
        }
    }

    /// Joins an RST to the connection its socket just ended; true if there was one.
    pub fn reset(&mut self, n: &Notice) -> bool {
        if n.kind != NoticeKind::ResetSent {
            return false;
        }
        let Some((_, c)) = self.held.iter_mut().rev().find(|(_, c)| {
            Some(c.last.skaddr) == n.skaddr
                && c.last.new == TcpState::Close
                && c.last.ts_ns <= n.ts_ns
        }) else {
            return false;
        };
        if matches!(c.ending, Ending::Fin | Ending::Aborted) {
            c.ending = Ending::ResetSent;
            c.stats.reset_sent = true;
        }
        true
    }

    /// The connections held long enough (all of them when `all`), oldest first.
    pub fn ready(&mut self, now: Instant, all: bool) -> impl Iterator<Item = Connection> + '_ {
        let n = if all {
            self.held.len()
        } else {
            self.held
                .iter()
                .take_while(|(at, _)| now.duration_since(*at) >= HOLD)
                .count()
        };
        self.held.drain(..n).map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::transition;

    fn ended(old: TcpState, new: TcpState, error: Option<i32>, stats: ConnStats) -> Transition {
        Transition {
            error: error.map(|e| Errno(e as u16)),
            ended: Some(Box::new(stats)),
            ..transition(0x1000, old, new, 5_000_000_000)
        }
    }

    fn stats() -> ConnStats {
        ConnStats {
            born_ns: Some(4_000_000_000),
            ..ConnStats::default()
        }
    }

    #[test]
    fn endings_come_from_the_error_then_the_flags() {
        let classify =
            |error: Option<i32>, s: ConnStats| Ending::classify(error.map(|e| Errno(e as u16)), &s);
        assert_eq!(classify(Some(libc::ECONNREFUSED), stats()), Ending::Refused);
        assert_eq!(classify(Some(libc::ETIMEDOUT), stats()), Ending::Timeout);
        assert_eq!(
            classify(Some(libc::ECONNRESET), stats()),
            Ending::ResetReceived
        );
        assert_eq!(classify(Some(libc::EPIPE), stats()), Ending::ResetReceived);
        assert_eq!(
            classify(Some(libc::EHOSTUNREACH), stats()).name(),
            "EHOSTUNREACH"
        );
        let reset = ConnStats {
            reset_sent: true,
            local_closed_first: true,
            ..stats()
        };
        assert_eq!(classify(None, reset), Ending::ResetSent);
        let fin = ConnStats {
            remote_closed_first: true,
            ..stats()
        };
        assert_eq!(classify(None, fin), Ending::Fin);
        assert_eq!(classify(None, stats()), Ending::Aborted);
    }

    #[test]
    fn payload_bytes_leave_out_syn_and_fin() {
        // Active closer: SYN and FIN acked, peer's FIN received.
        let s = ConnStats {
            bytes_acked: 1 + 1000 + 1,
            bytes_received: 20 + 1,
            local_closed_first: true,
            fin_acked: true,
            fin_received: true,
            ..stats()
        };
        let c =
            Connection::from_transition(&ended(TcpState::FinWait2, TcpState::TimeWait, None, s))
                .unwrap();
        assert_eq!((c.tx_bytes(), c.rx_bytes()), (1000, 20));
        assert_eq!(c.closed_first(), Some(Side::Local));
        assert_eq!(c.duration_ns(), Some(1_000_000_000));
        // Passive side, peer closed first: its FIN received, ours acked; no SYN in bytes_acked.
        let s = ConnStats {
            bytes_acked: 20 + 1,
            bytes_received: 1000 + 1,
            remote_closed_first: true,
            passive: true,
            fin_acked: true,
            fin_received: true,
            ..stats()
        };
        let c = Connection::from_transition(&ended(TcpState::LastAck, TcpState::Close, None, s))
            .unwrap();
        assert_eq!((c.tx_bytes(), c.rx_bytes()), (20, 1000));
        assert_eq!(c.ending, Ending::Fin);
        // An orphaned FIN_WAIT2 socket hands over to TIME_WAIT before the peer's FIN arrives.
        let s = ConnStats {
            bytes_acked: 1 + 7 + 1,
            bytes_received: 3,
            local_closed_first: true,
            fin_acked: true,
            ..stats()
        };
        let c =
            Connection::from_transition(&ended(TcpState::FinWait2, TcpState::TimeWait, None, s))
                .unwrap();
        assert_eq!((c.tx_bytes(), c.rx_bytes()), (7, 3));
    }

    #[test]
    fn a_reset_right_after_close_is_joined_and_held_records_wait() {
        let mut l = Lifetimes::default();
        let t0 = Instant::now();
        let s = ConnStats {
            remote_closed_first: true,
            ..stats()
        };
        l.transition(&ended(TcpState::CloseWait, TcpState::Close, None, s), t0);
        // Not a connection end: ignored.
        l.transition(
            &transition(0x2000, TcpState::SynSent, TcpState::Established, 1),
            t0,
        );
        assert_eq!(l.ready(t0, false).count(), 0);
        let notice = Notice {
            kind: NoticeKind::ResetSent,
            ts_ns: 5_000_000_100,
            skaddr: Some(0x1000),
            owner: None,
            cgroup: None,
            service: None,
            netns: 7,
            local: "127.0.0.1".parse().unwrap(),
            local_port: 80,
            remote: "127.0.0.2".parse().unwrap(),
            remote_port: 5000,
            state: Some(TcpState::Close),
        };
        assert!(l.reset(&notice));
        let elsewhere = Notice {
            skaddr: Some(0x3000),
            ..notice.clone()
        };
        assert!(!l.reset(&elsewhere));
        let got: Vec<Connection> = l.ready(t0 + HOLD, false).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ending, Ending::ResetSent);
        assert_eq!(l.ready(t0 + HOLD, true).count(), 0);
    }
}
