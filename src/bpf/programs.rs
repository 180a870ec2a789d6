//! Every program of the BPF object in one table: which ones a run loads (autoload), the order
//! its hooks attach in, and which loss a skipped run of each is. Loading, attaching and the
//! list of loaded programs all read this table.

use crate::config::Events;
use crate::features::{AcceptHook, Features, TimewaitEndProgram};

use super::Parts;

/// How user space runs a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Attached for the whole run, to this hook (for messages).
    Hook(&'static str),
    /// An iterator, attached each time it is read.
    Iterator,
    /// Run by user space (BPF_PROG_TEST_RUN).
    TestRun,
}

/// What a run the kernel skipped (recursion) costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Nothing is lost (not a hook, or one of a pair that covers each other's nested runs).
    Nothing,
    /// A state change, unless the nested twin took it.
    StateChange,
    /// A retransmit, reset or drop.
    Notice,
}

/// One program of the object, by its name in the C source.
pub struct Program {
    pub name: &'static str,
    pub run: Use,
    pub skipped: Skipped,
    /// Does a run with this plan load it?
    pub wanted: fn(&Plan<'_>) -> bool,
}

/// What decides which programs load: the parts a run needs and what the kernel offers.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    pub parts: Parts,
    pub features: &'a Features,
}

impl Plan<'_> {
    fn hooks(&self) -> bool {
        self.parts.hooks
    }

    fn events(&self) -> Events {
        self.parts.events
    }

    /// Sent resets are streamed (--events reset) or tell how connections ended (figures).
    fn send_reset(&self) -> bool {
        self.hooks() && (self.events().reset || self.parts.stats)
    }

    fn drop(&self) -> bool {
        self.hooks() && self.events().drop
    }

    fn timewait_end(&self, program: TimewaitEndProgram) -> bool {
        self.hooks() && self.features.timewait_end_is(program)
    }

    /// The programs this plan loads, in attach order.
    pub fn programs(&self) -> impl Iterator<Item = &'static Program> + '_ {
        PROGRAMS.iter().filter(|p| (p.wanted)(self))
    }
}

/// Every program, in the order hooks attach. First on_set_state and on_cache_free: the kernel
/// runs a tracepoint's programs in the order they were attached, and each nested twin must run
/// after its first program on every call.
pub const PROGRAMS: [Program; 18] = [
    Program {
        name: "on_set_state",
        run: Use::Hook("the tracepoint inet_sock_set_state"),
        skipped: Skipped::StateChange,
        wanted: |p| p.hooks(),
    },
    Program {
        name: "on_cache_free",
        run: Use::Hook("the tracepoint kmem_cache_free"),
        skipped: Skipped::Nothing,
        wanted: |p| p.timewait_end(TimewaitEndProgram::ByArgument),
    },
    Program {
        name: "on_cache_free_by_site",
        run: Use::Hook("the tracepoint kmem_cache_free"),
        skipped: Skipped::Nothing,
        wanted: |p| p.timewait_end(TimewaitEndProgram::ByCallSite),
    },
    Program {
        name: "on_set_state_nested",
        run: Use::Hook("the tracepoint inet_sock_set_state"),
        skipped: Skipped::Nothing,
        wanted: |p| p.hooks(),
    },
    Program {
        name: "on_cache_free_nested",
        run: Use::Hook("the tracepoint kmem_cache_free"),
        skipped: Skipped::Nothing,
        wanted: |p| p.timewait_end(TimewaitEndProgram::ByArgument),
    },
    Program {
        name: "on_cache_free_by_site_nested",
        run: Use::Hook("the tracepoint kmem_cache_free"),
        skipped: Skipped::Nothing,
        wanted: |p| p.timewait_end(TimewaitEndProgram::ByCallSite),
    },
    Program {
        name: "on_read",
        run: Use::Hook("the tracepoint tcp_rcv_space_adjust"),
        skipped: Skipped::Nothing,
        wanted: |p| p.hooks() && p.features.read_hook,
    },
    Program {
        name: "on_accept",
        run: Use::Hook("fexit inet_csk_accept"),
        skipped: Skipped::Nothing,
        wanted: |p| p.hooks() && p.features.accept == AcceptHook::FexitFourArgs,
    },
    Program {
        name: "on_accept_args",
        run: Use::Hook("fexit inet_csk_accept"),
        skipped: Skipped::Nothing,
        wanted: |p| p.hooks() && p.features.accept == AcceptHook::FexitTwoArgs,
    },
    Program {
        name: "on_fork",
        run: Use::Hook("the tracepoint sched_process_fork"),
        skipped: Skipped::Nothing,
        wanted: |p| p.hooks(),
    },
    Program {
        name: "on_send_reset",
        run: Use::Hook("the tracepoint tcp_send_reset"),
        skipped: Skipped::Notice,
        wanted: |p| p.send_reset(),
    },
    Program {
        name: "on_receive_reset",
        run: Use::Hook("the tracepoint tcp_receive_reset"),
        skipped: Skipped::Notice,
        wanted: |p| p.hooks() && p.events().reset,
    },
    Program {
        name: "on_retransmit",
        run: Use::Hook("the tracepoint tcp_retransmit_skb"),
        skipped: Skipped::Notice,
        wanted: |p| p.hooks() && p.events().retransmit,
    },
    Program {
        name: "on_drop",
        run: Use::Hook("the tracepoint kfree_skb"),
        skipped: Skipped::Notice,
        wanted: |p| p.drop() && p.features.drop_reason,
    },
    Program {
        name: "on_drop_without_reason",
        run: Use::Hook("the tracepoint kfree_skb"),
        skipped: Skipped::Notice,
        wanted: |p| p.drop() && !p.features.drop_reason,
    },
    Program {
        name: "sweep_fin_wait2",
        run: Use::TestRun,
        skipped: Skipped::Nothing,
        wanted: |p| p.hooks(),
    },
    Program {
        name: "seed_owners",
        run: Use::Iterator,
        skipped: Skipped::Nothing,
        // The owners of existing sockets: seeds for the hooks, or a one-shot snapshot's.
        wanted: |_| true,
    },
    Program {
        name: "dump_sockets",
        run: Use::Iterator,
        skipped: Skipped::Nothing,
        wanted: |p| p.parts.socket_list,
    },
];

