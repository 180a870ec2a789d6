//! The stable field set of a transition, shared by the JSON and CSV formats.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::alerts::Alert;
use crate::clock::Clock;
use crate::event::{Errno, Notice, Owner, Transition};
use crate::lifetimes::{Connection, Side};
use crate::sanitize;
use crate::services::Service;
use crate::table::Age;
use crate::tcp_state::TcpState;

/// RFC 3339 UTC with microseconds, e.g. `2023-11-14T22:13:20.123456Z`.
pub struct Rfc3339Micros(pub SystemTime);

impl Serialize for Rfc3339Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; 27];
        rfc3339_micros(self.0, &mut text);
        // SAFETY: rfc3339_micros writes ASCII only into all 27 bytes (its prefix is checked).
        s.serialize_str(unsafe { std::str::from_utf8_unchecked(&text) })
    }
}

thread_local! {
    /// The last second formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// Writes `t` as RFC 3339 with microseconds. Events come many to a second: the date and time of
/// day are formatted (by humantime) once per second, the microseconds digit by digit.
pub(crate) fn rfc3339_micros(t: SystemTime, out: &mut [u8; 27]) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let prefix = SECOND.with(|cache| {
        let (cached, prefix) = cache.get();
        if cached == secs {
            return prefix;
        }
        let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
        let mut prefix = [b'0'; 19];
        let text = whole.to_string();
        // Only ASCII is kept: the serializer relies on it.
        if let Some(head) = text.as_bytes().get(..19).filter(|h| h.is_ascii()) {
            prefix.copy_from_slice(head);
        }
        cache.set((secs, prefix));
        prefix
    });
    out[..19].copy_from_slice(&prefix);
    out[19] = b'.';
    let mut micros = since.subsec_micros();
    for digit in out[20..26].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out[26] = b'Z';
}

/// A command name from another process, as a record carries it: exactly in JSON (serde_json
/// escapes what JSON must, so `"a\"b\n\u001b"` reaches a reader as those characters; invalid
/// UTF-8 becomes U+FFFD), or escaped like text for CSV, whose cells a terminal may show as they
/// are.
#[derive(Clone, Copy, Debug)]
pub struct Name<'a> {
    bytes: &'a [u8],
    escaped: bool,
}

impl<'a> Name<'a> {
    pub fn exact(bytes: &'a [u8]) -> Name<'a> {
        Name {
            bytes,
            escaped: false,
        }
    }

    /// The same name, escaped (CSV).
    pub fn escaped(self) -> Name<'a> {
        Name {
            escaped: true,
            ..self
        }
    }
}

impl Serialize for Name<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.escaped {
            s.serialize_str(&sanitize::escape(self.bytes))
        } else {
            s.serialize_str(&String::from_utf8_lossy(self.bytes))
        }
    }
}

/// A kernel address as `0x` and lowercase hex.
pub struct Hex(pub u64);

impl Hex {
    /// What `{:#x}` writes, from a stack buffer: formatting machinery cost more here.
    pub(crate) fn text(&self) -> ([u8; 18], usize) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 18];
        let digits = (64 - self.0.leading_zeros()).div_ceil(4).max(1) as usize;
        text[..2].copy_from_slice(b"0x");
        for (i, byte) in text[2..2 + digits].iter_mut().enumerate() {
            let shift = 4 * (digits - 1 - i);
            *byte = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        (text, 2 + digits)
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (text, len) = self.text();
        // SAFETY: "0x" and hex digits only: ASCII.
        s.serialize_str(unsafe { std::str::from_utf8_unchecked(&text[..len]) })
    }
}

/// A transition's fields; keys and meanings never change (new keys may be added).
#[derive(Serialize)]
pub struct TransitionRecord<'a> {
    /// The record's kind, first in JSON (`"type"`); None leaves the column out (CSV).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub time: Rfc3339Micros,
    pub skaddr: Hex,
    pub pid: Option<u32>,
    pub comm: Option<Name<'a>>,
    pub family: &'static str,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub laddr: IpAddr,
    pub lport: u16,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub raddr: IpAddr,
    pub rport: u16,
    pub oldstate: &'static str,
    pub newstate: &'static str,
    pub ms: Option<f64>,
    pub netns: u32,
    /// 0 when unknown (no cgroup has id 0).
    pub cgroup: u64,
    /// The socket's error on a transition to CLOSE (e.g. ECONNREFUSED, ETIMEDOUT).
    pub error: Option<String>,
    /// The socket's cgroup path and, parsed from it, its systemd unit, container and pod.
    pub cgroup_path: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

