//! Accounting of events the kernel could not deliver: ring buffer full, or BPF runs skipped.

use anyhow::Result;

use crate::bpf::{RecursionMisses, Tracer};
use crate::plural::counted;
use crate::render::LostReason;

/// Totals since start; `update` returns what is new since the previous call.
#[derive(Debug, Default)]
pub struct Losses {
    ring_drops: u64,
    misses: RecursionMisses,
    /// Timewait sockets the TIME_WAIT map had no room for; their ends will not be reported.
    untracked_timewaits: u64,
    untracked_warned: bool,
}

impl Losses {
    /// Reads the kernel's counters and returns the losses new since the last call; warns once
    /// when the TIME_WAIT map is full.
    pub fn update(&mut self, tracer: &Tracer<'_>) -> Result<[(u64, LostReason); 2]> {
        let drops = tracer.ring_buffer_drops()?;
        let misses = tracer.recursion_misses()?;
        self.untracked_timewaits = tracer.untracked_timewaits()?;
        if let Some(warning) = self.take_timewait_warning() {
            eprintln!("{warning}");
        }
        Ok(self.advance(drops, misses))
    }

    /// Once, when the TIME_WAIT map first turned a socket away: what that means.
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
        if self.misses.timewait > 0 {
            text.push_str(&format!(
                "; the kernel skipped {} of the TIME_WAIT end hook (a TIME_WAIT -> CLOSE may \
                 be missing)",
                counted(self.misses.timewait, "nested run")
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_what_is_new_and_describes_totals() {
        let mut losses = Losses::default();
        assert_eq!(losses.describe(), "0 lost");
        let new = losses.advance(
            3,
            RecursionMisses {
                set_state: 2,
                timewait: 1,
                notices: 0,
            },
        );
        assert_eq!(
            new,
            [
                (3, LostReason::RingBufferFull),
                (2, LostReason::BpfRecursion)
            ]
        );
        let new = losses.advance(
            4,
            RecursionMisses {
                set_state: 2,
                timewait: 1,
                notices: 1,
            },
        );
        assert_eq!(
            new,
            [
                (1, LostReason::RingBufferFull),
                (1, LostReason::BpfRecursion)
            ]
        );
        assert_eq!(
            losses.describe(),
            "7 lost (4 ring buffer full, 3 BPF recursion); the kernel skipped 1 nested run of \
             the TIME_WAIT end hook (a TIME_WAIT -> CLOSE may be missing)"
        );
    }

    #[test]
    fn untracked_timewaits_warn_once_and_are_in_the_totals() {
        let mut losses = Losses::default();
        assert_eq!(losses.take_timewait_warning(), None);
        losses.untracked_timewaits = 2;
        assert!(losses
            .take_timewait_warning()
            .is_some_and(|w| w.contains("TIME_WAIT map is full")));
        losses.untracked_timewaits = 5;
        assert_eq!(losses.take_timewait_warning(), None);
        assert_eq!(
            losses.describe(),
            "0 lost; 5 TIME_WAIT sockets not tracked (map full): their TIME_WAIT -> CLOSE is not \
             reported"
        );
    }
}