/// The table entry of a program, by name.
pub fn by_name(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::TimewaitEnd;
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use std::mem::MaybeUninit;

    fn features(timewait_end: TimewaitEnd, drop_reason: bool) -> Features {
        Features {
            timewait_end,
            drop_reason,
            accept: AcceptHook::Unavailable(String::new()),
            ..Features::all()
        }
    }

    fn parts(hooks: bool, events: Events) -> Parts {
        Parts {
            hooks,
            socket_list: !hooks,
            socket_figures: false,
            stats: false,
            final_only: false,
            events,
        }
    }

    fn names(plan: Plan<'_>) -> Vec<&'static str> {
        plan.programs().map(|p| p.name).collect()
    }

    #[test]
    fn the_table_names_every_program_of_the_object_once() {
        let mut storage = MaybeUninit::uninit();
        let open = crate::skel::TcpstatesSkelBuilder::default()
            .open(&mut storage)
            .expect("opening the BPF object needs no privilege");
        let mut in_object: Vec<String> = open
            .open_object()
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        in_object.sort();
        let mut in_table: Vec<String> = PROGRAMS.iter().map(|p| p.name.to_string()).collect();
        in_table.sort();
        assert_eq!(in_table, in_object);
    }

    #[test]
    fn a_stream_loads_its_hooks_in_attach_order() {
        let f = features(TimewaitEnd::ByCache, true);
        assert_eq!(
            names(Plan {
                parts: parts(true, Events::default()),
                features: &f
            }),
            [
                "on_set_state",
                "on_cache_free",
                "on_set_state_nested",
                "on_cache_free_nested",
                "on_read",
                "on_fork",
                "sweep_fin_wait2",
                "seed_owners"
            ]
        );
    }

    #[test]
    fn variants_follow_the_kernel() {
        let old = features(TimewaitEnd::ByCallSite { start: 1, end: 2 }, false);
        let all = Events {
            retransmit: true,
            reset: true,
            drop: true,
        };
        let loaded = names(Plan {
            parts: parts(true, all),
            features: &old,
        });
        assert!(loaded.contains(&"on_cache_free_by_site"));
        assert!(loaded.contains(&"on_cache_free_by_site_nested"));
        assert!(loaded.contains(&"on_drop_without_reason"));
        assert!(!loaded.contains(&"on_cache_free") && !loaded.contains(&"on_drop"));
        let none = features(TimewaitEnd::Unavailable(String::new()), true);
        let loaded = names(Plan {
            parts: parts(true, Events::default()),
            features: &none,
        });
        assert!(!loaded.iter().any(|n| n.starts_with("on_cache_free")));
    }

    #[test]
    fn a_one_shot_snapshot_loads_only_the_iterators() {
        let f = features(TimewaitEnd::ByCache, true);
        assert_eq!(
            names(Plan {
                parts: parts(false, Events::default()),
                features: &f
            }),
            ["seed_owners", "dump_sockets"]
        );
    }
}
