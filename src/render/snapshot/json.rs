//! Snapshot JSON: one object per snapshot per line; long connection lists written on several
//! threads.

use std::io::{self, Write};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::fields::ConnRecord;
use super::parts::write_in_rounds;
use super::SnapshotRenderer;
use crate::clock::Clock;
use crate::lifetimes::Ending;
use crate::ports::PortUse;
use crate::render::record::{ms, service, AlertRecord, Name, Rfc3339Micros};
use crate::report::{Grouping, Holder, Pattern, Report, ServiceCount};
use crate::table::{Age, Conn};
use crate::tcp_state::TcpState;

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
    comm: Option<Name<'a>>,
    count: u64,
    oldest_ms: Option<f64>,
    /// True when `oldest_ms` is an idle time (socket older than the tool), a lower bound.
    oldest_is_idle: bool,
}

impl<'a> HolderRecord<'a> {
    fn new(h: &'a Holder) -> HolderRecord<'a> {
        HolderRecord {
            pid: h.owner.map(|o| o.pid),
            comm: h.owner.as_ref().map(|o| Name::exact(o.comm.as_bytes())),
            count: h.count,
            oldest_ms: h.oldest.map(|a| ms(a.ns())),
            oldest_is_idle: matches!(h.oldest, Some(Age::Idle(_))),
        }
    }
}

/// A group of sockets by service: its name as text shows it, its fields, count and oldest.
#[derive(Serialize)]
struct ServiceRecord<'a> {
    service: Option<String>,
    cgroup_path: Option<&'a str>,
    unit: Option<&'a str>,
    container_id: Option<&'a str>,
    pod_uid: Option<&'a str>,
    count: u64,
    oldest_ms: Option<f64>,
    oldest_is_idle: bool,
}