impl<'a> TransitionRecord<'a> {
    pub fn new(t: &'a Transition, clock: &Clock) -> TransitionRecord<'a> {
        TransitionRecord {
            kind: Some("transition"),
            time: Rfc3339Micros(clock.wall(t.ts_ns)),
            skaddr: Hex(t.skaddr),
            pid: t.owner.map(|o| o.pid),
            comm: comm(&t.owner),
            family: family(t.is_ipv6()),
            laddr: t.local,
            lport: t.local_port,
            raddr: t.remote,
            rport: t.remote_port,
            oldstate: t.old.name(),
            newstate: t.new.name(),
            ms: t.ms_in_old_state(),
            netns: t.netns,
            cgroup: t.cgroup.unwrap_or(0),
            error: t.error.map(Errno::name),
            cgroup_path: service(&t.service, |s| Some(&s.path)),
            unit: service(&t.service, |s| s.unit.as_deref()),
            container_id: service(&t.service, |s| s.container.as_deref()),
            pod_uid: service(&t.service, |s| s.pod.as_deref()),
        }
    }
}

/// One field of a socket's service, if it has one.
pub(crate) fn service<'a>(
    of: &'a Option<Arc<Service>>,
    field: impl FnOnce(&'a Service) -> Option<&'a str>,
) -> Option<&'a str> {
    of.as_deref().and_then(field)
}

fn family(ipv6: bool) -> &'static str {
    if ipv6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

fn comm(owner: &Option<Owner>) -> Option<Name<'_>> {
    owner.as_ref().map(|o| Name::exact(o.comm.as_bytes()))
}

pub(crate) fn ms(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

/// A retransmit, reset or drop.
#[derive(Serialize)]
pub struct NoticeRecord<'a> {
    /// The record's kind, first in JSON (`"type"`); None leaves the column out (CSV).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub time: Rfc3339Micros,
    pub skaddr: Option<Hex>,
    pub pid: Option<u32>,
    pub comm: Option<Name<'a>>,
    pub family: &'static str,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub laddr: IpAddr,
    pub lport: u16,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub raddr: IpAddr,
    pub rport: u16,
    /// The socket's state; null for a packet without a socket.
    pub state: Option<&'static str>,
    /// For drops: the kernel's drop reason, e.g. NO_SOCKET or NETFILTER_DROP.
    pub reason: Option<&'a str>,
    pub netns: u32,
    pub cgroup: u64,
    /// The socket's cgroup path and, parsed from it, its systemd unit, container and pod.
    pub cgroup_path: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

impl<'a> NoticeRecord<'a> {
    pub fn new(n: &'a Notice, reason: Option<&'a str>, clock: &Clock) -> NoticeRecord<'a> {
        NoticeRecord {
            kind: Some(n.kind.name()),
            time: Rfc3339Micros(clock.wall(n.ts_ns)),
            skaddr: n.skaddr.map(Hex),
            pid: n.owner.map(|o| o.pid),
            comm: comm(&n.owner),
            family: family(n.is_ipv6()),
            laddr: n.local,
            lport: n.local_port,
            raddr: n.remote,
            rport: n.remote_port,
            state: n.state.map(TcpState::name),
            reason,
            netns: n.netns,
            cgroup: n.cgroup.unwrap_or(0),
            cgroup_path: service(&n.service, |s| Some(&s.path)),
            unit: service(&n.service, |s| s.unit.as_deref()),
            container_id: service(&n.service, |s| s.container.as_deref()),
            pod_uid: service(&n.service, |s| s.pod.as_deref()),
        }
    }
}

/// A connection that ended.
#[derive(Serialize)]
pub struct ConnectionRecord<'a> {
    /// The record's kind, first in JSON (`"type"`); None leaves the column out (CSV).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// When it ended.
    pub time: Rfc3339Micros,
    /// When it started (its SYN; for accepted ones, when the handshake created the socket).
    pub start: Option<Rfc3339Micros>,
    pub skaddr: Hex,
    pub pid: Option<u32>,
    pub comm: Option<Name<'a>>,
    pub family: &'static str,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub laddr: IpAddr,
    pub lport: u16,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub raddr: IpAddr,
    pub rport: u16,
    /// "active" (connect) or "passive" (accepted).
    pub side: &'static str,
    pub duration_ms: Option<f64>,
    /// Payload bytes sent and acknowledged, and received.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Payload bytes retransmitted.
    pub retrans_bytes: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    /// Retransmitted segments.
    pub retrans: u32,
    pub srtt_ms: f64,
    pub min_rtt_ms: Option<f64>,
    /// Who sent the first FIN: "local", "remote", or null if none was sent.
    pub closed_first: Option<&'static str>,
    /// fin, reset_sent, reset_received, refused, timeout, aborted, or an errno name.
    pub end: String,
    /// The state it left last, and the one it entered (CLOSE or TIME_WAIT).
    pub oldstate: &'static str,
    pub newstate: &'static str,
    pub netns: u32,
    pub cgroup: u64,
    /// The socket's cgroup path and, parsed from it, its systemd unit, container and pod.
    pub cgroup_path: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

