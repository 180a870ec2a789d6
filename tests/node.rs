//! The whole node (root): workloads laid out as on a container host, each with a listener, a
//! held connection and a CLOSE_WAIT leak: a systemd service in the host's network namespace, a
//! docker container, and Kubernetes pods under either cgroup driver, each in a namespace and a
//! cgroup of its own (made by the test under the cgroup2 mount, removed after). Snapshots and
//! the exporter with no --netns cover every namespace, with the counts ss gives inside each;
//! every socket names its unit, container or pod in text, JSON and CSV, and so does the stream.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{example_path, Netns, Peer, Tool};
use serde_json::Value;

const CONTAINER: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
const POD_CONTAINER: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const CGROUPFS_CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const POD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const CGROUPFS_POD: &str = "11111111-2222-3333-4444-555555555555";

/// A tree of cgroups of the test's own under the cgroup2 mount; removed on drop.
struct Cgroups {
    root: PathBuf,
}

impl Cgroups {
    fn new() -> Cgroups {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mount = tcpstates::services::cgroup2_mount(&mounts).expect("a cgroup2 mount");
        let root = mount.join(format!("tcpstates-node-{}", std::process::id()));
        std::fs::create_dir(&root).expect("a test cgroup");
        Cgroups { root }
    }

    /// Makes `relative` (and its parents) under the test's root.
    fn make(&self, relative: &str) -> PathBuf {
        let path = self.root.join(relative);
        std::fs::create_dir_all(&path).expect("a test cgroup");
        path
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Children first: a cgroup goes only once it is empty.
        let mut dirs = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
            dirs.push(dir);
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// What a workload's server-side sockets must say: unit, container id, pod UID.
type Identity = (Option<String>, Option<&'static str>, Option<&'static str>);

/// One workload: a pre-fork server in its cgroup and namespace, a held connection and a leak.
struct Workload {
    server: Peer,
    port: u16,
    netns: Option<Netns>,
    /// The netns inode its sockets report.
    inode: u64,
    /// What its server-side sockets must say: unit, container, pod.
    unit: Option<String>,
    container: Option<&'static str>,
    pod: Option<&'static str>,
    clients: Vec<TcpStream>,
}

impl Workload {
    fn start(cgroup: PathBuf, netns: Option<Netns>, expected: Identity) -> Workload {
        let exec = match &netns {
            Some(ns) => format!("ip netns exec {} ", ns.name),
            None => String::new(),
        };
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {exec}{} prefork 127.0.0.1 0",
            cgroup.display(),
            example_path("server_models").display()
        );
        let mut server = Peer::spawn_with(Command::new("sh").args(["-c", &script]));
        let port = server.expect("listening ").parse().unwrap();
        let inode = netns.as_ref().map_or_else(
            || {
                std::fs::metadata("/proc/self/ns/net")
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    .unwrap()
            },
            Netns::inode,
        );
        Workload {
            server,
            port,
            netns,
            inode,
            unit: expected.0,
            container: expected.1,
            pod: expected.2,
            clients: Vec::new(),
        }
    }

    /// A held connection and a leaked one (closed by the client, never by the server).
    fn traffic(&mut self) {
        let port = self.port;
        let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
        for request in ["hold", "leak"] {
            let mut stream = match &self.netns {
                Some(ns) => ns.run_inside(connect),
                None => connect(),
            };
            stream.write_all(format!("{request}\n").as_bytes()).unwrap();
            let mut reply = String::new();
            BufReader::new(&stream).read_line(&mut reply).unwrap();
            self.clients.push(stream);
        }
        self.server.expect("serving ");
        self.server.expect("serving ");
        self.clients.pop(); // the leak's client closes
    }

    /// ss's count of each state among this workload's sockets (in its namespace, on its port).
    fn ss_counts(&self) -> BTreeMap<String, u64> {
        let sockets = match &self.netns {
            Some(ns) => ns.ss(),
            None => common::host_ss(),
        };
        let mut counts = BTreeMap::new();
        for s in sockets
            .iter()
            .filter(|s| s.local_port == self.port || s.remote_port == self.port)
        {
            let state = match s.state.as_str() {
                "ESTAB" => "ESTABLISHED",
                "CLOSE-WAIT" => "CLOSE_WAIT",
                "FIN-WAIT-2" => "FIN_WAIT2",
                "FIN-WAIT-1" => "FIN_WAIT1",
                "TIME-WAIT" => "TIME_WAIT",
                "LAST-ACK" => "LAST_ACK",
                other => other,
            };
            *counts.entry(state.to_string()).or_default() += 1;
        }
        counts
    }

    fn mine<'a>(&self, conns: &'a [Value]) -> Vec<&'a Value> {
        conns
            .iter()
            .filter(|c| {
                c["netns"] == self.inode && (c["lport"] == self.port || c["rport"] == self.port)
            })
            .collect()
    }

    /// The service fields of a server-side socket or record.
    fn check_service(&self, v: &Value) {
        assert_eq!(v["unit"].as_str(), self.unit.as_deref(), "{v}");
        assert_eq!(v["container_id"].as_str(), self.container, "{v}");
        assert_eq!(v["pod_uid"].as_str(), self.pod, "{v}");
        assert!(
            v["cgroup_path"]
                .as_str()
                .is_some_and(|p| p.contains("tcpstates-node-")),
            "{v}"
        );
    }
}

