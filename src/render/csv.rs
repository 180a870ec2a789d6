//! CSV: the JSON fields as columns, with a header row; empty fields for unknowns.
//!
//! A stream of transitions has the transition's columns, then `type` and `reason`, so that
//! retransmits, resets, drops and alerts fit the same rows. With --lifetimes every row is a
//! connection, with the connection's columns.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;

use super::record::{
    AlertRecord, ConnectionRecord, Hex, Name, NoticeRecord, Rfc3339Micros, TransitionRecord,
};
use super::Renderer;
use crate::alerts::Alert;
use crate::clock::Clock;
use crate::event::{Notice, Transition};
use crate::lifetimes::Connection;
use crate::losses::LostReason;

/// A row of the transition stream: a transition, or another kind in the same columns.
#[derive(Serialize)]
struct Row<'a> {
    time: Rfc3339Micros,
    skaddr: Option<Hex>,
    pid: Option<u32>,
    comm: Option<Name<'a>>,
    family: &'static str,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    laddr: IpAddr,
    lport: u16,
    #[serde(serialize_with = "super::cells::serialize_addr")]
    raddr: IpAddr,
    rport: u16,
    /// The state before (for other kinds: the socket's state).
    oldstate: Option<&'static str>,
    newstate: Option<&'static str>,
    /// Time in oldstate (for alerts: the age in the state).
    ms: Option<f64>,
    netns: u32,
    cgroup: u64,
    error: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    /// A drop's reason; an alert's threshold in ms.
    reason: Option<Cow<'a, str>>,
    cgroup_path: Option<&'a str>,
    unit: Option<&'a str>,
    container_id: Option<&'a str>,
    pod_uid: Option<&'a str>,
}

impl<'a> From<TransitionRecord<'a>> for Row<'a> {
    fn from(r: TransitionRecord<'a>) -> Row<'a> {
        Row {
            time: r.time,
            skaddr: Some(r.skaddr),
            pid: r.pid,
            comm: r.comm.map(Name::escaped),
            family: r.family,
            laddr: r.laddr,
            lport: r.lport,
            raddr: r.raddr,
            rport: r.rport,
            oldstate: Some(r.oldstate),
            newstate: Some(r.newstate),
            ms: r.ms,
            netns: r.netns,
            cgroup: r.cgroup,
            error: r.error,
            kind: "transition",
            reason: None,
            cgroup_path: r.cgroup_path,
            unit: r.unit,
            container_id: r.container_id,
            pod_uid: r.pod_uid,
        }
    }
}

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

impl CsvRenderer {
    fn write(&mut self, out: &mut Vec<u8>, row: &impl Serialize) {
        // Writing plain data into a Vec cannot fail.
        if self.writer.serialize(row).is_ok() && self.writer.flush().is_ok() {
            out.append(&mut self.written.0.borrow_mut());
        }
    }
}

impl Renderer for CsvRenderer {
    fn begin(&mut self, _out: &mut Vec<u8>) {}

    fn transition(&mut self, out: &mut Vec<u8>, transition: &Transition) {
        let row = Row::from(TransitionRecord::new(transition, &self.clock));
        self.write(out, &row);
    }

    fn notice(&mut self, out: &mut Vec<u8>, notice: &Notice, reason: Option<&str>) {
        let r = NoticeRecord::new(notice, reason, &self.clock);
        let row = Row {
            time: r.time,
            skaddr: r.skaddr,
            pid: r.pid,
            comm: r.comm.map(Name::escaped),
            family: r.family,
            laddr: r.laddr,
            lport: r.lport,
            raddr: r.raddr,
            rport: r.rport,
            oldstate: r.state,
            newstate: None,
            ms: None,
            netns: r.netns,
            cgroup: r.cgroup,
            error: None,
            kind: notice.kind.name(),
            reason: r.reason.map(Cow::Borrowed),
            cgroup_path: r.cgroup_path,
            unit: r.unit,
            container_id: r.container_id,
            pod_uid: r.pod_uid,
        };
        self.write(out, &row);
    }

    fn connection(&mut self, out: &mut Vec<u8>, connection: &Connection) {
        let record = ConnectionRecord::new(connection, &self.clock);
        let record = ConnectionRecord {
            kind: None,
            comm: record.comm.map(Name::escaped),
            ..record
        };
        self.write(out, &record);
    }

