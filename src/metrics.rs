//! Prometheus metrics: what the event stream and the connection table say, as counters, gauges
//! and histograms. Label sets stay bounded: states and kinds by default; the labels that can
//! explode (command, ports, cgroup) only when asked for, and then capped per metric.
//!
//! The event loop updates metric handles it caches by plain keys (no allocation per event);
//! the HTTP thread only reads them (see exporter.rs).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::MetricLabels;
use crate::event::{Comm, Owner, Transition};
use crate::lifetimes::{Connection, Ending};
use crate::losses::LostReason;
use crate::ports::{PortRange, PortUse};
use crate::sanitize;
use crate::services::Service;
use crate::table::{Conn, ConnTable};
use crate::tcp_state::TcpState;

/// Series one metric may have through opt-in labels; further ones are counted under "other".
pub const MAX_SERIES: usize = 10_000;
/// Processes named by the CLOSE_WAIT holders' gauge; the rest are summed under "other".
pub const MAX_HOLDER_SERIES: usize = 100;

/// Time in a state and connection lifetimes, in seconds: 100 µs to 10 min.
const SECONDS_BUCKETS: [f64; 15] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0,
];

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// The opt-in label values of one socket; all None unless opted in.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
struct Extra {
    comm: Option<Option<Comm>>,
    lport: Option<u16>,
    rport: Option<u16>,
    cgroup: Option<Option<u64>>,
    service: Option<Option<Arc<Service>>>,
    netns: Option<u32>,
    /// Past MAX_SERIES: the opted-in labels say "other".
    other: bool,
}

/// What the opt-in labels are read from.
struct Labelled<'a> {
    owner: Option<Owner>,
    lport: u16,
    rport: u16,
    cgroup: Option<u64>,
    service: &'a Option<Arc<Service>>,
    netns: u32,
}

impl<'a> From<&'a Transition> for Labelled<'a> {
    fn from(t: &'a Transition) -> Labelled<'a> {
        Labelled {
            owner: t.owner,
            lport: t.local_port,
            rport: t.remote_port,
            cgroup: t.cgroup,
            service: &t.service,
            netns: t.netns,
        }
    }
}

impl<'a> From<&'a Conn> for Labelled<'a> {
    fn from(c: &'a Conn) -> Labelled<'a> {
        Labelled {
            owner: c.owner,
            lport: c.local_port,
            rport: c.remote_port,
            cgroup: c.cgroup,
            service: &c.service,
            netns: c.netns,
        }
    }
}

impl Extra {
    fn of(opt: MetricLabels, l: Labelled<'_>) -> Extra {
        Extra {
            comm: opt.comm.then(|| l.owner.map(|o| o.comm)),
            lport: opt.lport.then_some(l.lport),
            rport: opt.rport.then_some(l.rport),
            cgroup: opt.cgroup.then_some(l.cgroup),
            service: opt.service.then(|| l.service.clone()),
            netns: opt.netns.then_some(l.netns),
            other: false,
        }
    }

    fn overflow(self) -> Extra {
        Extra {
            other: true,
            ..Extra::default()
        }
    }

    fn push(&self, opt: MetricLabels, labels: &mut Labels) {
        let values = [
            (
                opt.comm,
                "comm",
                self.comm
                    .flatten()
                    .map(|c| sanitize::escape(c.as_bytes()).into_owned()),
            ),
            (opt.lport, "lport", self.lport.map(|p| p.to_string())),
            (opt.rport, "rport", self.rport.map(|p| p.to_string())),
            (
                opt.cgroup,
                "cgroup",
                self.cgroup.flatten().map(|id| id.to_string()),
            ),
            (
                opt.service,
                "service",
                self.service
                    .clone()
                    .flatten()
                    .filter(|s| s.is_named())
                    .map(|s| s.label()),
            ),
            (opt.netns, "netns", self.netns.map(|n| n.to_string())),
        ];
        for (on, name, value) in values {
            if on {
                let value = if self.other {
                    "other".to_string()
                } else {
                    // Unknown owner or cgroup: an empty value, which Prometheus treats as absent.
                    value.unwrap_or_default()
                };
                labels.push((name, value));
            }
        }
    }
}

/// Metric handles by key, created in the family on first use.
struct Cache<K, M> {
    handles: HashMap<K, M>,
}