/// The four layouts, each started and with its traffic.
fn node(cgroups: &Cgroups) -> Vec<Workload> {
    let uid_ = POD.replace('-', "_");
    let layouts: [(String, bool, Identity); 4] = [
        (
            "system.slice/tcpst-web.service".into(),
            false,
            (Some("tcpst-web.service".into()), None, None),
        ),
        (
            format!("system.slice/docker-{CONTAINER}.scope"),
            true,
            (Some(format!("docker-{CONTAINER}.scope")), Some(CONTAINER), None),
        ),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{POD_CONTAINER}.scope"
            ),
            true,
            (
                Some(format!("cri-containerd-{POD_CONTAINER}.scope")),
                Some(POD_CONTAINER),
                Some(POD),
            ),
        ),
        (
            format!("kubepods/besteffort/pod{CGROUPFS_POD}/{CGROUPFS_CONTAINER}"),
            true,
            (None, Some(CGROUPFS_CONTAINER), Some(CGROUPFS_POD)),
        ),
    ];
    layouts
        .into_iter()
        .map(|(path, own_netns, expected)| {
            let mut w = Workload::start(cgroups.make(&path), own_netns.then(Netns::new), expected);
            w.traffic();
            w
        })
        .collect()
}

fn snapshot_json(out: &str) -> Value {
    serde_json::from_str(out.lines().last().expect("a snapshot")).expect("JSON")
}

