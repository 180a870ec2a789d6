//! One run, whatever the mode: the shared setup (checks, signals, exporter, namespace, which
//! parts of the BPF object to load), the loop that pumps records into the connection table,
//! the lifetimes and the metrics and then into the mode's sink, loss accounting, and the final
//! counts. The modes (live.rs, snapshots.rs) are sinks and know nothing of each other.

use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::alerts::{Alert, Alerts};
use crate::bpf::{Parts, Tracer};
use crate::clock::Clock;
use crate::config::{Config, Filters, Mode};
use crate::event::{Inbox, Record};
use crate::exporter::{Endpoint, Exporter};
use crate::lifetimes::{Connection, Lifetimes};
use crate::losses::{Losses, LostReason};
use crate::namespaces::{self, Namespace};
use crate::services::Services;
use crate::table::ConnTable;
use crate::{preflight, priority, resolve, signals};

/// How long a poll waits for a wakeup; the BPF side wakes us early only when the ring fills or
/// (at most every 50 ms) for an event into an empty ring. Short enough that events are never
/// shown late, long enough to cost nothing when idle.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Records read from the ring between two flushes of the sink: memory stays bounded however
/// much the kernel has queued.
const CHUNK: usize = 1024;
/// How often the kernel's loss counters are read (and new losses reported).
const LOSS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// What a run found; the exit status depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub alerts: u64,
}

/// What a mode does with what the session pumps: the live stream, or the snapshots.
pub trait Sink {
    /// Before the first round, with everything loaded and seeded.
    fn begin(&mut self, session: &Session<'_>) -> Result<()>;
    /// Is the sink's next piece of work (a snapshot) due at `now`? The session then reads the
    /// kernel's latest first.
    fn due(&self, _now: Instant) -> bool {
        false
    }
    /// The latest the loop may sleep until, for the sink's next piece of work.
    fn wake_by(&self) -> Option<Instant> {
        None
    }
    /// Alerts are checked when the sink's work is due, not on their own interval.
    fn alerts_on_ticks(&self) -> bool {
        false
    }
    /// A record, after the table, the lifetimes and the metrics have taken it.
    fn record(&mut self, record: &Record);
    /// A connection that ended (when lifetimes are kept), after the metrics took it.
    fn connection(&mut self, connection: &Connection);
    /// `count` events lost since the last call, for `reason`.
    fn lost(&mut self, count: u64, reason: LostReason);
    /// Sockets newly over an --alert threshold.
    fn alerts(&mut self, alerts: Vec<Alert>);
    /// The end of a round, with everything current; `due` as `due()` said before it. Returns
    /// true when the sink is done (its --count reached).
    fn round(&mut self, session: &mut Session<'_>, due: bool) -> Result<bool>;
    /// Writes out what it buffered.
    fn flush(&mut self) -> Result<()>;
    /// It wants no more records (its --count reached).
    fn full(&self) -> bool;
    /// A warning of the run (events lost); a full-screen sink shows it itself.
    fn warning(&mut self, line: &str) {
        eprintln!("{line}");
    }
    /// After the last round, before the summary.
    fn end(&mut self) {}
    /// The final line for stderr.
    fn summary(&self, totals: &Totals) -> String;
}

/// What the whole run saw, for the sink's summary.
pub struct Totals {
    /// Losses in words (`0 lost`, ...).
    pub lost: String,
    /// Alerts fired, if any rule was given.
    pub alerts: Option<u64>,
    /// Records that were not understood.
    pub undecodable: u64,
    /// Sockets in the table at the end.
    pub tracked: usize,
}

/// The state of a run that the sinks may read.
pub struct Session<'t> {
    pub tracer: &'t Tracer<'t>,
    /// The live connection table, where the run keeps one (snapshots, alerts, metrics).
    pub table: Option<ConnTable>,
    /// The network namespaces the table lists: every one (by default) or the --netns one.
    pub listed: Option<Listed>,
    pub clock: Clock,
    /// Cgroup ids to services, containers and pods.
    pub services: Services,
    lifetimes: Option<Lifetimes>,
    endpoint: Option<Endpoint>,
    alerts: Alerts,
    losses: Losses,
}

/// The network namespaces whose sockets seed the table.
pub struct Listed {
    pub namespaces: Vec<Namespace>,
    /// Every namespace on the host (new ones join through the events), not only --netns.
    pub every: bool,
}

impl Listed {
    /// Those of --netns, or every one.
    fn for_config(config: &Config) -> Result<Listed> {
        if config.filters.netns.is_none() {
            return Ok(Listed {
                namespaces: namespaces::all()?,
                every: true,
            });
        }
        let (inode, file) =
            resolve::netns_to_list(config.filters.netns, config.netns_path.as_deref())?;
        let name = config
            .netns_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        Ok(Listed {
            namespaces: vec![Namespace { inode, file, name }],
            every: false,
        })
    }