impl<'a> ConnectionRecord<'a> {
    pub fn new(c: &'a Connection, clock: &Clock) -> ConnectionRecord<'a> {
        let t = &c.last;
        ConnectionRecord {
            kind: Some("connection"),
            time: Rfc3339Micros(clock.wall(t.ts_ns)),
            start: c.stats.born_ns.map(|ns| Rfc3339Micros(clock.wall(ns))),
            skaddr: Hex(t.skaddr),
            pid: t.owner.map(|o| o.pid),
            comm: comm(&t.owner),
            family: family(t.is_ipv6()),
            laddr: t.local,
            lport: t.local_port,
            raddr: t.remote,
            rport: t.remote_port,
            side: if c.stats.passive { "passive" } else { "active" },
            duration_ms: c.duration_ns().map(ms),
            tx_bytes: c.tx_bytes(),
            rx_bytes: c.rx_bytes(),
            retrans_bytes: c.stats.bytes_retrans,
            segs_out: c.stats.segs_out,
            segs_in: c.stats.segs_in,
            retrans: c.stats.retrans,
            srtt_ms: f64::from(c.stats.srtt_us) / 1_000.0,
            min_rtt_ms: c.stats.min_rtt_us.map(|us| f64::from(us) / 1_000.0),
            closed_first: c.closed_first().map(Side::name),
            end: c.ending.name(),
            oldstate: t.old.name(),
            newstate: t.new.name(),
            netns: t.netns,
            cgroup: t.cgroup.unwrap_or(0),
            cgroup_path: service(&t.service, |s| Some(&s.path)),
            unit: service(&t.service, |s| s.unit.as_deref()),
            container_id: service(&t.service, |s| s.container.as_deref()),
            pod_uid: service(&t.service, |s| s.pod.as_deref()),
        }
    }
}

/// A socket over its state's threshold.
#[derive(Serialize)]
pub struct AlertRecord<'a> {
    /// The record's kind, first in JSON (`"type"`); None leaves the column out (CSV).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub time: Rfc3339Micros,
    pub skaddr: Hex,
    pub pid: Option<u32>,
    pub comm: Option<Name<'a>>,
    pub family: &'static str,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub laddr: IpAddr,
    pub lport: u16,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    pub raddr: IpAddr,
    pub rport: u16,
    pub state: &'static str,
    pub threshold_ms: f64,
    /// Time in the state; a lower bound when age_exact is false (the socket was there before
    /// tracing began: the time since it last sent or received).
    pub age_ms: f64,
    pub age_exact: bool,
    pub netns: u32,
    pub cgroup: u64,
    /// The socket's cgroup path and, parsed from it, its systemd unit, container and pod.
    pub cgroup_path: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

impl<'a> AlertRecord<'a> {
    pub fn new(a: &'a Alert, clock: &Clock) -> AlertRecord<'a> {
        let c = &a.conn;
        AlertRecord {
            kind: Some("alert"),
            time: Rfc3339Micros(clock.wall(a.now_ns)),
            skaddr: Hex(c.skaddr),
            pid: c.owner.map(|o| o.pid),
            comm: comm(&c.owner),
            family: family(c.is_ipv6()),
            laddr: c.local,
            lport: c.local_port,
            raddr: c.remote,
            rport: c.remote_port,
            state: c.state.name(),
            threshold_ms: a.rule.after.as_secs_f64() * 1_000.0,
            age_ms: ms(a.age.ns()),
            age_exact: matches!(a.age, Age::InState(_)),
            netns: c.netns,
            cgroup: c.cgroup.unwrap_or(0),
            cgroup_path: service(&c.service, |s| Some(&s.path)),
            unit: service(&c.service, |s| s.unit.as_deref()),
            container_id: service(&c.service, |s| s.container.as_deref()),
            pod_uid: service(&c.service, |s| s.pod.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: SystemTime) -> String {
        serde_json::to_string(&Rfc3339Micros(t)).unwrap()
    }

    #[test]
    fn hex_is_what_alternate_lower_hex_writes() {
        for n in [
            0,
            1,
            0xf,
            0x10,
            0xabc,
            u64::from(u32::MAX),
            0xffff_9fd7_e819_2000,
            u64::MAX,
        ] {
            assert_eq!(
                serde_json::to_string(&Hex(n)).unwrap(),
                format!("\"{n:#x}\"")
            );
        }
    }

    #[test]
    fn rfc3339_micros_matches_humantime_across_seconds() {
        let base = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        for step_us in [0, 1, 999_999, 1_000_000, 86_400_000_000, 3] {
            let t = base + Duration::from_micros(step_us);
            assert_eq!(
                text(t),
                format!("\"{}\"", humantime::format_rfc3339_micros(t)),
                "{step_us}"
            );
        }
        assert_eq!(text(base), "\"2023-11-14T22:13:20.123456Z\"");
    }
}
