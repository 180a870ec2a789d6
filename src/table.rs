//! The live connection table: seeded once from the sockets that exist, then kept current by the
//! transition stream, so no re-scan is needed between snapshots.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::event::{Owner, Socket, SocketInfo, Transition};
use crate::holders::Holdings;
use crate::services::Service;
use crate::tcp_state::TcpState;

/// How long a connection has been in its state, as far as is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    /// Seen entering the state: exact.
    InState(u64),
    /// Existed before tracing: at least this long without sending or receiving.
    Idle(u64),
}

impl Age {
    pub fn ns(self) -> u64 {
        match self {
            Age::InState(ns) | Age::Idle(ns) => ns,
        }
    }
}

/// One socket in the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Conn {
    pub skaddr: u64,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub state: TcpState,
    pub owner: Option<Owner>,
    pub cgroup: Option<u64>,
    /// The service, container or pod of that cgroup.
    pub service: Option<Arc<Service>>,
    pub netns: u32,
    /// CLOCK_BOOTTIME when it entered `state`, if seen.
    pub since_ns: Option<u64>,
    /// For sockets read by the iterator: idle time and when it was read.
    idle: Option<(u64, u64)>,
    /// When the iterator read it (0 if an event created it): older events are already reflected.
    read_ns: u64,
    /// RTT, retransmits and unacknowledged data, as last read by the iterator.
    pub info: Option<SocketInfo>,
    /// Processes holding it, as the last walk of their files counted them (0: none).
    pub holders: Option<u32>,
}

impl Conn {
    /// Its age at boot time `now_ns`: exact if seen entering the state, else a lower bound.
    pub fn age(&self, now_ns: u64) -> Option<Age> {
        match (self.since_ns, self.idle) {
            (Some(since), _) => Some(Age::InState(now_ns.saturating_sub(since))),
            (None, Some((idle, read))) => Some(Age::Idle(idle + now_ns.saturating_sub(read))),
            (None, None) => None,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }

    /// Identifies this socket's stay in its state: a new stay (or a new socket at a reused
    /// address) gets a new one.
    pub fn stay(&self) -> (u64, TcpState, u64) {
        (
            self.skaddr,
            self.state,
            self.since_ns.unwrap_or(self.read_ns),
        )
    }
}

/// Sockets keyed by their kernel object (the timewait socket for TIME_WAIT), plus the
/// transitions counted since the last snapshot.
#[derive(Debug, Default)]
pub struct ConnTable {
    /// Keys are kernel addresses, not chosen by an adversary: a fast hash, not SipHash.
    conns: FxHashMap<u64, Conn>,
    transitions: BTreeMap<(TcpState, TcpState), u64>,
    /// Only sockets in these states are kept (bit per state); 0 keeps all.
    state_mask: u32,
}

impl ConnTable {
    pub fn new(state_mask: u32) -> ConnTable {
        ConnTable {
            state_mask,
            ..ConnTable::default()
        }
    }

    fn keeps(&self, state: TcpState) -> bool {
        self.state_mask == 0 || self.state_mask & state.mask() != 0
    }

    /// Adds the sockets that exist now (tests; the iterator hands them over one at a time).
    #[cfg(test)]
    pub fn seed(&mut self, sockets: impl IntoIterator<Item = Socket>) {
        sockets.into_iter().for_each(|s| self.seed_socket(s));
    }

    /// Makes room for `sockets` more at once: growing a table of 100,000 by doubling held the
    /// old and the new one together (a quarter of a one-shot's peak memory).
    pub fn reserve(&mut self, sockets: usize) {
        if self.state_mask == 0 {
            self.conns.reserve(sockets);
        }
    }

    /// Adds a socket that exists now.
    pub fn seed_socket(&mut self, s: Socket) {
        if !self.keeps(s.state) {
            return;
        }
        let key = s.twaddr.unwrap_or(s.skaddr);
        self.conns.insert(
            key,
            Conn {
                skaddr: s.skaddr,
                local: s.local,
                local_port: s.local_port,
                remote: s.remote,
                remote_port: s.remote_port,
                state: s.state,
                owner: s.owner,
                cgroup: s.cgroup,
                service: s.service,
                netns: s.netns,
                since_ns: s.since_ns,
                idle: s.idle_ns.map(|idle| (idle, s.read_ns)),
                read_ns: s.read_ns,
                info: Some(s.info),
                holders: s.holders,
            },
        );
    }

