//! Snapshot mode against the real kernel (needs root): sockets that existed before the start,
//! counts that agree with `ss`, transitions between snapshots, and the CLOSE_WAIT leak report.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::Duration;

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

fn snapshot_counts(snapshot: &Value) -> BTreeMap<String, u64> {
    snapshot["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn connections<'a>(snapshot: &'a Value, state: &str) -> Vec<&'a Value> {
    snapshot["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == state)
        .collect()
}

/// One snapshot of `ns` as JSON, with `extra` options.
fn one_shot_json(ns: &Netns, extra: &[&str]) -> Vec<Value> {
    let out = one_shot_with(Some(ns), extra);
    assert!(out.status.success(), "{}", out.stderr);
    out.json()
}

fn one_snapshot(args: &[&str]) -> Vec<Value> {
    let out = Tool::start(args).wait();
    assert!(out.status.success(), "{}", out.stderr);
    out.json()
}

#[test]
fn existing_sockets_appear_with_owners_and_counts_agree_with_ss() {
    let ns = Netns::new();
    // A leaking server: it reads to EOF but never closes, leaving two sockets in CLOSE_WAIT.
    let mut leaky = Peer::spawn(
        &ns,
        &[
            "server",
            "127.0.0.1",
            "8080",
            "--connections",
            "2",
            "--hold",
        ],
    );
    leaky.expect("listening ");
    let mut half_closed = Vec::new();
    for _ in 0..2 {
        let mut c = Peer::spawn(&ns, &["client", "127.0.0.1", "8080", "--hold"]);
        c.expect("holding ");
        half_closed.push(c);
    }
    leaky.expect("holding 1");
    leaky.expect("holding 2");
    // An established connection, idle.
    let mut quiet = Peer::spawn(&ns, &["server", "::1", "8081"]);
    quiet.expect("listening ");
    let mut idle = Peer::spawn(&ns, &["client", "::1", "8081", "--idle"]);
    idle.expect("open ");
    // A finished connection whose client side waits in TIME_WAIT.
    let mut done_server = Peer::spawn(&ns, &["server", "127.0.0.1", "8082"]);
    done_server.expect("listening ");
    let mut done_client = Peer::spawn(&ns, &["client", "127.0.0.1", "8082"]);
    done_client.expect("closed ");
    done_client.finish();
    done_server.expect("closed 1");
    done_server.finish();
    thread::sleep(Duration::from_millis(1500));

    let before = ss_counts(&ns);
    let lines = one_shot_json(&ns, &[]);
    let after = ss_counts(&ns);
    assert_eq!(before, after, "the namespace was not quiet");
    assert_eq!(lines.len(), 1);
    let snap = &lines[0];
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snapshot_counts(snap), before);
    assert_eq!(
        before,
        BTreeMap::from([
            ("CLOSE_WAIT".to_string(), 2),
            ("ESTABLISHED".to_string(), 2),
            ("FIN_WAIT2".to_string(), 2),
            ("LISTEN".to_string(), 1),
            ("TIME_WAIT".to_string(), 1),
        ]),
        "the leaky server's listener is closed; the quiet one's is open"
    );

    let pid = |c: &Value| c["pid"].as_u64().map(|p| p as u32);
    let listener = connections(snap, "LISTEN");
    assert_eq!(pid(listener[0]), Some(quiet.pid));
    for c in connections(snap, "CLOSE_WAIT") {
        assert_eq!(pid(c), Some(leaky.pid), "{c}");
        assert!(
            c["since_ms"].is_null(),
            "entered CLOSE_WAIT before the tool started: {c}"
        );
        assert!(c["idle_ms"].as_f64().unwrap() >= 1500.0, "{c}");
    }
    let holders: Vec<u32> = half_closed.iter().map(|p| p.pid).collect();
    for c in connections(snap, "FIN_WAIT2") {
        assert!(holders.contains(&pid(c).unwrap()), "{c}");
    }
    let mut established: Vec<u32> = connections(snap, "ESTABLISHED")
        .iter()
        .map(|c| pid(c).unwrap())
        .collect();
    established.sort_unstable();
    let mut expected = vec![quiet.pid, idle.pid];
    expected.sort_unstable();
    assert_eq!(established, expected);
    // Nobody holds a TIME_WAIT socket that was made before the tool started.
    assert_eq!(pid(connections(snap, "TIME_WAIT")[0]), None);

    // The leak is attributed to the leaking process, with its age as a lower bound.
    let leak = &snap["close_wait"][0];
    assert_eq!(leak["pid"].as_u64(), Some(u64::from(leaky.pid)));
    assert_eq!(leak["comm"], "tcp_peer");
    assert_eq!(leak["count"], 2);
    assert_eq!(leak["oldest_is_idle"], true);
    assert!(leak["oldest_ms"].as_f64().unwrap() >= 1500.0);
    assert_eq!(snap["fin_wait2"]["by"], "remote_endpoint");
    assert_eq!(
        snap["fin_wait2"]["top"][0],
        serde_json::json!({"key": "127.0.0.1:8080", "count": 2})
    );

    // Owner filters, which a one-shot snapshot applies once the owners are read.
    let leaky_pid = leaky.pid.to_string();
    let only_leaky = &one_shot_json(&ns, &["-p", &leaky_pid])[0];
    let conns = only_leaky["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{only_leaky}");
    assert!(
        conns.iter().all(|c| pid(c) == Some(leaky.pid)),
        "{only_leaky}"
    );
    let nobody = &one_shot_json(&ns, &["--comm", "not_tcp_peer"])[0];
    assert_eq!(nobody["connections"], serde_json::json!([]), "{nobody}");
    let by_comm = &one_shot_json(&ns, &["--comm", "tcp_peer"])[0];
    assert_eq!(
        by_comm["connections"].as_array().unwrap().len(),
        7,
        "all but the TIME_WAIT socket, which no process holds: {by_comm}"
    );

    for p in half_closed {
        p.finish();
    }
    idle.finish();
    quiet.finish();
    leaky.finish();
}

#[test]
fn connections_between_snapshots_show_in_the_transitions() {
    let ns = Netns::new();
    let tool = Tool::start(&[
        "--netns",
        &ns.name,
        "--snapshot",
        "1s",
        "--count",
        "3",
        "-o",
        "json",
    ]);
    // The first snapshot is out (the tool said so); this traffic belongs to the next ones.
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "0", "--hold"]);
    let port = server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", &port, "--hold"]);
    client.expect("holding ");
    server.expect("holding 1");
    let out = tool.wait();
    assert!(out.status.success(), "{}", out.stderr);
    let snaps = out.json();
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[0]["transitions"], serde_json::json!({}));
    assert_eq!(snaps[0]["connections"], serde_json::json!([]));

    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for s in &snaps[1..] {
        for (k, v) in s["transitions"].as_object().unwrap() {
            *total.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    let expected: BTreeMap<String, u64> = [
        "CLOSE->LISTEN",
        "LISTEN->CLOSE",
        "CLOSE->SYN_SENT",
        "SYN_SENT->ESTABLISHED",
        "LISTEN->SYN_RECV",
        "SYN_RECV->ESTABLISHED",
        "ESTABLISHED->FIN_WAIT1",
        "ESTABLISHED->CLOSE_WAIT",
        "FIN_WAIT1->FIN_WAIT2",
    ]
    .into_iter()
    .map(|k| (k.to_string(), 1))
    .collect();
    assert_eq!(total, expected);

    // In the last snapshot: the server holds a CLOSE_WAIT seen entering it, so its age is exact.
    let last = &snaps[2];
    let leak = &last["close_wait"][0];
    assert_eq!(leak["pid"].as_u64(), Some(u64::from(server.pid)));
    assert_eq!(leak["oldest_is_idle"], false);
    let cw = connections(last, "CLOSE_WAIT");
    assert_eq!(cw.len(), 1);
    assert!(cw[0]["since_ms"].as_f64().unwrap() > 0.0);
    assert!(cw[0]["idle_ms"].is_null());
    let fw2 = connections(last, "FIN_WAIT2");
    assert_eq!(fw2[0]["pid"].as_u64(), Some(u64::from(client.pid)));
    client.finish();
    server.finish();
}

/// What the tests' own cgroup names (a unit, a container), if anything.
fn own_service() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let service = tcpstates::services::Service::from_path(path);
    service.is_named().then(|| service.label())
}