    /// Hands `each` every TCP socket of the listed namespaces, as the iterator reads them.
    pub fn dump(
        &self,
        tracer: &Tracer<'_>,
        each: impl FnMut(crate::event::Socket) + Send,
    ) -> Result<()> {
        let files: Vec<_> = self.namespaces.iter().map(|ns| ns.file.as_ref()).collect();
        tracer.dump_sockets(&files, each)
    }

    /// About how many TCP sockets they hold now (see namespaces::tcp_sockets).
    pub fn sockets_now(&self) -> usize {
        let sockets = namespaces::tcp_sockets(&self.namespaces);
        // An estimate: more than a few million would be a misread, not a table to make.
        usize::try_from(sockets).unwrap_or(0).min(4 << 20)
    }

    /// How the start line names them.
    pub fn describe(&self) -> String {
        match (self.every, self.namespaces.as_slice()) {
            (false, [ns]) => format!("network namespace {}", ns.inode),
            _ => format!("every network namespace ({} now)", self.namespaces.len()),
        }
    }
}

/// The decisions made from the config before anything loads.
struct Setup {
    listener: Option<TcpListener>,
    filters: Filters,
    listed: Option<Listed>,
    parts: Parts,
    /// The table keeps only these states (0: all).
    table_states: u32,
    lifetimes: bool,
}

impl Setup {
    fn for_config(config: &Config, alerts: &Alerts) -> Result<Setup> {
        let snapshot = matches!(config.mode, Mode::Snapshot { .. } | Mode::Top { .. });
        let socket_figures = matches!(config.mode, Mode::Snapshot { info: true, .. });
        // Fail on a bad address or a port in use before anything is loaded.
        let listener = config.metrics.map(Exporter::bind).transpose()?;
        let metrics = listener.is_some();
        // Snapshots, gauges and alerts read a table seeded from the sockets that exist.
        let keeps_table = snapshot || metrics || !alerts.is_empty();
        let listed = keeps_table
            .then(|| Listed::for_config(config))
            .transpose()?;
        let filters = config.filters.clone();
        // A single snapshot is the iterators' view alone: no events to apply, no hooks to load.
        let one_shot = snapshot && config.count == Some(1) && !metrics;
        let parts = Parts {
            hooks: !one_shot,
            socket_list: keeps_table,
            socket_figures,
            // How connections ended: per interval (snapshots), as records or as metrics.
            stats: if snapshot {
                !one_shot
            } else {
                config.lifetimes || metrics
            },
            // The alert and metrics table needs every transition.
            final_only: !snapshot && config.lifetimes && alerts.is_empty() && !metrics,
            events: config.events,
        };
        Ok(Setup {
            listener,
            table_states: if snapshot || metrics {
                filters.state_mask
            } else {
                // Alerts alone need only their states.
                alerts.state_mask()
            },
            filters,
            listed,
            parts,
            lifetimes: snapshot || config.lifetimes || metrics,
        })
    }
}

/// Runs `config` into the sink that `sink_for` makes (given the clock), to the end.
pub fn run<S: Sink>(config: &Config, sink_for: impl FnOnce(Clock) -> S) -> Result<Outcome> {
    preflight::check_kernel_btf()?;
    preflight::check_capabilities()?;
    signals::install()?;
    // Before any thread starts: they inherit it.
    if let Some(line) = priority::apply(config.nice, config.verbose) {
        eprintln!("{line}");
    }
    let alerts = Alerts::new(config.alerts.clone());
    let setup = Setup::for_config(config, &alerts)?;
    let mut storage = MaybeUninit::uninit();
    let mut tracer = Tracer::load(
        &mut storage,
        &setup.filters,
        config.ring_size,
        setup.parts,
        config.verbose,
    )?;
    for line in tracer.take_warnings() {
        eprintln!("{line}");
    }
    let clock = Clock::measure();
    let inbox = Inbox::default();
    let ring = tracer.ring_buffer(|data| inbox.receive(data))?;
    let mut services = Services::of_host();
    let mut table = None;
    if let Some(listed) = &setup.listed {
        let mut seeded = ConnTable::new(setup.table_states);
        seeded.reserve(listed.sockets_now());
        // Read after the hooks are attached, so no socket falls between the two.
        listed.dump(&tracer, |mut s| {
            s.service = s.cgroup.and_then(|id| services.of(id));
            seeded.seed_socket(s)
        })?;
        table = Some(seeded);
    }
    let endpoint = setup
        .listener
        .map(|l| Endpoint::start(l, config.metric_labels, config.web.clone()))
        .transpose()?;
    let mut session = Session {
        tracer: &tracer,
        table,
        listed: setup.listed,
        clock,
        services,
        lifetimes: setup.lifetimes.then(Lifetimes::default),
        endpoint,
        alerts,
        losses: Losses::default(),
    };
    if let Some(line) = session.endpoint.as_mut().and_then(Endpoint::take_warning) {
        eprintln!("{line}");
    }
    let mut sink = sink_for(clock);
    sink.begin(&session)?;
    let deadline = config.duration.map(|d| Instant::now() + d);
    session.pump(&ring, &inbox, &mut sink, deadline)?;
    sink.end();
    let totals = Totals {
        lost: session.losses.describe(),
        alerts: (!session.alerts.is_empty()).then(|| session.alerts.fired()),
        undecodable: inbox.undecodable(),
        tracked: session.table.as_ref().map_or(0, ConnTable::len),
    };
    eprintln!("{}", sink.summary(&totals));
    Ok(Outcome {
        alerts: session.alerts.fired(),
    })
}

impl Session<'_> {
    /// The loop: waits for records, reads them (and the sweep's), ends connections, refreshes
    /// the gauges, checks alerts and losses, and lets the sink do its round, until stopped.
    fn pump<S: Sink>(
        &mut self,
        ring: &libbpf_rs::RingBuffer<'_>,
        inbox: &Inbox,
        sink: &mut S,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let alert_interval = self.alerts.check_interval();
        let mut alerts_checked = Instant::now() - alert_interval;
        let mut losses_checked = Instant::now();
        loop {
            let now = Instant::now();
            let mut wake = [Some(now + POLL_INTERVAL), deadline, sink.wake_by()];
            if self.checks_alerts() && !sink.alerts_on_ticks() {
                wake[0] = wake[0].min(Some(alerts_checked + alert_interval));
            }
            let until = wake.into_iter().flatten().min().unwrap_or(now);
            wait_for_records(ring, until.saturating_duration_since(now))?;
            let now = Instant::now();
            let stopping = signals::stop_requested() || deadline.is_some_and(|d| now >= d);
            let due = sink.due(now);
            // What the hooks saw, then the moves to TIME_WAIT (every time before the sink's
            // work is due): a peer's FIN read in the first is a move the sweep then sees, so a
            // snapshot never shows the peer's close without its orphan's move.
            self.read_ring(ring, inbox, sink)?;
            self.tracer.sweep_fin_wait2(due || stopping)?;
            self.read_ring(ring, inbox, sink)?;
            let now = Instant::now();
            self.end_connections(sink, now, stopping);
            if let (Some(e), Some(table)) = (&mut self.endpoint, &mut self.table) {
                let services = &mut self.services;
                e.refresh_if_due(table, self.tracer, |table| {
                    table.resolve_services(|id| services.of(id))
                });
            }
            let alerts_due = if sink.alerts_on_ticks() {
                due
            } else {
                stopping || alerts_checked.elapsed() >= alert_interval
            };
            if alerts_due && self.checks_alerts() {
                alerts_checked = Instant::now();
                if let Some(table) = &self.table {
                    sink.alerts(self.alerts.check(table, Clock::boot_now_ns()));
                }
            }
            let last = stopping || sink.full();
            if last || due || losses_checked.elapsed() >= LOSS_CHECK_INTERVAL {
                losses_checked = Instant::now();
                self.read_losses(sink)?;
            }
            let done = sink.round(self, due)? || sink.full();
            sink.flush()?;
            if done || stopping {
                return Ok(());
            }
        }
    }

