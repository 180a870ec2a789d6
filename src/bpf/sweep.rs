//! The FIN_WAIT2 sweep: runs the program that reports the orphans whose peer's FIN has moved
//! them to TIME_WAIT, a move no hook sees.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::Tracer;
use crate::skel::types::{self, sweep_limits};

/// How often the FIN_WAIT2 timewait sockets are checked for their peer's FIN: the delay of
/// their `FIN_WAIT2 -> TIME_WAIT` records (the time in them is the kernel's).
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Keys read from the map per system call.
const KEYS_PER_CALL: u32 = 4096;
/// Sockets per run of the program: its arguments.
const SWEEP_BATCH: usize = sweep_limits::SWEEP_BATCH.0 as usize;

impl Tracer<'_> {
    /// Every SWEEP_INTERVAL (or now, if `now`): reports the FIN_WAIT2 timewait sockets that
    /// moved to TIME_WAIT since the last run, into the ring buffer.
    pub fn sweep_fin_wait2(&self, now: bool) -> Result<()> {
        if !self.parts.hooks || (!now && self.swept.get().elapsed() < SWEEP_INTERVAL) {
            return Ok(());
        }
        self.swept.set(Instant::now());
        // The program runs without sockets too, until it has measured the tick rate. Without
        // mapped global data (never on the kernels tried), it runs every time.
        let keys = self.program_global(|g| &g.fin_wait2_keys);
        let hz = self.program_global(|g| &g.hz);
        if keys == Some(0) && hz.is_some_and(|hz| hz != 0) {
            return Ok(());
        }
        // In batches: one call per KEYS_PER_CALL keys, not one per key. A failed batch call
        // ends the read silently (libbpf-rs), as on a kernel without batch operations: an
        // empty read is redone key by key, one call when the map is empty.
        let map = &self.skel.maps.fin_wait2_tws;
        let mut sockets: Vec<Vec<u8>> = map
            .lookup_batch(KEYS_PER_CALL, MapFlags::ANY, MapFlags::ANY)
            .map(|batches| batches.map(|(key, _)| key).collect())
            .unwrap_or_default();
        if sockets.is_empty() {
            sockets = map.keys().collect();
        }
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

    /// A counter of the programs' global data (.bss) as they last wrote it, if it is mapped.
    fn program_global(&self, field: fn(&types::bss) -> &u64) -> Option<u64> {
        let globals = self.skel.maps.bss_data.as_deref()?;
        // SAFETY: an aligned u64 in the mmap'ed global data, which the programs write whole
        // (an atomic add, or a plain store of a u64): a volatile read sees each write whole.
        Some(unsafe { std::ptr::read_volatile(field(globals)) })
    }
}