fn counts(conns: &[&Value]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for c in conns {
        *counts
            .entry(c["state"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

#[test]
fn every_namespace_and_every_service_in_snapshots_the_stream_and_the_exporter() {
    let cgroups = Cgroups::new();
    let stream = Tool::start(&["-o", "json"]);
    let periodic = Tool::start(&["--snapshot", "300ms", "-o", "json"]);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = format!("127.0.0.1:{metrics_port}");
    let exporter = Tool::start(&["--metrics", &at, "-q", "--metrics-labels", "netns,service"]);
    let workloads = node(&cgroups);
    thread::sleep(Duration::from_millis(800));

    // One-shot, every namespace at once, against ss inside each.
    let one = common::one_shot_with(None, &[]);
    let one = snapshot_json(&one.stdout);
    let periodic = snapshot_json(&periodic.stop().stdout);
    for snapshot in [&one, &periodic] {
        let conns = snapshot["connections"].as_array().unwrap();
        for w in &workloads {
            let mine = w.mine(conns);
            assert_eq!(counts(&mine), w.ss_counts(), "netns {}: {mine:?}", w.inode);
            let server_side: Vec<&&Value> = mine.iter().filter(|c| c["lport"] == w.port).collect();
            assert_eq!(
                server_side.len(),
                3,
                "listener, held, leak: {server_side:?}"
            );
            for c in server_side {
                w.check_service(c);
            }
        }
        // The leaks by service: every workload's one CLOSE_WAIT.
        let by_service = snapshot["close_wait_services"].as_array().unwrap();
        for w in &workloads {
            assert!(
                by_service
                    .iter()
                    .any(|g| g["container_id"].as_str() == w.container
                        && g["unit"].as_str() == w.unit.as_deref()
                        && g["count"] == 1),
                "{by_service:?}"
            );
        }
    }

    // The exporter: each namespace's gauges, and each service's leak.
    let mut body = String::new();
    for _ in 0..150 {
        thread::sleep(Duration::from_millis(100));
        body = scrape(metrics_port);
        if workloads
            .iter()
            .all(|w| body.contains(&format!("netns=\"{}\"", w.inode)))
        {
            break;
        }
    }
    for w in workloads.iter().filter(|w| w.netns.is_some()) {
        for (state, n) in w.ss_counts() {
            let label = w.container.map_or(String::new(), |c| match w.pod {
                Some(pod) => format!("pod/{pod}/{}", &c[..12]),
                None => c[..12].to_string(),
            });
            let gauges: u64 = body
                .lines()
                .filter(|l| l.starts_with("tcpstates_connections{"))
                .filter(|l| {
                    l.contains(&format!("state=\"{state}\""))
                        && l.contains(&format!("netns=\"{}\"", w.inode))
                })
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum();
            assert_eq!(gauges, n, "{state} in {}:\n{body}", w.inode);
            if state == "CLOSE_WAIT" {
                assert!(
                    body.contains(&format!("service=\"{label}\"")),
                    "{label}:\n{body}"
                );
            }
        }
    }
    drop(exporter);

    text_csv_and_service_filter(&workloads);

    // The stream names each server socket's service.
    drop(workloads);
    let events = stream.stop().json();
    let web = events.iter().find(|e| {
        e["type"] == "transition" && e["newstate"] == "LISTEN" && e["unit"] == "tcpst-web.service"
    });
    assert!(web.is_some(), "no LISTEN of tcpst-web.service");
    let pod = events.iter().find(|e| {
        e["type"] == "transition" && e["pod_uid"] == POD && e["newstate"] == "CLOSE_WAIT"
    });
    assert!(pod.is_some(), "no CLOSE_WAIT of the pod");
}

/// Text has a namespace and a service column once sockets of several namespaces show; CSV has
/// the fields; --service narrows to a container by a prefix of its id, in the kernel.
fn text_csv_and_service_filter(workloads: &[Workload]) {
    let text = Tool::start(&["--snapshot", "1s", "--count", "1"])
        .wait()
        .stdout;
    let header = text.lines().nth(1).unwrap();
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "Netns",
            "Proto",
            "Local Address",
            "Foreign Address",
            "State",
            "PID/Program name",
            "Service",
            "In state"
        ],
        "{header}"
    );
    for w in workloads {
        let label = match (w.pod, w.container) {
            (Some(pod), Some(c)) => format!("pod/{pod}/{}", &c[..12]),
            (None, Some(c)) => c[..12].to_string(),
            _ => w.unit.clone().unwrap(),
        };
        let rows = text
            .lines()
            .filter(|l| l.contains(&format!("127.0.0.1:{} ", w.port)) && l.contains(&label))
            .count();
        assert_eq!(rows, 3, "{label} on {}:\n{text}", w.port);
    }
    let csv = Tool::start(&["--snapshot", "1s", "--count", "1", "-o", "csv"])
        .wait()
        .stdout;
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (unit, container, pod) = (column("unit"), column("container_id"), column("pod_uid"));
    let docker = &workloads[1];
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r.get(container) == Some(&CONTAINER))
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r[pod].is_empty() && r[unit] == format!("docker-{CONTAINER}.scope")));
    let only = common::one_shot_with(None, &["--service", &CONTAINER[..8]]);
    let conns = snapshot_json(&only.stdout)["connections"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert!(conns
        .iter()
        .all(|c| c["container_id"] == CONTAINER && c["lport"] == docker.port));
    let none = Command::new(common::tool_path())
        .args(["--service", "nothing-like-it.service"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&none.stderr),
        "tcpstates: --service nothing-like-it.service: no systemd unit, container or pod of that \
         name in the cgroup tree\n"
    );
}

fn scrape(port: u16) -> String {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string())
}