    fn checks_alerts(&self) -> bool {
        self.table.is_some() && !self.alerts.is_empty()
    }

    /// Reads what the ring holds, a chunk at a time, into the table, lifetimes and metrics and
    /// then the sink, flushing it after each chunk; stops early once the sink is full.
    fn read_ring<S: Sink>(
        &mut self,
        ring: &libbpf_rs::RingBuffer<'_>,
        inbox: &Inbox,
        sink: &mut S,
    ) -> Result<()> {
        while !sink.full() {
            let read = ring.consume_raw_n(CHUNK);
            if read < 0 {
                return Err(std::io::Error::from_raw_os_error(-read))
                    .context("reading the ring buffer");
            }
            let now = Instant::now();
            let mut batch = inbox.take();
            // Read in place, then cleared: moving each record out would copy it once more.
            for record in batch.iter_mut() {
                self.name_service(record);
                self.take(record, now);
                sink.record(record);
            }
            batch.clear();
            drop(batch);
            sink.flush()?;
            if (read as usize) < CHUNK {
                break;
            }
        }
        Ok(())
    }

    /// The service, container or pod of the record's cgroup.
    fn name_service(&mut self, record: &mut Record) {
        let (cgroup, service) = match record {
            Record::Transition(t) | Record::Handover(t) | Record::Owner(t) => {
                (t.cgroup, &mut t.service)
            }
            Record::Notice(n) => (n.cgroup, &mut n.service),
        };
        *service = cgroup.and_then(|id| self.services.of(id));
    }

