//! JSON lines: one object per transition or report, a stable interface for scripts.

use serde::Serialize;

use super::record::{AlertRecord, ConnectionRecord, NoticeRecord, TransitionRecord};
use super::Renderer;
use crate::alerts::Alert;
use crate::clock::Clock;
use crate::event::{Notice, Transition};
use crate::lifetimes::Connection;
use crate::losses::LostReason;

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
        Self::line(out, &TransitionRecord::new(transition, &self.clock));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;

    fn render(t: &Transition) -> String {
        let mut out = Vec::new();
        JsonRenderer::new(fixtures::clock()).transition(&mut out, t);
        String::from_utf8(out).unwrap()
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
