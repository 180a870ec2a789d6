//! Accounting of events the kernel could not deliver (ring buffer full, BPF runs skipped) and
//! of timewait sockets it could not track, from the counters the BPF side reads.

use crate::plural::counted;

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The ring buffer was full: user space fell behind.
    RingBufferFull,
    /// The kernel skipped the BPF program (it was already running on that CPU).
    BpfRecursion,
}

impl LostReason {
    pub fn key(self) -> &'static str {
        match self {
            LostReason::RingBufferFull => "ring_buffer_full",
            LostReason::BpfRecursion => "bpf_recursion",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            LostReason::RingBufferFull => "ring buffer full",
            LostReason::BpfRecursion => "BPF program skipped by the kernel: recursion",
        }
    }
}

/// Why the kernel skipped program runs, per program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecursionMisses {
    /// State changes the program did not see: lost transitions.
    pub set_state: u64,
    /// Ends of TIME_WAIT neither free hook saw, found when a timewait socket reused the address.
    pub timewait: u64,
    /// Retransmits, resets and drops not seen (--events), and resets that told how a
    /// connection ended.
    pub notices: u64,
}

impl RecursionMisses {
    /// Records lost: state changes, ends of TIME_WAIT and the other events.
    pub fn lost(&self) -> u64 {
        self.set_state + self.timewait + self.notices
    }
}

/// The kernel's loss counters at one moment, since the program was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records the ring buffer had no room for.
    pub ring_drops: u64,
    pub misses: RecursionMisses,
    /// Timewait sockets the TIME_WAIT map had no room for; their ends will not be reported.
    pub untracked_timewaits: u64,
    /// Orphans in FIN_WAIT2 the sweep had no room for: a move to TIME_WAIT shows at their end.
    pub unwatched_fin_wait2: u64,
}

/// What is new since the previous reading: losses by reason, and a warning to print once.
#[derive(Debug, PartialEq, Eq)]
pub struct Update {
    pub lost: [(u64, LostReason); 2],
    pub warning: Option<&'static str>,
}

/// Totals since start; `update` returns what is new since the previous call.
#[derive(Debug, Default)]
pub struct Losses {
    ring_drops: u64,
    misses: RecursionMisses,
    untracked_timewaits: u64,
    untracked_warned: bool,
    unwatched_fin_wait2: u64,
}

impl Losses {
    /// Takes a new reading of the kernel's counters: the losses new since the last one, and,
    /// the first time the TIME_WAIT map turned a socket away, what that means.
    pub fn update(&mut self, now: Counters) -> Update {
        self.untracked_timewaits = now.untracked_timewaits;
        self.unwatched_fin_wait2 = now.unwatched_fin_wait2;
        let warning = self.take_timewait_warning();
        Update {
            lost: self.advance(now.ring_drops, now.misses),
            warning,
        }
    }

    fn take_timewait_warning(&mut self) -> Option<&'static str> {
        if self.untracked_timewaits == 0 || self.untracked_warned {
            return None;
        }
        self.untracked_warned = true;
        Some(
            "tcpstates: the TIME_WAIT map is full: the ends (TIME_WAIT -> CLOSE) of further \
             timewait sockets will not be reported",
        )
    }

    fn advance(&mut self, drops: u64, misses: RecursionMisses) -> [(u64, LostReason); 2] {
        let new = [
            (
                drops.saturating_sub(self.ring_drops),
                LostReason::RingBufferFull,
            ),
            (
                misses.lost().saturating_sub(self.misses.lost()),
                LostReason::BpfRecursion,
            ),
        ];
        self.ring_drops = drops;
        self.misses = misses;
        new
    }

    /// Transitions lost since start.
    pub fn total(&self) -> u64 {
        self.ring_drops + self.misses.lost()
    }

    /// `N lost` and, if any, their kinds and the skipped TIME_WAIT hook runs.
    pub fn describe(&self) -> String {
        let mut text = format!("{} lost", self.total());
        if self.total() > 0 {
            text.push_str(&format!(
                " ({} ring buffer full, {} BPF recursion)",
                self.ring_drops,
                self.misses.lost()
            ));
        }
        if self.untracked_timewaits > 0 {
            text.push_str(&format!(
                "; {} not tracked (map full): {} TIME_WAIT -> CLOSE is not reported",
                counted(self.untracked_timewaits, "TIME_WAIT socket"),
                if self.untracked_timewaits == 1 {
                    "its"
                } else {
                    "their"
                }
            ));
        }
        if self.unwatched_fin_wait2 > 0 {
            text.push_str(&format!(
                "; {} in FIN_WAIT2 not watched (map full): a move to TIME_WAIT shows at the \
                 socket's end",
                counted(self.unwatched_fin_wait2, "orphan")
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(drops: u64, set_state: u64, timewait: u64, notices: u64) -> Counters {
        Counters {
            ring_drops: drops,
            misses: RecursionMisses {
                set_state,
                timewait,
                notices,
            },
            untracked_timewaits: 0,
            unwatched_fin_wait2: 0,
        }
    }

    #[test]
    fn reports_only_what_is_new_and_describes_totals() {
        let mut losses = Losses::default();
        assert_eq!(losses.describe(), "0 lost");
        let update = losses.update(reading(3, 2, 1, 0));
        assert_eq!(
            update.lost,
            [
                (3, LostReason::RingBufferFull),
                (3, LostReason::BpfRecursion)
            ]
        );
        assert_eq!(update.warning, None);
        let update = losses.update(reading(4, 2, 1, 1));
        assert_eq!(
            update.lost,
            [
                (1, LostReason::RingBufferFull),
                (1, LostReason::BpfRecursion)
            ]
        );
        assert_eq!(
            losses.describe(),
            "8 lost (4 ring buffer full, 4 BPF recursion)"
        );
    }

    #[test]
    fn untracked_timewaits_warn_once_and_are_in_the_totals() {
        let mut losses = Losses::default();
        assert_eq!(losses.update(Counters::default()).warning, None);
        let full = |n| Counters {
            untracked_timewaits: n,
            ..Counters::default()
        };
        assert!(losses
            .update(full(2))
            .warning
            .is_some_and(|w| w.contains("TIME_WAIT map is full")));
        assert_eq!(losses.update(full(5)).warning, None);
        assert_eq!(
            losses.describe(),
            "0 lost; 5 TIME_WAIT sockets not tracked (map full): their TIME_WAIT -> CLOSE is not \
             reported"
        );
    }

    #[test]
    fn unwatched_fin_wait2_orphans_are_in_the_totals() {
        let mut losses = Losses::default();
        let update = losses.update(Counters {
            unwatched_fin_wait2: 3,
            ..Counters::default()
        });
        assert_eq!(update.warning, None);
        assert_eq!(
            losses.describe(),
            "0 lost; 3 orphans in FIN_WAIT2 not watched (map full): a move to TIME_WAIT shows at \
             the socket's end"
        );
    }
}
