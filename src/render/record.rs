//! The stable field set of a transition, shared by the JSON and CSV formats.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::clock::Clock;
use crate::event::Transition;
use crate::sanitize;

/// RFC 3339 UTC with microseconds, e.g. `2023-11-14T22:13:20.123456Z`.
pub struct Rfc3339Micros(pub SystemTime);

impl Serialize for Rfc3339Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(self.0))
    }
}

/// A kernel address as `0x` and lowercase hex.
pub struct Hex(pub u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", self.0))
    }
}

/// A transition's fields; keys and meanings never change (new keys may be added).
#[derive(Serialize)]
pub struct TransitionRecord<'a> {
    pub time: Rfc3339Micros,
    pub skaddr: Hex,
    pub pid: Option<u32>,
    pub comm: Option<Cow<'a, str>>,
    pub family: &'static str,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub oldstate: &'static str,
    pub newstate: &'static str,
    pub ms: Option<f64>,
    pub netns: u32,
    /// 0 when unknown (no cgroup has id 0).
    pub cgroup: u64,
}

impl<'a> TransitionRecord<'a> {
    pub fn new(t: &'a Transition, clock: &Clock) -> TransitionRecord<'a> {
        TransitionRecord {
            time: Rfc3339Micros(clock.wall(t.ts_ns)),
            skaddr: Hex(t.skaddr),
            pid: t.owner.map(|o| o.pid),
            comm: t
                .owner
                .as_ref()
                .map(|o| sanitize::escape(o.comm.as_bytes())),
            family: if t.is_ipv6() { "ipv6" } else { "ipv4" },
            laddr: t.local,
            lport: t.local_port,
            raddr: t.remote,
            rport: t.remote_port,
            oldstate: t.old.name(),
            newstate: t.new.name(),
            ms: t.ms_in_old_state(),
            netns: t.netns,
            cgroup: t.cgroup.unwrap_or(0),
        }
    }
}
