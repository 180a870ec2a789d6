//! How the tool starts, loses, stops and runs without privileges, against the real kernel (root).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn lost_events_are_counted_and_reported_exactly() {
    let ns = Netns::new();
    // A one-page ring holds about 34 records; stopping the reader makes the kernel drop the rest.
    let tool = Tool::start(&["--netns", &ns.name, "-o", "json", "--ring-size", "4K"]);
    tool.signal(Signal::SIGSTOP);
    let connections = 40;
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "0", "--connections", "40"]);
    let port = server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", &port, "--connections", "40"]);
    for _ in 0..connections {
        client.expect("closed ");
    }
    client.finish();
    for n in 1..=connections {
        server.expect(&format!("closed {n}"));
    }
    server.finish();
    tool.signal(Signal::SIGCONT);
    let out = tool.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let lines = out.json();
    let shown = transitions(&lines).len() as u64;
    let lost = |reason: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l["type"] == "lost" && l["reason"] == reason)
            .map(|l| l["count"].as_u64().unwrap())
            .sum()
    };
    // Ring drops are counted after the namespace filter: they are exactly this test's losses.
    // (Recursion misses are counted before any filter, so other namespaces can add to them.)
    let dropped = lost("ring_buffer_full");
    let skipped = lost("bpf_recursion");
    // Each connection makes 5 client and 5 server transitions; the listener makes 2.
    assert!(dropped > 0, "nothing was lost: {}", out.stdout);
    assert_eq!(
        shown + dropped,
        10 * connections + 2,
        "shown {shown}, dropped {dropped}"
    );
    let summary = format!(
        "tcpstates: {shown} transitions shown, {} lost ({dropped} ring buffer full, {skipped} BPF recursion)",
        dropped + skipped
    );
    assert!(out.stderr.contains(&summary), "{}", out.stderr);
}

#[test]
fn lost_events_go_to_stderr_in_text_mode() {
    let ns = Netns::new();
    let tool = Tool::start(&["--netns", &ns.name, "--ring-size", "4096"]);
    tool.signal(Signal::SIGSTOP);
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "0", "--connections", "10"]);
    let port = server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", &port, "--connections", "10"]);
    for _ in 0..10 {
        client.expect("closed ");
    }
    client.finish();
    tool.signal(Signal::SIGCONT);
    let out = tool.stop();
    let report = out
        .stderr
        .lines()
        .find(|l| l.starts_with("tcpstates: lost "))
        .unwrap_or_else(|| {
            panic!("no loss report: {}", out.stderr);
        });
    assert!(report.ends_with(" events (ring buffer full)"), "{report}");
    assert!(!out.stdout.contains("lost"));
}

#[test]
fn each_stop_signal_exits_cleanly_with_a_summary() {
    let ns = Netns::new();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let tool = Tool::start(&["--netns", &ns.name]);
        let out = tool.stop_with(signal);
        assert!(
            out.status.success(),
            "{signal}: {:?} {}",
            out.status,
            out.stderr
        );
        assert_eq!(
            out.stdout,
            "PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS\n"
        );
        let last = out.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("tcpstates: 0 transitions shown, ") && last.contains(" lost"),
            "{signal}: {}",
            out.stderr
        );
    }
}

#[test]
fn events_received_before_a_signal_are_flushed() {
    let ns = Netns::new();
    let tool = Tool::start(&["--netns", &ns.name, "-o", "json"]);
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "0"]);
    let port = server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "127.0.0.1", &port]);
    client.expect("closed ");
    client.finish();
    server.expect("closed 1");
    server.finish();
    // No grace period: the signal may arrive before the tool's next timed poll.
    tool.signal(Signal::SIGTERM);
    let out = tool.wait();
    assert!(out.status.success());
    assert_eq!(transitions(&out.json()).len(), 12, "{}", out.stdout);
}

