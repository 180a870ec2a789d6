//! The BPF side from user space: configure, load and attach the program, read its ring buffer
//! and its loss counters.

use std::cell::Cell;
use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, PrintLevel, RingBuffer, RingBufferBuilder};

use nix::sched::{setns, CloneFlags};
use rustc_hash::FxHashMap;

use crate::config::{Events, Filters};
use crate::event::{self, Owner, Socket, OWNER_RECORD_SIZE, SOCKET_RECORD_SIZE};
use crate::features::{Features, TimewaitEnd, TimewaitEndProgram};
use crate::seeds::{self, Seeds};
use crate::skel::{TcpstatesSkel, TcpstatesSkelBuilder};

/// Indexes of the `lost` map (as in the BPF program).
const LOST_RING: u32 = 0;
const NESTED_HANDLED: u32 = 1;
const TW_UNTRACKED: u32 = 2;
/// Bounds of the TIME_WAIT map's size, which follows the kernel's `tcp_max_tw_buckets`.
const TIMEWAIT_ENTRIES_MIN: u32 = 65_536;
const TIMEWAIT_ENTRIES_MAX: u32 = 1 << 19;
/// How often the FIN_WAIT2 timewait sockets are checked for their peer's FIN: the delay of
/// their `FIN_WAIT2 -> TIME_WAIT` records (the time in them is the kernel's).
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Sockets per run of the sweep (SWEEP_BATCH in the BPF program).
const SWEEP_BATCH: usize = 12;
/// Bounds of the per-socket hash used where tracing programs have no socket storage.
const SOCKET_ENTRIES_MIN: u32 = 65_536;
const SOCKET_ENTRIES_MAX: u32 = 1 << 20;
/// Listeners whose children take their owner by place, in that case.
const LISTENER_ENTRIES_MIN: u32 = 4096;
/// Sockets just closed, for the RST sent after a close, in that case.
const CLOSED_ENTRIES: u32 = 4096;
/// How on_cache_free matches its third argument (as in the BPF program).
const TW_FREE_BY_CACHE: u32 = 1;
const TW_FREE_BY_NAME: u32 = 2;
/// Record kinds (as in tcpstates.h).
const EVENT_RETRANSMIT: u32 = 2;
const EVENT_RESET_SENT: u32 = 3;
const EVENT_RESET_RECEIVED: u32 = 4;
const EVENT_DROP: u32 = 5;

/// libbpf's warnings, kept to explain a failure when -v was not given.
static LIBBPF_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn keep_warning(level: PrintLevel, msg: String) {
    if level == PrintLevel::Warn {
        if let Ok(mut warnings) = LIBBPF_WARNINGS.lock() {
            warnings.push(msg.trim_end().to_string());
        }
    }
}

fn print_everything(_level: PrintLevel, msg: String) {
    eprint!("{msg}");
}

/// libbpf's first warning, usually the cause of what failed after it, to append to an error.
fn libbpf_says() -> String {
    LIBBPF_WARNINGS
        .lock()
        .ok()
        .and_then(|w| w.first().cloned())
        .map(|w| {
            format!(
                " (libbpf: {}; run with -v for details)",
                w.trim_start_matches("libbpf: ")
            )
        })
        .unwrap_or_default()
}

/// Why the kernel skipped program runs, per program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecursionMisses {
    /// State changes the program did not see: lost transitions.
    pub set_state: u64,
    /// Slab frees it did not see: possibly lost ends of TIME_WAIT.
    pub timewait: u64,
    /// Retransmits, resets and drops not seen (--events), and resets that told how a
    /// connection ended.
    pub notices: u64,
}

impl RecursionMisses {
    /// Records lost: state changes and the other events.
    pub fn lost(&self) -> u64 {
        self.set_state + self.notices
    }
}

/// Which parts of the BPF object a run needs; the others are not even loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// The tracepoint hooks that stream transitions.
    pub hooks: bool,
    /// The iterator that lists existing sockets (snapshots).
    pub socket_list: bool,
    /// That list carries each connection's RTT, retransmits and unacknowledged data (-i).
    pub socket_figures: bool,
    /// Connection figures with the transition that ends each connection (lifetimes).
    pub stats: bool,
    /// Only the transitions that end connections are wanted.
    pub final_only: bool,
    /// Events streamed besides transitions.
    pub events: Events,
}