    /// The one place a record reaches the table, the lifetimes and the metrics.
    fn take(&mut self, record: &Record, now: Instant) {
        match record {
            Record::Transition(t) => {
                if let Some(table) = &mut self.table {
                    table.apply(t);
                }
                if let Some(e) = &mut self.endpoint {
                    e.metrics.transition(t);
                }
                if let Some(lifetimes) = &mut self.lifetimes {
                    lifetimes.transition(t, now);
                }
            }
            // An RST sent just after its socket's close tells how that connection ended.
            Record::Notice(n) => {
                if let Some(lifetimes) = &mut self.lifetimes {
                    lifetimes.reset(n);
                }
            }
            // Not a transition: a new holder.
            Record::Owner(t) => {
                if let Some(table) = &mut self.table {
                    table.set_owner(t);
                }
            }
            // Not a transition: the connection stays in FIN_WAIT2 under its new key.
            Record::Handover(t) => {
                if let Some(table) = &mut self.table {
                    table.hand_over(t);
                }
                if let Some(lifetimes) = &mut self.lifetimes {
                    lifetimes.transition(t, now);
                }
            }
        }
    }

    /// Hands on the connections whose end is known for sure by now (all when stopping).
    fn end_connections<S: Sink>(&mut self, sink: &mut S, now: Instant, stopping: bool) {
        let Some(lifetimes) = &mut self.lifetimes else {
            return;
        };
        for connection in lifetimes.ready(now, stopping) {
            if let Some(e) = &mut self.endpoint {
                e.metrics.connection(&connection);
            }
            sink.connection(&connection);
        }
    }

    /// Reads the kernel's loss counters and passes on what is new.
    fn read_losses<S: Sink>(&mut self, sink: &mut S) -> Result<()> {
        let update = self.losses.update(self.tracer.counters()?);
        if let Some(warning) = update.warning {
            sink.warning(warning);
        }
        for (count, reason) in update.lost {
            if count == 0 {
                continue;
            }
            if let Some(e) = &mut self.endpoint {
                e.metrics.lost(count, reason);
            }
            sink.lost(count, reason);
        }
        Ok(())
    }
}

/// Waits until the kernel wakes us or `timeout` passes; a signal just ends the wait.
fn wait_for_records(ring: &libbpf_rs::RingBuffer<'_>, timeout: Duration) -> Result<()> {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the ring buffer's epoll descriptor stays open while `ring` lives; `event` is a
    // valid buffer for one event.
    let n = unsafe { libc::epoll_wait(ring.epoll_fd(), &mut event, 1, ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waiting for the ring buffer");
        }
    }
    Ok(())
}
