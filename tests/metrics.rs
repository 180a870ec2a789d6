//! The Prometheus endpoint, for real (root): a real Prometheus server (Debian's `prometheus`
//! package, installed by .ci/install-deps) scrapes tcpstates while the test makes traffic in a
//! private namespace, and the test asks Prometheus's HTTP API for the series; `promtool check
//! metrics` passes on the endpoint's output; a scraper that never reads stalls nothing.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::prometheus::{free_port, get, Prometheus};
use common::{Netns, Peer, Tool};

#[test]
fn a_real_prometheus_scrapes_the_transitions_and_states_the_test_made() {
    let ns = Netns::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tool = Tool::start(&["--netns", &ns.name, "--metrics", &addr, "--quiet"]);
    let prometheus = Prometheus::start(port);
    prometheus.assert_scraping();

    // Three connections that close, and two whose server side is left in CLOSE_WAIT.
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "7000", "--connections", "3"]);
    server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", "7000", "--connections", "3"]);
    for _ in 0..3 {
        client.expect("closed ");
    }
    client.finish();
    server.finish();
    let mut holder = Peer::spawn(
        &ns,
        &["server", "::1", "7001", "--connections", "2", "--hold"],
    );
    holder.expect("listening ");
    let mut half = Vec::new();
    for _ in 0..2 {
        let mut c = Peer::spawn(&ns, &["client", "::1", "7001", "--hold"]);
        c.expect("holding ");
        half.push(c);
    }
    holder.expect("holding 1");
    holder.expect("holding 2");

    let queries = [
        (
            r#"sum(tcpstates_transitions_total{old_state="SYN_SENT",new_state="ESTABLISHED"})"#,
            5.0,
        ),
        (
            r#"sum(tcpstates_transitions_total{old_state="LISTEN",new_state="SYN_RECV"})"#,
            5.0,
        ),
        (
            r#"sum(tcpstates_transitions_total{old_state="FIN_WAIT2",new_state="TIME_WAIT"})"#,
            3.0,
        ),
        (r#"tcpstates_connections{state="CLOSE_WAIT"}"#, 2.0),
        (r#"tcpstates_connections{state="FIN_WAIT2"}"#, 2.0),
        (r#"tcpstates_connections{state="TIME_WAIT"}"#, 3.0),
        // Both servers closed their listeners after their last accept.
        (r#"absent(tcpstates_connections{state="LISTEN"})"#, 1.0),
        ("tcpstates_close_wait_owners", 1.0),
        (r#"sum(tcpstates_connections_ended_total{end="fin"})"#, 6.0),
        (r#"sum(tcpstates_lost_events_total) or vector(0)"#, 0.0),
    ];
    for (query, want) in queries {
        assert_eq!(prometheus.wait_for(query, want), Some(want), "{query}");
    }
    let oldest = prometheus
        .value("tcpstates_close_wait_oldest_seconds")
        .unwrap();
    assert!(oldest > 0.0, "{oldest}");
    let runs = prometheus
        .value(r#"tcpstates_bpf_runs_total{program="on_set_state"}"#)
        .unwrap();
    assert!(runs >= 40.0, "at least the test's transitions: {runs}");

    // The endpoint's own output passes promtool's checks, in the Prometheus text format.
    let body = get(port, "/metrics", Some("text/plain;version=0.0.4")).unwrap();
    assert!(
        body.contains("# TYPE tcpstates_transitions_total counter"),
        "{body}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // OpenMetrics when asked for it, as Prometheus does.
    let om = get(
        port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .unwrap();
    assert!(om.ends_with("# EOF\n"));

    for c in half {
        c.finish();
    }
    holder.finish();
    let out = tool.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "", "--quiet");
}

#[test]
fn a_scraper_that_never_reads_stalls_neither_events_nor_other_scrapes() {
    let ns = Netns::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tool = Tool::start(&["--netns", &ns.name, "--metrics", &addr, "-o", "json"]);
    // One scraper asks and never reads; one connects and never asks; a few more pile up.
    let mut stuck = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if i % 2 == 0 {
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        }
        stuck.push(s);
    }
    let started = Instant::now();
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "7000", "--connections", "20"]);
    server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", "7000", "--connections", "20"]);
    for _ in 0..20 {
        client.expect("closed ");
    }
    client.finish();
    server.finish();
    // A well-behaved scrape still gets an answer, with the traffic in it (soon).
    let want = r#"tcpstates_transitions_total{old_state="SYN_SENT",new_state="ESTABLISHED"} 20"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut body = String::new();
    while Instant::now() < deadline && !body.contains(want) {
        body = get(port, "/metrics", None).expect("an answer despite the stuck scrapers");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(body.contains(want), "{body}");
    let out = tool.stop();
    drop(stuck);
    let events = out.json();
    let established = events
        .iter()
        .filter(|e| e["type"] == "transition" && common::arrow(e) == "SYN_SENT->ESTABLISHED")
        .count();
    assert_eq!(established, 20, "every transition streamed");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(out.stderr.contains(", 0 lost"), "{}", out.stderr);
}

#[test]
fn bad_metrics_addresses_fail_at_start_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(common::tool_path())
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "tcpstates: --metrics {addr}: cannot listen: Address already in use (os error 98)\n"
        )
    );
    let out = Command::new(common::tool_path())
        .args(["--metrics", "9977"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tcpstates: invalid value '9977' for '--metrics <ADDR:PORT>': expected ADDR:PORT, e.g. 127.0.0.1:9977, [::1]:9977 or :9977\n"
    );
}