#[test]
fn text_csv_and_summary_forms() {
    let ns = Netns::new();
    let mut server = Peer::spawn(&ns, &["server", "::1", "8080"]);
    server.expect("listening ");
    let base = [
        "--netns",
        ns.name.as_str(),
        "--snapshot",
        "1s",
        "--count",
        "1",
    ];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = Tool::start(&args).wait();
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout
    };

    let text = with(&[]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("  1 socket: LISTEN 1  lost 0"), "{text}");
    let owner = format!("{}/tcp_peer", server.pid);
    // The server runs in the tests' cgroup: a Service column where that names a unit.
    match own_service() {
        None => {
            assert_eq!(
                lines[1],
                "Proto  Local Address  Foreign Address  State   PID/Program name  In state"
            );
            assert_eq!(
                lines[2],
                format!("tcp6   [::1]:8080     [::]:*           LISTEN  {owner:<16}  -")
            );
        }
        Some(label) => {
            let cells: Vec<&str> = lines[2].split_whitespace().collect();
            assert_eq!(
                cells,
                [
                    "tcp6",
                    "[::1]:8080",
                    "[::]:*",
                    "LISTEN",
                    &owner,
                    &label,
                    "-"
                ]
            );
        }
    }
    assert_eq!(lines[3], "Transitions in the last 1s: none");
    assert!(!text.contains('\x1b'), "no colour when piped");

    let csv = with(&["-o", "csv"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "time,family,laddr,lport,raddr,rport,state,pid,comm,since_ms,idle_ms,netns,cgroup,cgroup_path,unit,container_id,pod_uid,holders"
    );
    let row = format!(
        ",ipv6,::1,8080,::,0,LISTEN,{},tcp_peer,,,{},",
        server.pid,
        ns.inode()
    );
    assert!(rows[1].contains(&row), "{csv}");
    assert_eq!(rows.len(), 2);

    let summary = with(&["--summary"]);
    assert!(!summary.contains("Proto"), "{summary}");
    let summary_json = with(&["--summary", "-o", "json"]);
    let v: Value = serde_json::from_str(summary_json.trim()).unwrap();
    assert!(v.get("connections").is_none());
    assert_eq!(v["counts"], serde_json::json!({"LISTEN": 1}));

    // Filters apply to snapshots too.
    let filtered = with(&["-L", "9999", "-o", "json"]);
    let v: Value = serde_json::from_str(filtered.trim()).unwrap();
    assert_eq!(v["counts"], serde_json::json!({}));
    drop(server); // still waiting for a connection: killed
}

