//! Dwell alerts: a socket that stays in a state longer than its rule allows is reported once.

use std::collections::HashSet;
use std::time::Duration;

use crate::config::AlertRule;
use crate::table::{Age, Conn, ConnTable};
use crate::tcp_state::TcpState;

/// One socket over its state's threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub conn: Conn,
    /// How long it has been in the state: exact, or (seen only since it was read) a lower bound.
    pub age: Age,
    pub rule: AlertRule,
    /// CLOCK_BOOTTIME when it was found.
    pub now_ns: u64,
}

/// The rules, and the stays already reported.
#[derive(Debug, Default)]
pub struct Alerts {
    rules: Vec<AlertRule>,
    reported: HashSet<(u64, TcpState, u64)>,
    fired: u64,
}

impl Alerts {
    pub fn new(rules: Vec<AlertRule>) -> Alerts {
        Alerts {
            rules,
            ..Alerts::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The states the rules watch, as a state mask.
    pub fn state_mask(&self) -> u32 {
        self.rules.iter().fold(0, |m, r| m | r.state.mask())
    }

    /// How often to look: a tenth of the shortest threshold, from 10 ms to 1 s.
    pub fn check_interval(&self) -> Duration {
        let shortest = self.rules.iter().map(|r| r.after).min();
        shortest.map_or(Duration::from_secs(1), |d| {
            (d / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
        })
    }

    /// Alerts fired so far.
    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// The sockets of `table` newly over a threshold at boot time `now_ns`, oldest first.
    pub fn check(&mut self, table: &ConnTable, now_ns: u64) -> Vec<Alert> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let mut current = HashSet::new();
        let mut alerts = Vec::new();
        for conn in table.conns() {
            let Some(rule) = self.rules.iter().find(|r| r.state == conn.state) else {
                continue;
            };
            let Some(age) = conn.age(now_ns) else {
                continue;
            };
            if age.ns() < rule.after.as_nanos() as u64 {
                continue;
            }
            let stay = conn.stay();
            current.insert(stay);
            if !self.reported.contains(&stay) {
                alerts.push(Alert {
                    conn: conn.clone(),
                    age,
                    rule: *rule,
                    now_ns,
                });
            }
        }
        // Forget stays that ended: memory follows the table.
        self.reported = current;
        self.fired += alerts.len() as u64;
        alerts.sort_by_key(|a| std::cmp::Reverse(a.age.ns()));
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::transition;

    fn rule(state: TcpState, secs: u64) -> AlertRule {
        AlertRule {
            state,
            after: Duration::from_secs(secs),
        }
    }

    #[test]
    fn each_stay_is_reported_once() {
        let mut table = ConnTable::new(0);
        let s = 1_000_000_000;
        table.apply(&transition(
            1,
            TcpState::Established,
            TcpState::CloseWait,
            s,
        ));
        table.apply(&transition(2, TcpState::SynSent, TcpState::Established, s));
        let mut alerts = Alerts::new(vec![rule(TcpState::CloseWait, 30)]);
        assert!(alerts.check(&table, s + 29 * s).is_empty());
        let fired = alerts.check(&table, s + 31 * s);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].conn.skaddr, 1);
        assert_eq!(fired[0].age, Age::InState(31 * s));
        assert!(alerts.check(&table, s + 60 * s).is_empty());
        assert_eq!(alerts.fired(), 1);
        // The socket closes; a new one at the same address stays too long: a new alert.
        table.apply(&transition(
            1,
            TcpState::CloseWait,
            TcpState::LastAck,
            62 * s,
        ));
        assert!(alerts.check(&table, 63 * s).is_empty());
        table.apply(&transition(
            1,
            TcpState::Established,
            TcpState::CloseWait,
            64 * s,
        ));
        assert_eq!(alerts.check(&table, 95 * s).len(), 1);
        assert_eq!(alerts.fired(), 2);
    }

    #[test]
    fn interval_and_mask_follow_the_rules() {
        let alerts = Alerts::new(vec![
            rule(TcpState::CloseWait, 30),
            rule(TcpState::SynSent, 3),
        ]);
        assert_eq!(alerts.check_interval(), Duration::from_millis(300));
        assert_eq!(
            alerts.state_mask(),
            TcpState::CloseWait.mask() | TcpState::SynSent.mask()
        );
        assert_eq!(Alerts::default().check_interval(), Duration::from_secs(1));
    }
}