impl<K: Eq + Hash, M: Clone> Cache<K, M> {
    fn new() -> Cache<K, M> {
        Cache {
            handles: HashMap::new(),
        }
    }

    /// The handle for `key`: `extra` is folded into "other" once MAX_SERIES are in use.
    fn get<C>(
        &mut self,
        family: &Family<Labels, M, C>,
        key: impl Fn(&Extra) -> K,
        extra: &Extra,
        labels: impl Fn(&Extra) -> Labels,
    ) -> M
    where
        C: prometheus_client::metrics::family::MetricConstructor<M>,
    {
        if let Some(m) = self.handles.get(&key(extra)) {
            return m.clone();
        }
        let overflow;
        let extra = if self.handles.len() >= MAX_SERIES {
            overflow = extra.clone().overflow();
            &overflow
        } else {
            extra
        };
        let m = self
            .handles
            .entry(key(extra))
            .or_insert_with(|| family.get_or_create_owned(&labels(extra)));
        m.clone()
    }
}

/// Everything exported, and the handles the event loop updates.
pub struct Metrics {
    opt: MetricLabels,
    registry: Arc<Registry>,
    connections: Family<Labels, Gauge>,
    transitions: Family<Labels, Counter>,
    state_seconds: Histograms,
    ended: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    retransmits: Family<Labels, Counter>,
    lifetime_seconds: Histograms,
    close_wait_owners: Gauge,
    close_wait_by_process: Family<Labels, Gauge>,
    close_wait_oldest: Gauge<f64, AtomicU64>,
    fin_wait2_oldest: Gauge<f64, AtomicU64>,
    lost: Family<Labels, Counter>,
    bpf_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    bpf_runs: Family<Labels, Counter>,
    ports_in_use: Family<Labels, Gauge>,
    port_range: Family<Labels, Gauge>,
    /// The port gauges set at the last refresh.
    ports_set: HashSet<Labels>,
    transition_handles: Cache<(TcpState, TcpState, Extra), Counter>,
    state_handles: Cache<(TcpState, Extra), Histogram>,
    ended_handles: Cache<(usize, Extra), Counter>,
    bytes_handles: Cache<(bool, Extra), Counter>,
    retransmit_handles: Cache<Extra, Counter>,
    lifetime_handles: Cache<Extra, Histogram>,
    /// Connection gauges set at the last refresh, to remove those that went to zero.
    gauges_set: HashSet<Labels>,
    /// The same for the CLOSE_WAIT holders.
    holders_set: HashSet<Labels>,
    /// Last cumulative BPF figures per program, to add only what is new.
    bpf_last: HashMap<String, (u64, u64)>,
}

/// A metric's name and help text.
type Named = (&'static str, &'static str);

const CONNECTIONS: Named = ("tcpstates_connections", "TCP sockets by state, now");
const TRANSITIONS: Named = ("tcpstates_transitions", "TCP state transitions");
const STATE_SECONDS: Named = (
    "tcpstates_state_duration_seconds",
    "Time sockets spent in a state, observed when they left it",
);
const CLOSE_WAIT_BY_PROCESS: Named = (
    "tcpstates_close_wait_sockets",
    "CLOSE_WAIT sockets by the process holding them (pid and comm; empty when not known for sure)",
);
const CLOSE_WAIT_OWNERS: Named = (
    "tcpstates_close_wait_owners",
    "Processes holding CLOSE_WAIT sockets (the peer closed, the process did not)",
);
const CLOSE_WAIT_OLDEST: Named = (
    "tcpstates_close_wait_oldest_seconds",
    "Age of the oldest CLOSE_WAIT socket (for sockets older than tcpstates: their idle time, a lower bound)",
);
const FIN_WAIT2_OLDEST: Named = (
    "tcpstates_fin_wait2_oldest_seconds",
    "Age of the oldest FIN_WAIT2 socket (this side closed, the peer has not; a lower bound for sockets older than tcpstates)",
);
const ENDED: Named = (
    "tcpstates_connections_ended",
    "Connections that ended, by how: fin, reset_sent, reset_received, refused, timeout, aborted, error",
);
const BYTES: Named = (
    "tcpstates_connection_bytes",
    "Payload bytes of ended connections, sent (acknowledged) and received",
);
const RETRANSMITS: Named = (
    "tcpstates_connection_retransmits",
    "Segments retransmitted by ended connections",
);
const LIFETIME_SECONDS: Named = (
    "tcpstates_connection_duration_seconds",
    "Lifetimes of ended connections that started while tcpstates ran",
);
const LOST: Named = (
    "tcpstates_lost_events",
    "Events the kernel could not deliver",
);
const BPF_SECONDS: Named = (
    "tcpstates_bpf_run_seconds",
    "Kernel time spent in tcpstates' BPF programs",
);
const BPF_RUNS: Named = ("tcpstates_bpf_runs", "Runs of tcpstates' BPF programs");
const BUILD_INFO: Named = ("tcpstates_build_info", "tcpstates' version");
const PORTS_IN_USE: Named = (
    "tcpstates_ephemeral_ports_in_use",
    "Local ports of ip_local_port_range held (any state, TIME_WAIT included) from one source address to one destination, the 100 most used",
);
const PORT_RANGE: Named = (
    "tcpstates_ephemeral_port_range_size",
    "Ports in the network namespace's ip_local_port_range",
);

