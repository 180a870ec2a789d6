//! Orphaned connections in FIN_WAIT2 against the real kernel (needs root): a client that closes
//! first and goes, its connection handed to a timewait socket while the peer has not closed.
//! `ss` shows FIN-WAIT-2 for those; so must the stream, the snapshots and the live table.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;

/// Per-state counts as `ss -tan` reports them inside the namespace, in the kernel's names.
fn ss_counts(ns: &Netns) -> BTreeMap<String, u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ss", "-tan"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let state = match line.split_whitespace().next().unwrap() {
            "ESTAB" => "ESTABLISHED".to_string(),
            "FIN-WAIT-1" => "FIN_WAIT1".to_string(),
            "FIN-WAIT-2" => "FIN_WAIT2".to_string(),
            other => other.replace('-', "_"),
        };
        *counts.entry(state).or_insert(0) += 1;
    }
    counts
}

fn counts(snapshot: &Value) -> BTreeMap<String, u64> {
    snapshot["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// The UTC time now, as the tool's JSON writes it (RFC 3339, µs): comparable as strings.
fn utc_now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Seconds since midnight of a JSON time, for differences.
fn seconds(time: &str) -> f64 {
    let clock = &time[11..time.len() - 1];
    let mut parts = clock.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

/// The snapshots a running tool took between two times.
fn taken_between<'a>(snapshots: &'a [Value], from: &str, to: &str) -> Vec<&'a Value> {
    snapshots
        .iter()
        .filter(|s| s["type"] == "snapshot")
        .filter(|s| {
            let t = s["time"].as_str().unwrap();
            t > from && t < to
        })
        .collect()
}

#[test]
fn ipv4_orphans_wait_in_fin_wait2_as_ss_shows_them_until_their_peer_closes() {
    orphans_wait_in_fin_wait2_until_their_peer_closes("127.0.0.1", "ipv4");
}

#[test]
fn ipv6_orphans_wait_in_fin_wait2_as_ss_shows_them_until_their_peer_closes() {
    orphans_wait_in_fin_wait2_until_their_peer_closes("::1", "ipv6");
}

fn orphans_wait_in_fin_wait2_until_their_peer_closes(addr: &str, family: &str) {
    let ns = Netns::new();
    let stream = Tool::start(&["--netns", &ns.name, "-o", "json"]);
    let live_table = Tool::start(&["--netns", &ns.name, "--snapshot", "300ms", "-o", "json"]);
    // A leaking server: it reads to EOF but keeps its sockets (CLOSE_WAIT); its clients close
    // first and exit, leaving their connections to the kernel.
    let mut leaky = Peer::spawn(
        &ns,
        &["server", addr, "8080", "--connections", "3", "--hold"],
    );
    leaky.expect("listening ");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Peer::spawn(&ns, &["client", addr, "8080", "--orphan"]);
        let port: u64 = client.expect("orphaned ").parse().unwrap();
        clients.push((client.pid, port));
        client.finish();
    }
    for n in 1..=3 {
        leaky.expect(&format!("holding {n}"));
    }
    thread::sleep(Duration::from_millis(500));

    // The leak: as ss says, and the same in a fresh walk and in the table the events keep.
    let leaking_from = utc_now();
    let leaking = ss_counts(&ns);
    assert_eq!(
        leaking,
        BTreeMap::from([("CLOSE_WAIT".to_string(), 3), ("FIN_WAIT2".to_string(), 3)])
    );
    let walked = one_shot(&ns);
    assert_eq!(counts(&walked), leaking, "{walked}");
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(ss_counts(&ns), leaking, "the namespace was not quiet");
    let leaking_to = utc_now();

    // The server closes: each peer's FIN moves its orphan to TIME_WAIT.
    leaky.finish();
    thread::sleep(Duration::from_millis(500));
    let closed_from = utc_now();
    let closed = ss_counts(&ns);
    assert_eq!(closed, BTreeMap::from([("TIME_WAIT".to_string(), 3)]));
    assert_eq!(counts(&one_shot(&ns)), closed);
    thread::sleep(Duration::from_millis(1000));
    let closed_to = utc_now();

    let live_table = live_table.stop();
    let summary = live_table.stderr.clone();
    let snapshots = live_table.json();
    for (from, to, expected) in [
        (&leaking_from, &leaking_to, &leaking),
        (&closed_from, &closed_to, &closed),
    ] {
        let taken = taken_between(&snapshots, from, to);
        assert!(taken.len() >= 2, "snapshots every 300 ms: {taken:?}");
        for snapshot in taken {
            assert_eq!(&counts(snapshot), expected, "{snapshot}\n{summary}");
        }
    }
    // While leaking, the orphans keep the owners they had (checked below with the stream).
    let during = taken_between(&snapshots, &leaking_from, &leaking_to)[0];
    let orphans: Vec<&Value> = during["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "FIN_WAIT2")
        .collect();
    assert_eq!(orphans.len(), 3, "{during}");
    for orphan in &orphans {
        let port = orphan["lport"].as_u64().unwrap();
        let (pid, _) = clients.iter().find(|(_, p)| *p == port).unwrap();
        assert_eq!(orphan["pid"], u64::from(*pid), "{orphan}");
        assert_eq!(orphan["family"], family, "{orphan}");
    }

    // The stream: each orphan entered FIN_WAIT2 once, and left it for TIME_WAIT at the FIN.
    let events = transitions(&stream.stop().json());
    for (pid, port) in &clients {
        let client = owned_by(&events, *pid);
        let mine: Vec<&Value> = client.iter().filter(|e| e["rport"] == 8080).collect();
        assert_eq!(
            mine.iter().map(|e| arrow(e)).collect::<Vec<_>>(),
            [
                "CLOSE->SYN_SENT",
                "SYN_SENT->ESTABLISHED",
                "ESTABLISHED->FIN_WAIT1",
                "FIN_WAIT1->FIN_WAIT2",
                "FIN_WAIT2->TIME_WAIT"
            ],
            "{mine:?}"
        );
        // Their time in FIN_WAIT2 counts from the ACK of their FIN (delayed by the peer, by
        // as much as 200 ms), as the stream says; not from the close (longer). The table's
        // tool stamps the change in its own program, which runs after the stream's on the
        // same call (attached later): an interrupt between the two (milliseconds under
        // emulation) makes its time shorter, never longer.
        let orphan = orphans.iter().find(|o| o["lport"] == *port).unwrap();
        let in_fin_wait2 =
            seconds(during["time"].as_str().unwrap()) - seconds(mine[3]["time"].as_str().unwrap());
        let since = orphan["since_ms"].as_f64().unwrap() / 1000.0;
        assert!(
            since - in_fin_wait2 < 0.005 && in_fin_wait2 - since < 0.05,
            "{orphan} at {} vs {}",
            during["time"],
            mine[3]
        );
        let to_timewait = mine[4];
        assert_eq!(to_timewait["lport"], *port);
        assert!(
            to_timewait["ms"].as_f64().unwrap() >= 1500.0,
            "{to_timewait}"
        );
        // At the server's FIN (to the kernel's clock tick), not when the tool noticed it.
        let server_fin = events
            .iter()
            .find(|e| e["rport"] == *port && arrow(e) == "CLOSE_WAIT->LAST_ACK")
            .unwrap();
        let gap = seconds(to_timewait["time"].as_str().unwrap())
            - seconds(server_fin["time"].as_str().unwrap());
        assert!(gap.abs() < 0.02, "{to_timewait} vs {server_fin}");
    }
}

#[test]
fn an_orphan_whose_peer_never_closes_ends_from_fin_wait2_at_the_fin_timeout() {
    let ns = Netns::new();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_fin_timeout=2",
        ],
    );
    let stream = Tool::start(&["--netns", &ns.name, "-o", "json"]);
    let mut leaky = Peer::spawn(&ns, &["server", "::1", "8080", "--hold"]);
    leaky.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "::1", "8080", "--orphan"]);
    let port: u64 = client.expect("orphaned ").parse().unwrap();
    let pid = client.pid;
    client.finish();
    leaky.expect("holding 1");
    thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        ss_counts(&ns),
        BTreeMap::from([("CLOSE_WAIT".to_string(), 1)]),
        "the orphan is gone after tcp_fin_timeout"
    );
    let events = transitions(&stream.stop().json());
    let mine = owned_by(&events, pid);
    assert_eq!(
        arrows(&mine)[2..],
        [
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->CLOSE"
        ],
        "{events:?}"
    );
    let end = &mine[4];
    assert_eq!(end["lport"], port);
    let ms = end["ms"].as_f64().unwrap();
    assert!((1_900.0..3_500.0).contains(&ms), "{end}");
    leaky.finish();
}
