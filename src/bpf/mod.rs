//! The BPF program from user space: which parts a run loads, loading and attaching them
//! (load.rs, driven by the table in programs.rs), and reading what they give: the ring buffer
//! (here), the iterators, the counters and the FIN_WAIT2 sweep.

mod counters;
mod iterators;
mod libbpf_log;
mod load;
mod programs;
mod sweep;

use std::cell::Cell;
use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::skel::Skel;
use libbpf_rs::{ProgramMut, RingBuffer, RingBufferBuilder};

use crate::config::Events;
use crate::features::Features;
use crate::skel::TcpstatesSkel;

pub use counters::enable_run_stats;
use programs::Plan;

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

/// The loaded and attached program.
pub struct Tracer<'obj> {
    /// The hooks' links: dropping one detaches it.
    links: Vec<libbpf_rs::Link>,
    skel: TcpstatesSkel<'obj>,
    parts: Parts,
    /// The variants of hooks chosen for this kernel.
    features: Features,
    /// Without hooks (a one-shot snapshot): the owner filters to apply here rather than in the
    /// kernel, where the owners are not known.
    owner_filters: (Option<u32>, Option<Vec<u8>>),
    /// What the run would use that this kernel does not offer, and other things the user
    /// should know about how it loaded: one line each, for stderr.
    warnings: Vec<String>,
    /// When the FIN_WAIT2 sweep last ran.
    swept: Cell<Instant>,
}

impl Tracer<'_> {
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

    /// The hooks are loaded: events keep what the iterators read current.
    pub fn hooked(&self) -> bool {
        self.parts.hooks
    }

    /// Lines for stderr about how the program loaded: capabilities this kernel lacks, owners
    /// that did not fit. Taken once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The loaded programs, with their entries, in the table's order (attach order).
    fn loaded_programs(
        &self,
    ) -> impl Iterator<Item = (&'static programs::Program, ProgramMut<'_>)> + '_ {
        let object = self.skel.object();
        let plan = Plan {
            parts: self.parts,
            features: &self.features,
        };
        let wanted: Vec<_> = plan.programs().collect();
        wanted.into_iter().filter_map(move |entry| {
            let prog = object.progs_mut().find(|p| p.name() == entry.name)?;
            Some((entry, prog))
        })
    }
}
