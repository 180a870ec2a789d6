//! Live mode: stream every transition (or, with --lifetimes, every ended connection) as it
//! happens, with the extra events, dwell alerts and metrics asked for, until stopped; then the
//! totals.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::alerts::Alerts;
use crate::bpf::{Parts, Tracer};
use crate::clock::Clock;
use crate::config::{Config, Events};
use crate::drop_reasons::DropReasons;
use crate::event::{Inbox, Notice, NoticeKind, Record};
use crate::exporter::{Endpoint, Exporter};
use crate::lifetimes::Lifetimes;
use crate::losses::Losses;
use crate::metrics::Metrics;
use crate::plural::counted;
use crate::render::{self, Renderer};
use crate::table::ConnTable;
use crate::{preflight, signals, snapshots};

/// How long a poll waits for a wakeup; the BPF side wakes us early only when the ring fills or
/// (at most every 50 ms) for an event into an empty ring. Short enough that events are never
/// shown late, long enough to cost nothing when idle.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Records read from the ring between two writes to stdout.
const CHUNK: usize = 1024;
/// How often the kernel's loss counters are read (and new losses reported).
const LOSS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// What a run found; the exit status depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub alerts: u64,
}

pub fn run(config: &Config) -> Result<Outcome> {
    preflight::check_kernel_btf()?;
    preflight::check_capabilities()?;
    signals::install()?;

    let mut alerts = Alerts::new(config.alerts.clone());
    // Fail on a bad address or a port in use before anything is loaded.
    let listener = config.metrics.map(Exporter::bind).transpose()?;
    let mut filters = config.filters.clone();
    let mut netns_file = None;
    if listener.is_some() || !alerts.is_empty() {
        let (target, file) = snapshots::target_netns(config)?;
        netns_file = file;
        if listener.is_some() {
            // Gauges describe one namespace's sockets, as ss and node_exporter do.
            filters.netns = Some(target);
        }
    }
    let mut storage = MaybeUninit::uninit();
    let parts = Parts {
        hooks: true,
        // Alerts and gauges also cover the sockets that exist already.
        socket_list: listener.is_some() || !alerts.is_empty(),
        socket_figures: false,
        stats: config.lifetimes || listener.is_some(),
        // The alert and metrics table needs every transition.
        final_only: config.lifetimes && alerts.is_empty() && listener.is_none(),
        events: config.events,
    };
    let tracer = Tracer::load(
        &mut storage,
        &filters,
        config.ring_size,
        parts,
        config.verbose,
    )?;
    for line in tracer.missing_features() {
        eprintln!("{line}");
    }
    let clock = Clock::measure();
    let inbox = Inbox::default();
    let ring = tracer.ring_buffer(|data| inbox.receive(data))?;
    let mut table = None;
    if parts.socket_list {
        // Metrics count every state; alerts alone need only theirs.
        let mask = if listener.is_some() {
            filters.state_mask
        } else {
            alerts.state_mask()
        };
        let mut seeded = ConnTable::new(mask);
        // Read after the hooks are attached, so no socket falls between the two.
        tracer.dump_sockets(netns_file.as_ref(), |s| seeded.seed_socket(s))?;
        table = Some(seeded);
    }
    let mut endpoint = listener
        .map(|l| Endpoint::start(l, config.metric_labels))
        .transpose()?;

    let mut stream = Stream {
        renderer: render::for_config(config, clock),
        lifetimes: (config.lifetimes || endpoint.is_some()).then(Lifetimes::default),
        show_connections: config.lifetimes,
        events: config.events,
        drop_reasons: config.events.drop.then(DropReasons::from_kernel),
        count: config.count,
        shown: 0,
    };

    let mut tracing = "Tracing TCP state transitions".to_string();
    if config.lifetimes && !config.quiet {
        tracing.push_str(" (connections shown when they end)");
    }
    if let (Some(addr), Some(netns)) = (config.metrics, filters.netns) {
        tracing.push_str(&format!(
            " in network namespace {netns}, metrics at http://{addr}/metrics"
        ));
    }
    eprintln!("{tracing}. Hit Ctrl-C to end.");
    let mut out = io::stdout().lock();
    let mut buf = Vec::with_capacity(1 << 16);
    stream.renderer.begin(&mut buf);
    write_out(&mut out, &mut buf)?;

    let deadline = config.duration.map(|d| Instant::now() + d);
    let mut losses = Losses::default();
    let mut losses_checked = Instant::now();
    let alert_interval = alerts.check_interval();
    let mut alerts_checked = Instant::now() - alert_interval;
    loop {
        let now = Instant::now();
        let mut timeout = deadline.map_or(POLL_INTERVAL, |d| {
            d.saturating_duration_since(now).min(POLL_INTERVAL)
        });
        if table.is_some() && !alerts.is_empty() {
            timeout = timeout.min((alerts_checked + alert_interval).saturating_duration_since(now));
        }
        wait_for_records(&ring, timeout)?;
        let stopping = signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d);
        tracer.sweep_fin_wait2(stopping)?;
        // Wakeups are batched, so read whatever is there, a chunk at a time: memory stays bounded
        // however much the kernel has queued.
        let mut done = loop {
            let read = ring.consume_raw_n(CHUNK);
            if read < 0 {
                return Err(std::io::Error::from_raw_os_error(-read))
                    .context("reading the ring buffer");
            }
            let done = stream.records(
                &mut inbox.take(),
                table.as_mut(),
                endpoint.as_mut().map(|e| &mut e.metrics),
                &mut buf,
            );
            write_out(&mut out, &mut buf)?;
            if done || (read as usize) < CHUNK {
                break done;
            }
        };
        let metrics = endpoint.as_mut().map(|e| &mut e.metrics);
        done = stream.connections(Instant::now(), stopping, metrics, &mut buf) || done;
        if let (Some(e), Some(table)) = (&mut endpoint, &table) {
            e.refresh_if_due(table, &tracer);
        }
        if let Some(table) = table.as_ref().filter(|_| !alerts.is_empty()) {
            if alerts_checked.elapsed() >= alert_interval || stopping {
                alerts_checked = Instant::now();
                for alert in alerts.check(table, Clock::boot_now_ns()) {
                    stream.renderer.alert(&mut buf, &alert);
                }
            }
        }
        if done || stopping || losses_checked.elapsed() >= LOSS_CHECK_INTERVAL {
            losses_checked = Instant::now();
            for (new, reason) in losses.update(&tracer)? {
                if new == 0 {
                    continue;
                }
                if let Some(e) = &mut endpoint {
                    e.metrics.lost(new, reason);
                }
                if !stream.renderer.lost(&mut buf, new, reason) {
                    eprintln!(
                        "tcpstates: lost {} ({})",
                        counted(new, "event"),
                        reason.describe()
                    );
                }
            }
        }
        write_out(&mut out, &mut buf)?;
        if done || stopping {
            break;
        }
    }
    drop(out);
    let what = if config.lifetimes {
        "connection"
    } else {
        "transition"
    };
    let verb = if config.quiet { "traced" } else { "shown" };
    let mut summary = format!(
        "tcpstates: {} {verb}, {}",
        counted(stream.shown, what),
        losses.describe()
    );
    if !alerts.is_empty() {
        summary.push_str(&format!("; {}", counted(alerts.fired(), "alert")));
    }
    if inbox.undecodable() > 0 {
        summary.push_str(&format!(
            "; {} not understood",
            counted(inbox.undecodable(), "record")
        ));
    }
    eprintln!("{summary}");
    Ok(Outcome {
        alerts: alerts.fired(),
    })
}

