//! A connection's fields as JSON and CSV write them.

use serde::{Serialize, Serializer};

use crate::render::cells::serialize_addr;
use crate::render::record::{ms, service, Name};
use crate::table::{Age, Conn};
use crate::tcp_state::TcpState;

/// A connection's fields in JSON and CSV.
#[derive(Serialize)]
pub(super) struct ConnRecord<'a> {
    /// The snapshot's time: a CSV row's first column; JSON has it once per snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<&'a str>,
    family: &'static str,
    #[serde(serialize_with = "serialize_addr")]
    laddr: std::net::IpAddr,
    lport: u16,
    #[serde(serialize_with = "serialize_addr")]
    raddr: std::net::IpAddr,
    rport: u16,
    state: &'static str,
    pid: Option<u32>,
    comm: Option<Name<'a>>,
    /// Time in the current state, when it was seen entering it.
    since_ms: Option<f64>,
    /// For sockets older than the tool: time since they last sent or received (a lower bound).
    idle_ms: Option<f64>,
    netns: u32,
    cgroup: u64,
    /// The socket's cgroup path and, parsed from it, its systemd unit, container and pod.
    cgroup_path: Option<&'a str>,
    unit: Option<&'a str>,
    container_id: Option<&'a str>,
    pod_uid: Option<&'a str>,
    /// Processes holding it (0: none, such as an orphan); null where not counted.
    holders: Option<u32>,
    /// -i: smoothed RTT, retransmitted segments, unacknowledged segments and bytes.
    #[serde(skip_serializing_if = "Shown::hidden")]
    srtt_ms: Shown<f64>,
    #[serde(skip_serializing_if = "Shown::hidden")]
    retrans: Shown<u32>,
    #[serde(skip_serializing_if = "Shown::hidden")]
    unacked: Shown<u32>,
    #[serde(skip_serializing_if = "Shown::hidden")]
    bytes_in_flight: Shown<u32>,
}

/// A column present only when asked for (-i); null/empty inside it when unknown.
struct Shown<T> {
    on: bool,
    value: Option<T>,
}

impl<T> Shown<T> {
    fn new(on: bool, value: Option<T>) -> Shown<T> {
        Shown { on, value }
    }

    fn hidden(&self) -> bool {
        !self.on
    }
}

impl<T: Serialize> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'a> ConnRecord<'a> {
    /// The same record as a CSV row: stamped with the snapshot's time, the name escaped.
    pub(super) fn csv_row(self, time: &'a str) -> ConnRecord<'a> {
        ConnRecord {
            time: Some(time),
            comm: self.comm.map(Name::escaped),
            ..self
        }
    }

    pub(super) fn new(c: &'a Conn, now_ns: u64, info: bool) -> ConnRecord<'a> {
        let figures = c
            .info
            .filter(|_| !matches!(c.state, TcpState::Listen | TcpState::TimeWait));
        let age = c.age(now_ns);
        ConnRecord {
            time: None,
            family: if c.is_ipv6() { "ipv6" } else { "ipv4" },
            laddr: c.local,
            lport: c.local_port,
            raddr: c.remote,
            rport: c.remote_port,
            state: c.state.name(),
            pid: c.owner.map(|o| o.pid),
            comm: c.owner.as_ref().map(|o| Name::exact(o.comm.as_bytes())),
            since_ms: match age {
                Some(Age::InState(ns)) => Some(ms(ns)),
                _ => None,
            },
            idle_ms: match age {
                Some(Age::Idle(ns)) => Some(ms(ns)),
                _ => None,
            },
            netns: c.netns,
            cgroup: c.cgroup.unwrap_or(0),
            cgroup_path: service(&c.service, |s| Some(&s.path)),
            unit: service(&c.service, |s| s.unit.as_deref()),
            container_id: service(&c.service, |s| s.container.as_deref()),
            pod_uid: service(&c.service, |s| s.pod.as_deref()),
            holders: c.holders,
            srtt_ms: Shown::new(info, figures.map(|i| f64::from(i.srtt_us) / 1_000.0)),
            retrans: Shown::new(info, figures.map(|i| i.retrans)),
            unacked: Shown::new(info, figures.map(|i| i.unacked)),
            bytes_in_flight: Shown::new(info, figures.map(|i| i.bytes_in_flight)),
        }
    }
}