/// The optional hooks a run loads; decided here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OptionalHooks {
    /// Sent resets also tell how connections ended.
    send_reset: bool,
    receive_reset: bool,
    retransmit: bool,
    drop: bool,
}

impl Parts {
    fn optional_hooks(self) -> OptionalHooks {
        let events = self.events;
        OptionalHooks {
            send_reset: self.hooks && (events.reset || self.stats),
            receive_reset: self.hooks && events.reset,
            retransmit: self.hooks && events.retransmit,
            drop: self.hooks && events.drop,
        }
    }
}

/// The loaded and attached program.
pub struct Tracer<'obj> {
    skel: TcpstatesSkel<'obj>,
    parts: Parts,
    /// The optional hooks' links: dropping one detaches it.
    _extra_links: Vec<libbpf_rs::Link>,
    /// Without hooks (a one-shot snapshot): the owner filters to apply here rather than in the
    /// kernel, where the owners are not known.
    owner_filters: (Option<u32>, Option<Vec<u8>>),
    /// What this kernel offers that the run would use and does not, one line each.
    missing: Vec<String>,
    /// The variants of hooks chosen for this kernel.
    features: Features,
    /// When the FIN_WAIT2 sweep last ran.
    swept: Cell<Instant>,
}

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
        // Before libbpf's printing is set: the probe's failure on old kernels is expected.
        let features = if parts.hooks {
            Features::of_running_kernel()
        } else {
            // No hook is loaded, and the socket list reads no per-socket data.
            Features {
                socket_storage: true,
                timewait_end: TimewaitEnd::ByCache,
                drop_reason: true,
                reset_without_socket: true,
            }
        };
        libbpf_rs::set_print(Some(if verbose {
            (
                PrintLevel::Debug,
                print_everything as fn(PrintLevel, String),
            )
        } else {
            (PrintLevel::Warn, keep_warning as fn(PrintLevel, String))
        }));

        let mut open = TcpstatesSkelBuilder::default()
            .open(storage)
            .map_err(|err| anyhow!("opening the BPF object failed: {err}{}", libbpf_says()))?;
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
            TimewaitEnd::ByName => rodata.tw_free_match = TW_FREE_BY_NAME,
            TimewaitEnd::ByCallSite { start, end } => {
                rodata.tw_free_site_start = start;
                rodata.tw_free_site_end = end;
            }
            TimewaitEnd::ByCache | TimewaitEnd::Unavailable(_) => {
                rodata.tw_free_match = TW_FREE_BY_CACHE
            }
        }
        rodata.notice_kinds = [
            (parts.events.retransmit, EVENT_RETRANSMIT),
            (parts.events.reset, EVENT_RESET_SENT),
            (parts.events.reset, EVENT_RESET_RECEIVED),
            (parts.events.drop, EVENT_DROP),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |kinds, (_, kind)| kinds | 1 << kind);
        open.maps
            .events
            .set_max_entries(ring_size)
            .context("sizing the ring buffer")?;
        // Entries are allocated as used, but the hash's buckets (16 bytes each) at creation.
        let timewait_slots = if parts.hooks {
            // Room for as many timewait sockets as the kernel keeps in one namespace
            // (containers have their own limits, hence the floor).
            timewait_entries(std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets").ok())
        } else {
            // Nothing is streamed and no socket enters TIME_WAIT under our watch: a smaller
            // ring and map cost less to allocate and zero.
            open.maps
                .events
                .set_max_entries(4096)
                .context("sizing the ring buffer")?;
            1
        };
        open.maps
            .tws
            .set_max_entries(timewait_slots)
            .context("sizing the TIME_WAIT map")?;
        open.maps
            .fin_wait2_tws
            .set_max_entries(timewait_slots)
            .context("sizing the map of FIN_WAIT2 timewait sockets")?;
        let (seed_slots, listener_slots) = if parts.hooks {
            seeds::map_sizes(
                std::fs::read_to_string("/proc/net/sockstat")
                    .ok()
                    .as_deref(),
            )
        } else {
            (1, 1)
        };
        open.maps
            .seeds
            .set_max_entries(seed_slots)
            .context("sizing the map of existing sockets' owners")?;
        let (socket_slots, listener_slots) = if parts.hooks && !features.socket_storage {
            // Every socket's data is in the hash: room for twice those that exist now.
            let sockets = seed_slots
                .saturating_mul(2)
                .clamp(SOCKET_ENTRIES_MIN, SOCKET_ENTRIES_MAX);
            if verbose {
                eprintln!(
                    "tcpstates: no socket storage for tracing programs on this kernel: \
                     per-socket data in a hash of {sockets} entries"
                );
            }
            (sockets, listener_slots.max(LISTENER_ENTRIES_MIN))
        } else {
            (1, listener_slots)
        };
        open.maps
            .socks_by_addr
            .set_max_entries(socket_slots)
            .context("sizing the map of sockets")?;
        open.maps
            .closed_socks
            .set_max_entries(if socket_slots > 1 { CLOSED_ENTRIES } else { 1 })
            .context("sizing the map of closed sockets")?;
        open.maps
            .listeners
            .set_max_entries(listener_slots)
            .context("sizing the map of listeners' owners")?;
        // Each program loaded costs verification time at start.
        open.progs.on_set_state.set_autoload(parts.hooks);
        open.progs.on_set_state_nested.set_autoload(parts.hooks);
        let by_site = features.timewait_end_is(TimewaitEndProgram::ByCallSite);
        let timewait_end = by_site || features.timewait_end_is(TimewaitEndProgram::ByArgument);
        open.progs
            .on_cache_free
            .set_autoload(parts.hooks && !by_site && timewait_end);
        open.progs
            .on_cache_free_by_site
            .set_autoload(parts.hooks && by_site);
        open.progs.dump_sockets.set_autoload(parts.socket_list);
        open.progs.sweep_fin_wait2.set_autoload(parts.hooks);
        let optional = parts.optional_hooks();
        open.progs.on_send_reset.set_autoload(optional.send_reset);
        open.progs
            .on_receive_reset
            .set_autoload(optional.receive_reset);
        open.progs.on_retransmit.set_autoload(optional.retransmit);
        open.progs
            .on_drop
            .set_autoload(optional.drop && features.drop_reason);
        open.progs
            .on_drop_without_reason
            .set_autoload(optional.drop && !features.drop_reason);

        let mut skel = open.load().map_err(|err| {
            anyhow!(
                "loading the BPF program into the kernel failed: {err}{}{}",
                libbpf_says(),
                memlock_hint(&err)
            )
        })?;

        for (map, ports) in [
            (&skel.maps.lports, &filters.local_ports),
            (&skel.maps.rports, &filters.remote_ports),
        ] {
            for port in ports {
                map.update(&port.to_ne_bytes(), &[1], MapFlags::ANY)
                    .context("setting the port filter")?;
            }
        }

        let mut extra_links = Vec::new();
        if parts.hooks {
            // First: the kernel runs a tracepoint's programs in the order they were attached,
            // and on_set_state_nested must come after on_set_state on every change.
            let set_state = skel
                .progs
                .on_set_state
                .attach()
                .map_err(attach_failed("inet_sock_set_state"))?;
            let cache_free = if !timewait_end {
                None
            } else if by_site {
                let link = skel.progs.on_cache_free_by_site.attach();
                Some(link.map_err(attach_failed("kmem_cache_free"))?)
            } else {
                let link = skel.progs.on_cache_free.attach();
                Some(link.map_err(attach_failed("kmem_cache_free"))?)
            };
            let set_state_nested = skel
                .progs
                .on_set_state_nested
                .attach()
                .map_err(attach_failed("inet_sock_set_state"))?;
            skel.links.on_set_state = Some(set_state);
            skel.links.on_set_state_nested = Some(set_state_nested);
            if by_site {
                skel.links.on_cache_free_by_site = cache_free;
            } else {
                skel.links.on_cache_free = cache_free;
            }
            let progs = &skel.progs;
            let wanted = [
                (optional.send_reset, &progs.on_send_reset, "tcp_send_reset"),
                (
                    optional.receive_reset,
                    &progs.on_receive_reset,
                    "tcp_receive_reset",
                ),
                (
                    optional.retransmit,
                    &progs.on_retransmit,
                    "tcp_retransmit_skb",
                ),
                (
                    optional.drop && features.drop_reason,
                    &progs.on_drop,
                    "kfree_skb",
                ),
                (
                    optional.drop && !features.drop_reason,
                    &progs.on_drop_without_reason,
                    "kfree_skb",
                ),
            ];
            let mut links = Vec::new();
            for (on, prog, hook) in wanted {
                if on {
                    links.push(prog.attach().map_err(attach_failed(hook))?);
                }
            }
            extra_links = links;
        }
        let tracer = Tracer {
            skel,
            parts,
            _extra_links: extra_links,
            owner_filters: (filters.pid, filters.comm.clone()),
            missing: features.missing(parts.events.drop, parts.events.reset),
            features,
            swept: Cell::new(Instant::now()),
        };
        if tracer.parts.hooks {
            // After attaching, so that no socket opened in between is missed.
            tracer.seed_owners()?;
        }
        Ok(tracer)
    }

    /// Every SWEEP_INTERVAL (or now, if `now`): reports the FIN_WAIT2 timewait sockets that
    /// moved to TIME_WAIT since the last run, into the ring buffer. No hook sees that move.
    pub fn sweep_fin_wait2(&self, now: bool) -> Result<()> {
        if !self.parts.hooks || (!now && self.swept.get().elapsed() < SWEEP_INTERVAL) {
            return Ok(());
        }
        self.swept.set(Instant::now());
        let sockets: Vec<Vec<u8>> = self.skel.maps.fin_wait2_tws.keys().collect();
        // With no socket, one run all the same: it measures the kernel's tick rate.
        let none: [Vec<u8>; 0] = [];
        let batches = sockets.chunks(SWEEP_BATCH);
        for batch in batches.chain((sockets.is_empty()).then_some(&none[..])) {
            // The program's arguments: the sockets, then zeros.
            let mut args = [0u8; SWEEP_BATCH * 8];
            for (slot, key) in args.chunks_mut(8).zip(batch) {
                slot.copy_from_slice(key);
            }
            let input = libbpf_rs::ProgramInput {
                context_in: Some(&mut args),
                ..Default::default()
            };
            self.skel
                .progs
                .sweep_fin_wait2
                .test_run(input)
                .map_err(|err| anyhow!("running the FIN_WAIT2 sweep failed: {err}"))?;
        }
        Ok(())
    }

    /// Finds the owners of the sockets that exist now and writes them where the hooks look
    /// for the owner of a socket they did not see being opened.
    fn seed_owners(&self) -> Result<()> {
        let (_link, mut iter) = self.start_owner_iter()?;
        let mut records = Vec::new();
        read_records(&mut iter, OWNER_RECORD_SIZE, OWNERS_READ, |bytes| {
            records.extend(
                bytes
                    .chunks_exact(OWNER_RECORD_SIZE)
                    .filter_map(event::decode_owner_record),
            );
            Ok(())
        })?;
        let found = Seeds::from_records(records);
        let maps = &self.skel.maps;
        let sockets = seeds::write_map(&maps.seeds, &found.sockets, &found.owners)?;
        let listeners = seeds::write_map(&maps.listeners, &found.places, &found.listeners)?;
        let unseeded = found.sockets.len() - sockets + found.places.len() - listeners;
        if unseeded > 0 {
            eprintln!(
                "tcpstates: the owners of {} that existed at start are unknown (map full)",
                crate::plural::counted(unseeded as u64, "socket")
            );
        }
        Ok(())
    }

    /// The task_file iterator that finds the owners of existing sockets: with hooks it writes
    /// them into socket storage, without it returns them as records. Reading the iterator runs
    /// it; the link must outlive the reading.
    fn start_owner_iter(&self) -> Result<(libbpf_rs::Link, libbpf_rs::Iter)> {
        let link = self.skel.progs.seed_owners.attach().map_err(|err| {
            anyhow!(
                "starting the BPF task_file iterator failed: {err}{}",
                libbpf_says()
            )
        })?;
        let iter = libbpf_rs::Iter::new(&link).context("starting the BPF task_file iterator")?;
        Ok((link, iter))
    }

    /// Hands `each` every TCP socket that exists now, read by the iter/tcp program in the
    /// network namespace `netns` (an open namespace file), or in the caller's own when None.
    /// `each` may run on another thread.
    pub fn dump_sockets(
        &self,
        netns: Option<&File>,
        mut each: impl FnMut(Socket) + Send,
    ) -> Result<()> {
        let link = self.skel.progs.dump_sockets.attach().map_err(|err| {
            anyhow!(
                "starting the BPF tcp iterator failed: {err}{}",
                libbpf_says()
            )
        })?;
        // The iterator walks the namespace of the thread that creates it.
        let mut iter = match netns {
            None => libbpf_rs::Iter::new(&link),
            Some(target) => {
                let own = File::open("/proc/thread-self/ns/net")
                    .context("opening this thread's network namespace")?;
                setns(target.as_fd(), CloneFlags::CLONE_NEWNET).context(
                    "entering the network namespace to list its sockets (needs CAP_SYS_ADMIN)",
                )?;
                let iter = libbpf_rs::Iter::new(&link);
                setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
                    .context("returning to the tool's own network namespace")?;
                iter
            }
        }
        .context("starting the BPF tcp iterator")?;
        if self.parts.hooks {
            return read_sockets(&mut iter, |batch| batch.into_iter().for_each(&mut each));
        }
        // Without hooks the owners come from a walk of every task's files, as `ss -p` does it.
        // The two walks are independent, so they run at the same time; the task_file walk is
        // the shorter, and its thread then joins owners to the sockets read meanwhile and hands
        // them on, while the tcp walk goes on.
        let (_owner_link, mut owner_iter) = self.start_owner_iter()?;
        let (pid, comm) = &self.owner_filters;
        let wanted = |s: &Socket| {
            pid.is_none_or(|p| s.owner.is_some_and(|o| o.pid == p))
                && comm
                    .as_deref()
                    .is_none_or(|c| s.owner.is_some_and(|o| o.comm.as_bytes() == c))
        };
        let (batches, read) = std::sync::mpsc::channel::<Vec<Socket>>();
        std::thread::scope(|scope| {
            let joiner = scope.spawn(move || -> Result<()> {
                let owners = read_owners(&mut owner_iter)?;
                for batch in read {
                    for mut socket in batch {
                        // A TIME_WAIT socket has no file, so no owner of its own.
                        if socket.owner.is_none() && socket.twaddr.is_none() {
                            socket.owner = owners.get(&socket.skaddr).copied();
                        }
                        if wanted(&socket) {
                            each(socket);
                        }
                    }
                }
                Ok(())
            });
            // A send fails only once the joiner has stopped on an error, which join returns.
            let sockets = read_sockets(&mut iter, |batch| drop(batches.send(batch)));
            drop(batches);
            let joined = joiner
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the task_file iterator's reader panicked")));
            sockets.and(joined)
        })
    }

    /// A ring buffer reader that hands every record to `callback`.
    pub fn ring_buffer<'a, F>(&'a self, callback: F) -> Result<RingBuffer<'a>>
    where
        F: FnMut(&[u8]) -> i32 + 'a,
    {
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&self.skel.maps.events, callback)
            .context("opening the ring buffer")?;
        builder.build().context("opening the ring buffer")
    }

    /// Records the kernel could not reserve in the ring buffer since load, over all CPUs.
    pub fn ring_buffer_drops(&self) -> Result<u64> {
        self.counter(LOST_RING)
    }

    /// What the run would use that this kernel does not offer, one line each for stderr.
    pub fn missing_features(&self) -> &[String] {
        &self.missing
    }

    /// Timewait sockets the full TIME_WAIT map had no room for: their ends are not reported.
    pub fn untracked_timewaits(&self) -> Result<u64> {
        self.counter(TW_UNTRACKED)
    }

    /// A per-CPU counter of the `lost` map, summed over CPUs.
    fn counter(&self, index: u32) -> Result<u64> {
        let per_cpu = self
            .skel
            .maps
            .lost
            .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .context("reading the lost-event counters")?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_ne_bytes)
            .sum())
    }

    /// Runs the kernel skipped because the program was already running on that CPU. Every state
    /// change runs on_set_state or is skipped by it; on_set_state_nested takes the ones
    /// on_set_state did not start on, so the rest are the loss. (When on_set_state_nested is the
    /// one skipped, on_set_state ran for that change: no loss.)
    pub fn recursion_misses(&self) -> Result<RecursionMisses> {
        if !self.parts.hooks {
            // Not loaded: nothing was run, so nothing was skipped.
            return Ok(RecursionMisses::default());
        }
        let progs = &self.skel.progs;
        let skipped = prog_recursion_misses(progs.on_set_state.as_fd());
        let taken = self.counter(NESTED_HANDLED)?;
        let misses_of = |names: &[&str]| -> u64 {
            self.loaded_programs()
                .into_iter()
                .filter(|(name, _)| names.contains(name))
                .map(|(_, fd)| prog_recursion_misses(fd))
                .sum()
        };
        Ok(RecursionMisses {
            set_state: skipped.saturating_sub(taken),
            timewait: misses_of(&["on_cache_free", "on_cache_free_by_site"]),
            notices: misses_of(&[
                "on_send_reset",
                "on_receive_reset",
                "on_retransmit",
                "on_drop",
                "on_drop_without_reason",
            ]),
        })
    }
}

