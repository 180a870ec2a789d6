//! Port pressure: how close each destination is to running out of ephemeral ports. A connect()
//! needs a local port that no other socket from the same address to the same destination
//! (address and port) holds, in any state, TIME_WAIT included; the kernel picks it from
//! ip_local_port_range, set per network namespace. So, per namespace, source address and
//! destination: the sockets holding a port of that range, against its size.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::table::Conn;
use crate::tcp_state::TcpState;

/// A namespace's ip_local_port_range, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// The text of /proc/sys/net/ipv4/ip_local_port_range ("32768\t60999").
    pub fn parse(text: &str) -> Option<PortRange> {
        let mut ends = text.split_whitespace().map(|n| n.parse::<u16>().ok());
        let (Some(Some(low)), Some(Some(high))) = (ends.next(), ends.next()) else {
            return None;
        };
        (low <= high).then_some(PortRange { low, high })
    }

    pub fn size(&self) -> u32 {
        u32::from(self.high) - u32::from(self.low) + 1
    }

    fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// The ephemeral ports in use from one source address to one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortUse {
    pub netns: u32,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub in_use: u32,
    /// The size of the namespace's ip_local_port_range.
    pub range: u32,
}

impl PortUse {
    pub fn percent(&self) -> f64 {
        f64::from(self.in_use) * 100.0 / f64::from(self.range.max(1))
    }
}

/// The `limit` destinations with the most ephemeral ports in use, most first. A socket counts
/// when it holds a port of its namespace's range and is not a listener's or one a listener
/// accepted (those share the listener's port).
pub fn pressure<'a>(
    conns: impl IntoIterator<Item = &'a Conn> + Clone,
    ranges: &HashMap<u32, PortRange>,
    limit: usize,
) -> Vec<PortUse> {
    let listening: HashSet<(u32, u16)> = conns
        .clone()
        .into_iter()
        .filter(|c| c.state == TcpState::Listen)
        .map(|c| (c.netns, c.local_port))
        .collect();
    let mut counts: HashMap<(u32, IpAddr, IpAddr, u16), u32> = HashMap::new();
    for c in conns {
        if matches!(c.state, TcpState::Listen | TcpState::Close) || c.remote_port == 0 {
            continue;
        }
        let Some(range) = ranges.get(&c.netns) else {
            continue;
        };
        if !range.contains(c.local_port) || listening.contains(&(c.netns, c.local_port)) {
            continue;
        }
        *counts
            .entry((c.netns, c.local, c.remote, c.remote_port))
            .or_insert(0) += 1;
    }
    let mut uses: Vec<PortUse> = counts
        .into_iter()
        .map(|((netns, local, remote, remote_port), in_use)| PortUse {
            netns,
            local,
            remote,
            remote_port,
            in_use,
            range: ranges.get(&netns).map_or(1, PortRange::size),
        })
        .collect();
    uses.sort_unstable_by(|a, b| {
        b.in_use.cmp(&a.in_use).then_with(|| {
            (a.netns, a.local, a.remote, a.remote_port).cmp(&(
                b.netns,
                b.local,
                b.remote,
                b.remote_port,
            ))
        })
    });
    uses.truncate(limit);
    uses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::socket_at;
    use TcpState::*;

    #[test]
    fn ranges_are_read_as_the_kernel_writes_them() {
        assert_eq!(
            PortRange::parse("32768\t60999\n"),
            Some(PortRange {
                low: 32768,
                high: 60999
            })
        );
        assert_eq!(PortRange::parse("32768\t60999\n").unwrap().size(), 28232);
        assert_eq!(PortRange::parse("60999 32768"), None);
        assert_eq!(PortRange::parse("x"), None);
    }

    #[test]
    fn ports_held_towards_each_destination_are_counted_against_the_range() {
        let ranges = HashMap::from([(
            1,
            PortRange {
                low: 40000,
                high: 40099,
            },
        )]);
        let conns = [
            // Two to 10.0.0.1:80, one of them in TIME_WAIT; one elsewhere.
            socket_at(1, "10.0.0.9", 40000, "10.0.0.1", 80, Established),
            socket_at(1, "10.0.0.9", 40001, "10.0.0.1", 80, TimeWait),
            socket_at(1, "10.0.0.9", 40002, "10.0.0.2", 443, SynSent),
            // Not counted: outside the range, a listener and what it accepted, no range known.
            socket_at(1, "10.0.0.9", 1234, "10.0.0.1", 80, Established),
            socket_at(1, "10.0.0.9", 40050, "0.0.0.0", 0, Listen),
            socket_at(1, "10.0.0.9", 40050, "10.0.0.7", 5555, Established),
            socket_at(2, "10.0.0.9", 40003, "10.0.0.1", 80, Established),
        ];
        let uses = pressure(conns.iter(), &ranges, 10);
        assert_eq!(
            uses.iter()
                .map(|u| (u.remote.to_string(), u.remote_port, u.in_use, u.range))
                .collect::<Vec<_>>(),
            [
                ("10.0.0.1".to_string(), 80, 2, 100),
                ("10.0.0.2".to_string(), 443, 1, 100)
            ]
        );
        assert_eq!(uses[0].percent(), 2.0);
        assert_eq!(pressure(conns.iter(), &ranges, 1).len(), 1);
    }
}
