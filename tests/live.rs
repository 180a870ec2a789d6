//! Live mode against the real kernel (needs root): exact transitions and owners of a client and a
//! server run as separate processes in a private network namespace, and the output formats.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const CLIENT_LIFE: [&str; 5] = [
    "CLOSE->SYN_SENT",
    "SYN_SENT->ESTABLISHED",
    "ESTABLISHED->FIN_WAIT1",
    "FIN_WAIT1->FIN_WAIT2",
    "FIN_WAIT2->TIME_WAIT",
];
const SERVER_CHILD_LIFE: [&str; 5] = [
    "LISTEN->SYN_RECV",
    "SYN_RECV->ESTABLISHED",
    "ESTABLISHED->CLOSE_WAIT",
    "CLOSE_WAIT->LAST_ACK",
    "LAST_ACK->CLOSE",
];

struct Scenario {
    server: u32,
    first_client: u32,
    second_client: u32,
    port: u16,
    client_port: u16,
}

/// A server accepting two connections. The first client closes first (TIME_WAIT); a second
/// later reconnects from the same port, which makes the kernel end that TIME_WAIT early.
fn client_server_with_timewait_reuse(ns: &Netns, addr: &str) -> Scenario {
    let mut server = Peer::spawn(ns, &["server", addr, "0", "--connections", "2"]);
    let port = server.expect("listening ");
    let mut first = Peer::spawn(ns, &["client", addr, &port]);
    let client_port = first.expect("closed ");
    let first_client = first.pid;
    first.finish();
    server.expect("closed 1");
    // TIME_WAIT reuse (tcp_tw_reuse=2 on loopback) needs the timewait socket to be >1 s old.
    thread::sleep(Duration::from_millis(1100));
    let mut second = Peer::spawn(ns, &["client", addr, &port, "--bind-port", &client_port]);
    assert_eq!(second.expect("closed "), client_port);
    let second_client = second.pid;
    second.finish();
    server.expect("closed 2");
    let server_pid = server.pid;
    server.finish();
    Scenario {
        server: server_pid,
        first_client,
        second_client,
        port: port.parse().unwrap(),
        client_port: client_port.parse().unwrap(),
    }
}

fn assert_addresses(e: &Value, laddr: &str, lport: u16, raddr: &str, rport: u16) {
    assert_eq!(
        (e["laddr"].as_str().unwrap(), e["lport"].as_u64().unwrap()),
        (laddr, u64::from(lport)),
        "{e}"
    );
    assert_eq!(
        (e["raddr"].as_str().unwrap(), e["rport"].as_u64().unwrap()),
        (raddr, u64::from(rport)),
        "{e}"
    );
}

fn check_exact_transitions(addr: &str, family: &str) {
    let ns = Netns::new();
    let tool = Tool::start(&["--netns", &ns.name, "-o", "json"]);
    let s = client_server_with_timewait_reuse(&ns, addr);
    let out = tool.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = transitions(&out.json());

    // Every transition in the namespace belongs to one of the three processes.
    for e in &events {
        assert_eq!(e["family"], family, "{e}");
        assert_eq!(e["netns"].as_u64(), Some(ns.inode()), "{e}");
        assert!(e["cgroup"].as_u64().unwrap() > 0, "{e}");
        let pid = e["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("owner unknown: {e}")) as u32;
        assert!(
            [s.server, s.first_client, s.second_client].contains(&pid),
            "{e}"
        );
        assert_eq!(e["comm"], "tcp_peer", "{e}");
    }

    // First client: the whole life, TIME_WAIT included, ended early by the reconnect.
    let first = owned_by(&events, s.first_client);
    let mut expected: Vec<&str> = CLIENT_LIFE.to_vec();
    expected.push("TIME_WAIT->CLOSE");
    assert_eq!(arrows(&first), expected, "{first:#?}");
    assert!(first.iter().all(|e| e["skaddr"] == first[0]["skaddr"]));
    for e in &first[1..] {
        assert_addresses(e, addr, s.client_port, addr, s.port);
    }
    assert_eq!(
        first[0]["lport"], 0,
        "connect() runs before the port is chosen"
    );

    // Second client: same life up to TIME_WAIT, which outlives the test.
    let second = owned_by(&events, s.second_client);
    assert_eq!(arrows(&second), CLIENT_LIFE.to_vec(), "{second:#?}");

    // Server: the listener, and two accepted children that belong to it.
    let server = owned_by(&events, s.server);
    let (listener, children): (Vec<Value>, Vec<Value>) =
        server.into_iter().partition(|e| e["rport"] == 0);
    assert_eq!(arrows(&listener), ["CLOSE->LISTEN", "LISTEN->CLOSE"]);
    let expected: Vec<&str> = SERVER_CHILD_LIFE
        .iter()
        .chain(&SERVER_CHILD_LIFE)
        .copied()
        .collect();
    assert_eq!(arrows(&children), expected, "{children:#?}");
    for e in &children {
        assert_addresses(e, addr, s.port, addr, s.client_port);
    }

    // Time in the old state is unknown exactly where the socket was not seen entering it.
    for e in &events {
        let opening = matches!(
            arrow(e).as_str(),
            "CLOSE->SYN_SENT" | "CLOSE->LISTEN" | "LISTEN->SYN_RECV"
        );
        assert_eq!(e["ms"].is_null(), opening, "{e}");
        if !opening {
            assert!(e["ms"].as_f64().unwrap() >= 0.0, "{e}");
        }
    }
    // The first client's TIME_WAIT lasted from its takeover to the reconnect, over a second.
    assert!(first[5]["ms"].as_f64().unwrap() >= 1000.0, "{}", first[5]);

    // Losses are counted host-wide (other namespaces may be busy), so only their form is fixed.
    let summary = format!("tcpstates: {} transitions shown, ", events.len());
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&summary) && last.contains(" lost"),
        "{}",
        out.stderr
    );
}