impl Tracer<'_> {
    /// The programs loaded for this run, by name.
    fn loaded_programs(&self) -> Vec<(&'static str, std::os::fd::BorrowedFd<'_>)> {
        let p = &self.skel.progs;
        let (parts, optional) = (self.parts, self.parts.optional_hooks());
        [
            (parts.hooks, "on_set_state", p.on_set_state.as_fd()),
            (
                parts.hooks,
                "on_set_state_nested",
                p.on_set_state_nested.as_fd(),
            ),
            (
                parts.hooks
                    && self
                        .features
                        .timewait_end_is(TimewaitEndProgram::ByArgument),
                "on_cache_free",
                p.on_cache_free.as_fd(),
            ),
            (
                parts.hooks
                    && self
                        .features
                        .timewait_end_is(TimewaitEndProgram::ByCallSite),
                "on_cache_free_by_site",
                p.on_cache_free_by_site.as_fd(),
            ),
            (
                optional.send_reset,
                "on_send_reset",
                p.on_send_reset.as_fd(),
            ),
            (
                optional.receive_reset,
                "on_receive_reset",
                p.on_receive_reset.as_fd(),
            ),
            (
                optional.retransmit,
                "on_retransmit",
                p.on_retransmit.as_fd(),
            ),
            (
                optional.drop && self.features.drop_reason,
                "on_drop",
                p.on_drop.as_fd(),
            ),
            (
                optional.drop && !self.features.drop_reason,
                "on_drop_without_reason",
                p.on_drop_without_reason.as_fd(),
            ),
        ]
        .into_iter()
        .filter(|(loaded, ..)| *loaded)
        .map(|(_, name, fd)| (name, fd))
        .collect()
    }

    /// Each loaded hook's kernel run time (ns) and run count since load; zeros unless the
    /// kernel keeps these statistics (see enable_run_stats).
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.loaded_programs()
            .into_iter()
            .map(|(name, fd)| {
                let info = prog_info(fd).unwrap_or_default();
                (name.to_string(), info.run_time_ns, info.run_cnt)
            })
            .collect()
    }
}

