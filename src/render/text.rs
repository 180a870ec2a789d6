//! Aligned text columns, laid out as BCC's and libbpf-tools' tcpstates print them (and, for
//! --lifetimes, as tcplife does).

use std::io::Write;
use std::net::IpAddr;

use super::cells::{addr_cell, cell, int_cell, millis, millis_cell};
use super::{Renderer, Rows};
use crate::alerts::Alert;
use crate::clock::{Clock, LocalTime};
use crate::event::{Errno, Notice, Owner, Transition};
use crate::lifetimes::Connection;
use crate::losses::LostReason;
use crate::sanitize;
use crate::table::Age;

pub struct TextRenderer {
    clock: Clock,
    local_time: LocalTime,
    timestamp: bool,
    wide: bool,
    rows: Rows,
    time: String,
}

/// The columns every row starts with.
struct Lead<'a> {
    ts_ns: u64,
    skaddr: Option<u64>,
    owner: &'a Option<Owner>,
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
}

impl<'a> From<&'a Transition> for Lead<'a> {
    fn from(t: &'a Transition) -> Lead<'a> {
        Lead {
            ts_ns: t.ts_ns,
            skaddr: Some(t.skaddr),
            owner: &t.owner,
            local: t.local,
            local_port: t.local_port,
            remote: t.remote,
            remote_port: t.remote_port,
        }
    }
}

impl<'a> From<&'a Notice> for Lead<'a> {
    fn from(n: &'a Notice) -> Lead<'a> {
        Lead {
            ts_ns: n.ts_ns,
            skaddr: n.skaddr,
            owner: &n.owner,
            local: n.local,
            local_port: n.local_port,
            remote: n.remote,
            remote_port: n.remote_port,
        }
    }
}

impl<'a> From<&'a Alert> for Lead<'a> {
    fn from(a: &'a Alert) -> Lead<'a> {
        let c = &a.conn;
        Lead {
            ts_ns: a.now_ns,
            skaddr: Some(c.skaddr),
            owner: &c.owner,
            local: c.local,
            local_port: c.local_port,
            remote: c.remote,
            remote_port: c.remote_port,
        }
    }
}

