//! The ends of TIME_WAIT against the real kernel (needs root; about 75 s, the length of
//! TIME_WAIT): every connection the stream shows entering TIME_WAIT, it shows leaving it when the
//! kernel's timer frees the timewait socket, while other connections churn on the same CPUs and
//! their frees interrupt the tool's programs.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The kernel's TCP_TIMEWAIT_LEN.
const TIME_WAIT: Duration = Duration::from_secs(60);

/// Runs the churn example in `ns`: connections at `rate` for `seconds`, each client closing
/// first (so that each ends in TIME_WAIT).
fn churn(ns: &Netns, rate: u32, seconds: u32) {
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(example_path("churn"))
        .args([
            "--rate",
            &rate.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .args(["--threads", "2"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running the churn example");
    assert!(status.success(), "churn failed: {status}");
}

fn sleep_until(moment: Instant) {
    thread::sleep(moment.saturating_duration_since(Instant::now()));
}

/// A connection by its addresses and ports.
fn connection(event: &Value) -> String {
    format!(
        "{}:{} {}:{}",
        event["laddr"], event["lport"], event["raddr"], event["rport"]
    )
}

#[test]
fn every_timewait_end_reaches_the_stream_under_churn() {
    let watched = Netns::new();
    // No connection takes over a TIME_WAIT of its address and ports: each enters it once.
    watched
        .run_inside(|| std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0"))
        .expect("turning off TIME_WAIT reuse in the test's namespace");
    let busy = Netns::new();
    let tool = Tool::start(&["-o", "json", "--netns", &watched.name]);
    let started = Instant::now();
    churn(&watched, 1000, 8);
    // The timewait sockets expire from a minute after they began, in batches (a timer wheel
    // groups them by the second): churn elsewhere across that whole span.
    sleep_until(started + TIME_WAIT - Duration::from_secs(3));
    churn(&busy, 20000, 16);
    sleep_until(started + TIME_WAIT + Duration::from_secs(15));
    let out = tool.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = transitions(&out.json());

    let mut entered = BTreeMap::new();
    let mut ended: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for event in &events {
        match (event["oldstate"].as_str(), event["newstate"].as_str()) {
            (_, Some("TIME_WAIT")) => *entered.entry(connection(event)).or_insert(0) += 1,
            (Some("TIME_WAIT"), Some("CLOSE")) => ended.entry(connection(event)).or_default().push(
                event["ms"]
                    .as_f64()
                    .expect("the time in TIME_WAIT is known"),
            ),
            _ => {}
        }
    }
    assert!(
        entered.len() >= 1000,
        "only {} connections entered TIME_WAIT",
        entered.len()
    );
    assert!(
        entered.values().all(|&n| n == 1),
        "a connection entered TIME_WAIT twice"
    );
    let missing: Vec<&String> = entered.keys().filter(|c| !ended.contains_key(*c)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} TIME_WAIT ends missing, e.g. {:?}; stderr: {}",
        missing.len(),
        entered.len(),
        &missing[..missing.len().min(3)],
        out.stderr
    );
    assert_eq!(ended.len(), entered.len(), "ends of connections never seen");
    // Each end once, when the timer fired: a minute, plus the timer wheel's slack. A few in a
    // thousand end within a millisecond of entering TIME_WAIT instead, on every kernel tried
    // (0 to 13 of 8,000 a run here, none at the end of the churn only): as the kernel does for
    // an RST (tcp_rfc1337 off). Those are printed; more than 1% fails.
    let mut early = Vec::new();
    for (conn, times) in &ended {
        assert_eq!(
            times.len(),
            1,
            "{conn} left TIME_WAIT {} times",
            times.len()
        );
        assert!(
            times[0] < 70_000.0,
            "{conn} was in TIME_WAIT {} ms",
            times[0]
        );
        if times[0] < 59_900.0 {
            early.push(format!(
                "{conn} after {} ms: {:?}",
                times[0],
                events
                    .iter()
                    .filter(|e| connection(e) == *conn)
                    .map(|e| format!("{} {} {}", arrow(e), e["ms"], e["time"]))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        early.len() * 100 <= entered.len(),
        "{} TIME_WAIT ended early: {early:#?}",
        early.len()
    );
    assert!(
        out.stderr
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(", 0 lost")),
        "{}",
        out.stderr
    );
}