/// Makes the kernel count BPF run time and runs while the returned descriptor is open
/// (BPF_ENABLE_STATS, as `sysctl kernel.bpf_stats_enabled=1` but undone when we exit).
pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain syscall wrapper; it returns a new descriptor or a negative error.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd))
            .context("enabling BPF run-time statistics (needs CAP_SYS_ADMIN)");
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, which libbpf raises only where it
/// may (CAP_SYS_RESOURCE): a map refused for permission is most likely that.
fn memlock_hint(err: &libbpf_rs::Error) -> &'static str {
    let map_refused = LIBBPF_WARNINGS.lock().is_ok_and(|w| {
        w.iter()
            .any(|l| l.contains("bpf_create_map") || l.contains("map '"))
    });
    if err.kind() == libbpf_rs::ErrorKind::PermissionDenied && map_refused {
        "; this kernel counts BPF maps against the locked-memory limit: raise it (`ulimit -l \
         unlimited`, systemd LimitMEMLOCK=infinity) or run as root"
    } else {
        ""
    }
}

fn attach_failed(hook: &'static str) -> impl Fn(libbpf_rs::Error) -> anyhow::Error {
    move |err| {
        anyhow!(
            "attaching to the BTF tracepoint {hook} failed: {err}{}",
            libbpf_says()
        )
    }
}

