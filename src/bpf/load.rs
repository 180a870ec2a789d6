//! Loading: the knobs and map sizes set before load, the programs the run needs (from the
//! table), the port filters, the hooks attached in order, and the owners of existing sockets.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};

use super::libbpf_log::{self, attach_failed, libbpf_says, memlock_hint};
use super::programs::{self, Plan, Use};
use super::{Parts, Tracer};
use crate::config::Filters;
use crate::features::{Features, TimewaitEnd};
use crate::seeds;
use crate::skel::types::{record_kind, tw_free_match};
use crate::skel::{OpenTcpstatesSkel, TcpstatesSkelBuilder};

/// Bounds of the TIME_WAIT map's size, which follows the kernel's `tcp_max_tw_buckets`.
const TIMEWAIT_ENTRIES_MIN: u32 = 65_536;
const TIMEWAIT_ENTRIES_MAX: u32 = 1 << 19;
/// The orphans in FIN_WAIT2 the sweep watches: every sweep reads all of the map's buckets.
const FIN_WAIT2_ENTRIES: u32 = 16_384;
/// Bounds of the per-socket hash used where tracing programs have no socket storage.
const SOCKET_ENTRIES_MIN: u32 = 65_536;
const SOCKET_ENTRIES_MAX: u32 = 1 << 20;
/// Listeners whose children take their owner by place, in that case.
const LISTENER_ENTRIES_MIN: u32 = 4096;
/// Sockets just closed, for the RST sent after a close, in that case.
const CLOSED_ENTRIES: u32 = 4096;
/// The ring of a run without hooks, which streams nothing.
const IDLE_RING_SIZE: u32 = 4096;

impl<'obj> Tracer<'obj> {
    /// Sets the filters, loads the parts a run needs into the kernel, attaches the hooks and
    /// learns the owners of existing sockets.
    pub fn load(
        storage: &'obj mut MaybeUninit<OpenObject>,
        filters: &Filters,
        ring_size: u32,
        parts: Parts,
        verbose: bool,
    ) -> Result<Tracer<'obj>> {
        let mut stages = Stages::default();
        // Before libbpf's printing is set: the probe's failure on old kernels is expected.
        let features = if parts.hooks {
            Features::of_running_kernel()
        } else {
            // No hook is loaded, and the socket list reads no per-socket data.
            Features::all()
        };
        stages.done("kernel features");
        libbpf_log::route(verbose);
        let plan = Plan {
            parts,
            features: &features,
        };
        let mut open = TcpstatesSkelBuilder::default()
            .open(storage)
            .map_err(|err| anyhow!("opening the BPF object failed: {err}{}", libbpf_says()))?;
        set_knobs(&mut open, filters, ring_size, plan)?;
        let mut warnings = features.missing(parts.events.drop, parts.events.reset);
        warnings.extend(size_maps(&mut open, plan, ring_size, verbose)?);
        // Each program loaded costs verification time at start.
        for mut prog in open.open_object_mut().progs_mut() {
            let name = prog.name().to_string_lossy();
            let wanted = programs::by_name(&name).is_some_and(|p| (p.wanted)(&plan));
            prog.set_autoload(wanted);
        }
        stages.done("open");
        let skel = open.load().map_err(|err| {
            anyhow!(
                "loading the BPF program into the kernel failed: {err}{}{}",
                libbpf_says(),
                memlock_hint(&err)
            )
        })?;
        stages.done("load and verify");
        set_port_filters(&skel, filters)?;
        let mut tracer = Tracer {
            links: Vec::new(),
            skel,
            parts,
            features,
            owner_filters: (filters.pid, filters.comm.clone()),
            warnings,
            swept: Cell::new(Instant::now()),
        };
        tracer.attach_hooks()?;
        stages.done("attach");
        if parts.hooks {
            // After attaching, so that no socket opened in between is missed.
            let unseeded = tracer.seed_owners()?;
            if unseeded > 0 {
                tracer.warnings.push(format!(
                    "tcpstates: the owners of {} that existed at start are unknown (map full)",
                    crate::plural::counted(unseeded as u64, "socket")
                ));
            }
            stages.done("owners of existing sockets");
        }
        if verbose {
            tracer.warnings.push(stages.describe());
        }
        Ok(tracer)
    }

    /// Attaches the loaded hooks in the table's order.
    fn attach_hooks(&mut self) -> Result<()> {
        let mut links = Vec::new();
        for (entry, prog) in self.loaded_programs() {
            if let Use::Hook(hook) = entry.run {
                links.push(prog.attach().map_err(|e| attach_failed(hook, e))?);
            }
        }
        self.links = links;
        Ok(())
    }
}

