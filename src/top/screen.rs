//! What one refresh of --top shows, built from the connection table: per-state counts and their
//! history, who holds the closing states, where TIME_WAIT piles up, the connections, the latest
//! transitions. Owned data, so that a paused view stays as it was while the table moves on.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{Owner, Transition};
use crate::ports::PortUse;
use crate::services::Service;
use crate::table::{Age, Conn};
use crate::tcp_state::TcpState;

/// Refreshes of history kept per state (the sparklines show what fits).
pub const HISTORY: usize = 120;
/// Transitions kept for the tail.
pub const TAIL: usize = 100;
/// A holder is growing when it holds more than this many refreshes ago.
const TREND_SPAN: usize = 10;

/// The states a holder is listed for: the peer or this side closed, and the other has not.
pub const HELD_STATES: [TcpState; 3] = [TcpState::CloseWait, TcpState::FinWait2, TcpState::LastAck];

/// The line above everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub host: String,
    pub kernel: String,
    /// "every network namespace (12 now)" or "network namespace 4026532…".
    pub namespaces: String,
    pub tracked: usize,
    pub transitions_per_s: f64,
    /// Events lost since the start.
    pub lost: u64,
}

/// How a holder's count moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trend {
    Growing,
    Steady,
    Shrinking,
}

/// Sockets of one closing state held by one process (and its service).
#[derive(Clone, Debug, PartialEq)]
pub struct HolderRow {
    pub state: TcpState,
    pub owner: Option<Owner>,
    pub service: Option<Arc<Service>>,
    pub count: u64,
    pub oldest: Option<Age>,
    pub trend: Trend,
}

/// TIME_WAIT sockets towards one destination, with the ephemeral ports in use towards it.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub netns: u32,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub time_wait: u64,
    /// Ports in use towards it (every state) and the namespace's range, where known.
    pub ports: Option<(u32, u32)>,
}

/// One connection, as the table had it at the refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub state: TcpState,
    pub age: Option<Age>,
    pub owner: Option<Owner>,
    pub service: Option<Arc<Service>>,
    pub netns: u32,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

impl Row {
    fn of(c: &Conn, now_ns: u64) -> Row {
        Row {
            state: c.state,
            age: c.age(now_ns),
            // An orphan (no process holds it, as the last walk found) has no owner, whoever
            // held it last.
            owner: c.owner.filter(|_| c.holders != Some(0)),
            service: c.service.clone(),
            netns: c.netns,
            local: c.local,
            local_port: c.local_port,
            remote: c.remote,
            remote_port: c.remote_port,
        }
    }
}

/// Everything one frame draws.
#[derive(Clone, Debug, Default)]
pub struct Screen {
    pub header: Header,
    /// Sockets per state now, by `TcpState as usize - 1`.
    pub counts: [u64; TcpState::ALL.len()],
    /// Counts at each past refresh, oldest first, per state.
    pub history: Vec<Vec<u64>>,
    pub holders: Vec<HolderRow>,
    pub destinations: Vec<Destination>,
    pub rows: Vec<Row>,
    /// The latest transitions with their local times, newest last.
    pub tail: Vec<(String, Transition)>,
}

/// What survives from one refresh to the next: the counts' history and the holders' past.
#[derive(Default)]
pub struct Memory {
    counts: Vec<VecDeque<u64>>,
    holders: HashMap<(TcpState, Option<u32>), VecDeque<u64>>,
    refreshes: u64,
}

