//! The owner is the process that holds the socket (root). Servers in the process models real
//! servers use (examples/server_models.rs: pre-fork workers on a shared listener, a child forked
//! per connection, a supervisor handing connections to a backend over a unix socket, a child
//! that execs) serve connections that the server closes, the client closes, the server leaks
//! (CLOSE_WAIT) and that stay open. Every server-side transition of the stream, every socket of
//! a live snapshot table and every --lifetimes record names the process `ss -tanp` names, and
//! the exporter counts the leaked CLOSE_WAIT under its holder.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{arrows, example_path, Netns, Peer, SsSocket, Tool};
use serde_json::Value;
use tcpstates::features::{AcceptHook, Features};

/// What each test connection asks of the server, in order.
const REQUESTS: [&str; 4] = ["close", "hold", "leak", "hold"];
/// The server-side transitions of each connection once accepted, when the test is done with
/// it: the server closes first; the client closes first; the client closes and the server
/// never does; the client closes last, at the end.
const AFTER_ACCEPT: [&[&str]; 4] = [
    &[
        "ESTABLISHED->FIN_WAIT1",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->TIME_WAIT",
    ],
    &[
        "ESTABLISHED->CLOSE_WAIT",
        "CLOSE_WAIT->LAST_ACK",
        "LAST_ACK->CLOSE",
    ],
    &["ESTABLISHED->CLOSE_WAIT"],
    &[
        "ESTABLISHED->CLOSE_WAIT",
        "CLOSE_WAIT->LAST_ACK",
        "LAST_ACK->CLOSE",
    ],
];

/// A server of examples/server_models.rs in the namespace.
struct Server {
    process: Peer,
    port: u16,
}

impl Server {
    fn start(ns: &Netns, model: &str, addr: &str) -> Server {
        let mut process = Peer::spawn_with(
            Command::new("ip")
                .args(["netns", "exec", &ns.name])
                .arg(example_path("server_models"))
                .args([model, addr, "0"]),
        );
        let port = process.expect("listening ").parse().expect("a port");
        Server { process, port }
    }

    /// The pid serving each of `n` connections, by the client's port.
    fn serving(&mut self, n: usize) -> HashMap<u16, u32> {
        (0..n)
            .map(|_| {
                let line = self.process.expect("serving ");
                let (pid, port) = line.split_once(' ').expect("PID PORT");
                (port.parse().expect("a port"), pid.parse().expect("a pid"))
            })
            .collect()
    }
}

/// Connects from inside the namespace, sends `request` and reads the reply line.
fn request(ns: &Netns, addr: IpAddr, port: u16, request: &str) -> TcpStream {
    let mut stream = ns.run_inside(|| TcpStream::connect((addr, port)).expect("connect"));
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).unwrap();
    assert!(reply == "bye\n" || reply == "ok\n", "{reply:?}");
    stream
}