/// Where loading spent its time, for -v.
struct Stages {
    last: Instant,
    start: Instant,
    took: Vec<(&'static str, std::time::Duration)>,
}

impl Default for Stages {
    fn default() -> Stages {
        let now = Instant::now();
        Stages {
            last: now,
            start: now,
            took: Vec::new(),
        }
    }
}

impl Stages {
    fn done(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.took.push((stage, now - self.last));
        self.last = now;
    }

    fn describe(&self) -> String {
        let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let parts: Vec<String> = self
            .took
            .iter()
            .map(|(stage, took)| format!("{stage} {}", ms(*took)))
            .collect();
        format!(
            "tcpstates: loaded in {}: {}",
            ms(self.last - self.start),
            parts.join(", ")
        )
    }
}

/// The read-only knobs: filters, wakeups, what the records carry, and this kernel's variants.
fn set_knobs(
    open: &mut OpenTcpstatesSkel<'_>,
    filters: &Filters,
    ring_size: u32,
    plan: Plan<'_>,
) -> Result<()> {
    let (parts, features) = (plan.parts, plan.features);
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("the BPF object has no read-only data")?;
    rodata.filter_family = filters.family.map_or(0, |f| f.af());
    rodata.filter_lports = !filters.local_ports.is_empty();
    rodata.filter_rports = !filters.remote_ports.is_empty();
    rodata.filter_pid = filters.pid.unwrap_or(0);
    if let Some(comm) = &filters.comm {
        rodata.filter_comm_on = true;
        for (dst, src) in rodata.filter_comm.iter_mut().zip(comm) {
            *dst = *src as i8;
        }
    }
    rodata.filter_cgroup = filters.cgroup.unwrap_or(0);
    rodata.filter_netns = filters.netns.unwrap_or(0);
    rodata.filter_states = filters.state_mask;
    // Wake the reader early only when the ring is an eighth full; otherwise it polls on a timer.
    rodata.wakeup_bytes = u64::from(ring_size / 8);
    rodata.with_stats = parts.stats;
    rodata.socket_figures = parts.socket_figures;
    rodata.one_shot = !parts.hooks;
    rodata.final_only = parts.final_only;
    rodata.socket_storage = features.socket_storage;
    match features.timewait_end {
        TimewaitEnd::ByName => rodata.tw_free_match = tw_free_match::TW_FREE_BY_NAME.0,
        TimewaitEnd::ByCallSite { start, end } => {
            rodata.tw_free_site_start = start;
            rodata.tw_free_site_end = end;
        }
        TimewaitEnd::ByCache | TimewaitEnd::Unavailable(_) => {
            rodata.tw_free_match = tw_free_match::TW_FREE_BY_CACHE.0
        }
    }
    let events = parts.events;
    rodata.notice_kinds = [
        (events.retransmit, record_kind::EVENT_RETRANSMIT),
        (events.reset, record_kind::EVENT_RESET_SENT),
        (events.reset, record_kind::EVENT_RESET_RECEIVED),
        (events.drop, record_kind::EVENT_DROP),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |kinds, (_, kind)| kinds | 1 << kind.0);
    Ok(())
}

/// Sizes the maps for this run and kernel; returns a note for -v.
fn size_maps(
    open: &mut OpenTcpstatesSkel<'_>,
    plan: Plan<'_>,
    ring_size: u32,
    verbose: bool,
) -> Result<Option<String>> {
    let hooks = plan.parts.hooks;
    let maps = &mut open.maps;
    // Nothing is streamed without hooks, and no socket enters TIME_WAIT under our watch: a
    // smaller ring and map cost less to allocate and zero.
    let ring = if hooks { ring_size } else { IDLE_RING_SIZE };
    maps.events
        .set_max_entries(ring)
        .context("sizing the ring buffer")?;
    // Entries are allocated as used, but the hash's buckets (16 bytes each) at creation.
    let timewait_slots = if hooks {
        // Room for as many timewait sockets as the kernel keeps in one namespace
        // (containers have their own limits, hence the floor).
        timewait_entries(std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets").ok())
    } else {
        1
    };
    maps.tws
        .set_max_entries(timewait_slots)
        .context("sizing the TIME_WAIT map")?;
    maps.fin_wait2_tws
        .set_max_entries(if hooks { FIN_WAIT2_ENTRIES } else { 1 })
        .context("sizing the map of FIN_WAIT2 timewait sockets")?;
    let (seed_slots, listener_slots) = if hooks {
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok();
        seeds::map_sizes(sockstat.as_deref())
    } else {
        (1, 1)
    };
    maps.seeds
        .set_max_entries(seed_slots)
        .context("sizing the map of existing sockets' owners")?;
    let mut note = None;
    let (socket_slots, listener_slots) = if hooks && !plan.features.socket_storage {
        // Every socket's data is in the hash: room for twice those that exist now.
        let sockets = seed_slots
            .saturating_mul(2)
            .clamp(SOCKET_ENTRIES_MIN, SOCKET_ENTRIES_MAX);
        note = verbose.then(|| {
            format!(
                "tcpstates: no socket storage for tracing programs on this kernel: per-socket \
                 data in a hash of {sockets} entries"
            )
        });
        (sockets, listener_slots.max(LISTENER_ENTRIES_MIN))
    } else {
        (1, listener_slots)
    };
    maps.socks_by_addr
        .set_max_entries(socket_slots)
        .context("sizing the map of sockets")?;
    maps.closed_socks
        .set_max_entries(if socket_slots > 1 { CLOSED_ENTRIES } else { 1 })
        .context("sizing the map of closed sockets")?;
    maps.listeners
        .set_max_entries(listener_slots)
        .context("sizing the map of listeners' owners")?;
    // An LRU hash is allocated whole at creation; only the hooks note forks.
    if !hooks {
        maps.forked
            .set_max_entries(1)
            .context("sizing the map of forks")?;
    }
    Ok(note)
}

fn set_port_filters(skel: &crate::skel::TcpstatesSkel<'_>, filters: &Filters) -> Result<()> {
    for (map, ports) in [
        (&skel.maps.lports, &filters.local_ports),
        (&skel.maps.rports, &filters.remote_ports),
    ] {
        for port in ports {
            map.update(&port.to_ne_bytes(), &[1], MapFlags::ANY)
                .context("setting the port filter")?;
        }
    }
    Ok(())
}

/// Entries of the TIME_WAIT map for the kernel's `tcp_max_tw_buckets` (its text, if readable).
/// An eighth more than the limit: a namespace at the limit frees its oldest timewait socket
/// only after it stopped counting it, so the kernel holds one or more past the limit for a
/// moment, and the map must not refuse the newest.
fn timewait_entries(max_tw_buckets: Option<String>) -> u32 {
    max_tw_buckets
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(TIMEWAIT_ENTRIES_MIN, |n| {
            (n + n / 8).clamp(
                u64::from(TIMEWAIT_ENTRIES_MIN),
                u64::from(TIMEWAIT_ENTRIES_MAX),
            ) as u32
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timewait_map_follows_the_kernel_limit_within_bounds() {
        assert_eq!(timewait_entries(Some("131072\n".into())), 147_456);
        assert_eq!(timewait_entries(Some("4096\n".into())), 65_536);
        assert_eq!(timewait_entries(Some("8000000\n".into())), 524_288);
        assert_eq!(timewait_entries(Some("garbage".into())), 65_536);
        assert_eq!(timewait_entries(None), 65_536);
    }
}