#[test]
fn ipv4_client_and_server_exact_transitions_and_owners() {
    check_exact_transitions("127.0.0.1", "ipv4");
}

#[test]
fn ipv6_client_and_server_exact_transitions_and_owners() {
    check_exact_transitions("::1", "ipv6");
}

/// One connection from a client bound to port 40000 to a server on 8080.
fn one_connection(ns: &Netns, addr: &str) -> (u32, u32) {
    let mut server = Peer::spawn(ns, &["server", addr, "8080"]);
    server.expect("listening ");
    let mut client = Peer::spawn(ns, &["client", addr, "8080", "--bind-port", "40000"]);
    client.expect("closed ");
    let pids = (server.pid, client.pid);
    client.finish();
    server.expect("closed 1");
    server.finish();
    pids
}

#[test]
fn text_output_has_bcc_columns() {
    let ns = Netns::new();
    let narrow = Tool::start(&["--netns", &ns.name]);
    let wide = Tool::start(&["--netns", &ns.name, "-w", "-T"]);
    let (server, client) = one_connection(&ns, "127.0.0.1");
    let narrow = narrow.stop();
    let wide = wide.stop();

    let lines: Vec<&str> = narrow.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS"
    );
    assert_eq!(lines.len(), 13, "{}", narrow.stdout);
    assert_eq!(
        lines[1],
        format!("{server:<7} tcp_peer   127.0.0.1       8080  0.0.0.0         0     CLOSE       -> LISTEN      -")
    );
    let established = format!(
        "{client:<7} tcp_peer   127.0.0.1       40000 127.0.0.1       8080  SYN_SENT    -> ESTABLISHED "
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&established)),
        "{}",
        narrow.stdout
    );
    let timewait = format!(
        "{client:<7} tcp_peer   127.0.0.1       40000 127.0.0.1       8080  FIN_WAIT2   -> TIME_WAIT   "
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&timewait)),
        "{}",
        narrow.stdout
    );

    let wide_lines: Vec<&str> = wide.stdout.lines().collect();
    assert!(wide_lines[0]
        .starts_with("TIME         SKADDR           PID     COMM             IP LADDR  "));
    assert_eq!(wide_lines.len(), 13);
    let row: Vec<&str> = wide_lines[1].split_whitespace().collect();
    assert_eq!(row[0].len(), 12, "HH:MM:SS.mmm: {}", wide_lines[1]);
    // A kernel address: 0xffff... with 4-level page tables, 0xff11... with 5-level ones.
    assert!(u64::from_str_radix(row[1], 16).unwrap() >= 0xff00_0000_0000_0000);
    assert_eq!(
        &row[2..],
        [
            &server.to_string(),
            "tcp_peer",
            "4",
            "127.0.0.1",
            "8080",
            "0.0.0.0",
            "0",
            "CLOSE",
            "->",
            "LISTEN",
            "-"
        ]
    );
}

#[test]
fn csv_output_has_a_header_and_json_fields() {
    let ns = Netns::new();
    let tool = Tool::start(&["--netns", &ns.name, "-o", "csv"]);
    let (server, _) = one_connection(&ns, "::1");
    let out = tool.stop();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "time,skaddr,pid,comm,family,laddr,lport,raddr,rport,oldstate,newstate,ms,netns,cgroup,error,type,reason,cgroup_path,unit,container_id,pod_uid"
    );
    assert_eq!(lines.len(), 13, "{}", out.stdout);
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first.len(), 21);
    assert!(first[0].ends_with('Z') && first[0].len() == "2026-01-01T00:00:00.000000Z".len());
    assert!(
        first[1].starts_with("0xff") && first[1].len() == 18,
        "{}",
        first[1]
    );
    assert_eq!(
        &first[2..12],
        [
            &server.to_string(),
            "tcp_peer",
            "ipv6",
            "::1",
            "8080",
            "::",
            "0",
            "CLOSE",
            "LISTEN",
            ""
        ]
    );
    assert_eq!(first[12], ns.inode().to_string());
    assert_eq!(&first[14..17], ["", "transition", ""]);
    // The server's cgroup, wherever the tests run: a path, and what it names, if anything.
    assert!(first[17].starts_with('/'), "{}", lines[1]);
}

