//! Bad input and bad environments: one exact line on stderr, a non-zero exit, nothing on stdout.

mod common;

use std::process::Command;

use common::tool_path;

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running tcpstates");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_error(args: &[&str], code: i32, message: &str) {
    let (status, stdout, stderr) = run(Command::new(tool_path()).args(args));
    assert_eq!(stderr, format!("tcpstates: {message}\n"), "args {args:?}");
    assert_eq!(status, code, "args {args:?}");
    assert_eq!(stdout, "", "args {args:?}");
}

#[test]
fn bad_values_name_the_option_and_the_rule() {
    assert_error(
        &["-L", "70000"],
        2,
        "invalid value '70000' for '--localport <PORTS>': a port is a number from 0 to 65535",
    );
    assert_error(
        &["--remoteport", "80,http"],
        2,
        "invalid value 'http' for '--remoteport <PORTS>': a port is a number from 0 to 65535",
    );
    assert_error(
        &["--state", "ESTABLISHED,FOO"],
        2,
        "invalid value 'FOO' for '--state <STATES>': unknown TCP state 'FOO' (expected one of: \
         ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, \
         LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV, BOUND_INACTIVE)",
    );
    assert_error(
        &["--duration", "5x"],
        2,
        "invalid value '5x' for '--duration <DURATION>': unknown time unit \"x\", supported units: \
         ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)",
    );
    assert_error(
        &["-o", "xml"],
        2,
        "invalid value 'xml' for '--output <FORMAT>' [possible values: text, json, csv]",
    );
    assert_error(
        &["--count", "0"],
        2,
        "invalid value '0' for '--count <N>': the count is a whole number, at least 1",
    );
    assert_error(
        &["--nice", "20"],
        2,
        "invalid value '20' for '--nice <N>': the niceness is a whole number from -20 to 19",
    );
    assert_error(
        &["-4", "-6"],
        2,
        "the argument '--ipv4' cannot be used with '--ipv6'",
    );
    assert_error(
        &["--cont", "3"],
        2,
        "unexpected argument '--cont' found; tip: a similar argument exists: '--count'",
    );
}

#[test]
fn unknown_namespaces_and_cgroups_are_refused() {
    assert_error(
        &["--netns", "tcpstates-no-such-ns"],
        1,
        "--netns tcpstates-no-such-ns: no network namespace at /run/netns/tcpstates-no-such-ns \
         (it does not exist)",
    );
    assert_error(
        &["--netns", "/proc/self/ns/pid"],
        1,
        "--netns /proc/self/ns/pid: /proc/self/ns/pid is not a network namespace",
    );
    assert_error(
        &["--cgroup", "/tcpstates/no/such/cgroup"],
        1,
        "--cgroup /tcpstates/no/such/cgroup: no cgroup at /tcpstates/no/such/cgroup (it does not exist)",
    );
    assert_error(
        &["--cgroup", "/proc"],
        1,
        "--cgroup /proc: /proc is not a cgroup v2 directory",
    );
}

#[test]
fn without_privileges_it_names_the_capabilities_it_needs() {
    // As nobody with no capabilities (needs root to switch user).
    let (status, stdout, stderr) = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(tool_path()));
    assert_eq!(
        stderr,
        "tcpstates: permission denied: tracing needs root, or the capabilities CAP_BPF and \
         CAP_PERFMON (missing: CAP_BPF, CAP_PERFMON)\n"
    );
    assert_eq!((status, stdout.as_str()), (1, ""));
}

#[test]
fn without_kernel_btf_it_says_what_is_missing() {
    // Hide /sys/kernel/btf in a private mount namespace (needs root).
    let (status, stdout, stderr) = run(Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs none /sys/kernel/btf && exec \"$0\"",
        ])
        .arg(tool_path()));
    assert_eq!(
        stderr,
        "tcpstates: this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): tcpstates needs \
         Linux 5.10 or later built with CONFIG_DEBUG_INFO_BTF=y\n"
    );
    assert_eq!((status, stdout.as_str()), (1, ""));
}

#[test]
fn help_and_version_go_to_stdout_and_succeed() {
    let (status, stdout, stderr) = run(Command::new(tool_path()).arg("--help"));
    assert_eq!((status, stderr.as_str()), (0, ""));
    assert!(stdout.contains("Usage: tcpstates [OPTIONS]"));
    assert!(stdout.contains("Examples:"));
    let (status, stdout, _) = run(Command::new(tool_path()).arg("--version"));
    assert_eq!(
        (status, stdout.as_str()),
        (0, concat!("tcpstates ", env!("CARGO_PKG_VERSION"), "\n"))
    );
}

#[test]
fn a_bpf_failure_says_which_step_failed_and_why() {
    // Too few file descriptors for the BPF object's maps (needs root to get that far).
    let (status, stdout, stderr) = run(Command::new("prlimit")
        .args(["--nofile=6:6", "--"])
        .arg(tool_path()));
    assert_eq!(
        stderr,
        "tcpstates: opening the BPF object failed: Too many open files (os error 24) (libbpf: \
         failed to initialize skeleton BPF object 'tcpstates_bpf': -EMFILE; run with -v for \
         details)\n"
    );
    assert_eq!((status, stdout.as_str()), (1, ""));
}