    fn alert(&mut self, out: &mut Vec<u8>, alert: &Alert) {
        let r = AlertRecord::new(alert, &self.clock);
        let row = Row {
            time: r.time,
            skaddr: Some(r.skaddr),
            pid: r.pid,
            comm: r.comm.map(Name::escaped),
            family: r.family,
            laddr: r.laddr,
            lport: r.lport,
            raddr: r.raddr,
            rport: r.rport,
            oldstate: Some(r.state),
            newstate: None,
            ms: Some(r.age_ms),
            netns: r.netns,
            cgroup: r.cgroup,
            error: None,
            kind: "alert",
            reason: Some(Cow::Owned(r.threshold_ms.to_string())),
            cgroup_path: r.cgroup_path,
            unit: r.unit,
            container_id: r.container_id,
            pod_uid: r.pod_uid,
        };
        self.write(out, &row);
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
            "time,skaddr,pid,comm,family,laddr,lport,raddr,rport,oldstate,newstate,ms,netns,cgroup,error,type,reason,cgroup_path,unit,container_id,pod_uid\n\
             2023-11-14T22:13:20.123456Z,0xffff9fd7e8192000,22384,curl,ipv4,127.0.0.1,63446,127.0.0.2,80,SYN_SENT,ESTABLISHED,1.373,4026531840,4321,,transition,,/system.slice/curl-test.service,curl-test.service,,\n\
             2023-11-14T22:13:20.123456Z,0xffff9fd7e8192000,,,ipv6,2001:db8::1,443,2001:db8:ffff:ffff:ffff:ffff:ffff:2,50000,ESTABLISHED,CLOSE_WAIT,,4026531840,0,,transition,,,,,\n\
             2023-11-14T22:13:20.123456Z,0xffff9fd7e8192000,7,\"a,\"\"b\\x1b[31m\",ipv4,127.0.0.1,63446,127.0.0.2,80,SYN_SENT,ESTABLISHED,1.373,4026531840,4321,,transition,,/system.slice/curl-test.service,curl-test.service,,\n"
        );
    }

    #[test]
    fn other_kinds_share_the_columns_golden() {
        let mut renderer = CsvRenderer::new(fixtures::clock());
        let mut out = Vec::new();
        renderer.transition(&mut out, &fixtures::refused());
        renderer.notice(&mut out, &fixtures::drop_no_socket(), Some("NO_SOCKET"));
        renderer.alert(&mut out, &fixtures::alert());
        let got = String::from_utf8(out).unwrap();
        assert_eq!(
            got.lines().skip(1).collect::<Vec<_>>(),
            [
                "2023-11-14T22:13:20.123456Z,0xffff9fd7e8192000,22384,curl,ipv4,127.0.0.1,63446,127.0.0.2,80,SYN_SENT,CLOSE,1.373,4026531840,4321,ECONNREFUSED,transition,,/system.slice/curl-test.service,curl-test.service,,",
                "2023-11-14T22:13:20.123456Z,,,,ipv4,127.0.0.1,9,127.0.0.2,40000,,,,4026531840,0,,drop,NO_SOCKET,,,,",
                "2023-11-14T22:13:51.123456Z,0xffff9fd7e8192000,22384,curl,ipv4,127.0.0.1,63446,127.0.0.2,80,CLOSE_WAIT,,31000.0,4026531840,4321,,alert,30000,/system.slice/curl-test.service,curl-test.service,,",
            ]
        );
    }

    #[test]
    fn lifetimes_rows_are_connections_golden() {
        let mut renderer = CsvRenderer::new(fixtures::clock());
        let mut out = Vec::new();
        renderer.connection(&mut out, &fixtures::connection());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "time,start,skaddr,pid,comm,family,laddr,lport,raddr,rport,side,duration_ms,tx_bytes,rx_bytes,retrans_bytes,segs_out,segs_in,retrans,srtt_ms,min_rtt_ms,closed_first,end,oldstate,newstate,netns,cgroup,cgroup_path,unit,container_id,pod_uid\n\
             2023-11-14T22:13:20.123456Z,2023-11-14T22:13:19.623456Z,0xffff9fd7e8192000,22384,curl,ipv4,127.0.0.1,63446,127.0.0.2,80,active,500.0,1000,20,0,6,5,0,0.061,0.023,local,fin,FIN_WAIT2,TIME_WAIT,4026531840,4321,/system.slice/curl-test.service,curl-test.service,,\n"
        );
    }
}
