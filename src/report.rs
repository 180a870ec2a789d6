//! What one snapshot says: per-state counts, the connections, the interval's transitions, and
//! the answers to an operator's usual questions (who holds CLOSE_WAIT, where TIME_WAIT piles up).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::alerts::Alert;
use crate::event::Owner;
use crate::lifetimes::Ending;
use crate::ports::PortUse;
use crate::render::cells::push_endpoint;
use crate::services::Service;
use crate::table::{Age, Conn, ConnTable};
use crate::tcp_state::TcpState;

/// How many groups a pattern lists.
const TOP: usize = 5;

/// Processes holding CLOSE_WAIT sockets: the peer closed, the process did not (a leak, if it grows).
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    pub owner: Option<Owner>,
    pub count: u64,
    pub oldest: Option<Age>,
}

/// Where sockets of one state are, by service (unit, container or pod).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceCount {
    /// None: sockets of no named service (the root cgroup, a slice, or unknown).
    pub service: Option<Arc<Service>>,
    pub count: u64,
    /// The oldest of them (CLOSE_WAIT: how long the oldest leak has waited).
    pub oldest: Option<Age>,
}

/// How sockets of one state are grouped best.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    RemoteEndpoint,
    LocalPort,
}

/// Where the sockets of one state concentrate.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    pub by: Grouping,
    /// The largest groups first, at most five: endpoint or port, and count.
    pub groups: Vec<(String, u64)>,
}

pub struct Report<'a> {
    pub time: SystemTime,
    pub now_ns: u64,
    pub interval: Duration,
    pub counts: BTreeMap<TcpState, u64>,
    pub transitions: BTreeMap<(TcpState, TcpState), u64>,
    pub lost: u64,
    /// Sorted: LISTEN first, then by state, local and remote address.
    pub conns: Vec<&'a Conn>,
    pub close_wait: Vec<Holder>,
    /// CLOSE_WAIT and TIME_WAIT by service, largest first; empty when no socket of that state
    /// belongs to a named service.
    pub close_wait_services: Vec<ServiceCount>,
    pub time_wait_services: Vec<ServiceCount>,
    pub time_wait: Option<Pattern>,
    pub fin_wait2: Option<Pattern>,
    /// Connections that ended in the interval, by Ending::index.
    pub ended: [u64; Ending::NAMES.len()],
    /// Sockets newly over an --alert threshold.
    pub alerts: Vec<Alert>,
    /// Names of network namespaces (ip netns, docker), by inode, for display.
    pub netns_names: HashMap<u32, String>,
    /// The destinations with the most ephemeral ports in use, most first.
    pub port_pressure: Vec<PortUse>,
}

