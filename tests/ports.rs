//! Port pressure against the real kernel (needs root): a test namespace's ip_local_port_range
//! of ten ports, filled by connections to one destination (some ESTABLISHED, some in TIME_WAIT);
//! the snapshot and the exporter count what `ss` counts, and the next connect fails.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::prometheus::{free_port, get};
use common::*;

const LOW: u16 = 40000;
const HIGH: u16 = 40009;
const SERVER_PORT: u16 = 9000;

/// Sockets `ss` lists in `ns` holding a port of the range towards 127.0.0.1:SERVER_PORT.
fn ss_ports_in_use(ns: &Netns) -> usize {
    ns.ss()
        .iter()
        .filter(|s| {
            (LOW..=HIGH).contains(&s.local_port)
                && s.remote_port == SERVER_PORT
                && s.state != "LISTEN"
        })
        .count()
}

#[test]
fn port_pressure_is_what_ss_counts_per_destination() {
    let ns = Netns::new();
    ns.run_inside(|| {
        std::fs::write(
            "/proc/sys/net/ipv4/ip_local_port_range",
            format!("{LOW} {HIGH}"),
        )
    })
    .expect("setting the test namespace's ip_local_port_range");
    // A connect may otherwise take over a TIME_WAIT's port towards loopback (tcp_tw_reuse 2,
    // the default), which 5.10 did here, ending the TIME_WAIT that holds it.
    ns.run_inside(|| std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0"))
        .expect("turning off TIME_WAIT reuse in the test's namespace");
    let port = SERVER_PORT.to_string();
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", &port, "--connections", "10"]);
    server.expect("listening");
    // Three connections closed first (their ports stay held in TIME_WAIT), seven left open.
    let mut closed = Peer::spawn(&ns, &["client", "127.0.0.1", &port, "--connections", "3"]);
    for _ in 0..3 {
        closed.expect("closed");
    }
    closed.finish();
    let open: Vec<Peer> = (0..7)
        .map(|_| {
            let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", &port, "--idle"]);
            client.expect("open");
            client
        })
        .collect();
    assert_eq!(ss_ports_in_use(&ns), 10, "{:?}", ns.ss());
    // The range is full: the next connect to that destination finds no port.
    let mut refused = Peer::spawn(&ns, &["client", "127.0.0.1", &port]);
    assert_eq!(refused.expect("failed "), "EADDRNOTAVAIL");
    assert!(!refused.exit().success());

    let snapshot = one_shot(&ns);
    assert_eq!(
        snapshot["port_pressure"],
        serde_json::json!([{
            "netns": ns.inode(),
            "laddr": "127.0.0.1",
            "raddr": "127.0.0.1",
            "rport": SERVER_PORT,
            "in_use": 10,
            "range": 10,
            "percent": 100.0
        }])
    );
    let text = Tool::start(&["--netns", &ns.name, "--snapshot", "1s", "--count", "1"]).wait();
    assert!(
        text.stdout
            .lines()
            .any(|l| l == "Ephemeral ports in use: 127.0.0.1 -> 127.0.0.1:9000 10 of 10 (100.0%)"),
        "{}",
        text.stdout
    );

    // The exporter, over every namespace: the gauge and the range it is a share of.
    let metrics_port = free_port();
    let exporter = Tool::start(&["--metrics", &format!("127.0.0.1:{metrics_port}"), "-q"]);
    let want = [
        format!(
            "tcpstates_ephemeral_ports_in_use{{netns=\"{}\",saddr=\"127.0.0.1\",daddr=\"127.0.0.1\",dport=\"{SERVER_PORT}\"}} 10",
            ns.inode()
        ),
        format!(
            "tcpstates_ephemeral_port_range_size{{netns=\"{}\"}} 10",
            ns.inode()
        ),
    ];
    let deadline = Instant::now() + TIMEOUT;
    let mut body = String::new();
    while Instant::now() < deadline {
        body = get(metrics_port, "/metrics", None).unwrap_or_default();
        if want.iter().all(|w| body.lines().any(|l| l == w)) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    for w in &want {
        assert!(body.lines().any(|l| l == w), "{w} not in:\n{body}");
    }
    drop(exporter);
    for client in open {
        client.finish();
    }
    server.finish();
}
