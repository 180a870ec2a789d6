//! Live mode: stream every transition as it happens until stopped, then report the totals.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bpf::{RecursionMisses, Tracer};
use crate::clock::Clock;
use crate::config::Config;
use crate::event::{self, Transition};
use crate::render::{self, LostReason, Renderer};
use crate::{preflight, signals};

/// How long a poll waits for a wakeup; the BPF side wakes us early only when the ring fills.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Counts of a run, for the final summary.
#[derive(Debug, Default)]
struct Totals {
    shown: u64,
    ring_drops: u64,
    misses: RecursionMisses,
    undecodable: u64,
}

pub fn run(config: &Config) -> Result<()> {
    preflight::check_kernel_btf()?;
    preflight::check_capabilities()?;
    signals::install()?;

    let mut storage = MaybeUninit::uninit();
    let tracer = Tracer::load(
        &mut storage,
        &config.filters,
        config.ring_size,
        config.verbose,
    )?;
    let clock = Clock::measure();
    let mut renderer = render::for_config(config, clock);

    let batch = RefCell::new(Vec::<Transition>::with_capacity(4096));
    let undecodable = Cell::new(0u64);
    let ring = tracer.ring_buffer(|data| {
        match event::decode(data) {
            Ok(t) => batch.borrow_mut().push(t),
            Err(_) => undecodable.set(undecodable.get() + 1),
        }
        0
    })?;

    eprintln!("Tracing TCP state transitions. Hit Ctrl-C to end.");
    let mut out = io::stdout().lock();
    let mut buf = Vec::with_capacity(1 << 16);
    renderer.begin(&mut buf);
    write_out(&mut out, &mut buf)?;

    let deadline = config.duration.map(|d| Instant::now() + d);
    let mut totals = Totals::default();
    loop {
        let timeout = deadline.map_or(POLL_INTERVAL, |d| {
            d.saturating_duration_since(Instant::now())
                .min(POLL_INTERVAL)
        });
        if let Err(err) = ring.poll(timeout) {
            if err.kind() != libbpf_rs::ErrorKind::Interrupted {
                return Err(err).context("polling the ring buffer");
            }
        }
        // Wakeups are batched, so read whatever is there after every poll.
        ring.consume().context("reading the ring buffer")?;
        let stopping = signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d);

        let done = render_batch(
            &mut batch.borrow_mut(),
            renderer.as_mut(),
            &mut buf,
            config.count,
            &mut totals,
        );
        report_losses(&tracer, renderer.as_mut(), &mut buf, &mut totals)?;
        write_out(&mut out, &mut buf)?;
        if done || stopping {
            break;
        }
    }
    totals.undecodable = undecodable.get();
    drop(out);
    eprintln!("{}", summary(&totals));
    Ok(())
}

/// Renders the events received so far; true once `count` events have been shown.
fn render_batch(
    batch: &mut Vec<Transition>,
    renderer: &mut dyn Renderer,
    buf: &mut Vec<u8>,
    count: Option<u64>,
    totals: &mut Totals,
) -> bool {
    for transition in batch.drain(..) {
        if count.is_some_and(|n| totals.shown >= n) {
            break;
        }
        renderer.transition(buf, &transition);
        totals.shown += 1;
    }
    batch.clear();
    count.is_some_and(|n| totals.shown >= n)
}

/// Reports new losses as they happen: in the data stream if the format has a place, else stderr.
fn report_losses(
    tracer: &Tracer<'_>,
    renderer: &mut dyn Renderer,
    buf: &mut Vec<u8>,
    totals: &mut Totals,
) -> Result<()> {
    let drops = tracer.ring_buffer_drops()?;
    let misses = tracer.recursion_misses();
    for (new, reason) in [
        (
            drops - totals.ring_drops.min(drops),
            LostReason::RingBufferFull,
        ),
        (
            misses.set_state - totals.misses.set_state.min(misses.set_state),
            LostReason::BpfRecursion,
        ),
    ] {
        if new > 0 && !renderer.lost(buf, new, reason) {
            eprintln!("tcpstates: lost {new} events ({})", reason.describe());
        }
    }
    totals.ring_drops = drops;
    totals.misses = misses;
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

fn summary(totals: &Totals) -> String {
    let lost = totals.ring_drops + totals.misses.set_state;
    let mut line = format!("tcpstates: {} transitions shown, {lost} lost", totals.shown);
    if lost > 0 {
        line.push_str(&format!(
            " ({} ring buffer full, {} BPF recursion)",
            totals.ring_drops, totals.misses.set_state
        ));
    }
    if totals.misses.timewait > 0 {
        line.push_str(&format!(
            "; the kernel skipped {} nested runs of the TIME_WAIT hooks (a TIME_WAIT transition may be missing)",
            totals.misses.timewait
        ));
    }
    if totals.undecodable > 0 {
        line.push_str(&format!("; {} records not understood", totals.undecodable));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_each_kind_of_loss() {
        let mut totals = Totals {
            shown: 10,
            ..Default::default()
        };
        assert_eq!(summary(&totals), "tcpstates: 10 transitions shown, 0 lost");
        totals.ring_drops = 3;
        totals.misses.set_state = 2;
        totals.misses.timewait = 1;
        assert_eq!(
            summary(&totals),
            "tcpstates: 10 transitions shown, 5 lost (3 ring buffer full, 2 BPF recursion); \
             the kernel skipped 1 nested runs of the TIME_WAIT hooks (a TIME_WAIT transition may \
             be missing)"
        );
    }
}