/// `metric`, registered under its name.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    (name, help): Named,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn state_labels(opt: MetricLabels, state: TcpState, extra: &Extra) -> Labels {
    let mut labels = vec![("state", state.name().to_string())];
    extra.push(opt, &mut labels);
    labels
}

impl Metrics {
    pub fn new(opt: MetricLabels) -> Metrics {
        let mut registry = Registry::default();
        let r = &mut registry;
        let connections = registered(r, CONNECTIONS, Family::default());
        let transitions = registered(r, TRANSITIONS, Family::default());
        let state_seconds = registered(
            r,
            STATE_SECONDS,
            Histograms::new_with_constructor(seconds_histogram),
        );
        let close_wait_owners = registered(r, CLOSE_WAIT_OWNERS, Default::default());
        let close_wait_by_process = registered(r, CLOSE_WAIT_BY_PROCESS, Family::default());
        let close_wait_oldest = registered(r, CLOSE_WAIT_OLDEST, Default::default());
        let fin_wait2_oldest = registered(r, FIN_WAIT2_OLDEST, Default::default());
        let ended = registered(r, ENDED, Default::default());
        let bytes = registered(r, BYTES, Default::default());
        let retransmits = registered(r, RETRANSMITS, Default::default());
        let lifetime_seconds = registered(
            r,
            LIFETIME_SECONDS,
            Histograms::new_with_constructor(seconds_histogram),
        );
        let lost: Family<Labels, Counter> = registered(r, LOST, Family::default());
        // At 0 from the start: an alert on its increase needs the series before the first loss.
        for reason in [LostReason::RingBufferFull, LostReason::BpfRecursion] {
            drop(lost.get_or_create(&vec![("reason", reason.key().to_string())]));
        }
        let bpf_seconds = registered(r, BPF_SECONDS, Default::default());
        let bpf_runs = registered(r, BPF_RUNS, Family::default());
        let ports_in_use = registered(r, PORTS_IN_USE, Family::default());
        let port_range = registered(r, PORT_RANGE, Family::default());
        let build_info: Family<Labels, Gauge> = registered(r, BUILD_INFO, Family::default());
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);