    /// Applies one transition and counts it.
    pub fn apply(&mut self, t: &Transition) {
        *self.transitions.entry((t.old, t.new)).or_default() += 1;
        // The socket left the full-socket table, to TIME_WAIT or for good.
        if t.new == TcpState::TimeWait || (t.new == TcpState::Close && t.twaddr.is_none()) {
            self.remove_unless_newer(t.skaddr, t.ts_ns);
        }
        match (t.new, t.twaddr) {
            (TcpState::Close, Some(tw)) => self.remove_unless_newer(tw, t.ts_ns),
            (TcpState::Close, None) => {}
            (_, key) => self.upsert(key.unwrap_or(t.skaddr), t),
        }
    }

    /// An orphaned connection moved, still in FIN_WAIT2, to its timewait socket: the same
    /// stay under its new key. Not a transition.
    pub fn hand_over(&mut self, t: &Transition) {
        let Some(tw) = t.twaddr else { return };
        self.remove_unless_newer(t.skaddr, t.ts_ns);
        self.upsert(tw, t);
        if let Some(conn) = self.conns.get_mut(&tw) {
            if conn.read_ns <= t.ts_ns {
                conn.since_ns = t.old_since_ns;
            }
        }
    }

    /// The socket's holder changed (a process accepted, read or wrote it): not a transition.
    pub fn set_owner(&mut self, t: &Transition) {
        let key = t.twaddr.unwrap_or(t.skaddr);
        if let Some(conn) = self.conns.get_mut(&key) {
            if conn.read_ns <= t.ts_ns {
                conn.owner = t.owner;
            }
        }
    }

    /// A socket read by the iterator after `ts_ns` already shows the effect of older events;
    /// an entry at a reused address must not be removed by its predecessor's close.
    fn remove_unless_newer(&mut self, key: u64, ts_ns: u64) {
        if self.conns.get(&key).is_some_and(|c| c.read_ns <= ts_ns) {
            self.conns.remove(&key);
        }
    }

    fn upsert(&mut self, key: u64, t: &Transition) {
        if !self.keeps(t.new) {
            self.conns.remove(&key);
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            if conn.read_ns > t.ts_ns {
                return;
            }
            conn.state = t.new;
            conn.since_ns = Some(t.ts_ns);
            conn.idle = None;
            conn.info = None;
            conn.local = t.local;
            conn.local_port = t.local_port;
            conn.remote = t.remote;
            conn.remote_port = t.remote_port;
            conn.skaddr = t.skaddr;
            // The kernel reports the holder as it is now: unknown when it no longer knows.
            conn.owner = t.owner;
            if t.cgroup.is_some() {
                conn.cgroup = t.cgroup;
                conn.service = t.service.clone();
            }
            return;
        }
        self.conns.insert(
            key,
            Conn {
                skaddr: t.skaddr,
                local: t.local,
                local_port: t.local_port,
                remote: t.remote,
                remote_port: t.remote_port,
                state: t.new,
                owner: t.owner,
                cgroup: t.cgroup,
                service: t.service.clone(),
                netns: t.netns,
                since_ns: Some(t.ts_ns),
                idle: None,
                read_ns: 0,
                info: None,
                holders: None,
            },
        );
    }

    /// Who holds each socket, as a walk of every process's files that started at boot time
    /// `walked_ns` found it: the holder `ss -p` names first and how many processes. A socket
    /// no process holds (an orphan, a timewait socket, a connection not yet accepted) keeps
    /// its last holder or its listener's owner, with no holders. A socket whose last event is
    /// newer than the walk is left as the events say.
    pub fn refresh_holders(&mut self, walk: &Holdings, walked_ns: u64) {
        for (&key, conn) in self.conns.iter_mut() {
            if conn.since_ns.unwrap_or(conn.read_ns) > walked_ns || conn.read_ns > walked_ns {
                continue;
            }
            // A timewait socket (the key) has no file; its full socket's address may be
            // another socket's by now.
            let holding = (key == conn.skaddr)
                .then(|| walk.get(conn.skaddr))
                .flatten();
            if let Some(holding) = holding {
                conn.owner = Some(holding.owner);
            }
            conn.holders = Some(holding.map_or(0, |h| h.holders));
        }
    }

    /// Names the services of sockets whose cgroup was not in the tree when they were added
    /// (a container started after the tree was read).
    pub fn resolve_services(&mut self, mut service: impl FnMut(u64) -> Option<Arc<Service>>) {
        for conn in self.conns.values_mut() {
            if conn.service.is_none() {
                conn.service = conn.cgroup.and_then(&mut service);
            }
        }
    }

