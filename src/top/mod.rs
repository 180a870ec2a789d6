//! --top: a live full-screen view for a person at a terminal. The session keeps the connection
//! table current; every refresh this sink turns it into a `Screen`, and every key or refresh
//! draws it again.

mod controls;
mod screen;
mod terminal;
mod view;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event};

use self::controls::{Action, Controls};
use self::screen::{Header, Memory, Screen, TAIL};
use self::terminal::FullScreen;
pub use self::view::Theme;
use crate::alerts::Alert;
use crate::clock::{Clock, LocalTime};
use crate::event::{Record, Transition};
use crate::lifetimes::Connection;
use crate::losses::LostReason;
use crate::namespaces;
use crate::plural::counted;
use crate::sanitize;
use crate::session::{Session, Sink, Totals};

/// The processes' files are walked for the sockets' holders (those inherited or passed and not
/// used yet, orphans) at most once per this many times the last walk's length: a walk reads
/// every process's descriptors, and the calls on sockets already show the rest live.
const WALK_SHARE: u32 = 100;

/// Destinations whose port pressure is looked up for the TIME_WAIT panel.
const PORT_PRESSURE_LISTED: usize = 200;

pub struct Top {
    interval: Duration,
    next: Instant,
    theme: Theme,
    controls: Controls,
    memory: Memory,
    screen: Screen,
    /// The connections the controls select, in order.
    shown: Vec<usize>,
    tail: VecDeque<Transition>,
    clock: Clock,
    local_time: LocalTime,
    /// When the last refresh was (the table counts the transitions since).
    refreshed: Option<Instant>,
    lost: u64,
    refreshes: u64,
    /// When the holders may be walked again.
    next_walk: Option<Instant>,
    port_ranges: namespaces::PortRanges,
    netns_names: HashMap<u32, String>,
    host: String,
    kernel: String,
    /// The latest warning (lost events), shown in the header instead of on stderr.
    warning: Option<String>,
    full_screen: Option<FullScreen>,
    quit: bool,
    /// -v: how long refreshes (the table read, holders walked) and frames (the rows selected,
    /// sorted and drawn) took, for the summary line.
    verbose: bool,
    refresh_time: Timing,
    frame_time: Timing,
}

/// How long one kind of work took, for -v.
#[derive(Default)]
struct Timing {
    count: u32,
    total: Duration,
    max: Duration,
}

impl Timing {
    fn add(&mut self, took: Duration) {
        self.count += 1;
        self.total += took;
        self.max = self.max.max(took);
    }

    /// `{what} {average} ms on average, {max} ms at most`.
    fn describe(&self, what: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{what} {:.1} ms on average, {:.1} ms at most",
            ms(self.total / self.count.max(1)),
            ms(self.max)
        )
    }
}

impl Top {
    pub fn new(interval: Duration, theme: Theme, clock: Clock, verbose: bool) -> Top {
        let read = |path: &str| {
            std::fs::read(path)
                .map(|b| sanitize::escape(b.trim_ascii()).into_owned())
                .unwrap_or_default()
        };
        Top {
            interval,
            next: Instant::now(),
            theme,
            controls: Controls::default(),
            memory: Memory::default(),
            screen: Screen::default(),
            shown: Vec::new(),
            tail: VecDeque::with_capacity(TAIL),
            clock,
            local_time: LocalTime::system(),
            refreshed: None,
            lost: 0,
            refreshes: 0,
            next_walk: None,
            port_ranges: namespaces::PortRanges::default(),
            netns_names: HashMap::new(),
            host: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            warning: None,
            full_screen: None,
            quit: false,
            verbose,
            refresh_time: Timing::default(),
            frame_time: Timing::default(),
        }
    }

