//! Snapshot CSV: one row per connection per snapshot, the snapshot's time first.

use std::io::{self, Write};

use super::fields::ConnRecord;
use super::SnapshotRenderer;
use crate::report::Report;

/// CSV: one row per connection per snapshot, the snapshot's time first.
#[derive(Default)]
pub struct SnapshotCsv {
    header_written: bool,
    info: bool,
}

impl SnapshotCsv {
    pub fn new(info: bool) -> SnapshotCsv {
        SnapshotCsv {
            header_written: false,
            info,
        }
    }
}

impl SnapshotRenderer for SnapshotCsv {
    fn snapshot(&mut self, out: &mut dyn Write, r: &Report<'_>) -> io::Result<()> {
        let time = humantime::format_rfc3339_micros(r.time).to_string();
        let mut writer = csv::WriterBuilder::new()
            .has_headers(!self.header_written)
            .from_writer(&mut *out);
        for c in &r.conns {
            let row = ConnRecord::new(c, r.now_ns, self.info).csv_row(&time);
            writer.serialize(row).map_err(csv_io_error)?;
            self.header_written = true;
        }
        writer.flush()
    }
}

/// The csv crate's error as an io::Error that keeps the kind of a failed write (a closed pipe
/// must still read as one).
fn csv_io_error(err: csv::Error) -> io::Error {
    let kind = match err.kind() {
        csv::ErrorKind::Io(e) => e.kind(),
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{report, table};
    use super::*;

    #[test]
    fn csv_golden() {
        let t = table();
        let mut renderer = SnapshotCsv::default();
        let mut out = Vec::new();
        renderer.snapshot(&mut out, &report(&t)).unwrap();
        renderer.snapshot(&mut out, &report(&t)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "one header, then three rows per snapshot");
        assert_eq!(
            lines[0],
            "time,family,laddr,lport,raddr,rport,state,pid,comm,since_ms,idle_ms,netns,cgroup,cgroup_path,unit,container_id,pod_uid,holders"
        );
        assert_eq!(
            lines[2],
            "2023-11-14T22:13:20.000000Z,ipv6,::1,80,::1,5000,ESTABLISHED,,,,74500.0,7,1,,,,,2"
        );
        assert_eq!(lines[4], lines[1]);
    }
}