#[test]
fn piping_into_head_exits_quietly() {
    let ns = Netns::new();
    let mut pipeline = Command::new("bash")
        .args(["-c", "set -o pipefail; \"$0\" --netns \"$1\" | head -3"])
        .arg(tool_path())
        .arg(&ns.name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Connections only once it traces: loading takes seconds on a slow (emulated) machine.
    // Before it, one line per capability this kernel lacks, if any.
    let mut stderr = BufReader::new(pipeline.stderr.take().unwrap());
    let mut tracing = String::new();
    while stderr.read_line(&mut tracing).unwrap() > 0 && !tracing.starts_with("Tracing") {
        assert!(tracing.contains(" on this kernel "), "{tracing}");
        tracing.clear();
    }
    assert_eq!(
        tracing,
        "Tracing TCP state transitions. Hit Ctrl-C to end.\n"
    );
    let mut server = Peer::spawn(&ns, &["server", "127.0.0.1", "0", "--connections", "5"]);
    let port = server.expect("listening ");
    let mut client = Peer::spawn(
        &ns,
        &[
            "client",
            "127.0.0.1",
            &port,
            "--connections",
            "5",
            "--pause-ms",
            "300",
        ],
    );
    for _ in 0..5 {
        client.expect("closed ");
    }
    client.finish();
    server.finish();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let out = pipeline.wait_with_output().unwrap();
    assert!(out.status.success(), "pipeline: {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    assert_eq!(rest, "", "nothing on stderr after the tracing line");
}

/// The binary, copied where an unprivileged user can execute it.
fn world_executable_copy() -> (tempdir::Dir, std::path::PathBuf) {
    let dir = tempdir::Dir::new();
    let copy = dir.path.join("tcpstates");
    std::fs::copy(tool_path(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

mod tempdir {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!("tcpstates-test-{}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[test]
fn runs_with_only_cap_bpf_and_cap_perfmon_and_no_tracefs() {
    let ns = Netns::new();
    let (_dir, tool) = world_executable_copy();
    // A private mount namespace where tracefs and debugfs are certainly absent, and an
    // unprivileged user that holds just CAP_BPF and CAP_PERFMON. Kernels before 5.11 count
    // BPF memory against RLIMIT_MEMLOCK, which such a user must be given, as the README says
    // (where root may raise it: later kernels do not need it).
    let script =
        "ulimit -l unlimited 2>/dev/null; \
                  mount -t tmpfs none /sys/kernel/tracing && mount -t tmpfs none /sys/kernel/debug && \
                  exec setpriv --reuid=65534 --regid=65534 --clear-groups \
                  --inh-caps=-all,+bpf,+perfmon --ambient-caps=-all,+bpf,+perfmon -- \"$@\"";
    let tracer = Tool::start_with(
        Command::new("unshare")
            .args(["-m", "sh", "-c", script, "sh"])
            .arg(&tool)
            .args(["--netns", &ns.inode().to_string(), "-o", "json"]),
    );
    let mut server = Peer::spawn(&ns, &["server", "::1", "0"]);
    let port = server.expect("listening ");
    let mut client = Peer::spawn(&ns, &["client", "::1", &port]);
    client.expect("closed ");
    let client_pid = client.pid;
    client.finish();
    server.expect("closed 1");
    server.finish();
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = transitions(&out.json());
    assert_eq!(events.len(), 12, "{}", out.stdout);
    // TIME_WAIT is detected without kallsyms, which shows zeros to this user.
    let client_events = owned_by(&events, client_pid);
    assert_eq!(arrow(client_events.last().unwrap()), "FIN_WAIT2->TIME_WAIT");
}

/// The niceness of each of a process's threads (field 19 of /proc/PID/task/TID/stat).
fn thread_niceness(tool: &Tool) -> Vec<i64> {
    let tasks = format!("/proc/{}/task", tool.pid());
    let mut niceness = Vec::new();
    for task in std::fs::read_dir(tasks).expect("task dir") {
        let stat = std::fs::read_to_string(task.expect("task").path().join("stat")).expect("stat");
        // Fields after the command's closing parenthesis start at field 3.
        let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
        let field = after_comm.split(' ').nth(19 - 3).expect("field 19");
        niceness.push(field.parse().expect("niceness"));
    }
    niceness
}

#[test]
fn the_reader_runs_at_a_raised_priority_unless_told_otherwise() {
    let ns = Netns::new();
    let tool = Tool::start(&["--netns", &ns.name, "--snapshot", "1s"]);
    let threads = thread_niceness(&tool);
    assert!(
        !threads.is_empty() && threads.iter().all(|&n| n == -10),
        "{threads:?}"
    );
    drop(tool);

    let tool = Tool::start(&["--netns", &ns.name, "--nice", "3"]);
    assert_eq!(thread_niceness(&tool), [3]);
    drop(tool);

    // A niceness the caller set is kept (set in the child before exec: the kernel matrix's
    // guests have no `nice` program).
    let mut command = Command::new(tool_path());
    command.args(["--netns", &ns.name]);
    // SAFETY: setpriority is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setpriority(libc::PRIO_PROCESS, 0, 5) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let tool = Tool::start_with(&mut command);
    assert_eq!(thread_niceness(&tool), [5]);
}
