//! Kernel-side filters against the real kernel (needs root): several tools with different filters
//! watch the same traffic, and each must show exactly its share.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

/// A cgroup v2 directory made for the test; removed on drop.
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn new() -> Cgroup {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let root = mounts
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f[2] == "cgroup2")
            .map(|f| PathBuf::from(f[1]))
            .expect("a cgroup2 mount");
        let path = root.join(format!("tcpstates-test-{}", std::process::id()));
        std::fs::create_dir(&path).expect("creating a test cgroup");
        Cgroup { path }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

struct Run {
    server: u32,
    client: u32,
    all: Vec<Value>,
}

/// The transitions a tool saw, without their timings: each tool's program reads the clock at
/// its own moment, so `time` and `ms` may differ from another tool's by a microsecond.
fn json_events(tool: Tool) -> Vec<Value> {
    let out = tool.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let mut events = transitions(&out.json());
    for e in &mut events {
        let fields = e.as_object_mut().unwrap();
        fields.remove("time");
        fields.remove("ms");
    }
    events
}

fn pids(events: &[Value]) -> Vec<u64> {
    let mut pids: Vec<u64> = events.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[test]
fn filters_select_exactly_their_share() {
    let ns = Netns::new();
    let other_ns = Netns::new();
    let cgroup = Cgroup::new();
    let n = ns.name.as_str();
    let base = ["--netns", n, "-o", "json"];
    let with = |extra: &[&str]| -> Tool {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        Tool::start(&args)
    };
    let cgroup_arg = cgroup.path.to_str().unwrap();

    let all = with(&[]);
    let local_port = with(&["-L", "9,8080"]);
    let remote_port = with(&["--remoteport", "8080"]);
    let ipv4 = with(&["-4"]);
    let ipv6 = with(&["-6"]);
    let timewait = with(&["--state", "TIME_WAIT"]);
    let close_wait = with(&["--state", "close-wait,LISTEN"]);
    let comm = with(&["-c", "tcp_peer"]);
    let wrong_comm = with(&["--comm", "not_tcp_peer"]);
    let in_cgroup = with(&["--cgroup", cgroup_arg]);
    let by_inode = Tool::start(&["--netns", &ns.inode().to_string(), "-o", "json"]);
    let elsewhere = Tool::start(&["--netns", &other_ns.name, "-o", "json"]);

    // The server runs inside the test cgroup; the client does not.
    let mut server = Peer::spawn_with(Command::new("sh").arg("-c").arg(format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {n} {} server 127.0.0.1 8080",
        cgroup.path.display(),
        peer_path().display()
    )));
    server.expect("listening ");
    let by_pid = with(&["-p", &server.pid.to_string()]);
    let mut client = Peer::spawn(
        &ns,
        &["client", "127.0.0.1", "8080", "--bind-port", "40000"],
    );
    client.expect("closed ");
    let run = Run {
        server: server.pid,
        client: client.pid,
        all: Vec::new(),
    };
    client.finish();
    server.expect("closed 1");
    server.finish();

    let run = Run {
        all: json_events(all),
        ..run
    };
    assert_eq!(run.all.len(), 12, "{:#?}", run.all);
    let server_side: Vec<Value> = run
        .all
        .iter()
        .filter(|e| e["pid"] == run.server)
        .cloned()
        .collect();
    let client_side: Vec<Value> = run
        .all
        .iter()
        .filter(|e| e["pid"] == run.client)
        .cloned()
        .collect();
    assert_eq!((server_side.len(), client_side.len()), (7, 5));

    assert_eq!(
        json_events(local_port),
        server_side,
        "-L keeps the server's sockets"
    );
    assert_eq!(
        json_events(remote_port),
        client_side,
        "-D keeps the client's socket"
    );
    assert_eq!(json_events(ipv4), run.all);
    assert!(json_events(ipv6).is_empty());
    assert_eq!(arrows(&json_events(timewait)), ["FIN_WAIT2->TIME_WAIT"]);
    assert_eq!(
        arrows(&json_events(close_wait)),
        [
            "CLOSE->LISTEN",
            "LISTEN->SYN_RECV",
            "ESTABLISHED->CLOSE_WAIT",
            "CLOSE_WAIT->LAST_ACK",
            "LISTEN->CLOSE"
        ]
    );
    assert_eq!(json_events(comm), run.all);
    assert!(json_events(wrong_comm).is_empty());
    assert_eq!(
        json_events(in_cgroup),
        server_side,
        "the socket's cgroup, not the current task's"
    );
    assert_eq!(json_events(by_inode), run.all);
    assert!(json_events(elsewhere).is_empty());

    // Started after listen(): sees the server's later transitions only, all of them its own.
    let by_pid = json_events(by_pid);
    assert_eq!(pids(&by_pid), [u64::from(run.server)]);
    assert_eq!(by_pid, server_side[1..].to_vec());
}
