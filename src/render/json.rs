//! JSON lines: one object per transition or report, a stable interface for scripts.

use serde::Serialize;

use super::cells::Ipv4Text;
use super::record::{rfc3339_micros, AlertRecord, ConnectionRecord, Hex, NoticeRecord};
use super::Renderer;
use crate::alerts::Alert;
use crate::clock::Clock;
use crate::event::{Notice, Transition};
use crate::lifetimes::Connection;
use crate::losses::LostReason;
use crate::services::Service;

/// A lost-events report.
#[derive(Serialize)]
struct Lost {
    #[serde(rename = "type")]
    kind: &'static str,
    count: u64,
    reason: &'static str,
}

pub struct JsonRenderer {
    clock: Clock,
}

impl JsonRenderer {
    pub fn new(clock: Clock) -> JsonRenderer {
        JsonRenderer { clock }
    }

    /// One object per line. Each record carries its own "type" as its first field: a plain
    /// struct serializes faster than an internally tagged enum, which goes through a map.
    fn line(out: &mut Vec<u8>, line: &impl Serialize) {
        // Serializing plain data into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, line).is_ok() {
            out.push(b'\n');
        }
    }
}

impl Renderer for JsonRenderer {
    fn begin(&mut self, _out: &mut Vec<u8>) {}

    fn transition(&mut self, out: &mut Vec<u8>, transition: &Transition) {
        write_transition(out, transition, &self.clock);
    }

    fn notice(&mut self, out: &mut Vec<u8>, notice: &Notice, reason: Option<&str>) {
        Self::line(out, &NoticeRecord::new(notice, reason, &self.clock));
    }

    fn connection(&mut self, out: &mut Vec<u8>, connection: &Connection) {
        Self::line(out, &ConnectionRecord::new(connection, &self.clock));
    }

    fn alert(&mut self, out: &mut Vec<u8>, alert: &Alert) {
        Self::line(out, &AlertRecord::new(alert, &self.clock));
    }

    fn lost(&mut self, out: &mut Vec<u8>, count: u64, reason: LostReason) -> bool {
        Self::line(
            out,
            &Lost {
                kind: "lost",
                count,
                reason: reason.key(),
            },
        );
        true
    }
}

/// The service fields of a record without a service.
const NO_SERVICE: &str = r#""cgroup_path":null,"unit":null,"container_id":null,"pod_uid":null"#;

