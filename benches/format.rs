//! Microbenchmark of the user-space hot path, decode + service + format, in events per second
//! on one core: `cargo bench --bench format [-- FORMAT...]`. Prints one line per output format,
//! and the cost of naming a record's service (a cached cgroup id).

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use tcpstates::cli::OutputFormat;
use tcpstates::clock::Clock;
use tcpstates::event;
use tcpstates::render;
use tcpstates::services::Services;
use tcpstates::skel::types;

/// A ring-buffer record as the BPF program writes it: an IPv4 SYN_SENT -> ESTABLISHED.
fn record() -> Vec<u8> {
    let mut e = types::event {
        ts_ns: 5_000_000_000,
        prev_ts_ns: 4_999_000_000,
        skaddr: 0xffff_8881_0512_3400,
        cgroup: 4321,
        netns: 4026531840,
        pid: 22384,
        family: libc::AF_INET as u16,
        sport: 51870,
        dport: 8080,
        oldstate: 2,
        newstate: 1,
        flags: 3,
        kind: 1,
        ..Default::default()
    };
    e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
    for (dst, src) in e.comm.iter_mut().zip(b"curl") {
        *dst = *src as i8;
    }
    // SAFETY: `event` is a plain C struct of integers and byte arrays.
    unsafe { plain::as_bytes(&e) }.to_vec()
}

/// A cgroup tree of one service, in a temporary directory, and its id.
fn services() -> (Services, u64, std::path::PathBuf) {
    use std::os::unix::fs::MetadataExt;
    let root = std::env::temp_dir().join(format!("tcpstates-bench-{}", std::process::id()));
    let unit = root.join("system.slice/web.service");
    std::fs::create_dir_all(&unit).expect("a temporary directory");
    let id = std::fs::metadata(&unit).expect("its inode").ino();
    (Services::under(Some(root.clone())), id, root)
}

fn main() {
    const EVENTS: u32 = 2_000_000;
    let raw = record();
    let (mut services, id, root) = services();
    let start = Instant::now();
    for _ in 0..EVENTS {
        black_box(services.of(black_box(id)));
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "service lookup {:>6.1} ns/event",
        elapsed * 1e9 / f64::from(EVENTS)
    );
    let _ = std::fs::remove_dir_all(root);
    let mut sink = std::io::sink();
    // `cargo bench --bench format -- json`: only the formats named (for a profiler).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    for (name, format) in [
        ("text", OutputFormat::Text),
        ("json", OutputFormat::Json),
        ("csv", OutputFormat::Csv),
    ] {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let mut renderer = render::for_format(
            format,
            Clock::measure(),
            false,
            false,
            render::Rows::Transitions,
        );
        let mut buf = Vec::with_capacity(1 << 17);
        let start = Instant::now();
        for _ in 0..EVENTS {
            match event::decode(black_box(&raw)).expect("a valid record") {
                event::Record::Transition(t) => renderer.transition(&mut buf, &t),
                event::Record::Notice(n) => renderer.notice(&mut buf, &n, None),
                event::Record::Handover(_) | event::Record::Owner(_) => {} // not shown
            }
            if buf.len() >= 1 << 16 {
                sink.write_all(&buf).expect("writing to a sink");
                buf.clear();
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "{name:<5} {:>10.0} events/s  {:>6.0} ns/event",
            f64::from(EVENTS) / elapsed,
            elapsed * 1e9 / f64::from(EVENTS)
        );
    }
}