    /// A new screen from the table as it is now.
    fn refresh(&mut self, session: &mut Session<'_>) -> Result<()> {
        let Some(table) = session.table.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if session.tracer.hooked() && self.next_walk.is_none_or(|at| now >= at) {
            let walked_ns = Clock::boot_now_ns();
            table.refresh_holders(&session.tracer.walk_owners()?, walked_ns);
            // At most 1% of a core on walks: a host of many processes walks less often.
            self.next_walk = Some(now + now.elapsed() * WALK_SHARE);
        }
        let services = &mut session.services;
        table.resolve_services(|id| services.of(id));
        let transitions: u64 = table.take_transitions().values().sum();
        if let Some(listed) = &session.listed {
            self.netns_names = namespaces::names(&listed.namespaces);
        }
        let elapsed = self
            .refreshed
            .map_or(self.interval, |at| now.duration_since(at));
        let mut namespaces = session
            .listed
            .as_ref()
            .map_or_else(String::new, |l| l.describe());
        if let Some(warning) = &self.warning {
            namespaces = format!("{namespaces} | {warning}");
        }
        let header = Header {
            host: self.host.clone(),
            kernel: self.kernel.clone(),
            namespaces,
            tracked: table.len(),
            transitions_per_s: transitions as f64 / elapsed.as_secs_f64().max(0.001),
            lost: self.lost,
        };
        let pressure = self
            .port_ranges
            .pressure(table.conns(), PORT_PRESSURE_LISTED);
        let tail = self
            .tail
            .iter()
            .map(|t| {
                let mut time = String::with_capacity(12);
                let _ = self.local_time.format(self.clock.wall(t.ts_ns), &mut time);
                time.truncate(8);
                (time, t.clone())
            })
            .collect();
        let now_ns = Clock::boot_now_ns();
        self.screen = self
            .memory
            .screen(header, table.conns(), &pressure, tail, now_ns);
        self.refreshed = Some(now);
        self.refreshes += 1;
        Ok(())
    }

    /// Reads the keys pressed since the last round; returns whether the view changed.
    fn keys(&mut self) -> Result<bool> {
        let mut changed = false;
        // A lost terminal ends the view (it would also send SIGHUP, not always).
        if self.full_screen.as_ref().is_some_and(FullScreen::hung_up) {
            self.quit = true;
            return Ok(false);
        }
        while event::poll(Duration::ZERO).context("reading the terminal")? {
            match event::read().context("reading the terminal")? {
                Event::Key(key) => match self.controls.key(key) {
                    Action::Quit => self.quit = true,
                    Action::Redraw => changed = true,
                    Action::None => {}
                },
                Event::Resize(..) => changed = true,
                _ => {}
            }
        }
        Ok(changed)
    }

    fn draw(&mut self) -> Result<()> {
        let Some(full_screen) = self.full_screen.as_mut() else {
            return Ok(());
        };
        let (screen, controls, shown, names, theme) = (
            &self.screen,
            &mut self.controls,
            &self.shown,
            &self.netns_names,
            self.theme,
        );
        full_screen
            .terminal
            .draw(|frame| view::draw(frame, screen, controls, shown, names, theme))
            .context("drawing on the terminal")?;
        Ok(())
    }
}

impl Sink for Top {
    fn begin(&mut self, _session: &Session<'_>) -> Result<()> {
        self.full_screen = Some(FullScreen::enter()?);
        Ok(())
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next && !self.controls.paused
    }

    fn wake_by(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn record(&mut self, record: &Record) {
        if let Record::Transition(t) = record {
            if self.tail.len() == TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(t.clone());
        }
    }

    fn connection(&mut self, _connection: &Connection) {}

    fn lost(&mut self, count: u64, _reason: LostReason) {
        self.lost += count;
    }

    fn alerts(&mut self, _alerts: Vec<Alert>) {}

    fn warning(&mut self, line: &str) {
        self.warning = Some(line.to_string());
    }

    fn round(&mut self, session: &mut Session<'_>, due: bool) -> Result<bool> {
        let mut changed = self.keys()?;
        if due {
            let started = Instant::now();
            self.refresh(session)?;
            self.refresh_time.add(started.elapsed());
            let now = Instant::now();
            while self.next <= now {
                self.next += self.interval;
            }
            changed = true;
        }
        if changed && !self.quit {
            let started = Instant::now();
            let names = &self.netns_names;
            self.shown = self
                .controls
                .select(&self.screen.rows, |ns| names.get(&ns).cloned());
            self.draw()?;
            self.frame_time.add(started.elapsed());
        }
        Ok(self.quit)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn full(&self) -> bool {
        self.quit
    }

    fn end(&mut self) {
        // The terminal back before the summary line.
        self.full_screen = None;
    }

    fn summary(&self, totals: &Totals) -> String {
        let mut summary = format!(
            "tcpstates: {} shown, {} tracked, {}",
            counted(self.refreshes, "snapshot"),
            counted(totals.tracked as u64, "socket"),
            totals.lost
        );
        if self.verbose {
            summary.push_str(&format!(
                "; {}; {}",
                self.refresh_time.describe("refreshes took"),
                self.frame_time.describe("frames took")
            ));
        }
        summary
    }
}