/// Turns records into rendered rows, counting what it shows.
struct Stream {
    renderer: Box<dyn Renderer>,
    /// Ended connections waiting to be shown (--lifetimes) or counted (--metrics).
    lifetimes: Option<Lifetimes>,
    /// Connections are the rows (--lifetimes), not transitions.
    show_connections: bool,
    events: Events,
    drop_reasons: Option<DropReasons>,
    count: Option<u64>,
    shown: u64,
}

impl Stream {
    fn full(&self) -> bool {
        self.count.is_some_and(|n| self.shown >= n)
    }

    /// Renders the records received so far; true once `count` rows have been shown.
    fn records(
        &mut self,
        batch: &mut Vec<Record>,
        mut table: Option<&mut ConnTable>,
        mut metrics: Option<&mut Metrics>,
        buf: &mut Vec<u8>,
    ) -> bool {
        let now = Instant::now();
        // Read in place, then cleared: moving each record out would copy it once more.
        for record in batch.iter() {
            match record {
                Record::Transition(t) => {
                    if let Some(table) = table.as_deref_mut() {
                        table.apply(t);
                    }
                    if let Some(m) = metrics.as_deref_mut() {
                        m.transition(t);
                    }
                    if let Some(lifetimes) = &mut self.lifetimes {
                        lifetimes.transition(t, now);
                    }
                    if !self.show_connections && !self.full() {
                        self.renderer.transition(buf, t);
                        self.shown += 1;
                    }
                }
                Record::Notice(n) => self.notice(n, buf),
                // Not shown, not counted: the connection stays in FIN_WAIT2.
                Record::Handover(t) => {
                    if let Some(table) = table.as_deref_mut() {
                        table.hand_over(t);
                    }
                    if let Some(lifetimes) = &mut self.lifetimes {
                        lifetimes.transition(t, now);
                    }
                }
            }
        }
        batch.clear();
        self.full()
    }

