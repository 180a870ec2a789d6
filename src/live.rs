//! Live mode: stream every transition as it happens until stopped, then report the totals.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bpf::{Parts, Tracer};
use crate::clock::Clock;
use crate::config::Config;
use crate::event::{Inbox, Transition};
use crate::losses::Losses;
use crate::render::{self, Renderer};
use crate::{preflight, signals};

/// How long a poll waits for a wakeup; the BPF side wakes us early only when the ring fills.
/// Short enough that a lone event is shown at once, long enough to cost nothing when idle.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Records read from the ring between two writes to stdout.
const CHUNK: usize = 1024;
/// How often the kernel's loss counters are read (and new losses reported).
const LOSS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

pub fn run(config: &Config) -> Result<()> {
    preflight::check_kernel_btf()?;
    preflight::check_capabilities()?;
    signals::install()?;

    let mut storage = MaybeUninit::uninit();
    let parts = Parts {
        hooks: true,
        socket_list: false,
    };
    let tracer = Tracer::load(
        &mut storage,
        &config.filters,
        config.ring_size,
        parts,
        config.verbose,
    )?;
    let clock = Clock::measure();
    let mut renderer = render::for_config(config, clock);

    let inbox = Inbox::default();
    let ring = tracer.ring_buffer(|data| inbox.receive(data))?;

    eprintln!("Tracing TCP state transitions. Hit Ctrl-C to end.");
    let mut out = io::stdout().lock();
    let mut buf = Vec::with_capacity(1 << 16);
    renderer.begin(&mut buf);
    write_out(&mut out, &mut buf)?;

    let deadline = config.duration.map(|d| Instant::now() + d);
    let mut shown = 0u64;
    let mut losses = Losses::default();
    let mut losses_checked = Instant::now();
    loop {
        let timeout = deadline.map_or(POLL_INTERVAL, |d| {
            d.saturating_duration_since(Instant::now())
                .min(POLL_INTERVAL)
        });
        wait_for_records(&ring, timeout)?;
        let stopping = signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d);
        // Wakeups are batched, so read whatever is there, a chunk at a time: memory stays bounded
        // however much the kernel has queued.
        let done = loop {
            let read = ring.consume_raw_n(CHUNK);
            if read < 0 {
                return Err(std::io::Error::from_raw_os_error(-read))
                    .context("reading the ring buffer");
            }
            let done = render_batch(
                &mut inbox.take(),
                renderer.as_mut(),
                &mut buf,
                config.count,
                &mut shown,
            );
            write_out(&mut out, &mut buf)?;
            if done || (read as usize) < CHUNK {
                break done;
            }
        };
        if done || stopping || losses_checked.elapsed() >= LOSS_CHECK_INTERVAL {
            losses_checked = Instant::now();
            for (new, reason) in losses.update(&tracer)? {
                if new > 0 && !renderer.lost(&mut buf, new, reason) {
                    eprintln!("tcpstates: lost {new} events ({})", reason.describe());
                }
            }
        }
        write_out(&mut out, &mut buf)?;
        if done || stopping {
            break;
        }
    }
    drop(out);
    let mut summary = format!(
        "tcpstates: {shown} transitions shown, {}",
        losses.describe()
    );
    if inbox.undecodable() > 0 {
        summary.push_str(&format!("; {} records not understood", inbox.undecodable()));
    }
    eprintln!("{summary}");
    Ok(())
}

/// Renders the events received so far; true once `count` events have been shown.
fn render_batch(
    batch: &mut Vec<Transition>,
    renderer: &mut dyn Renderer,
    buf: &mut Vec<u8>,
    count: Option<u64>,
    shown: &mut u64,
) -> bool {
    for transition in batch.drain(..) {
        if count.is_some_and(|n| *shown >= n) {
            break;
        }
        renderer.transition(buf, &transition);
        *shown += 1;
    }
    count.is_some_and(|n| *shown >= n)
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

pub(crate) fn write_out(out: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<()> {
    if !buf.is_empty() {
        out.write_all(buf)?;
        out.flush()?;
        buf.clear();
    }
    Ok(())
}