    /// Updates the figures of a socket read again by the iterator.
    pub fn refresh_info(&mut self, s: &Socket) {
        if let Some(conn) = self.conns.get_mut(&s.twaddr.unwrap_or(s.skaddr)) {
            if conn.state == s.state {
                conn.info = Some(s.info);
            }
        }
    }

    /// The transitions counted since the last call.
    pub fn take_transitions(&mut self) -> BTreeMap<(TcpState, TcpState), u64> {
        std::mem::take(&mut self.transitions)
    }

    pub fn conns(&self) -> impl Iterator<Item = &Conn> + Clone {
        self.conns.values()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::Comm;

    pub fn transition(skaddr: u64, old: TcpState, new: TcpState, ts_ns: u64) -> Transition {
        Transition {
            ts_ns,
            old_since_ns: None,
            skaddr,
            twaddr: None,
            owner: Some(Owner {
                pid: 10,
                comm: Comm::new(b"srv"),
            }),
            cgroup: Some(1),
            service: None,
            netns: 7,
            local: "127.0.0.1".parse().unwrap(),
            local_port: 80,
            remote: "127.0.0.2".parse().unwrap(),
            remote_port: 5000,
            old,
            new,
            error: None,
            ended: None,
        }
    }

    pub fn socket(skaddr: u64, state: TcpState, read_ns: u64) -> Socket {
        Socket {
            read_ns,
            since_ns: None,
            idle_ns: Some(2_000),
            skaddr,
            twaddr: None,
            owner: None,
            cgroup: Some(1),
            service: None,
            netns: 7,
            local: "127.0.0.1".parse().unwrap(),
            local_port: 80,
            remote: "127.0.0.2".parse().unwrap(),
            remote_port: 5000,
            state,
            holders: None,
            info: SocketInfo::default(),
        }
    }

    /// A connection of namespace `netns` between two endpoints, as a snapshot holds it.
    pub fn socket_at(
        netns: u32,
        local: &str,
        local_port: u16,
        remote: &str,
        remote_port: u16,
        state: TcpState,
    ) -> Conn {
        let mut table = ConnTable::default();
        table.seed_socket(Socket {
            netns,
            local: local.parse().unwrap(),
            local_port,
            remote: remote.parse().unwrap(),
            remote_port,
            ..socket(1, state, 0)
        });
        table.conns.into_values().next().unwrap()
    }

    fn states(table: &ConnTable) -> Vec<(u64, TcpState)> {
        let mut v: Vec<_> = table.conns.iter().map(|(k, c)| (*k, c.state)).collect();
        v.sort();
        v
    }

    use TcpState::*;

    #[test]
    fn a_connection_lives_and_dies_in_the_table() {
        let mut t = ConnTable::new(0);
        t.apply(&transition(1, Close, SynSent, 10));
        t.apply(&transition(1, SynSent, Established, 20));
        assert_eq!(states(&t), [(1, Established)]);
        assert_eq!(t.conns().next().unwrap().age(50), Some(Age::InState(30)));
        t.apply(&transition(1, Established, FinWait1, 30));
        t.apply(&transition(1, FinWait1, FinWait2, 40));
        let mut to_tw = transition(1, FinWait2, TimeWait, 50);
        to_tw.twaddr = Some(99);
        t.apply(&to_tw);
        assert_eq!(
            states(&t),
            [(99, TimeWait)],
            "the timewait socket replaces the full one"
        );
        let mut tw_end = transition(1, TimeWait, Close, 60_050);
        tw_end.twaddr = Some(99);
        t.apply(&tw_end);
        assert!(states(&t).is_empty());
        let counted = t.take_transitions();
        assert_eq!(counted.values().sum::<u64>(), 6);
        assert_eq!(counted[&(FinWait2, TimeWait)], 1);
        assert!(
            t.take_transitions().is_empty(),
            "counts restart after each snapshot"
        );
    }

    #[test]
    fn an_orphan_stays_in_fin_wait2_through_its_handover() {
        let mut t = ConnTable::new(0);
        t.apply(&transition(1, Established, FinWait1, 30));
        t.apply(&transition(1, FinWait1, FinWait2, 40));
        let mut handover = transition(1, FinWait2, FinWait2, 45);
        (handover.twaddr, handover.old_since_ns) = (Some(99), Some(40));
        t.hand_over(&handover);
        assert_eq!(states(&t), [(99, FinWait2)]);
        assert_eq!(
            t.conns().next().unwrap().age(100),
            Some(Age::InState(60)),
            "in FIN_WAIT2 since it entered it, not since the handover"
        );
        let mut fin = transition(1, FinWait2, TimeWait, 70);
        fin.twaddr = Some(99);
        t.apply(&fin);
        assert_eq!(states(&t), [(99, TimeWait)]);
        let counted = t.take_transitions();
        assert_eq!(
            counted.values().sum::<u64>(),
            3,
            "the handover is not a transition"
        );
    }

    #[test]
    fn seeded_sockets_ignore_events_older_than_their_reading() {
        let mut t = ConnTable::new(0);
        t.seed([socket(1, FinWait1, 100)]);
        // Already reflected in the seed: must not move the socket back.
        t.apply(&transition(1, SynSent, Established, 50));
        assert_eq!(states(&t), [(1, FinWait1)]);
        assert_eq!(t.conns().next().unwrap().age(1_100), Some(Age::Idle(3_000)));
        // The close of an earlier socket at the same address must not remove this one.
        t.apply(&transition(1, LastAck, Close, 60));
        assert_eq!(states(&t), [(1, FinWait1)]);
        t.apply(&transition(1, FinWait1, FinWait2, 150));
        assert_eq!(states(&t), [(1, FinWait2)]);
        assert_eq!(t.conns().next().unwrap().age(200), Some(Age::InState(50)));
    }

    #[test]
    fn owners_follow_the_kernel_and_change_without_a_transition() {
        let mut t = ConnTable::new(0);
        t.apply(&transition(1, SynRecv, Established, 10));
        let mut worker = transition(1, Established, Established, 20);
        worker.owner = Some(Owner {
            pid: 11,
            comm: Comm::new(b"worker"),
        });
        t.set_owner(&worker);
        let conn = t.conns().next().unwrap();
        assert_eq!((conn.owner.unwrap().pid, conn.state), (11, Established));
        assert_eq!(
            conn.age(30),
            Some(Age::InState(20)),
            "still in its state since 10"
        );
        // The holder forked and one copy was closed: which one is not known.
        let mut unknown = transition(1, Established, CloseWait, 40);
        unknown.owner = None;
        t.apply(&unknown);
        assert_eq!(t.conns().next().unwrap().owner, None);
        // A record older than the socket's reading is already reflected in it.
        t.seed([socket(2, Established, 100)]);
        t.set_owner(&transition(2, Established, Established, 50));
        assert_eq!(t.conns.get(&2).unwrap().owner, None);
    }

    #[test]
    fn a_walk_names_the_holders_of_what_it_found() {
        let mut t = ConnTable::new(0);
        t.apply(&transition(1, SynRecv, Established, 10));
        t.apply(&transition(2, FinWait1, FinWait2, 10));
        t.apply(&transition(3, Established, CloseWait, 60));
        let mut to_tw = transition(4, FinWait2, TimeWait, 20);
        to_tw.twaddr = Some(44);
        t.apply(&to_tw);
        let mut walk = Holdings::default();
        let worker = Owner {
            pid: 11,
            comm: Comm::new(b"worker"),
        };
        walk.add(1, worker);
        walk.add(3, worker);
        walk.add(4, worker); // the address of a new socket now
        t.refresh_holders(&walk, 50);
        let conn = |sk| t.conns.get(&sk).unwrap();
        assert_eq!((conn(1).owner, conn(1).holders), (Some(worker), Some(1)));
        assert_eq!(
            (conn(2).owner.unwrap().pid, conn(2).holders),
            (10, Some(0)),
            "an orphan keeps its last holder"
        );
        assert_eq!(
            (conn(3).owner.unwrap().pid, conn(3).holders),
            (10, None),
            "newer than the walk"
        );
        assert_eq!(
            (conn(44).owner.unwrap().pid, conn(44).holders),
            (10, Some(0))
        );
    }

    #[test]
    fn a_state_filter_keeps_only_those_states() {
        let mut t = ConnTable::new(CloseWait.mask());
        t.seed([socket(1, Established, 5), socket(2, CloseWait, 5)]);
        assert_eq!(states(&t), [(2, CloseWait)]);
        t.apply(&transition(3, Established, CloseWait, 10));
        t.apply(&transition(2, CloseWait, LastAck, 10));
        assert_eq!(states(&t), [(3, CloseWait)]);
    }
}
