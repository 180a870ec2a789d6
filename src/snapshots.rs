//! Snapshot mode's sink: every interval, a report of the live connection table (seeded from
//! the sockets that exist, kept current by the session), rendered in the chosen format.
//!
//! Existing sockets come from a BPF `iter/tcp` program rather than netlink sock_diag: it yields
//! the same socket addresses as the live events (sock_diag has only cookies and inodes), reads
//! owners from the same maps, and was faster in measurements (20k sockets: ~15 ms vs ~25 ms).

use std::io::{self, BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::alerts::Alert;
use crate::clock::Clock;
use crate::config::Config;
use crate::event::Record;
use crate::lifetimes::{Connection, Ending};
use crate::losses::LostReason;
use crate::namespaces;
use crate::plural::counted;
use crate::render::snapshot::{self, SnapshotRenderer, Style};
use crate::report::Report;
use crate::session::{Session, Sink, Totals};

/// Destinations listed with their ephemeral ports in use (JSON; text shows the first five).
const PORT_PRESSURE_LISTED: usize = 20;

/// Builds a report every interval and renders it.
pub struct Ticker {
    renderer: Box<dyn SnapshotRenderer>,
    interval: Duration,
    /// When the next snapshot is due.
    next: Instant,
    /// Re-read each connection's figures before each snapshot (-i).
    info: bool,
    quiet: bool,
    count: Option<u64>,
    metrics_url: Option<String>,
    /// Since the last snapshot: connections ended, by how, events lost, alerts fired.
    ended: [u64; Ending::NAMES.len()],
    lost: u64,
    alerts: Vec<Alert>,
    /// Each namespace's ip_local_port_range, for port pressure.
    port_ranges: namespaces::PortRanges,
    shown: u64,
    out: BufWriter<io::StdoutLock<'static>>,
}

impl Ticker {
    pub fn new(config: &Config, interval: Duration, style: Style, clock: Clock) -> Ticker {
        Ticker {
            renderer: snapshot::for_format(config.output, style, clock),
            interval,
            next: Instant::now(),
            info: style.info,
            quiet: config.quiet,
            count: config.count,
            metrics_url: config.metrics_url(),
            ended: [0; Ending::NAMES.len()],
            lost: 0,
            port_ranges: namespaces::PortRanges::default(),
            alerts: Vec::new(),
            shown: 0,
            out: BufWriter::with_capacity(1 << 16, io::stdout().lock()),
        }
    }

    /// Renders the report of the table as it is now.
    fn snapshot(&mut self, session: &mut Session<'_>) -> Result<()> {
        let Some(table) = session.table.as_mut() else {
            return Ok(());
        };
        if let (true, true, Some(listed)) = (self.info, self.shown > 0, &session.listed) {
            // Figures as they are now, for every connection still there.
            listed.dump(session.tracer, |s| table.refresh_info(&s))?;
        }
        if session.tracer.hooked() {
            // Who holds each socket now, as ss -p finds it: what no call on a socket shows
            // (a socket a process inherited or was passed and has not used yet), and how many
            // processes share it. A single snapshot's walk did this already.
            let walked_ns = Clock::boot_now_ns();
            table.refresh_holders(&session.tracer.walk_owners()?, walked_ns);
        }
        let services = &mut session.services;
        table.resolve_services(|id| services.of(id));
        let now_ns = Clock::boot_now_ns();
        let transitions = table.take_transitions();
        let mut report = Report::new(
            table,
            transitions,
            self.lost,
            session.clock.wall(now_ns),
            now_ns,
            self.interval,
        );
        report.ended = std::mem::take(&mut self.ended);
        if let Some(listed) = &session.listed {
            report.netns_names = namespaces::names(&listed.namespaces);
        }
        report.port_pressure = self
            .port_ranges
            .pressure(report.conns.iter().copied(), PORT_PRESSURE_LISTED);
        report.alerts = std::mem::take(&mut self.alerts);
        if !self.quiet {
            self.renderer.snapshot(&mut self.out, &report)?;
            self.out.flush()?;
        }
        self.lost = 0;
        Ok(())
    }
}

impl Sink for Ticker {
    fn begin(&mut self, _session: &Session<'_>) -> Result<()> {
        Ok(())
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    fn wake_by(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn alerts_on_ticks(&self) -> bool {
        true
    }

    /// The table counts transitions itself.
    fn record(&mut self, _record: &Record) {}

    fn connection(&mut self, connection: &Connection) {
        self.ended[connection.ending.index()] += 1;
    }

    fn lost(&mut self, count: u64, _reason: LostReason) {
        self.lost += count;
    }

    fn alerts(&mut self, alerts: Vec<Alert>) {
        self.alerts.extend(alerts);
    }

    fn round(&mut self, session: &mut Session<'_>, due: bool) -> Result<bool> {
        if !due {
            return Ok(false);
        }
        let now = Instant::now();
        self.snapshot(session)?;
        if self.shown == 0 {
            let scope = session
                .listed
                .as_ref()
                .map_or(String::new(), |listed| format!(" in {}", listed.describe()));
            let metrics_at = self
                .metrics_url
                .as_ref()
                .map(|url| format!(", metrics at {url}"))
                .unwrap_or_default();
            eprintln!(
                "Tracing TCP state transitions{scope}, a snapshot every {}{metrics_at}. Hit Ctrl-C to end.",
                humantime::format_duration(self.interval)
            );
        }
        self.shown += 1;
        while self.next <= now {
            self.next += self.interval;
        }
        Ok(self.full())
    }

    fn flush(&mut self) -> Result<()> {
        // Snapshots are written whole when taken.
        Ok(())
    }

    fn full(&self) -> bool {
        self.count.is_some_and(|n| self.shown >= n)
    }

    fn summary(&self, totals: &Totals) -> String {
        let verb = if self.quiet { "taken" } else { "shown" };
        let mut summary = format!(
            "tcpstates: {} {verb}, {} tracked, {}",
            counted(self.shown, "snapshot"),
            counted(totals.tracked as u64, "socket"),
            totals.lost
        );
        if let Some(fired) = totals.alerts {
            summary.push_str(&format!("; {}", counted(fired, "alert")));
        }
        summary
    }
}