impl Memory {
    /// The screen of `conns` at boot time `now_ns`.
    pub fn screen<'a>(
        &mut self,
        header: Header,
        conns: impl Iterator<Item = &'a Conn>,
        port_pressure: &[PortUse],
        tail: Vec<(String, Transition)>,
        now_ns: u64,
    ) -> Screen {
        let rows: Vec<Row> = conns.map(|c| Row::of(c, now_ns)).collect();
        let mut counts = [0u64; TcpState::ALL.len()];
        for row in &rows {
            counts[row.state as usize - 1] += 1;
        }
        if self.counts.is_empty() {
            self.counts = vec![VecDeque::with_capacity(HISTORY); counts.len()];
        }
        for (past, &now) in self.counts.iter_mut().zip(&counts) {
            if past.len() == HISTORY {
                past.pop_front();
            }
            past.push_back(now);
        }
        Screen {
            header,
            counts,
            history: self
                .counts
                .iter()
                .map(|h| h.iter().copied().collect())
                .collect(),
            holders: {
                let holders = self.holders(&rows);
                self.refreshes += 1;
                holders
            },
            destinations: destinations(&rows, port_pressure),
            rows,
            tail,
        }
    }

    /// Holders of the closing states, most sockets first, each with its trend.
    fn holders(&mut self, rows: &[Row]) -> Vec<HolderRow> {
        let mut by_holder: HashMap<(TcpState, Option<u32>), HolderRow> = HashMap::new();
        for row in rows.iter().filter(|r| HELD_STATES.contains(&r.state)) {
            let holder = by_holder
                .entry((row.state, row.owner.map(|o| o.pid)))
                .or_insert_with(|| HolderRow {
                    state: row.state,
                    owner: row.owner,
                    service: row.service.clone(),
                    count: 0,
                    oldest: None,
                    trend: Trend::Steady,
                });
            holder.count += 1;
            if row.age.map(Age::ns) > holder.oldest.map(Age::ns) {
                holder.oldest = row.age;
            }
        }
        // Holders gone are forgotten; the others remember TREND_SPAN refreshes.
        self.holders.retain(|key, _| by_holder.contains_key(key));
        let mut holders: Vec<HolderRow> = by_holder
            .into_iter()
            .map(|(key, mut holder)| {
                // A holder there at the first refresh may have held as many for long; one that
                // appears later held none before.
                let first = self.refreshes == 0;
                let past = self
                    .holders
                    .entry(key)
                    .or_insert_with(|| VecDeque::from([if first { holder.count } else { 0 }]));
                let then = past.front().copied().unwrap_or(0);
                holder.trend = match holder.count.cmp(&then) {
                    std::cmp::Ordering::Greater => Trend::Growing,
                    std::cmp::Ordering::Equal => Trend::Steady,
                    std::cmp::Ordering::Less => Trend::Shrinking,
                };
                if past.len() == TREND_SPAN {
                    past.pop_front();
                }
                past.push_back(holder.count);
                holder
            })
            .collect();
        holders.sort_by(|a, b| {
            (b.count, b.oldest.map(Age::ns))
                .cmp(&(a.count, a.oldest.map(Age::ns)))
                .then_with(|| {
                    (a.state, a.owner.map(|o| o.pid)).cmp(&(b.state, b.owner.map(|o| o.pid)))
                })
        });
        holders
    }
}

