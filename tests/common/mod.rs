//! Helpers for the root integration tests: private network namespaces, the tool, scripted peers.
#![allow(dead_code)]

pub mod prometheus;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a wait for the tool or a peer may take before the test fails: a ceiling for a hang,
/// never a measure. Starting on 5.10 under QEMU's TCG, beside other running copies, takes tens
/// of seconds on a slow host.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn tool_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tcpstates"))
}

/// The example binary `tcp_peer`, which `cargo test` builds next to the test executables.
pub fn peer_path() -> PathBuf {
    example_path("tcp_peer")
}

/// An example binary, which `cargo test` builds next to the test executables.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test`",
        path.display()
    );
    path
}

pub fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed: {status}");
}

/// A network namespace of this test's own, with loopback up; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "tcpst-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn inode(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .expect("netns file")
            .ino()
    }
}

impl Netns {
    /// Loads an nftables ruleset into the namespace (gone with it).
    pub fn nft(&self, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (Debian package nftables) must be installed");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .expect("writing the ruleset");
        let status = child.wait().expect("nft");
        assert!(status.success(), "nft -f failed on:\n{ruleset}");
    }
}

impl Netns {
    /// Runs `f` on a thread inside the namespace: sockets it makes belong to the namespace.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("setns into the test namespace");
                    f()
                })
                .join()
                .expect("a thread inside the namespace")
        })
    }

    /// The TCP sockets `ss -tanp` lists in the namespace, with their holders.
    pub fn ss(&self) -> Vec<SsSocket> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ss", "-tanpH"])
            .output()
            .expect("ss (iproute2)");
        assert!(out.status.success(), "ss failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(SsSocket::parse)
            .collect()
    }
}

