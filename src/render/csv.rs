//! CSV: the JSON fields as columns, with a header row; empty fields for unknowns.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use super::record::TransitionRecord;
use super::{LostReason, Renderer};
use crate::clock::Clock;
use crate::event::Transition;

/// The csv writer's sink; the renderer moves what it wrote into the caller's buffer.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl io::Write for Shared {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct CsvRenderer {
    clock: Clock,
    written: Shared,
    writer: csv::Writer<Shared>,
}

impl CsvRenderer {
    pub fn new(clock: Clock) -> CsvRenderer {
        let written = Shared::default();
        // The header comes from the record's field names with the first row.
        let writer = csv::Writer::from_writer(written.clone());
        CsvRenderer {
            clock,
            written,
            writer,
        }
    }
}

impl Renderer for CsvRenderer {
    fn begin(&mut self, _out: &mut Vec<u8>) {}

    fn transition(&mut self, out: &mut Vec<u8>, transition: &Transition) {
        let record = TransitionRecord::new(transition, &self.clock);
        // Writing plain data into a Vec cannot fail.
        if self.writer.serialize(&record).is_ok() && self.writer.flush().is_ok() {
            out.append(&mut self.written.0.borrow_mut());
        }
    }

    fn lost(&mut self, _out: &mut Vec<u8>, _count: u64, _reason: LostReason) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;

    #[test]
    fn header_then_rows_golden() {
        let mut renderer = CsvRenderer::new(fixtures::clock());
        let mut out = Vec::new();
        renderer.begin(&mut out);
        renderer.transition(&mut out, &fixtures::client_established());
        renderer.transition(&mut out, &fixtures::unknown_owner_v6());
        renderer.transition(&mut out, &fixtures::hostile_comm());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "time,skaddr,pid,comm,family,laddr,lport,raddr,rport,oldstate,newstate,ms,netns,cgroup\n\
             2023-11-14T22:13:20.123456Z,0xffff9fd7e8192000,22384,curl,ipv4,127.0.0.1,63446,127.0.0.2,80,SYN_SENT,ESTABLISHED,1.373,4026531840,4321\n\
             2023-11-14T22:13:20.123456Z,0xffff9fd7e8192000,,,ipv6,2001:db8::1,443,2001:db8:ffff:ffff:ffff:ffff:ffff:2,50000,ESTABLISHED,CLOSE_WAIT,,4026531840,0\n\
             2023-11-14T22:13:20.123456Z,0xffff9fd7e8192000,7,\"a,\"\"b\\x1b[31m\",ipv4,127.0.0.1,63446,127.0.0.2,80,SYN_SENT,ESTABLISHED,1.373,4026531840,4321\n"
        );
    }
}