impl<'a> Report<'a> {
    /// The report of `table` at boot time `now_ns`, with the transitions counted in the interval.
    pub fn new(
        table: &'a ConnTable,
        transitions: BTreeMap<(TcpState, TcpState), u64>,
        lost: u64,
        time: SystemTime,
        now_ns: u64,
        interval: Duration,
    ) -> Report<'a> {
        // Listeners first, then by state and addresses. Keys are plain integers copied next to
        // the references: comparing through them would miss the cache on every step with
        // 100,000 sockets. The socket's address breaks ties (SO_REUSEPORT listeners), so an
        // unstable sort gives the same order every time.
        let mut keyed: Vec<_> = table.conns().map(|c| (order_key(c), c)).collect();
        keyed.sort_unstable_by_key(|a| a.0);
        let conns: Vec<&Conn> = keyed.into_iter().map(|(_, c)| c).collect();
        let mut per_state = [0u64; TcpState::ALL.len()];
        for c in &conns {
            per_state[c.state as usize - 1] += 1;
        }
        let counts = TcpState::ALL
            .into_iter()
            .zip(per_state)
            .filter(|(_, n)| *n > 0)
            .collect();
        Report {
            time,
            now_ns,
            interval,
            counts,
            transitions,
            lost,
            close_wait: close_wait_holders(&conns, now_ns),
            close_wait_services: by_service(&conns, TcpState::CloseWait, now_ns),
            time_wait_services: by_service(&conns, TcpState::TimeWait, now_ns),
            time_wait: pattern(&conns, TcpState::TimeWait),
            fin_wait2: pattern(&conns, TcpState::FinWait2),
            conns,
            ended: [0; Ending::NAMES.len()],
            alerts: Vec::new(),
            netns_names: HashMap::new(),
            port_pressure: Vec::new(),
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// An address as a number; the family comes separately, as IPv4 orders before IPv6.
fn address_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Where a connection goes in a snapshot: listeners first, then by state, local endpoint,
/// remote endpoint (each ordered as IpAddr and port are), and socket. Packed into few words:
/// with 100,000 connections, smaller keys sort faster.
type OrderKey = (u8, u128, u32, u128, u16, u64);

fn order_key(c: &Conn) -> OrderKey {
    let rank = u8::from(c.state != TcpState::Listen) << 5 | (c.state as u8) << 1;
    (
        rank | u8::from(c.local.is_ipv6()),
        address_bits(c.local),
        u32::from(c.local_port) << 1 | u32::from(c.remote.is_ipv6()),
        address_bits(c.remote),
        c.remote_port,
        c.skaddr,
    )
}

fn close_wait_holders(conns: &[&Conn], now_ns: u64) -> Vec<Holder> {
    let mut by_owner: HashMap<Option<u32>, Holder> = HashMap::new();
    for c in conns.iter().filter(|c| c.state == TcpState::CloseWait) {
        let holder = by_owner.entry(c.owner.map(|o| o.pid)).or_insert(Holder {
            owner: c.owner,
            count: 0,
            oldest: None,
        });
        holder.count += 1;
        if let Some(age) = c.age(now_ns) {
            if holder.oldest.is_none_or(|old| age.ns() > old.ns()) {
                holder.oldest = Some(age);
            }
        }
    }
    let mut holders: Vec<Holder> = by_owner.into_values().collect();
    holders.sort_by(|a, b| (b.count, b.oldest.map(Age::ns)).cmp(&(a.count, a.oldest.map(Age::ns))));
    holders
}

/// Sockets of `state` by service, the largest TOP groups first (then the oldest); none when
/// no socket of that state has a named service.
fn by_service(conns: &[&Conn], state: TcpState, now_ns: u64) -> Vec<ServiceCount> {
    let named = |c: &&&Conn| c.service.as_deref().is_some_and(Service::is_named);
    let in_state: Vec<&&Conn> = conns.iter().filter(|c| c.state == state).collect();
    if !in_state.iter().any(named) {
        return Vec::new();
    }
    let mut groups: HashMap<Option<&str>, ServiceCount> = HashMap::new();
    for c in in_state {
        let service = c.service.as_ref().filter(|s| s.is_named());
        let group = groups
            .entry(service.map(|s| s.path.as_str()))
            .or_insert(ServiceCount {
                service: service.cloned(),
                count: 0,
                oldest: None,
            });
        group.count += 1;
        if let Some(age) = c.age(now_ns) {
            if group.oldest.is_none_or(|old| age.ns() > old.ns()) {
                group.oldest = Some(age);
            }
        }
    }
    let mut groups: Vec<ServiceCount> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        (b.count, b.oldest.map(Age::ns))
            .cmp(&(a.count, a.oldest.map(Age::ns)))
            .then_with(|| {
                a.service
                    .as_ref()
                    .map(|s| &s.path)
                    .cmp(&b.service.as_ref().map(|s| &s.path))
            })
    });
    groups.truncate(TOP);
    groups
}

/// Groups sockets of `state` by remote endpoint and by local port, and keeps the grouping whose
/// largest group is bigger: many to one server, or many into one service.
fn pattern(conns: &[&Conn], state: TcpState) -> Option<Pattern> {
    let matching: Vec<&&Conn> = conns.iter().filter(|c| c.state == state).collect();
    if matching.is_empty() {
        return None;
    }
    let remote = top_groups(
        matching.iter().map(|c| (c.remote, c.remote_port)),
        |(addr, port)| endpoint(addr, port),
    );
    let local = top_groups(matching.iter().map(|c| c.local_port), |port| {
        port.to_string()
    });
    let (by, groups) = if local[0].1 > remote[0].1 {
        (Grouping::LocalPort, local)
    } else {
        (Grouping::RemoteEndpoint, remote)
    };
    Some(Pattern { by, groups })
}

