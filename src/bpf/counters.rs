//! What the kernel counts for us: records lost to a full ring, runs skipped by recursion,
//! timewait sockets not tracked, and each program's run time and count.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::programs::Skipped;
use super::Tracer;
use crate::losses::{Counters, RecursionMisses};
use crate::skel::types::counter_index;

impl Tracer<'_> {
    /// The loss counters now, since load.
    pub fn counters(&self) -> Result<Counters> {
        Ok(Counters {
            ring_drops: self.counter(counter_index::LOST_RING)?,
            misses: self.recursion_misses()?,
            untracked_timewaits: self.counter(counter_index::TW_UNTRACKED)?,
            unwatched_fin_wait2: self.counter(counter_index::FIN_WAIT2_UNWATCHED)?,
        })
    }

    /// A per-CPU counter of the `counters` map, summed over CPUs.
    fn counter(&self, index: counter_index) -> Result<u64> {
        let per_cpu = self
            .skel
            .maps
            .counters
            .lookup_percpu(&index.0.to_ne_bytes(), MapFlags::ANY)
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
    fn recursion_misses(&self) -> Result<RecursionMisses> {
        let mut misses = RecursionMisses::default();
        for (entry, prog) in self.loaded_programs() {
            let skipped = prog_info(prog.as_fd()).map_or(0, |info| info.recursion_misses);
            match entry.skipped {
                Skipped::StateChange => misses.set_state += skipped,
                Skipped::Notice => misses.notices += skipped,
                Skipped::Nothing => {}
            }
        }
        if misses.set_state > 0 {
            let taken = self.counter(counter_index::NESTED_HANDLED)?;
            misses.set_state = misses.set_state.saturating_sub(taken);
        }
        // The frees of timewait sockets are covered the same way, by a pair of programs; when
        // both miss one (only where tasks are preempted inside BPF programs, and rarely), the
        // next timewait socket at its address tells.
        misses.timewait = self.counter(counter_index::TW_END_UNSEEN)?;
        Ok(misses)
    }

    /// Each loaded hook's kernel run time (ns) and run count since load; zeros unless the
    /// kernel keeps these statistics (see enable_run_stats).
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.loaded_programs()
            .filter(|(entry, _)| matches!(entry.run, super::programs::Use::Hook(_)))
            .map(|(entry, prog)| {
                let info = prog_info(prog.as_fd()).unwrap_or_default();
                (entry.name.to_string(), info.run_time_ns, info.run_cnt)
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

fn prog_info(fd: BorrowedFd<'_>) -> Option<libbpf_rs::libbpf_sys::bpf_prog_info> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: `info` is a valid bpf_prog_info of `len` bytes; the kernel fills at most `len` bytes.
    let ret = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    (ret == 0).then_some(info)
}