/// A transition's line, written by hand rather than through serde: the per-event path of `-o
/// json`, where serde's many small writes and float and string machinery cost several times
/// what the text line does. Byte for byte what serializing a TransitionRecord writes (a test
/// holds it to that).
fn write_transition(out: &mut Vec<u8>, t: &Transition, clock: &Clock) {
    let mut time = [0u8; 27];
    rfc3339_micros(clock.wall(t.ts_ns), &mut time);
    out.extend_from_slice(br#"{"type":"transition","time":""#);
    out.extend_from_slice(&time);
    out.extend_from_slice(br#"","skaddr":""#);
    let (hex, len) = Hex(t.skaddr).text();
    out.extend_from_slice(&hex[..len]);
    out.extend_from_slice(br#"","pid":"#);
    match t.owner {
        Some(owner) => {
            out.extend_from_slice(itoa::Buffer::new().format(owner.pid).as_bytes());
            out.extend_from_slice(br#","comm":"#);
            json_string(out, &String::from_utf8_lossy(owner.comm.as_bytes()));
        }
        None => out.extend_from_slice(br#"null,"comm":null"#),
    }
    out.extend_from_slice(if t.is_ipv6() {
        br#","family":"ipv6","laddr":""#
    } else {
        br#","family":"ipv4","laddr":""#
    });
    address(out, t.local);
    out.extend_from_slice(br#"","lport":"#);
    out.extend_from_slice(itoa::Buffer::new().format(t.local_port).as_bytes());
    out.extend_from_slice(br#","raddr":""#);
    address(out, t.remote);
    out.extend_from_slice(br#"","rport":"#);
    out.extend_from_slice(itoa::Buffer::new().format(t.remote_port).as_bytes());
    out.extend_from_slice(br#","oldstate":""#);
    out.extend_from_slice(t.old.name().as_bytes());
    out.extend_from_slice(br#"","newstate":""#);
    out.extend_from_slice(t.new.name().as_bytes());
    out.extend_from_slice(br#"","ms":"#);
    match t.micros_in_old_state() {
        Some(us) => json_millis(out, us),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","netns":"#);
    out.extend_from_slice(itoa::Buffer::new().format(t.netns).as_bytes());
    out.extend_from_slice(br#","cgroup":"#);
    out.extend_from_slice(itoa::Buffer::new().format(t.cgroup.unwrap_or(0)).as_bytes());
    match t.error {
        Some(error) => {
            out.extend_from_slice(br#","error":"#);
            json_string(out, &error.name());
        }
        None => out.extend_from_slice(br#","error":null"#),
    }
    out.push(b',');
    let service = t
        .service
        .as_deref()
        .map_or(NO_SERVICE, Service::json_fields);
    out.extend_from_slice(service.as_bytes());
    out.extend_from_slice(b"}\n");
}

/// `us` microseconds as the number of milliseconds serde writes for `us as f64 / 1000.0`
/// (the shortest form: "1.373", "60000.0"), in integer arithmetic: the float and its shortest
/// digits cost a fifth of a line.
fn json_millis(out: &mut Vec<u8>, us: u64) {
    // Below 2^52 µs (142 years) doubles are closer than 0.001 ms apart, so the three-decimal
    // form is the only one of its length that reads back the same, and none is shorter; above,
    // serde's own answer.
    if us >= 1 << 52 {
        let _ = serde_json::to_writer(out, &(us as f64 / 1_000.0));
        return;
    }
    out.extend_from_slice(itoa::Buffer::new().format(us / 1_000).as_bytes());
    let fraction = (us % 1_000) as u16;
    let digits = [
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let len = match fraction {
        0 => 2, // ".0"
        f if f % 100 == 0 => 2,
        f if f % 10 == 0 => 3,
        _ => 4,
    };
    out.extend_from_slice(&digits[..len]);
}

/// An address's text, the IPv4 case without `core::fmt`.
fn address(out: &mut Vec<u8>, addr: std::net::IpAddr) {
    match addr {
        std::net::IpAddr::V4(v4) => out.extend_from_slice(Ipv4Text::new(v4).as_str().as_bytes()),
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A JSON string, escaped as serde_json escapes it: quote, backslash and control characters.
fn json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::super::record::TransitionRecord;
    use super::*;
    use crate::render::fixtures;

    fn render(t: &Transition) -> String {
        let mut out = Vec::new();
        JsonRenderer::new(fixtures::clock()).transition(&mut out, t);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn milliseconds_are_written_as_serde_writes_them() {
        let serde = |us: u64| serde_json::to_string(&(us as f64 / 1_000.0)).unwrap();
        let ours = |us: u64| {
            let mut out = Vec::new();
            json_millis(&mut out, us);
            String::from_utf8(out).unwrap()
        };
        let mut values: Vec<u64> = (0..200_000).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            // xorshift: µs counts of every magnitude.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        values.extend([1 << 52, (1 << 52) - 1, u64::MAX, 60_000_000, 59_999_999]);
        for us in values {
            assert_eq!(ours(us), serde(us), "{us} µs");
        }
    }

    #[test]
    fn transition_golden() {
        assert_eq!(
            render(&fixtures::client_established()),
            concat!(
                r#"{"type":"transition","time":"2023-11-14T22:13:20.123456Z","skaddr":"0xffff9fd7e8192000","#,
                r#""pid":22384,"comm":"curl","family":"ipv4","laddr":"127.0.0.1","lport":63446,"#,
                r#""raddr":"127.0.0.2","rport":80,"oldstate":"SYN_SENT","newstate":"ESTABLISHED","#,
                r#""ms":1.373,"netns":4026531840,"cgroup":4321,"error":null,"#,
                r#""cgroup_path":"/system.slice/curl-test.service","unit":"curl-test.service","container_id":null,"pod_uid":null}"#,
                "\n"
            )
        );
    }

    #[test]
    fn refused_connect_names_its_error() {
        let line = render(&fixtures::refused());
        assert!(
            line.contains(r#""oldstate":"SYN_SENT","newstate":"CLOSE","#),
            "{line}"
        );
        assert!(
            line.contains("\"error\":\"ECONNREFUSED\",\"cgroup_path\""),
            "{line}"
        );
    }

    #[test]
    fn other_kinds_golden() {
        let mut r = JsonRenderer::new(fixtures::clock());
        let mut out = Vec::new();
        r.connection(&mut out, &fixtures::connection());
        r.notice(&mut out, &fixtures::retransmit(), None);
        r.notice(&mut out, &fixtures::drop_no_socket(), Some("NO_SOCKET"));
        r.alert(&mut out, &fixtures::alert());
        let got = String::from_utf8(out).unwrap();
        let want = [
            concat!(
                r#"{"type":"connection","time":"2023-11-14T22:13:20.123456Z","start":"2023-11-14T22:13:19.623456Z","#,
                r#""skaddr":"0xffff9fd7e8192000","pid":22384,"comm":"curl","family":"ipv4","laddr":"127.0.0.1","lport":63446,"#,
                r#""raddr":"127.0.0.2","rport":80,"side":"active","duration_ms":500.0,"tx_bytes":1000,"rx_bytes":20,"#,
                r#""retrans_bytes":0,"segs_out":6,"segs_in":5,"retrans":0,"srtt_ms":0.061,"min_rtt_ms":0.023,"#,
                r#""closed_first":"local","end":"fin","oldstate":"FIN_WAIT2","newstate":"TIME_WAIT","netns":4026531840,"cgroup":4321,"#,
                r#""cgroup_path":"/system.slice/curl-test.service","unit":"curl-test.service","container_id":null,"pod_uid":null}"#
            ),
            concat!(
                r#"{"type":"retransmit","time":"2023-11-14T22:13:20.123456Z","skaddr":"0xffff9fd7e8192000","pid":22384,"#,
                r#""comm":"curl","family":"ipv4","laddr":"127.0.0.1","lport":63446,"raddr":"127.0.0.2","rport":80,"#,
                r#""state":"ESTABLISHED","reason":null,"netns":4026531840,"cgroup":4321,"#,
                r#""cgroup_path":null,"unit":null,"container_id":null,"pod_uid":null}"#
            ),
            concat!(
                r#"{"type":"drop","time":"2023-11-14T22:13:20.123456Z","skaddr":null,"pid":null,"comm":null,"#,
                r#""family":"ipv4","laddr":"127.0.0.1","lport":9,"raddr":"127.0.0.2","rport":40000,"state":null,"#,
                r#""reason":"NO_SOCKET","netns":4026531840,"cgroup":0,"#,
                r#""cgroup_path":null,"unit":null,"container_id":null,"pod_uid":null}"#
            ),
            concat!(
                r#"{"type":"alert","time":"2023-11-14T22:13:51.123456Z","skaddr":"0xffff9fd7e8192000","pid":22384,"#,
                r#""comm":"curl","family":"ipv4","laddr":"127.0.0.1","lport":63446,"raddr":"127.0.0.2","rport":80,"#,
                r#""state":"CLOSE_WAIT","threshold_ms":30000.0,"age_ms":31000.0,"age_exact":true,"netns":4026531840,"cgroup":4321,"#,
                r#""cgroup_path":"/system.slice/curl-test.service","unit":"curl-test.service","container_id":null,"pod_uid":null}"#
            ),
        ];
        assert_eq!(got.lines().collect::<Vec<_>>(), want);
    }

    #[test]
    fn unknowns_are_null() {
        let line = render(&fixtures::unknown_owner_v6());
        assert!(
            line.contains(r#""pid":null,"comm":null,"family":"ipv6","laddr":"2001:db8::1""#),
            "{line}"
        );
        assert!(
            line.contains(
                r#""ms":null,"netns":4026531840,"cgroup":0,"error":null,"cgroup_path":null,"#
            ),
            "{line}"
        );
    }

    #[test]
    fn a_command_name_is_carried_exactly() {
        let line = render(&fixtures::hostile_comm());
        assert!(line.contains(r#""comm":"a,\"b\u001b[31m""#), "{line}");
        let mut t = fixtures::hostile_comm();
        t.owner = Some(crate::event::Owner {
            pid: 7,
            comm: crate::event::Comm::new(b"a\"b,c\n\x1b[2Jd"),
        });
        let line = render(&t);
        assert!(line.contains(r#""comm":"a\"b,c\n\u001b[2Jd""#), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["comm"], "a\"b,c\n\u{1b}[2Jd");
    }

    #[test]
    fn the_handwritten_transition_is_what_serde_writes() {
        use crate::event::{Comm, Errno, Owner};
        let service = |path: &str| Some(std::sync::Arc::new(Service::from_path(path)));
        let mut cases = vec![
            fixtures::client_established(),
            fixtures::refused(),
            fixtures::unknown_owner_v6(),
            fixtures::hostile_comm(),
        ];
        for (i, comm) in [
            &b"a\"b,c\n\x1b[2Jd"[..],
            b"\xff\xfe bytes",
            b"tab\there\\",
            b"\x01\x08\x0c\x7f",
            "caf\u{e9}".as_bytes(),
        ]
        .into_iter()
        .enumerate()
        {
            let mut t = fixtures::client_established();
            t.owner = Some(Owner {
                pid: 100 + i as u32,
                comm: Comm::new(comm),
            });
            t.error = Some(Errno(libc::ETIMEDOUT as u16));
            t.service = service(&format!(
                "/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{}",
                "ab".repeat(32)
            ));
            t.old_since_ns = Some(t.ts_ns - i as u64 * 123_456_789);
            t.skaddr = u64::MAX >> (i * 7);
            cases.push(t);
        }
        let mut odd = fixtures::unknown_owner_v6();
        odd.service = service("/weird\"path/x.service");
        odd.cgroup = Some(u64::MAX);
        cases.push(odd);
        for t in &cases {
            let mut fast = Vec::new();
            write_transition(&mut fast, t, &fixtures::clock());
            let mut slow = Vec::new();
            JsonRenderer::line(&mut slow, &TransitionRecord::new(t, &fixtures::clock()));
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap()
            );
        }
    }

    #[test]
    fn lost_golden() {
        let mut out = Vec::new();
        assert!(JsonRenderer::new(fixtures::clock()).lost(
            &mut out,
            12,
            LostReason::RingBufferFull
        ));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"lost\",\"count\":12,\"reason\":\"ring_buffer_full\"}\n"
        );
    }
}