impl<'a> ServiceRecord<'a> {
    fn new(g: &'a ServiceCount) -> ServiceRecord<'a> {
        ServiceRecord {
            service: g.service.as_ref().map(|s| s.label()),
            cgroup_path: service(&g.service, |s| Some(&s.path)),
            unit: service(&g.service, |s| s.unit.as_deref()),
            container_id: service(&g.service, |s| s.container.as_deref()),
            pod_uid: service(&g.service, |s| s.pod.as_deref()),
            count: g.count,
            oldest_ms: g.oldest.map(|a| ms(a.ns())),
            oldest_is_idle: matches!(g.oldest, Some(Age::Idle(_))),
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
    /// CLOSE_WAIT and TIME_WAIT by service; empty when none belongs to a named one.
    close_wait_services: Vec<ServiceRecord<'a>>,
    time_wait_services: Vec<ServiceRecord<'a>>,
    time_wait: Option<PatternRecord<'a>>,
    fin_wait2: Option<PatternRecord<'a>>,
    /// Connections that ended in the interval, by how they ended.
    ended: EndedCounts<'a>,
    alerts: Vec<AlertRecord<'a>>,
    /// The destinations with the most ephemeral ports in use.
    port_pressure: Vec<PortUseRecord>,
}

/// Ephemeral ports in use from one address to one destination.
#[derive(Serialize)]
struct PortUseRecord {
    netns: u32,
    laddr: std::net::IpAddr,
    raddr: std::net::IpAddr,
    rport: u16,
    in_use: u32,
    range: u32,
    /// Of the range, rounded to a tenth.
    percent: f64,
}

impl PortUseRecord {
    fn new(u: &PortUse) -> PortUseRecord {
        PortUseRecord {
            netns: u.netns,
            laddr: u.local,
            raddr: u.remote,
            rport: u.remote_port,
            in_use: u.in_use,
            range: u.range,
            percent: (u.percent() * 10.0).round() / 10.0,
        }
    }
}

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

/// The connections as JSON objects separated by commas, written on several threads at once
/// for a long list: with 100,000 connections, writing them was most of the time a snapshot
/// took.
fn write_conns(out: &mut impl Write, conns: &[&Conn], now_ns: u64, info: bool) -> io::Result<()> {
    write_in_rounds(out, conns, |buf, part, first| {
        if !first {
            buf.push(b',');
        }
        write_part(buf, part, now_ns, info)
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
            close_wait_services: r
                .close_wait_services
                .iter()
                .map(ServiceRecord::new)
                .collect(),
            time_wait_services: r
                .time_wait_services
                .iter()
                .map(ServiceRecord::new)
                .collect(),
            time_wait: r.time_wait.as_ref().map(PatternRecord::new),
            fin_wait2: r.fin_wait2.as_ref().map(PatternRecord::new),
            ended: EndedCounts(&r.ended),
            alerts: r
                .alerts
                .iter()
                .map(|a| AlertRecord::new(a, &self.clock))
                .collect(),
            port_pressure: r.port_pressure.iter().map(PortUseRecord::new).collect(),
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

#[cfg(test)]
mod tests {
    use super::super::tests::{report, table};
    use super::*;
    use crate::table::tests::socket;
    use crate::table::ConnTable;
    use TcpState::*;

    #[test]
    fn services_are_fields_and_groups() {
        let t = super::super::tests::node_table();
        let mut out = Vec::new();
        SnapshotJson::new(false, false, crate::render::fixtures::clock())
            .snapshot(&mut out, &report(&t))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let id = super::super::tests::CONTAINER;
        assert_eq!(
            v["close_wait_services"],
            serde_json::json!([{
                "service": &id[..12],
                "cgroup_path": format!("/system.slice/docker-{id}.scope"),
                "unit": format!("docker-{id}.scope"),
                "container_id": id,
                "pod_uid": null,
                "count": 2,
                "oldest_ms": 12500.0,
                "oldest_is_idle": false
            }])
        );
        let listener = &v["connections"][0];
        assert_eq!(
            (
                &listener["unit"],
                &listener["cgroup_path"],
                &listener["container_id"]
            ),
            (
                &serde_json::json!("web.service"),
                &serde_json::json!("/system.slice/web.service"),
                &serde_json::Value::Null
            )
        );
        assert_eq!(v["time_wait_services"], serde_json::json!([]));
    }

    #[test]
    fn json_golden() {
        let t = table();
        let mut out = Vec::new();
        let mut r = report(&t);
        r.port_pressure = vec![PortUse {
            netns: 7,
            local: "127.0.0.1".parse().unwrap(),
            remote: "127.0.0.2".parse().unwrap(),
            remote_port: 5000,
            in_use: 2,
            range: 28232,
        }];
        SnapshotJson::new(false, false, crate::render::fixtures::clock())
            .snapshot(&mut out, &r)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"type":"snapshot","time":"2023-11-14T22:13:20.000000Z","interval_ms":5000,"#,
                r#""counts":{"ESTABLISHED":1,"CLOSE_WAIT":1,"LISTEN":1},"#,
                r#""transitions":{"ESTABLISHED->CLOSE_WAIT":1},"lost":0,"connections":["#,
                r#"{"family":"ipv4","laddr":"127.0.0.1","lport":80,"raddr":"0.0.0.0","rport":0,"state":"LISTEN","pid":10,"comm":"srv","since_ms":13500.0,"idle_ms":null,"netns":7,"cgroup":1,"cgroup_path":null,"unit":null,"container_id":null,"pod_uid":null,"holders":null},"#,
                r#"{"family":"ipv6","laddr":"::1","lport":80,"raddr":"::1","rport":5000,"state":"ESTABLISHED","pid":null,"comm":null,"since_ms":null,"idle_ms":74500.0,"netns":7,"cgroup":1,"cgroup_path":null,"unit":null,"container_id":null,"pod_uid":null,"holders":2},"#,
                r#"{"family":"ipv4","laddr":"127.0.0.1","lport":80,"raddr":"127.0.0.2","rport":5000,"state":"CLOSE_WAIT","pid":10,"comm":"srv","since_ms":12500.0,"idle_ms":null,"netns":7,"cgroup":1,"cgroup_path":null,"unit":null,"container_id":null,"pod_uid":null,"holders":null}],"#,
                r#""close_wait":[{"pid":10,"comm":"srv","count":1,"oldest_ms":12500.0,"oldest_is_idle":false}],"#,
                r#""close_wait_services":[],"time_wait_services":[],"#,
                r#""time_wait":null,"fin_wait2":null,"#,
                r#""ended":{"fin":0,"reset_sent":0,"reset_received":0,"refused":0,"timeout":0,"aborted":0,"error":0},"alerts":[],"#,
                r#""port_pressure":[{"netns":7,"laddr":"127.0.0.1","raddr":"127.0.0.2","rport":5000,"in_use":2,"range":28232,"percent":0.0}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_long_connection_list_written_in_parts_is_whole_and_in_order() {
        let mut t = ConnTable::new(0);
        let count = 3 * super::super::parts::MIN_PER_THREAD + 7;
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