/// The server-side socket of the connection from `peer` in a list of ss's.
fn ss_of(ss: &[SsSocket], port: u16, peer: u16) -> Option<&SsSocket> {
    ss.iter()
        .find(|s| s.local_port == port && s.remote_port == peer)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The body of /metrics, if the exporter answered.
fn scrape(port: u16) -> Option<String> {
    use std::io::Read;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

/// The last snapshot a `--snapshot -o json` run printed.
fn last_snapshot(out: &str) -> Value {
    let last = out.lines().last().expect("at least one snapshot");
    serde_json::from_str(last).expect("a JSON snapshot")
}

fn pid_of(v: &Value) -> Option<u32> {
    v["pid"].as_u64().map(|p| p as u32)
}

/// Runs the four connections against `model` and checks every view against ss.
fn owners_are_the_holders(model: &str, addr: &str, comm: &str) {
    let ns = Netns::new();
    let netns = ["--netns", &ns.name];
    let stream = Tool::start(&[&["-o", "json"][..], &netns].concat());
    let table = Tool::start(&[&["--snapshot", "200ms", "-o", "json"][..], &netns].concat());
    let lifetimes = Tool::start(&[&["--lifetimes", "-o", "json"][..], &netns].concat());
    let metrics_port = free_port();
    let metrics_at = format!("127.0.0.1:{metrics_port}");
    let exporter = Tool::start(&[&["--metrics", &metrics_at, "-q"][..], &netns].concat());
    let mut server = Server::start(&ns, model, addr);
    let ip: IpAddr = addr.parse().unwrap();
    let mut clients: Vec<Option<TcpStream>> = REQUESTS
        .iter()
        .map(|r| Some(request(&ns, ip, server.port, r)))
        .collect();
    let peers: Vec<u16> = clients
        .iter()
        .map(|c| c.as_ref().unwrap().local_addr().unwrap().port())
        .collect();
    let serving = server.serving(REQUESTS.len());
    // The client closes the second and third: CLOSE_WAIT, closed by the server or leaked.
    clients[1] = None;
    clients[2] = None;
    thread::sleep(Duration::from_millis(700));

    // The ground truth while the sockets are held.
    let ss = ns.ss();
    let port = server.port;
    let listener = ss
        .iter()
        .find(|s| s.state == "LISTEN" && s.local_port == port)
        .expect("the listener in ss");
    for (i, state) in [(2, "CLOSE-WAIT"), (3, "ESTAB")] {
        let socket = ss_of(&ss, port, peers[i]).expect("a held connection in ss");
        assert_eq!(socket.state, state);
        assert_eq!(socket.pids(), [serving[&peers[i]]], "{socket:?}");
        assert_eq!(socket.users[0].0, comm, "{socket:?}");
    }

    // The exporter: the leak under its holder (gauges refresh every second).
    let leak = format!(
        "tcpstates_close_wait_sockets{{pid=\"{}\",comm=\"{comm}\"}} 1",
        serving[&peers[2]]
    );
    let scraped = (0..150)
        .filter_map(|_| {
            thread::sleep(Duration::from_millis(100));
            scrape(metrics_port)
        })
        .find(|body| body.lines().any(|l| l == leak));
    assert!(scraped.is_some(), "no {leak} in {:?}", scrape(metrics_port));
    drop(exporter);

    // The live table: every socket ss names a holder of, named as ss names it.
    let snapshot = last_snapshot(&table.stop().stdout);
    let conns = snapshot["connections"].as_array().expect("connections");
    for c in conns.iter().filter(|c| c["lport"] == port) {
        let pid = pid_of(c);
        // How many processes hold it: as many as ss lists (none for an orphan).
        let in_ss = ss
            .iter()
            .find(|s| s.local_port == port && s.remote_port == c["rport"])
            .map_or(0, |s| {
                s.pids()
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            });
        assert_eq!(c["holders"], in_ss, "{c}; ss: {ss:?}");
        if c["state"] == "LISTEN" {
            assert!(
                pid.is_some_and(|p| listener.pids().contains(&p)),
                "{c} not one of {listener:?}"
            );
            continue;
        }
        let peer = c["rport"].as_u64().unwrap() as u16;
        // Held (ss names the holder) or orphaned (its last holder, whom ss no longer names).
        assert_eq!(pid, Some(serving[&peer]), "table: {c}; ss: {ss:?}");
        assert_eq!(c["comm"], comm, "{c}");
    }
    let held = conns
        .iter()
        .filter(|c| c["lport"] == port && c["state"] != "LISTEN")
        .count();
    assert_eq!(held, 3, "FIN_WAIT2, CLOSE_WAIT, ESTABLISHED: {snapshot}");

    // The stream, once every connection is done with.
    drop(clients);
    thread::sleep(Duration::from_millis(500));
    let events = stream.stop().json();
    let listen = events
        .iter()
        .find(|e| e["lport"] == port && e["newstate"] == "LISTEN")
        .expect("the listener's CLOSE->LISTEN");
    let listener_owner = pid_of(listen);
    assert!(listener_owner.is_some_and(|p| listener.pids().contains(&p)));
    for (i, &peer) in peers.iter().enumerate() {
        let server_side: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "transition" && e["lport"] == port && e["rport"] == peer)
            .collect();
        let (queued, accepted) = server_side.split_at(2.min(server_side.len()));
        assert_eq!(
            arrows(&queued.iter().map(|e| (*e).clone()).collect::<Vec<_>>()),
            ["LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED"]
        );
        for e in queued {
            assert_eq!(
                pid_of(e),
                listener_owner,
                "in the queue: the listener's: {e}"
            );
        }
        let accepted: Vec<Value> = accepted.iter().map(|e| (*e).clone()).collect();
        assert_eq!(arrows(&accepted), AFTER_ACCEPT[i], "{}", REQUESTS[i]);
        for e in &accepted {
            assert_eq!(pid_of(e), Some(serving[&peer]), "{e}");
            assert_eq!(e["comm"], comm, "{e}");
        }
    }

    // --lifetimes: each server-side connection that ended, under its holder.
    let records = lifetimes.stop().json();
    let ended: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "connection" && r["lport"] == port)
        .collect();
    assert_eq!(ended.len(), 3, "all but the leak: {records:?}");
    for r in ended {
        let peer = r["rport"].as_u64().unwrap() as u16;
        assert_eq!(pid_of(r), Some(serving[&peer]), "{r}");
    }
    drop(server);
}

#[test]
fn pre_fork_workers_on_a_shared_listener() {
    owners_are_the_holders("prefork", "127.0.0.1", "server_models");
}

#[test]
fn a_child_forked_per_connection() {
    owners_are_the_holders("fork", "::1", "server_models");
}

#[test]
fn a_supervisor_that_passes_connections_to_a_backend() {
    owners_are_the_holders("pass", "127.0.0.1", "server_models");
}

#[test]
fn a_child_that_execs_another_program() {
    owners_are_the_holders("exec", "::1", "exe");
}

/// A worker that accepts a connection and never touches it: it is named where the kernel lets
/// tcpstates see accepts; elsewhere it is unknown, never the master that only listened.
#[test]
fn an_accepted_socket_never_touched_is_its_acceptor_or_unknown() {
    let ns = Netns::new();
    let stream = Tool::start(&["-o", "json", "--netns", &ns.name]);
    let mut server = Server::start(&ns, "prefork-silent", "127.0.0.1");
    let client = ns.run_inside(|| TcpStream::connect(("127.0.0.1", server.port)).unwrap());
    let peer = client.local_addr().unwrap().port();
    let worker = server.serving(1)[&peer];
    thread::sleep(Duration::from_millis(200));
    drop(client);
    thread::sleep(Duration::from_millis(300));
    let ss = ns.ss();
    let held = ss_of(&ss, server.port, peer).expect("the worker's socket");
    assert_eq!(
        (held.state.as_str(), held.pids()),
        ("CLOSE-WAIT", vec![worker])
    );
    let events = stream.stop().json();
    let close_wait = events
        .iter()
        .find(|e| e["rport"] == peer && e["newstate"] == "CLOSE_WAIT")
        .expect("ESTABLISHED->CLOSE_WAIT");
    let expected = match Features::of_running_kernel().accept {
        AcceptHook::Unavailable(_) => None,
        _ => Some(worker),
    };
    assert_eq!(pid_of(close_wait), expected, "{close_wait}");
    drop(server);
}
