//! JSON lines: one object per transition or report, a stable interface for scripts.

use serde::Serialize;

use super::record::TransitionRecord;
use super::{LostReason, Renderer};
use crate::clock::Clock;
use crate::event::Transition;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Transition(&'a TransitionRecord<'a>),
    Lost { count: u64, reason: &'static str },
}

pub struct JsonRenderer {
    clock: Clock,
}

impl JsonRenderer {
    pub fn new(clock: Clock) -> JsonRenderer {
        JsonRenderer { clock }
    }

    fn line(out: &mut Vec<u8>, line: &Line<'_>) {
        // Serializing plain data into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, line).is_ok() {
            out.push(b'\n');
        }
    }
}

impl Renderer for JsonRenderer {
    fn begin(&mut self, _out: &mut Vec<u8>) {}

    fn transition(&mut self, out: &mut Vec<u8>, transition: &Transition) {
        let record = TransitionRecord::new(transition, &self.clock);
        Self::line(out, &Line::Transition(&record));
    }

    fn lost(&mut self, out: &mut Vec<u8>, count: u64, reason: LostReason) -> bool {
        Self::line(
            out,
            &Line::Lost {
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
                r#""ms":1.373,"netns":4026531840,"cgroup":4321}"#,
                "\n"
            )
        );
    }

    #[test]
    fn unknowns_are_null() {
        let line = render(&fixtures::unknown_owner_v6());
        assert!(
            line.contains(r#""pid":null,"comm":null,"family":"ipv6","laddr":"2001:db8::1""#),
            "{line}"
        );
        assert!(
            line.contains(r#""ms":null,"netns":4026531840,"cgroup":0}"#),
            "{line}"
        );
    }

    #[test]
    fn hostile_comm_is_escaped() {
        let line = render(&fixtures::hostile_comm());
        assert!(line.contains(r#""comm":"a,\"b\\x1b[31m""#), "{line}");
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