/// The TCP sockets `ss -tanp` lists in the tool's own namespace.
pub fn host_ss() -> Vec<SsSocket> {
    let out = Command::new("ss")
        .arg("-tanpH")
        .output()
        .expect("ss (iproute2)");
    assert!(out.status.success(), "ss failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(SsSocket::parse)
        .collect()
}

/// One line of `ss -tanpH`.
#[derive(Clone, Debug, PartialEq)]
pub struct SsSocket {
    pub state: String,
    pub local_port: u16,
    pub remote_port: u16,
    /// (command, pid) of every process holding it, as ss lists them.
    pub users: Vec<(String, u32)>,
}

impl SsSocket {
    fn parse(line: &str) -> Option<SsSocket> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |endpoint: &str| endpoint.rsplit(':').next()?.parse::<u16>().ok();
        let state = fields.first()?.to_string();
        let local_port = port(fields.get(3)?)?;
        let remote_port = port(fields.get(4)?).unwrap_or(0);
        let mut users = Vec::new();
        if let Some(at) = line.find("users:((") {
            // users:(("name",pid=1,fd=3),("name",pid=2,fd=4))
            let list = line[at + "users:((".len()..]
                .split("))")
                .next()
                .unwrap_or("");
            for user in list.split("),(") {
                let name = user.split('"').nth(1);
                let pid = user
                    .split("pid=")
                    .nth(1)
                    .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|p| p.parse().ok());
                if let (Some(name), Some(pid)) = (name, pid) {
                    users.push((name.to_string(), pid));
                }
            }
        }
        users.sort();
        users.dedup();
        Some(SsSocket {
            state,
            local_port,
            remote_port,
            users,
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.users.iter().map(|(_, pid)| *pid).collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Lines of a child's output, read on a thread so that waits can time out.
fn line_reader(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_with_timeout(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("{what} did not exit within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A scripted TCP peer (examples/tcp_peer.rs) running inside a namespace.
pub struct Peer {
    child: Child,
    lines: Receiver<String>,
    pub pid: u32,
}

impl Peer {
    /// `ip netns exec` execs the peer in place, so the child's PID is the peer's.
    pub fn spawn(ns: &Netns, args: &[&str]) -> Peer {
        Self::spawn_with(
            Command::new("ip")
                .args(["netns", "exec", &ns.name])
                .arg(peer_path())
                .args(args),
        )
    }

    pub fn spawn_with(cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning tcp_peer");
        let lines = line_reader(child.stdout.take().expect("stdout"));
        let pid = child.id();
        Peer { child, lines, pid }
    }

    /// Waits for the next output line, which must start with `prefix`; returns the rest.
    pub fn expect(&mut self, prefix: &str) -> String {
        let line = self
            .lines
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("tcp_peer {} printed no '{prefix}' line", self.pid));
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected '{prefix}...', got '{line}'"))
            .to_string()
    }

    /// The lines it prints until it has been quiet for `quiet`.
    pub fn lines_until_quiet(&mut self, quiet: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            lines.push(line);
        }
        lines
    }

    /// Closes stdin (releasing a --hold server) and waits for a clean exit.
    pub fn finish(self) {
        let status = self.exit();
        assert!(status.success(), "tcp_peer exited with {status}");
    }

    /// Closes stdin and waits for the exit, whatever its status.
    pub fn exit(mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        wait_with_timeout(&mut self.child, "tcp_peer")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a stopped tool printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The stdout of a `-o json` run, one value per line.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

impl Output {
    /// The reason drops show in this run: `reason`, or none where the kernel's kfree_skb
    /// tracepoint tells none (before 5.17), which the tool must then say on stderr.
    pub fn drop_reason(&self, reason: &'static str) -> Option<&'static str> {
        let given = tcpstates::features::kfree_skb_has_reason();
        self.says_off(tcpstates::features::DROP_REASONS_OFF, !given);
        given.then_some(reason)
    }

    /// How many resets sent without a socket this run shows of `count`: none where the
    /// kernel's tracepoint does not report them (before 6.10), which the tool then says.
    pub fn resets_without_socket(&self, count: usize) -> usize {
        let given = tcpstates::features::tcp_send_reset_without_socket();
        self.says_off(tcpstates::features::RESETS_WITHOUT_SOCKET_OFF, !given);
        if given {
            count
        } else {
            0
        }
    }

    fn says_off(&self, line: &str, off: bool) {
        assert_eq!(
            self.stderr.lines().any(|l| l == line),
            off,
            "{}",
            self.stderr
        );
    }
}

/// A running tcpstates.
pub struct Tool {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr_lines: Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Tool {
    /// Starts the tool and waits until it says it is tracing.
    pub fn start(args: &[&str]) -> Tool {
        Self::start_with(Command::new(tool_path()).args(args))
    }

    pub fn start_with(cmd: &mut Command) -> Tool {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tcpstates");
        let mut stdout = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let stderr_lines = line_reader(child.stderr.take().expect("stderr"));
        let mut tool = Tool {
            child,
            stdout: Some(stdout),
            stderr_lines,
            stderr_seen: Vec::new(),
        };
        loop {
            match tool.stderr_lines.recv_timeout(TIMEOUT) {
                Ok(line) => {
                    let ready = line.starts_with("Tracing TCP state transitions");
                    tool.stderr_seen.push(line);
                    if ready {
                        return tool;
                    }
                }
                Err(_) => {
                    let _ = tool.child.kill();
                    panic!("tcpstates did not start; stderr: {:?}", tool.stderr_seen);
                }
            }
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("kill");
    }

    /// Stops the tool with `signal` and collects everything it printed.
    pub fn stop_with(self, signal: Signal) -> Output {
        // Give the tool a poll interval to pick up the last events before the signal.
        thread::sleep(Duration::from_millis(300));
        self.signal(signal);
        self.wait()
    }

    pub fn stop(self) -> Output {
        self.stop_with(Signal::SIGINT)
    }

    /// Waits for the tool to exit by itself.
    pub fn wait(mut self) -> Output {
        let status = wait_with_timeout(&mut self.child, "tcpstates");
        let stdout = self
            .stdout
            .take()
            .expect("stdout thread")
            .join()
            .expect("stdout reader");
        let mut stderr = self.stderr_seen.join("\n");
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_secs(2)) {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One one-shot JSON snapshot (`--snapshot 1s --count 1 -o json`) of `ns`, or of every
/// namespace, with `extra` options: what the tool printed once it exited.
pub fn one_shot_with(ns: Option<&Netns>, extra: &[&str]) -> Output {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["--netns", ns.name.as_str()]);
    }
    args.extend(["--snapshot", "1s", "--count", "1", "-o", "json"]);
    args.extend_from_slice(extra);
    Tool::start(&args).wait()
}

/// A fresh walk of the namespace's sockets: one one-shot snapshot, as JSON.
pub fn one_shot(ns: &Netns) -> Value {
    let out = one_shot_with(Some(ns), &[]);
    assert!(out.status.success(), "{}", out.stderr);
    out.json().remove(0)
}

pub fn arrow(event: &Value) -> String {
    format!(
        "{}->{}",
        event["oldstate"].as_str().unwrap(),
        event["newstate"].as_str().unwrap()
    )
}

/// Transitions owned by `pid`, in the order received.
pub fn owned_by(events: &[Value], pid: u32) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "transition" && e["pid"] == u64::from(pid))
        .cloned()
        .collect()
}

pub fn transitions(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "transition")
        .cloned()
        .collect()
}

/// `(oldstate, newstate)` pairs as `"OLD->NEW"`.
pub fn arrows(events: &[Value]) -> Vec<String> {
    events.iter().map(arrow).collect()
}