#[test]
fn runs_under_ip_netns_exec() {
    let ns = Netns::new();
    let tool = Tool::start_with(
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(tool_path())
            .args(["--netns", &ns.name, "-o", "json"]),
    );
    one_connection(&ns, "127.0.0.1");
    let out = tool.stop();
    assert!(out.status.success());
    assert_eq!(transitions(&out.json()).len(), 12, "{}", out.stdout);
}

#[test]
fn count_and_duration_stop_the_tool() {
    let ns = Netns::new();
    let counted = Tool::start(&["--netns", &ns.name, "-o", "json", "--count", "3"]);
    let timed = Tool::start(&["--netns", &ns.name, "--duration", "1500ms"]);
    one_connection(&ns, "127.0.0.1");
    let counted = counted.wait();
    assert!(counted.status.success());
    assert_eq!(
        arrows(&transitions(&counted.json())),
        ["CLOSE->LISTEN", "CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED"]
    );
    let timed = timed.wait();
    assert!(timed.status.success());
    assert_eq!(timed.stdout.lines().count(), 13, "{}", timed.stdout);
}

#[test]
fn with_so_reuseport_each_accepted_socket_belongs_to_the_listener_that_took_it() {
    let ns = Netns::new();
    let tool = Tool::start(&["--netns", &ns.name, "-o", "json"]);
    let mut servers: Vec<Peer> = (0..2)
        .map(|_| {
            let mut s = Peer::spawn(
                &ns,
                &[
                    "server",
                    "127.0.0.1",
                    "7000",
                    "--reuseport",
                    "--connections",
                    "20",
                ],
            );
            s.expect("listening ");
            s
        })
        .collect();
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", "7000", "--connections", "20"]);
    for _ in 0..20 {
        client.expect("closed ");
    }
    client.finish();
    // Which server took which client port, as each server saw it.
    let mut taken_by = std::collections::HashMap::new();
    for server in &mut servers {
        for line in server.lines_until_quiet(Duration::from_millis(500)) {
            if let Some(port) = line.strip_prefix("from ") {
                taken_by.insert(port.parse::<u64>().unwrap(), server.pid);
            }
        }
    }
    assert_eq!(taken_by.len(), 20);
    for server in &servers {
        assert!(
            taken_by.values().any(|pid| *pid == server.pid),
            "both listeners took connections (the kernel hashes them): {taken_by:?}"
        );
    }
    let out = tool.stop();
    drop(servers);
    let accepted: Vec<Value> = transitions(&out.json())
        .into_iter()
        .filter(|e| e["lport"] == 7000 && e["rport"] != 0)
        .collect();
    assert_eq!(accepted.len(), 20 * 5, "{}", out.stdout);
    for e in &accepted {
        let port = e["rport"].as_u64().unwrap();
        assert_eq!(e["pid"], u64::from(taken_by[&port]), "{e}");
    }
}

#[test]
fn sockets_opened_before_the_start_keep_their_owners() {
    let ns = Netns::new();
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "0", "--connections", "2"]);
    let port = server.expect("listening ");
    let mut early = Peer::spawn(&ns, &["client", "127.0.0.1", &port, "--idle"]);
    let early_port = early.expect("open ");
    let tool = Tool::start(&["--netns", &ns.name, "-o", "json"]);
    // The early connection's end, then a child of the listener that existed before the start.
    let early_pid = early.pid;
    early.finish();
    server.expect("closed 1");
    let mut late = Peer::spawn(&ns, &["client", "127.0.0.1", &port]);
    let late_port = late.expect("closed ");
    let (server_pid, late_pid) = (server.pid, late.pid);
    late.finish();
    server.expect("closed 2");
    server.finish();
    let out = tool.stop();
    let events = transitions(&out.json());
    let [port, early_port, late_port]: [u64; 3] =
        [port, early_port, late_port].map(|p| p.parse().unwrap());
    for e in &events {
        let lport = e["lport"].as_u64().unwrap();
        let owner = if lport == port {
            server_pid
        } else if lport == early_port {
            early_pid
        } else {
            // connect() runs before the port is chosen.
            assert!(lport == late_port || lport == 0, "{e}");
            late_pid
        };
        assert_eq!(e["pid"].as_u64(), Some(u64::from(owner)), "{e}");
    }
    let arrows_at = |lport: u64, rport: u64| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["lport"] == lport && e["rport"] == rport)
            .map(arrow)
            .collect()
    };
    // The early connection, seen from the middle of its life on.
    assert_eq!(
        arrows_at(early_port, port),
        [
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->TIME_WAIT"
        ]
    );
    assert_eq!(
        arrows_at(port, early_port),
        [
            "ESTABLISHED->CLOSE_WAIT",
            "CLOSE_WAIT->LAST_ACK",
            "LAST_ACK->CLOSE"
        ]
    );
    assert_eq!(arrows_at(port, late_port), SERVER_CHILD_LIFE);
    assert_eq!(arrows_at(late_port, port), CLIENT_LIFE[1..]);
    assert_eq!(arrows_at(port, 0), ["LISTEN->CLOSE"]);
}