fn prog_info(fd: std::os::fd::BorrowedFd<'_>) -> Option<libbpf_rs::libbpf_sys::bpf_prog_info> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: `info` is a valid bpf_prog_info of `len` bytes; the kernel fills at most `len` bytes.
    let ret = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    (ret == 0).then_some(info)
}

const OWNERS_READ: &str = "reading the owners of existing sockets";

/// Runs a BPF iterator to its end, handing the `size`-byte records it writes to `each` as they
/// come, as many whole records at a time as one read gave: the records of 100,000 sockets need
/// not be held at once.
fn read_records(
    iter: &mut libbpf_rs::Iter,
    size: usize,
    what: &'static str,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0; 64 * 1024];
    let mut filled = 0;
    loop {
        let n = match iter.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context(what),
        };
        filled += n;
        let whole = filled - filled % size;
        each(&buf[..whole])?;
        // A read may end inside a record: keep its start for the next.
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    if filled != 0 {
        anyhow::bail!("{what}: the iterator ended inside a record");
    }
    Ok(())
}

/// Runs the tcp iterator and hands on the sockets it wrote, a batch per read.
fn read_sockets(iter: &mut libbpf_rs::Iter, mut each: impl FnMut(Vec<Socket>)) -> Result<()> {
    read_records(
        iter,
        SOCKET_RECORD_SIZE,
        "reading the sockets from the BPF tcp iterator",
        |records| {
            let batch = records
                .chunks_exact(SOCKET_RECORD_SIZE)
                .map(event::decode_socket)
                .collect::<Result<_>>()?;
            each(batch);
            Ok(())
        },
    )
}