impl TextRenderer {
    pub fn new(
        clock: Clock,
        local_time: LocalTime,
        timestamp: bool,
        wide: bool,
        rows: Rows,
    ) -> TextRenderer {
        TextRenderer {
            clock,
            local_time,
            timestamp,
            wide,
            rows,
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

    fn lead(&mut self, out: &mut Vec<u8>, lead: Lead<'_>) {
        let (addr, comm_width) = self.widths();
        if self.timestamp {
            self.time.clear();
            let _ = self
                .local_time
                .format(self.clock.wall(lead.ts_ns), &mut self.time);
            cell(out, &self.time, 12);
        }
        if self.wide {
            match lead.skaddr {
                Some(skaddr) => {
                    let _ = write!(out, "{skaddr:<16x} ");
                }
                None => {
                    let _ = write!(out, "{:<16} ", "-");
                }
            }
        }
        match lead.owner {
            Some(owner) => {
                let comm = sanitize::escape(owner.comm.as_bytes());
                let shown = comm
                    .char_indices()
                    .nth(comm_width)
                    .map_or(&comm[..], |(i, _)| &comm[..i]);
                int_cell(out, owner.pid, 7);
                cell(out, shown, comm_width);
            }
            None => {
                cell(out, "-", 7);
                cell(out, "-", comm_width);
            }
        }
        if self.wide {
            cell(out, if lead.local.is_ipv6() { "6" } else { "4" }, 2);
        }
        addr_cell(out, lead.local, addr);
        int_cell(out, lead.local_port, 5);
        addr_cell(out, lead.remote, addr);
        int_cell(out, lead.remote_port, 5);
    }
}

/// A socket error as an operator says it.
fn error_text(error: Errno) -> String {
    match i32::from(error.0) {
        libc::ECONNREFUSED => "refused".into(),
        libc::ETIMEDOUT => "timeout".into(),
        libc::ECONNRESET | libc::EPIPE => "reset".into(),
        _ => error.name(),
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
        let _ = write!(
            out,
            "{:<addr$} {:<5} {:<addr$} {:<5} ",
            "LADDR", "LPORT", "RADDR", "RPORT"
        );
        let _ = match self.rows {
            Rows::Transitions => writeln!(out, "{:<11} -> {:<11} MS", "OLDSTATE", "NEWSTATE"),
            Rows::Connections => writeln!(
                out,
                "{:<10} {:<10} {:<7} {:<7} {:<6} {:<14} MS",
                "TX_BYTES", "RX_BYTES", "RETRANS", "RTT_MS", "CLOSER", "END"
            ),
        };
    }

    fn transition(&mut self, out: &mut Vec<u8>, t: &Transition) {
        self.lead(out, Lead::from(t));
        cell(out, t.old.name(), 11);
        out.extend_from_slice(b"-> ");
        cell(out, t.new.name(), 11);
        match t.micros_in_old_state() {
            Some(us) => millis(out, us),
            None => out.push(b'-'),
        }
        if let Some(error) = t.error {
            let _ = write!(out, " {}", error_text(error));
        }
        out.push(b'\n');
    }

    fn notice(&mut self, out: &mut Vec<u8>, n: &Notice, reason: Option<&str>) {
        self.lead(out, Lead::from(n));
        let state = n.state.map_or("-", |s| s.name());
        let kind = n.kind.name().to_ascii_uppercase();
        let _ = writeln!(out, "{state:<11} ** {kind:<11} {}", reason.unwrap_or("-"));
    }

    fn connection(&mut self, out: &mut Vec<u8>, c: &Connection) {
        let t = &c.last;
        self.lead(out, Lead::from(t));
        int_cell(out, c.tx_bytes(), 10);
        int_cell(out, c.rx_bytes(), 10);
        int_cell(out, c.stats.retrans, 7);
        millis_cell(out, u64::from(c.stats.srtt_us), 7);
        cell(out, c.closed_first().map_or("-", |s| s.name()), 6);
        cell(out, &c.ending.name(), 14);
        match c.duration_ns() {
            Some(ns) => millis(out, ns / 1_000),
            None => out.push(b'-'),
        }
        out.push(b'\n');
    }

    fn alert(&mut self, out: &mut Vec<u8>, a: &Alert) {
        self.lead(out, Lead::from(a));
        let c = &a.conn;
        // A socket there before tracing began: its age is at least this.
        let at_least = if matches!(a.age, Age::Idle(_)) {
            ">="
        } else {
            ""
        };
        cell(out, c.state.name(), 11);
        out.extend_from_slice(b"!! ");
        cell(out, "ALERT", 11);
        out.extend_from_slice(at_least.as_bytes());
        millis(out, a.age.ns() / 1_000);
        let _ = writeln!(out, " (over {})", humantime::format_duration(a.rule.after));
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
        let mut r = TextRenderer::new(
            fixtures::clock(),
            LocalTime::fixed(3600),
            timestamp,
            wide,
            Rows::Transitions,
        );
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
    fn other_kinds_golden() {
        let mut r = TextRenderer::new(
            fixtures::clock(),
            LocalTime::fixed(3600),
            false,
            false,
            Rows::Transitions,
        );
        let mut out = Vec::new();
        r.transition(&mut out, &fixtures::refused());
        r.notice(&mut out, &fixtures::retransmit(), None);
        r.notice(&mut out, &fixtures::drop_no_socket(), Some("NO_SOCKET"));
        r.alert(&mut out, &fixtures::alert());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "22384   curl       127.0.0.1       63446 127.0.0.2       80    SYN_SENT    -> CLOSE       1.373 refused\n\
             22384   curl       127.0.0.1       63446 127.0.0.2       80    ESTABLISHED ** RETRANSMIT  -\n\
             -       -          127.0.0.1       9     127.0.0.2       40000 -           ** DROP        NO_SOCKET\n\
             22384   curl       127.0.0.1       63446 127.0.0.2       80    CLOSE_WAIT  !! ALERT       31000.000 (over 30s)\n"
        );
    }

    #[test]
    fn lifetimes_golden() {
        let mut r = TextRenderer::new(
            fixtures::clock(),
            LocalTime::fixed(3600),
            true,
            false,
            Rows::Connections,
        );
        let mut out = Vec::new();
        r.begin(&mut out);
        r.connection(&mut out, &fixtures::connection());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TIME         PID     COMM       LADDR           LPORT RADDR           RPORT TX_BYTES   RX_BYTES   RETRANS RTT_MS  CLOSER END            MS\n\
             23:13:20.123 22384   curl       127.0.0.1       63446 127.0.0.2       80    1000       20         0       0.061   local  fin            500.000\n"
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