#[test]
fn info_columns_show_rtt_retransmits_and_data_in_flight() {
    let ns = Netns::new();
    // The server's side never sees the client's data: it stays in flight, retransmitted.
    ns.nft(
        "table inet tcpstates_test {
           chain in { type filter hook input priority 0; tcp dport 7000 meta length > 1000 drop; }
         }",
    );
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "7000", "--hold"]);
    server.expect("listening ");
    let mut client = Peer::spawn(
        &ns,
        &["client", "127.0.0.1", "7000", "--send", "5000", "--hold"],
    );
    let port: u64 = client.expect("holding ").parse().unwrap();
    // A few retransmission timeouts (200 ms and up on loopback).
    thread::sleep(Duration::from_millis(1_000));
    let args = [
        "--netns",
        &ns.name,
        "--snapshot",
        "1s",
        "--count",
        "1",
        "-i",
    ];
    let json = one_snapshot(&[&args[..], &["-o", "json"]].concat());
    let snap = &json[0];
    let conns = snap["connections"].as_array().unwrap();
    let mine = conns
        .iter()
        .find(|c| c["lport"] == port)
        .expect("the client");
    // 5000 bytes and the FIN (the client shut down writing) are unacknowledged.
    assert_eq!(mine["state"], "FIN_WAIT1", "{mine}");
    assert_eq!(mine["bytes_in_flight"], 5001, "{mine}");
    assert!(mine["unacked"].as_u64().unwrap() >= 1, "{mine}");
    assert!(mine["retrans"].as_u64().unwrap() >= 1, "{mine}");
    assert!(mine["srtt_ms"].as_f64().unwrap() > 0.0, "{mine}");
    let server_side = conns.iter().find(|c| c["rport"] == port).unwrap();
    assert_eq!(
        (
            server_side["bytes_in_flight"].as_u64(),
            server_side["retrans"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let listener = connections(snap, "LISTEN")[0];
    assert_eq!(
        listener["srtt_ms"],
        Value::Null,
        "no figures for a listener"
    );

    let out = Tool::start(&args).wait();
    let header: Vec<&str> = out
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let at = header.iter().position(|h| *h == "In state").unwrap();
    assert_eq!(
        header[at..],
        ["In state", "RTT ms", "Retrans", "Unacked", "In flight"]
    );
    let out = Tool::start(&[&args[..], &["-o", "csv"]].concat()).wait();
    assert!(
        out.stdout.starts_with("time,family,laddr,lport,raddr,rport,state,pid,comm,since_ms,idle_ms,netns,cgroup,cgroup_path,unit,container_id,pod_uid,holders,srtt_ms,retrans,unacked,bytes_in_flight\n"),
        "{}",
        out.stdout
    );
    client.finish();
    drop(server); // still reading data that never arrives: killed
}

#[test]
fn snapshots_count_how_connections_ended() {
    let ns = Netns::new();
    let tool = Tool::start(&[
        "--netns",
        &ns.name,
        "--snapshot",
        "1s",
        "--count",
        "3",
        "-o",
        "json",
    ]);
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "7000"]);
    server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", "7000"]);
    client.expect("closed ");
    server.expect("closed 1");
    let mut refused = Peer::spawn(&ns, &["client", "127.0.0.1", "9"]);
    refused.expect("failed ");
    refused.exit();
    client.finish();
    server.finish();
    let out = tool.wait();
    let snaps = out.json();
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    for s in &snaps {
        for (k, v) in s["ended"].as_object().unwrap() {
            *ended.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    let expected: BTreeMap<String, u64> = [
        ("fin", 2),
        ("reset_sent", 0),
        ("reset_received", 0),
        ("refused", 1),
        ("timeout", 0),
        ("aborted", 0),
        ("error", 0),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(ended, expected, "{}", out.stdout);
}

#[test]
fn owner_filters_apply_to_a_one_shot_snapshot() {
    let ns = Netns::new();
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "7000", "--hold"]);
    server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", "7000", "--hold"]);
    client.expect("holding ");
    server.expect("holding 1");
    let shot = |extra: &[&str]| {
        let snaps = one_shot_json(&ns, extra);
        let conns = snaps[0]["connections"].as_array().unwrap().clone();
        conns
            .iter()
            .map(|c| (c["state"].as_str().unwrap().to_string(), c["pid"].as_u64()))
            .collect::<Vec<_>>()
    };
    let server_pid = Some(u64::from(server.pid));
    let client_pid = Some(u64::from(client.pid));
    assert_eq!(
        shot(&["-p", &server.pid.to_string()]),
        [("CLOSE_WAIT".to_string(), server_pid)]
    );
    assert_eq!(
        shot(&["-p", &client.pid.to_string()]),
        [("FIN_WAIT2".to_string(), client_pid)]
    );
    let mut both = shot(&["-c", "tcp_peer"]);
    both.sort();
    assert_eq!(
        both,
        [
            ("CLOSE_WAIT".to_string(), server_pid),
            ("FIN_WAIT2".to_string(), client_pid)
        ]
    );
    assert!(shot(&["-c", "nobody"]).is_empty());
    client.finish();
    server.finish();
}