/// Runs the task_file iterator in records mode and returns the owners it found, by socket.
fn read_owners(iter: &mut libbpf_rs::Iter) -> Result<FxHashMap<u64, Owner>> {
    let mut owners = FxHashMap::default();
    read_records(iter, OWNER_RECORD_SIZE, OWNERS_READ, |records| {
        let decoded = records
            .chunks_exact(OWNER_RECORD_SIZE)
            .filter_map(event::decode_owner);
        for (skaddr, owner) in decoded {
            // A socket several processes hold goes to the first found.
            owners.entry(skaddr).or_insert(owner);
        }
        Ok(())
    })?;
    Ok(owners)
}

fn prog_recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    prog_info(fd).map_or(0, |info| info.recursion_misses)
}

/// Entries of the TIME_WAIT map for the kernel's `tcp_max_tw_buckets` (its text, if readable).
fn timewait_entries(max_tw_buckets: Option<String>) -> u32 {
    max_tw_buckets
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(TIMEWAIT_ENTRIES_MIN, |n| {
            n.clamp(
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
        assert_eq!(timewait_entries(Some("131072\n".into())), 131_072);
        assert_eq!(timewait_entries(Some("4096\n".into())), 65_536);
        assert_eq!(timewait_entries(Some("8000000\n".into())), 524_288);
        assert_eq!(timewait_entries(Some("garbage".into())), 65_536);
        assert_eq!(timewait_entries(None), 65_536);
    }
}