/// TIME_WAIT by destination, most first, with the port pressure towards each.
fn destinations(rows: &[Row], port_pressure: &[PortUse]) -> Vec<Destination> {
    let mut counts: HashMap<(u32, IpAddr, u16), u64> = HashMap::new();
    for row in rows.iter().filter(|r| r.state == TcpState::TimeWait) {
        *counts
            .entry((row.netns, row.remote, row.remote_port))
            .or_default() += 1;
    }
    let mut ports: HashMap<(u32, IpAddr, u16), (u32, u32)> = HashMap::new();
    for use_ in port_pressure {
        // From several source addresses: the fullest one.
        let entry = ports
            .entry((use_.netns, use_.remote, use_.remote_port))
            .or_insert((0, use_.range));
        if use_.in_use > entry.0 {
            *entry = (use_.in_use, use_.range);
        }
    }
    let mut list: Vec<Destination> = counts
        .into_iter()
        .map(|((netns, remote, remote_port), time_wait)| Destination {
            netns,
            remote,
            remote_port,
            time_wait,
            ports: ports.get(&(netns, remote, remote_port)).copied(),
        })
        .collect();
    list.sort_by(|a, b| {
        b.time_wait.cmp(&a.time_wait).then_with(|| {
            (a.netns, a.remote, a.remote_port).cmp(&(b.netns, b.remote, b.remote_port))
        })
    });
    list
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::Comm;
    use crate::event::Socket;
    use crate::table::tests::socket;
    use crate::table::ConnTable;
    use TcpState::*;

    pub fn owner(pid: u32, comm: &str) -> Option<Owner> {
        Some(Owner {
            pid,
            comm: Comm::new(comm.as_bytes()),
        })
    }

    fn at(local_port: u16, remote: &str, remote_port: u16, state: TcpState) -> Socket {
        Socket {
            netns: 1,
            local: "127.0.0.1".parse().unwrap(),
            local_port,
            remote: remote.parse().unwrap(),
            remote_port,
            ..socket(0, state, 1_000_000_000)
        }
    }

    /// A table with a leaking server, an orphan, TIME_WAIT towards two destinations.
    pub fn table() -> ConnTable {
        let mut t = ConnTable::new(0);
        let mut sockets = vec![
            at(8080, "0.0.0.0", 0, Listen),
            at(8080, "127.0.0.1", 40001, CloseWait),
            at(8080, "127.0.0.1", 40002, CloseWait),
            at(40001, "127.0.0.1", 8080, FinWait2),
            at(40003, "10.0.0.1", 443, TimeWait),
            at(40004, "10.0.0.1", 443, TimeWait),
            at(40005, "10.0.0.2", 80, TimeWait),
            at(40006, "10.0.0.1", 443, Established),
        ];
        for (n, s) in sockets.iter_mut().enumerate() {
            s.skaddr = n as u64 + 1;
            s.idle_ns = Some(n as u64 * 1_000_000_000);
            if matches!(s.state, Listen | CloseWait) {
                s.owner = owner(300, "leaky");
            }
            if s.state == Established {
                s.owner = owner(400, "curl");
            }
        }
        t.seed(sockets);
        t
    }

    fn screen(memory: &mut Memory, table: &ConnTable) -> Screen {
        memory.screen(
            Header::default(),
            table.conns(),
            &[],
            Vec::new(),
            5_000_000_000,
        )
    }

    #[test]
    fn counts_holders_and_destinations() {
        let table = table();
        let s = screen(&mut Memory::default(), &table);
        assert_eq!(s.counts[CloseWait as usize - 1], 2);
        assert_eq!(s.counts[TimeWait as usize - 1], 3);
        assert_eq!(s.history[TimeWait as usize - 1], [3]);
        assert_eq!(
            s.holders
                .iter()
                .map(|h| (
                    h.state,
                    h.owner.map(|o| o.pid),
                    h.count,
                    h.oldest.map(Age::ns)
                ))
                .collect::<Vec<_>>(),
            [
                (CloseWait, Some(300), 2, Some(6_000_000_000)),
                (FinWait2, None, 1, Some(7_000_000_000)),
            ]
        );
        assert_eq!(
            s.destinations
                .iter()
                .map(|d| (d.remote.to_string(), d.remote_port, d.time_wait))
                .collect::<Vec<_>>(),
            [
                ("10.0.0.1".to_string(), 443, 2),
                ("10.0.0.2".to_string(), 80, 1)
            ]
        );
    }

    #[test]
    fn a_holder_grows_against_its_count_refreshes_ago() {
        let mut memory = Memory::default();
        let mut table = table();
        // There at the start: not known to grow.
        let first = screen(&mut memory, &table);
        assert_eq!(first.holders[0].trend, Trend::Steady);
        let mut more = at(8080, "127.0.0.1", 40009, CloseWait);
        more.skaddr = 99;
        more.owner = owner(300, "leaky");
        let mut new_holder = at(9090, "127.0.0.1", 40010, CloseWait);
        new_holder.skaddr = 100;
        new_holder.owner = owner(500, "java");
        table.seed([more, new_holder]);
        let grown = screen(&mut memory, &table);
        let trends: Vec<_> = grown
            .holders
            .iter()
            .map(|h| (h.owner.map(|o| o.pid), h.count, h.trend))
            .collect();
        // Appearing later: from none.
        assert!(
            trends.contains(&(Some(300), 3, Trend::Growing)),
            "{trends:?}"
        );
        assert!(
            trends.contains(&(Some(500), 1, Trend::Growing)),
            "{trends:?}"
        );
        // Until the smaller count is TREND_SPAN refreshes old.
        let mut last = grown;
        for _ in 0..TREND_SPAN - 1 {
            last = screen(&mut memory, &table);
        }
        assert_eq!(last.holders[0].trend, Trend::Growing);
        last = screen(&mut memory, &table);
        assert!(last.holders.iter().all(|h| h.trend == Trend::Steady));
        assert_eq!(last.history[CloseWait as usize - 1].len(), TREND_SPAN + 2);
    }

    #[test]
    fn history_is_bounded() {
        let mut memory = Memory::default();
        let table = table();
        let mut last = screen(&mut memory, &table);
        for _ in 0..HISTORY + 5 {
            last = screen(&mut memory, &table);
        }
        assert!(last.history.iter().all(|h| h.len() == HISTORY));
    }
}
