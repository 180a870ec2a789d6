//! Live mode's sink: every transition (or, with --lifetimes, every ended connection) rendered as
//! it comes, with the extra events and dwell alerts asked for, until stopped; then the totals.

use std::io::{self, Write};

use anyhow::Result;

use crate::alerts::Alert;
use crate::clock::Clock;
use crate::config::{Config, Events};
use crate::drop_reasons::DropReasons;
use crate::event::{Notice, NoticeKind, Record};
use crate::lifetimes::Connection;
use crate::losses::LostReason;
use crate::plural::counted;
use crate::render::{self, Quiet, Renderer, Rows};
use crate::session::{Session, Sink, Totals};

/// Turns records into rendered rows, counting what it shows.
pub struct Stream {
    renderer: Box<dyn Renderer>,
    /// Connections are the rows (--lifetimes), not transitions.
    show_connections: bool,
    events: Events,
    drop_reasons: Option<DropReasons>,
    count: Option<u64>,
    shown: u64,
    /// What the rows say on stderr at the start and the end.
    quiet: bool,
    metrics_url: Option<String>,
    buf: Vec<u8>,
    out: io::StdoutLock<'static>,
}

impl Stream {
    pub fn new(config: &Config, clock: Clock) -> Stream {
        let rows = if config.lifetimes {
            Rows::Connections
        } else {
            Rows::Transitions
        };
        let renderer = if config.quiet {
            Box::new(Quiet)
        } else {
            render::for_format(config.output, clock, config.timestamp, config.wide, rows)
        };
        Stream {
            renderer,
            show_connections: config.lifetimes,
            events: config.events,
            drop_reasons: config.events.drop.then(DropReasons::from_kernel),
            count: config.count,
            shown: 0,
            quiet: config.quiet,
            metrics_url: config.metrics_url(),
            buf: Vec::with_capacity(1 << 16),
            out: io::stdout().lock(),
        }
    }

    fn notice(&mut self, n: &Notice) {
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
        self.renderer.notice(&mut self.buf, n, reason);
        self.shown += 1;
    }
}

impl Sink for Stream {
    fn begin(&mut self, session: &Session<'_>) -> Result<()> {
        let mut tracing = "Tracing TCP state transitions".to_string();
        if self.show_connections && !self.quiet {
            tracing.push_str(" (connections shown when they end)");
        }
        if let (Some(url), Some(listed)) = (&self.metrics_url, &session.listed) {
            tracing.push_str(&format!(" in {}, metrics at {url}", listed.describe()));
        }
        eprintln!("{tracing}. Hit Ctrl-C to end.");
        self.renderer.begin(&mut self.buf);
        self.flush()
    }

    fn record(&mut self, record: &Record) {
        match record {
            Record::Transition(t) if !self.show_connections && !self.full() => {
                self.renderer.transition(&mut self.buf, t);
                self.shown += 1;
            }
            Record::Notice(n) => self.notice(n),
            // A handover is no transition: the connection stays in FIN_WAIT2.
            _ => {}
        }
    }

    fn connection(&mut self, connection: &Connection) {
        if self.show_connections && !self.full() {
            self.renderer.connection(&mut self.buf, connection);
            self.shown += 1;
        }
    }

    fn lost(&mut self, count: u64, reason: LostReason) {
        if !self.renderer.lost(&mut self.buf, count, reason) {
            eprintln!(
                "tcpstates: lost {} ({})",
                counted(count, "event"),
                reason.describe()
            );
        }
    }

    fn alerts(&mut self, alerts: Vec<Alert>) {
        for alert in &alerts {
            self.renderer.alert(&mut self.buf, alert);
        }
    }

    fn round(&mut self, _session: &mut Session<'_>, _due: bool) -> Result<bool> {
        Ok(false)
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.out.flush()?;
            self.buf.clear();
        }
        Ok(())
    }

    fn full(&self) -> bool {
        self.count.is_some_and(|n| self.shown >= n)
    }

    fn summary(&self, totals: &Totals) -> String {
        let what = if self.show_connections {
            "connection"
        } else {
            "transition"
        };
        let verb = if self.quiet { "traced" } else { "shown" };
        let mut summary = format!(
            "tcpstates: {} {verb}, {}",
            counted(self.shown, what),
            totals.lost
        );
        if let Some(fired) = totals.alerts {
            summary.push_str(&format!("; {}", counted(fired, "alert")));
        }
        if totals.undecodable > 0 {
            summary.push_str(&format!(
                "; {} not understood",
                counted(totals.undecodable, "record")
            ));
        }
        summary
    }
}