/// The TOP largest groups of `keys`, largest first, then by name; only they are named.
fn top_groups<K: std::hash::Hash + Eq + Copy>(
    keys: impl Iterator<Item = K>,
    name: impl Fn(K) -> String,
) -> Vec<(String, u64)> {
    let mut counts: HashMap<K, u64> = HashMap::new();
    for key in keys {
        *counts.entry(key).or_default() += 1;
    }
    let mut counts: Vec<(K, u64)> = counts.into_iter().collect();
    // Largest first; among equal counts the names decide, so name the ones that could be in.
    counts.sort_unstable_by_key(|g| std::cmp::Reverse(g.1));
    let cut = counts.get(TOP.saturating_sub(1)).map_or(0, |g| g.1);
    let mut groups: Vec<(String, u64)> = counts
        .into_iter()
        .take_while(|g| g.1 >= cut)
        .map(|(key, n)| (name(key), n))
        .collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups.truncate(TOP);
    groups
}

/// `addr:port`, with brackets around IPv6 addresses as `ss` writes them.
pub fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    let mut text = String::with_capacity(21);
    push_endpoint(&mut text, addr, port);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Comm;
    use crate::table::tests::{socket, transition};
    use TcpState::*;

    #[test]
    fn counts_order_and_leaks() {
        let mut table = ConnTable::new(0);
        table.apply(&transition(1, Close, Listen, 0));
        // Two CLOSE_WAIT sockets of pid 10 (seen entering), one of an unknown owner (seeded).
        for (sk, port) in [(2, 5001), (3, 5002)] {
            let mut t = transition(sk, Established, CloseWait, 1_000 * sk);
            t.remote_port = port;
            table.apply(&t);
        }
        table.seed([socket(4, CloseWait, 1_000)]);
        let report = Report::new(
            &table,
            BTreeMap::new(),
            0,
            SystemTime::UNIX_EPOCH,
            10_000,
            Duration::from_secs(5),
        );
        assert_eq!(report.total(), 4);
        assert_eq!(report.counts[&CloseWait], 3);
        assert_eq!(report.conns[0].state, Listen, "listeners come first");
        assert_eq!(
            report.close_wait,
            vec![
                Holder {
                    owner: Some(Owner {
                        pid: 10,
                        comm: Comm::new(b"srv")
                    }),
                    count: 2,
                    oldest: Some(Age::InState(8_000)),
                },
                Holder {
                    owner: None,
                    count: 1,
                    oldest: Some(Age::Idle(11_000))
                },
            ]
        );
    }

    #[test]
    fn patterns_pick_the_grouping_that_concentrates() {
        let mut table = ConnTable::new(0);
        // Three TIME_WAIT to one remote endpoint from different local ports.
        for (sk, lport) in [(1, 40001), (2, 40002), (3, 40003)] {
            let mut t = transition(sk, FinWait2, TimeWait, 10);
            t.twaddr = Some(100 + sk);
            t.local_port = lport;
            table.apply(&t);
        }
        // Two FIN_WAIT2 into local port 80 from different clients.
        for (sk, rport) in [(4, 6001), (5, 6002)] {
            let mut t = transition(sk, FinWait1, FinWait2, 10);
            t.remote_port = rport;
            table.apply(&t);
        }
        let report = Report::new(
            &table,
            BTreeMap::new(),
            0,
            SystemTime::UNIX_EPOCH,
            20,
            Duration::from_secs(1),
        );
        assert_eq!(
            report.time_wait,
            Some(Pattern {
                by: Grouping::RemoteEndpoint,
                groups: vec![("127.0.0.2:5000".into(), 3)]
            })
        );
        assert_eq!(
            report.fin_wait2,
            Some(Pattern {
                by: Grouping::LocalPort,
                groups: vec![("80".into(), 2)]
            })
        );
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("::1".parse().unwrap(), 443), "[::1]:443");
    }

    #[test]
    fn address_bits_order_as_addresses_do_within_a_family() {
        let mut addrs: Vec<IpAddr> = [
            "::ffff:1.2.3.4",
            "10.0.0.1",
            "::1",
            "0.0.0.0",
            "fe80::1",
            "255.255.255.255",
            "::",
            "127.0.0.1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let mut by_key = addrs.clone();
        by_key.sort_by_key(|a| (a.is_ipv6(), address_bits(*a)));
        addrs.sort();
        assert_eq!(by_key, addrs);
    }
}
