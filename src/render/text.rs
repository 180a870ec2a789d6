//! Aligned text columns, laid out as BCC's and libbpf-tools' tcpstates print them.

use std::io::Write;

use super::{LostReason, Renderer};
use crate::clock::{Clock, LocalTime};
use crate::event::Transition;
use crate::sanitize;

pub struct TextRenderer {
    clock: Clock,
    local_time: LocalTime,
    timestamp: bool,
    wide: bool,
    time: String,
}

impl TextRenderer {
    pub fn new(clock: Clock, local_time: LocalTime, timestamp: bool, wide: bool) -> TextRenderer {
        TextRenderer {
            clock,
            local_time,
            timestamp,
            wide,
            time: String::new(),
        }
    }

    /// Address column width and command width: narrow fits IPv4, wide fits any IPv6 address.
    fn widths(&self) -> (usize, usize) {
        if self.wide {
            (39, 16)
        } else {
            (15, 10)
        }
    }
}

impl Renderer for TextRenderer {
    fn begin(&mut self, out: &mut Vec<u8>) {
        let (addr, comm) = self.widths();
        if self.timestamp {
            let _ = write!(out, "{:<12} ", "TIME");
        }
        if self.wide {
            let _ = write!(out, "{:<16} ", "SKADDR");
        }
        let _ = write!(out, "{:<7} {:<comm$} ", "PID", "COMM");
        if self.wide {
            let _ = write!(out, "IP ");
        }
        let _ = writeln!(
            out,
            "{:<addr$} {:<5} {:<addr$} {:<5} {:<11} -> {:<11} MS",
            "LADDR", "LPORT", "RADDR", "RPORT", "OLDSTATE", "NEWSTATE"
        );
    }

    fn transition(&mut self, out: &mut Vec<u8>, t: &Transition) {
        let (addr, comm_width) = self.widths();
        if self.timestamp {
            self.time.clear();
            let _ = self
                .local_time
                .format(self.clock.wall(t.ts_ns), &mut self.time);
            let _ = write!(out, "{:<12} ", self.time);
        }
        if self.wide {
            let _ = write!(out, "{:<16x} ", t.skaddr);
        }
        match &t.owner {
            Some(owner) => {
                let comm = sanitize::escape(owner.comm.as_bytes());
                let shown = comm
                    .char_indices()
                    .nth(comm_width)
                    .map_or(&comm[..], |(i, _)| &comm[..i]);
                let _ = write!(out, "{:<7} {:<comm_width$} ", owner.pid, shown);
            }
            None => {
                let _ = write!(out, "{:<7} {:<comm_width$} ", "-", "-");
            }
        }
        if self.wide {
            let _ = write!(out, "{:<2} ", if t.is_ipv6() { 6 } else { 4 });
        }
        let _ = write!(
            out,
            "{:<addr$} {:<5} {:<addr$} {:<5} {:<11} -> {:<11} ",
            t.local, t.local_port, t.remote, t.remote_port, t.old, t.new
        );
        let _ = match t.ms_in_old_state() {
            Some(ms) => writeln!(out, "{ms:.3}"),
            None => writeln!(out, "-"),
        };
    }

    fn lost(&mut self, _out: &mut Vec<u8>, _count: u64, _reason: LostReason) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;

    fn render(timestamp: bool, wide: bool, events: &[Transition]) -> String {
        let mut r = TextRenderer::new(fixtures::clock(), LocalTime::fixed(3600), timestamp, wide);
        let mut out = Vec::new();
        r.begin(&mut out);
        for e in events {
            r.transition(&mut out, e);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn narrow_golden() {
        let got = render(
            false,
            false,
            &[fixtures::client_established(), fixtures::unknown_owner_v6()],
        );
        assert_eq!(
            got,
            "PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS\n\
             22384   curl       127.0.0.1       63446 127.0.0.2       80    SYN_SENT    -> ESTABLISHED 1.373\n\
             -       -          2001:db8::1     443   2001:db8:ffff:ffff:ffff:ffff:ffff:2 50000 ESTABLISHED -> CLOSE_WAIT  -\n"
        );
    }

    #[test]
    fn wide_with_timestamp_golden() {
        let got = render(true, true, &[fixtures::client_established()]);
        assert_eq!(
            got,
            "TIME         SKADDR           PID     COMM             IP LADDR                                   LPORT RADDR                                   RPORT OLDSTATE    -> NEWSTATE    MS\n\
             23:13:20.123 ffff9fd7e8192000 22384   curl             4  127.0.0.1                               63446 127.0.0.2                               80    SYN_SENT    -> ESTABLISHED 1.373\n"
        );
    }

    #[test]
    fn hostile_comm_is_escaped_then_truncated() {
        let got = render(false, false, &[fixtures::hostile_comm()]);
        let row = got.lines().nth(1).unwrap();
        assert!(row.starts_with("7       a,\"b\\x1b[3 127.0.0.1"), "{row}");
        assert!(!got.contains('\x1b'));
    }
}