        Metrics {
            opt,
            registry: Arc::new(registry),
            connections,
            transitions,
            state_seconds,
            ended,
            bytes,
            retransmits,
            lifetime_seconds,
            close_wait_owners,
            close_wait_by_process,
            close_wait_oldest,
            fin_wait2_oldest,
            lost,
            bpf_seconds,
            bpf_runs,
            ports_in_use,
            port_range,
            ports_set: HashSet::new(),
            transition_handles: Cache::new(),
            state_handles: Cache::new(),
            ended_handles: Cache::new(),
            bytes_handles: Cache::new(),
            retransmit_handles: Cache::new(),
            lifetime_handles: Cache::new(),
            gauges_set: HashSet::new(),
            holders_set: HashSet::new(),
            bpf_last: HashMap::new(),
        }
    }

    /// The registry the HTTP server encodes.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    pub fn transition(&mut self, t: &Transition) {
        let opt = self.opt;
        let extra = Extra::of(opt, Labelled::from(t));
        let (old, new) = (t.old, t.new);
        self.transition_handles
            .get(
                &self.transitions,
                |e| (old, new, e.clone()),
                &extra,
                |e| {
                    let mut labels = vec![
                        ("old_state", old.name().to_string()),
                        ("new_state", new.name().to_string()),
                    ];
                    e.push(opt, &mut labels);
                    labels
                },
            )
            .inc();
        if let Some(ms) = t.ms_in_old_state() {
            self.state_handles
                .get(
                    &self.state_seconds,
                    |e| (old, e.clone()),
                    &extra,
                    |e| state_labels(opt, old, e),
                )
                .observe(ms / 1_000.0);
        }
    }

    pub fn connection(&mut self, c: &Connection) {
        let opt = self.opt;
        let t = &c.last;
        let extra = Extra::of(opt, Labelled::from(t));
        let end = c.ending.index();
        self.ended_handles
            .get(
                &self.ended,
                |e| (end, e.clone()),
                &extra,
                |e| {
                    let mut labels = vec![("end", Ending::NAMES[end].to_string())];
                    e.push(opt, &mut labels);
                    labels
                },
            )
            .inc();
        for (sent, n) in [(true, c.tx_bytes()), (false, c.rx_bytes())] {
            self.bytes_handles
                .get(
                    &self.bytes,
                    |e| (sent, e.clone()),
                    &extra,
                    |e| {
                        let direction = if sent { "sent" } else { "received" };
                        let mut labels = vec![("direction", direction.to_string())];
                        e.push(opt, &mut labels);
                        labels
                    },
                )
                .inc_by(n);
        }
        self.retransmit_handles
            .get(
                &self.retransmits,
                |e| e.clone(),
                &extra,
                |e| {
                    let mut labels = Vec::new();
                    e.push(opt, &mut labels);
                    labels
                },
            )
            .inc_by(u64::from(c.stats.retrans));
        if let Some(ns) = c.duration_ns() {
            self.lifetime_handles
                .get(
                    &self.lifetime_seconds,
                    |e| e.clone(),
                    &extra,
                    |e| {
                        let mut labels = Vec::new();
                        e.push(opt, &mut labels);
                        labels
                    },
                )
                .observe(ns as f64 / 1e9);
        }
    }

    pub fn lost(&mut self, count: u64, reason: LostReason) {
        self.lost
            .get_or_create(&vec![("reason", reason.key().to_string())])
            .inc_by(count);
    }

    /// Sets the gauges from the table as it is at boot time `now_ns`.
    pub fn refresh(&mut self, table: &ConnTable, now_ns: u64) {
        let opt = self.opt;
        let mut counts: HashMap<(TcpState, Extra), i64> = HashMap::new();
        let mut holders: HashMap<Option<Owner>, i64> = HashMap::new();
        let mut oldest = 0u64;
        let mut oldest_fin_wait2 = 0u64;
        for c in table.conns() {
            let extra = Extra::of(opt, Labelled::from(c));
            *counts.entry((c.state, extra)).or_default() += 1;
            let age = || c.age(now_ns).map_or(0, |a| a.ns());
            match c.state {
                TcpState::CloseWait => {
                    *holders.entry(c.owner).or_default() += 1;
                    oldest = oldest.max(age());
                }
                TcpState::FinWait2 => oldest_fin_wait2 = oldest_fin_wait2.max(age()),
                _ => {}
            }
        }
        self.close_wait_owners.set(holders.len() as i64);
        self.close_wait_oldest.set(oldest as f64 / 1e9);
        self.fin_wait2_oldest.set(oldest_fin_wait2 as f64 / 1e9);
        self.set_close_wait_holders(holders);
        let mut set = HashSet::new();
        let mut series = 0;
        let mut overflow: HashMap<TcpState, i64> = HashMap::new();
        for ((state, extra), n) in counts {
            if series >= MAX_SERIES {
                *overflow.entry(state).or_default() += n;
                continue;
            }
            series += 1;
            let labels = state_labels(opt, state, &extra);
            self.connections.get_or_create(&labels).set(n);
            set.insert(labels);
        }
        for (state, n) in overflow {
            let labels = state_labels(opt, state, &Extra::default().overflow());
            self.connections.get_or_create(&labels).set(n);
            set.insert(labels);
        }
        for gone in self.gauges_set.difference(&set) {
            self.connections.remove(gone);
        }
        self.gauges_set = set;
    }

    /// One gauge per process holding CLOSE_WAIT sockets, the largest first; past
    /// MAX_HOLDER_SERIES the rest are summed under "other".
    fn set_close_wait_holders(&mut self, holders: HashMap<Option<Owner>, i64>) {
        let mut holders: Vec<(Option<Owner>, i64)> = holders.into_iter().collect();
        holders.sort_by_key(|(owner, n)| (-n, owner.map(|o| o.pid)));
        let mut set = HashSet::new();
        let mut other = 0;
        for (i, (owner, n)) in holders.into_iter().enumerate() {
            if i >= MAX_HOLDER_SERIES {
                other += n;
                continue;
            }
            let labels = vec![
                ("pid", owner.map_or(String::new(), |o| o.pid.to_string())),
                (
                    "comm",
                    owner.map_or(String::new(), |o| {
                        sanitize::escape(o.comm.as_bytes()).into_owned()
                    }),
                ),
            ];
            self.close_wait_by_process.get_or_create(&labels).set(n);
            set.insert(labels);
        }
        if other > 0 {
            let labels = vec![("pid", "other".to_string()), ("comm", "other".to_string())];
            self.close_wait_by_process.get_or_create(&labels).set(other);
            set.insert(labels);
        }
        for gone in self.holders_set.difference(&set) {
            self.close_wait_by_process.remove(gone);
        }
        self.holders_set = set;
    }

    /// The ephemeral ports in use per destination (`uses`, already the most used), and the
    /// range of each namespace they are in; series no longer there are removed.
    pub fn port_pressure(&mut self, uses: &[PortUse], ranges: &HashMap<u32, PortRange>) {
        let mut set = HashSet::new();
        let mut namespaces = HashSet::new();
        for u in uses {
            let labels = vec![
                ("netns", u.netns.to_string()),
                ("saddr", u.local.to_string()),
                ("daddr", u.remote.to_string()),
                ("dport", u.remote_port.to_string()),
            ];
            self.ports_in_use
                .get_or_create(&labels)
                .set(i64::from(u.in_use));
            set.insert(labels);
            namespaces.insert(u.netns);
        }
        for netns in namespaces {
            if let Some(range) = ranges.get(&netns) {
                let labels = vec![("netns", netns.to_string())];
                self.port_range
                    .get_or_create(&labels)
                    .set(i64::from(range.size()));
                set.insert(labels);
            }
        }
        for gone in self.ports_set.difference(&set) {
            // Each set holds both kinds; removing from the family without it does nothing.
            self.ports_in_use.remove(gone);
            self.port_range.remove(gone);
        }
        self.ports_set = set;
    }

    /// Adds what the BPF programs ran since the last call: (name, run time ns, runs), cumulative.
    pub fn bpf_programs(&mut self, programs: &[(String, u64, u64)]) {
        for (name, ns, runs) in programs {
            let (last_ns, last_runs) = self.bpf_last.get(name).copied().unwrap_or((0, 0));
            let labels = vec![("program", name.clone())];
            self.bpf_seconds
                .get_or_create(&labels)
                .inc_by(ns.saturating_sub(last_ns) as f64 / 1e9);
            self.bpf_runs
                .get_or_create(&labels)
                .inc_by(runs.saturating_sub(last_runs));
            self.bpf_last.insert(name.clone(), (*ns, *runs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::transition;
    use prometheus_client::encoding::text::encode;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        encode(&mut out, &m.registry).unwrap();
        out
    }

    fn sample_lines(text: &str, name: &str) -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(name))
            .map(String::from)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn transitions_and_time_in_state() {
        let mut m = Metrics::new(MetricLabels::default());
        let mut t = transition(1, TcpState::SynSent, TcpState::Established, 2_000_000_000);
        t.old_since_ns = Some(1_999_000_000);
        m.transition(&t);
        m.transition(&t);
        m.transition(&transition(2, TcpState::Close, TcpState::Listen, 5));
        let out = text(&m);
        assert_eq!(
            sample_lines(&out, "tcpstates_transitions_total"),
            [
                r#"tcpstates_transitions_total{old_state="CLOSE",new_state="LISTEN"} 1"#,
                r#"tcpstates_transitions_total{old_state="SYN_SENT",new_state="ESTABLISHED"} 2"#,
            ]
        );
        // Two observations of 1 ms; none for the transition out of an unknown stay.
        assert!(
            out.contains(
                "tcpstates_state_duration_seconds_bucket{le=\"0.001\",state=\"SYN_SENT\"} 2"
            ),
            "{out}"
        );
        assert!(out.contains("tcpstates_state_duration_seconds_count{state=\"SYN_SENT\"} 2"));
        assert!(!out.contains("state_duration_seconds_count{state=\"CLOSE\"}"));
        assert!(out.contains("tcpstates_build_info{version=\""), "{out}");
    }

    #[test]
    fn gauges_follow_the_table_and_vanish_at_zero() {
        let mut m = Metrics::new(MetricLabels::default());
        let mut table = ConnTable::new(0);
        table.apply(&transition(
            1,
            TcpState::Established,
            TcpState::CloseWait,
            1_000_000_000,
        ));
        table.apply(&transition(
            2,
            TcpState::SynSent,
            TcpState::Established,
            1_000_000_000,
        ));
        m.refresh(&table, 4_000_000_000);
        let out = text(&m);
        assert_eq!(
            sample_lines(&out, "tcpstates_connections{"),
            [
                r#"tcpstates_connections{state="CLOSE_WAIT"} 1"#,
                r#"tcpstates_connections{state="ESTABLISHED"} 1"#,
            ]
        );
        assert!(out.contains("tcpstates_close_wait_owners 1\n"));
        assert_eq!(
            sample_lines(&out, "tcpstates_close_wait_sockets{"),
            [r#"tcpstates_close_wait_sockets{pid="10",comm="srv"} 1"#]
        );
        assert!(
            out.contains("tcpstates_close_wait_oldest_seconds 3.0\n"),
            "{out}"
        );
        table.apply(&transition(
            1,
            TcpState::CloseWait,
            TcpState::Close,
            5_000_000_000,
        ));
        m.refresh(&table, 6_000_000_000);
        let out = text(&m);
        assert_eq!(
            sample_lines(&out, "tcpstates_connections{"),
            [r#"tcpstates_connections{state="ESTABLISHED"} 1"#]
        );
        assert!(out.contains("tcpstates_close_wait_owners 0\n"));
        assert!(sample_lines(&out, "tcpstates_close_wait_sockets{").is_empty());
    }

    #[test]
    fn opt_in_labels_and_their_cap() {
        let opt = MetricLabels {
            comm: true,
            lport: true,
            ..MetricLabels::default()
        };
        let mut m = Metrics::new(opt);
        let t = transition(1, TcpState::SynSent, TcpState::Established, 1);
        m.transition(&t);
        let out = text(&m);
        assert!(out.contains(
            r#"tcpstates_transitions_total{old_state="SYN_SENT",new_state="ESTABLISHED",comm="srv",lport="80"} 1"#
        ), "{out}");
        for port in 0..(MAX_SERIES as u16 + 5) {
            let mut t = t.clone();
            t.local_port = 1000 + port;
            m.transition(&t);
        }
        let out = text(&m);
        let series = sample_lines(&out, "tcpstates_transitions_total").len();
        assert_eq!(series, MAX_SERIES + 1, "the cap, and one 'other' series");
        assert!(out.contains(r#"comm="other",lport="other"} 6"#), "{out}");
    }

    #[test]
    fn ended_connections_and_bpf_costs() {
        let mut m = Metrics::new(MetricLabels::default());
        let last = Transition {
            error: Some(crate::event::Errno(libc::ECONNREFUSED as u16)),
            ended: Some(Box::new(crate::event::ConnStats {
                born_ns: Some(1_000_000),
                retrans: 2,
                ..Default::default()
            })),
            ..transition(1, TcpState::SynSent, TcpState::Close, 3_000_000)
        };
        m.connection(&Connection::from_transition(&last).unwrap());
        m.lost(3, LostReason::RingBufferFull);
        m.bpf_programs(&[("on_set_state".into(), 2_000_000_000, 10)]);
        m.bpf_programs(&[("on_set_state".into(), 3_000_000_000, 15)]);
        let out = text(&m);
        for line in [
            "tcpstates_connections_ended_total{end=\"refused\"} 1",
            "tcpstates_connection_retransmits_total 2",
            "tcpstates_connection_duration_seconds_count 1",
            "tcpstates_lost_events_total{reason=\"ring_buffer_full\"} 3",
            "tcpstates_bpf_run_seconds_total{program=\"on_set_state\"} 3.0",
            "tcpstates_bpf_runs_total{program=\"on_set_state\"} 15",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }
}