    fn notice(&mut self, n: &Notice, buf: &mut Vec<u8>) {
        // An RST sent just after its socket's close tells how that connection ended.
        if let Some(lifetimes) = &mut self.lifetimes {
            lifetimes.reset(n);
        }
        let wanted = match n.kind {
            NoticeKind::Retransmit => self.events.retransmit,
            NoticeKind::ResetSent | NoticeKind::ResetReceived => self.events.reset,
            NoticeKind::Drop(_) => self.events.drop,
        };
        // Owner filters were applied in the kernel, as for transitions.
        if !wanted || self.full() {
            return;
        }
        let reason = match (n.kind, &mut self.drop_reasons) {
            // 0 is no reason: kernels before 5.17 give none (and 0 is "not dropped yet").
            (NoticeKind::Drop(reason), Some(names)) if reason != 0 => Some(names.name(reason)),
            _ => None,
        };
        self.renderer.notice(buf, n, reason);
        self.shown += 1;
    }

    /// Renders the connections held long enough (all when stopping); true once `count` rows
    /// have been shown.
    fn connections(
        &mut self,
        now: Instant,
        stopping: bool,
        mut metrics: Option<&mut Metrics>,
        buf: &mut Vec<u8>,
    ) -> bool {
        let Some(lifetimes) = &mut self.lifetimes else {
            return self.full();
        };
        for connection in lifetimes.ready(now, stopping) {
            if let Some(m) = metrics.as_deref_mut() {
                m.connection(&connection);
            }
            if self.show_connections && self.count.is_none_or(|n| self.shown < n) {
                self.renderer.connection(buf, &connection);
                self.shown += 1;
            }
        }
        self.full()
    }
}

/// Waits until the kernel wakes us or `timeout` passes; a signal just ends the wait.
pub(crate) fn wait_for_records(ring: &libbpf_rs::RingBuffer<'_>, timeout: Duration) -> Result<()> {
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

fn write_out(out: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<()> {
    if !buf.is_empty() {
        out.write_all(buf)?;
        out.flush()?;
        buf.clear();
    }
    Ok(())
}
