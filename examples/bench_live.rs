//! Live-mode benchmark (run by `bench/live.sh`, as root): loopback churn with no tracer, with
//! tcpstates writing JSON and text to a file, with its optional hooks on (`--events
//! retransmit,reset,drop`, `--lifetimes`), and with Debian's libbpf-tools tcpstates when it is
//! installed, interleaved in one run. Prints one table of medians.
//!
//! ```text
//! bench_live [--quick] [--rates 20000,max] [--seconds S] [--rounds N] [--no-bpf-stats] [--floor]
//!            [--baseline PATH] [--no-messages]
//! ```
//! After the churn, the same tracers (less the floor) under a data-heavy load: a few long
//! connections carrying small messages (examples/messages.rs), where a hook on reads or writes
//! costs what churn does not show; `--no-messages` leaves it out.
//! `--baseline PATH` adds rows for another build of tcpstates (say, of the previous commit),
//! text and JSON, interleaved with this one's: a change measured before and after in one run.
//! `--floor` adds rows for programs that do nothing, only count, or only write a record to a
//! ring buffer that this process reads (bench/floor.bpf.c, loaded here): what any tracer on
//! the same hooks costs at least, and what delivering events costs at least, in the same run.
//! The kernel's BPF statistics (for the kernel ns column) add two clock reads to every run of
//! every program: a tool that runs several programs per event pays that several times.
//! `--no-bpf-stats` leaves them off, as users run, and measures everything but that column and
//! "untraced": the round's state changes that the state tracepoint never reported to the
//! tracer's state program (neither ran it nor counted a skip), so that "missing" splits into
//! what the kernel did not report and what the tracer lost.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libbpf_rs::query::ProgInfoIter;
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, Object, ObjectBuilder, RingBufferBuilder};

/// Each churned connection makes exactly ten transitions (see examples/churn.rs).
const TRANSITIONS_PER_CONNECTION: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tracer {
    None,
    Json,
    Text,
    /// The --baseline build, writing JSON and text.
    BaselineJson,
    BaselineText,
    /// JSON with retransmit, reset and drop events (hooks on kfree_skb and three TCP tracepoints).
    Events,
    /// One record per connection instead of per transition.
    Lifetimes,
    LibbpfTools,
    /// An empty program on inet_sock_set_state (bench/floor.bpf.c).
    FloorEmpty,
    /// A program on inet_sock_set_state that only counts, in a per-CPU array.
    FloorCount,
    /// A program that writes a record of tcpstates' size to a ring buffer per state change,
    /// read by this process: what delivering an event costs at least.
    FloorRing,
    /// Empty programs on the hooks tcpstates attaches: inet_sock_set_state twice (the state
    /// program and its twin for nested changes) and kmem_cache_free.
    FloorHooks,
    /// An empty program on reads (tcp_rcv_space_adjust), and one on writes too.
    FloorRead,
    FloorData,
}

impl Tracer {
    fn name(self) -> &'static str {
        match self {
            Tracer::None => "no tracer",
            Tracer::Json => "tcpstates -o json",
            Tracer::Text => "tcpstates (text)",
            Tracer::BaselineJson => "baseline -o json",
            Tracer::BaselineText => "baseline (text)",
            Tracer::Events => "tcpstates --events (json)",
            Tracer::Lifetimes => "tcpstates --lifetimes",
            Tracer::LibbpfTools => "libbpf-tools tcpstates",
            Tracer::FloorEmpty => "empty program",
            Tracer::FloorCount => "counting program",
            Tracer::FloorRing => "ring record, read",
            Tracer::FloorHooks => "empty, tcpstates' 3 hooks",
            Tracer::FloorRead => "empty program on reads",
            Tracer::FloorData => "empty, reads and writes",
        }
    }

    /// The tracer's program on the state tracepoint, whose runs and skips count the changes
    /// the tracepoint reported (BPF program names are cut to 15 bytes).
    fn state_program(self) -> &'static str {
        match self {
            Tracer::LibbpfTools => "handle_set_stat",
            Tracer::FloorEmpty | Tracer::FloorHooks => "floor_empty",
            Tracer::FloorRead | Tracer::FloorData => "floor_read",
            Tracer::FloorCount => "floor_count",
            Tracer::FloorRing => "floor_ring",
            _ => "on_set_state",
        }
    }

    /// The programs of bench/floor.bpf.c this row attaches; none for the real tracers.
    fn floor_programs(self) -> &'static [&'static str] {
        match self {
            Tracer::FloorEmpty => &["floor_empty"],
            Tracer::FloorCount => &["floor_count"],
            Tracer::FloorRing => &["floor_ring"],
            Tracer::FloorHooks => &["floor_empty", "floor_twin", "floor_free"],
            Tracer::FloorRead => &["floor_read"],
            Tracer::FloorData => &["floor_read", "floor_write"],
            _ => &[],
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Sample {
    achieved: f64,
    expected: u64,
    captured: u64,
    reported_lost: u64,
    recursion_misses: u64,
    kernel_ns: u64,
    /// State changes of the round the state tracepoint never reported to the tracer's program
    /// (expected minus its runs and skips); known only with the kernel's BPF statistics on.
    untraced: i64,
    cpu_s: f64,
    rss_kib: u64,
    startup_ms: Option<f64>,
    /// Each of the tracer's programs in the round: name, run time (ns) and runs.
    programs: Vec<(String, u64, u64)>,
}

struct Paths {
    /// examples/messages.rs.
    messages: PathBuf,
    tcpstates: PathBuf,
    /// Another build of tcpstates to compare with (--baseline).
    baseline: Option<PathBuf>,
    churn: PathBuf,
    libbpf_tools: Option<PathBuf>,
    /// bench/floor.bpf.c, compiled by bench/live.sh.
    floor: PathBuf,
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let examples = exe.parent().expect("examples dir");
    match name {
        "tcpstates" => examples.parent().expect("profile dir").join("tcpstates"),
        _ => examples.join(name),
    }
}

/// Debian's libbpf-tools binary, under its own name or set aside by our package's diversion.
fn libbpf_tools() -> Option<PathBuf> {
    for path in ["/usr/sbin/tcpstates.libbpf-tools", "/usr/sbin/tcpstates"] {
        let owner = Command::new("dpkg-query")
            .args(["-S", path])
            .output()
            .ok()?;
        let owner = String::from_utf8_lossy(&owner.stdout);
        if owner.lines().any(|l| l.starts_with("libbpf-tools:")) && Path::new(path).exists() {
            return Some(PathBuf::from(path));
        }
    }
    None
}

fn run(cmd: &str, args: &[&str]) {
    let ok = Command::new(cmd)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{cmd} {args:?} failed");
}

struct Netns(String);

impl Netns {
    fn new(n: usize) -> Netns {
        let name = format!("tcpst-bench-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Floor programs, attached until dropped (links first, then the object).
struct Floor {
    _links: Vec<Link>,
    object: Object,
}

fn attach_floor(path: &Path, tracer: Tracer) -> Floor {
    let wanted = tracer.floor_programs();
    let is_wanted = |name: &std::ffi::OsStr| wanted.iter().any(|w| name == *w);
    let mut open = ObjectBuilder::default()
        .open_file(path)
        .expect("opening floor.bpf.o (built by bench/live.sh)");
    for mut prog in open.progs_mut() {
        let load = is_wanted(prog.name());
        prog.set_autoload(load);
    }
    let object = open.load().expect("loading floor.bpf.o");
    let links = object
        .progs_mut()
        .filter(|p| is_wanted(p.name()))
        .map(|p| p.attach().expect("attaching a floor program"))
        .collect();
    Floor {
        _links: links,
        object,
    }
}

/// Reads floor_ring's records every 10 ms on a thread of its own, counting them, until dropped.
struct RingReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RingReader {
    fn start(floor: &Floor) -> RingReader {
        let map = floor
            .object
            .maps()
            .find(|m| m.name() == "floor_records")
            .expect("floor_records map");
        let map = MapHandle::try_from(&map).expect("floor_records handle");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let read = std::cell::Cell::new(0u64);
            let mut builder = RingBufferBuilder::new();
            builder
                .add(&map, |_| {
                    read.set(read.get() + 1);
                    0
                })
                .expect("floor ring callback");
            let ring = builder.build().expect("floor ring");
            while !stopped.load(Ordering::Relaxed) {
                let _ = ring.consume();
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = ring.consume();
            drop(ring);
            read.get()
        });
        RingReader {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading; the records read.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

/// floor_counts[index], over all CPUs.
fn floor_count_at(floor: &Floor, index: u32) -> u64 {
    let Some(map) = floor
        .object
        .maps()
        .find(|m| m.name().to_string_lossy().starts_with("floor_counts"))
    else {
        return 0;
    };
    map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
        .sum()
}

/// Runs churn in the namespace; returns (connections, achieved rate).
fn churn(paths: &Paths, ns: &Netns, rate: Option<u32>, seconds: f64, threads: u32) -> (u64, f64) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0]).arg(&paths.churn);
    match rate {
        Some(r) => cmd.args(["--rate", &r.to_string()]),
        None => cmd.arg("--max"),
    };
    cmd.args([
        "--seconds",
        &seconds.to_string(),
        "--threads",
        &threads.to_string(),
    ]);
    let out = cmd.stderr(Stdio::null()).output().expect("churn");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> f64 {
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (field("connections") as u64, field("rate"))
}

/// The highest BPF program id now; programs loaded later have higher ids.
fn max_prog_id() -> u32 {
    ProgInfoIter::default().map(|p| p.id).max().unwrap_or(0)
}

/// Counters of a tracer's programs (those loaded after a given id), read before and after the
/// round so that the probe connections are left out.
#[derive(Clone, Copy, Default)]
struct ProgTotals {
    /// Run time of all of them (kernel.bpf_stats_enabled).
    run_ns: u64,
    /// Recursion skips of its programs on the state tracepoint (those named like its state
    /// program, up to the last underscore: libbpf-tools' one, the floor's).
    misses: u64,
    /// Runs and skips of its state program: the changes the state tracepoint reported to it.
    invocations: u64,
}

impl ProgTotals {
    fn read(after: u32, tracer: Tracer) -> ProgTotals {
        let name = tracer.state_program();
        let family = &name[..name.rfind('_').unwrap_or(name.len())];
        ProgInfoIter::default()
            .filter(|p| p.id > after)
            .fold(ProgTotals::default(), |mut t, p| {
                let prog = p.name.to_string_lossy();
                t.run_ns += p.run_time_ns;
                if prog.starts_with(family) {
                    t.misses += p.recursion_misses;
                }
                if prog == name {
                    t.invocations += p.run_cnt + p.recursion_misses;
                }
                t
            })
    }

    fn since(self, start: ProgTotals) -> ProgTotals {
        ProgTotals {
            run_ns: self.run_ns.saturating_sub(start.run_ns),
            misses: self.misses.saturating_sub(start.misses),
            invocations: self.invocations.saturating_sub(start.invocations),
        }
    }
}

/// Run time (ns) and runs of each program loaded after `after`, by name.
fn program_costs(after: u32) -> Vec<(String, u64, u64)> {
    ProgInfoIter::default()
        .filter(|p| p.id > after)
        .map(|p| {
            (
                p.name.to_string_lossy().into_owned(),
                p.run_time_ns,
                p.run_cnt,
            )
        })
        .collect()
}

/// What each program did between two readings.
fn costs_since(
    now: Vec<(String, u64, u64)>,
    start: &[(String, u64, u64)],
) -> Vec<(String, u64, u64)> {
    now.into_iter()
        .map(|(name, ns, runs)| {
            let (ns0, runs0) = start
                .iter()
                .find(|(n, ..)| *n == name)
                .map_or((0, 0), |(_, ns, runs)| (*ns, *runs));
            (name, ns.saturating_sub(ns0), runs.saturating_sub(runs0))
        })
        .collect()
}

/// The per-program lines: runs per event and kernel ns per run (statistics on).
fn print_program_costs(what: &str, per: &str, events: f64, programs: &[(String, u64, u64)]) {
    for (name, ns, runs) in programs.iter().filter(|(_, _, runs)| *runs > 0) {
        println!(
            "  {what:<34} {name:<16} {:>8.3} runs/{per} {:>6.0} ns/run {:>6.1} ns/{per}",
            *runs as f64 / events.max(1.0),
            *ns as f64 / *runs as f64,
            *ns as f64 / events.max(1.0),
        );
    }
}

/// Transitions tcpstates reported as skipped by the kernel, from its summary line
/// "... N lost (R ring buffer full, S BPF recursion)".
fn reported_skips(err: &str) -> Option<u64> {
    let line = err.lines().rev().find(|l| l.contains(" BPF recursion)"))?;
    let before = line.split(" BPF recursion)").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn proc_cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / hz, rss)
}

fn spawn_tracer(
    paths: &Paths,
    tracer: Tracer,
    ns: &Netns,
    out: &Path,
    err: &Path,
) -> Option<Child> {
    let mut cmd = match tracer {
        Tracer::None
        | Tracer::FloorEmpty
        | Tracer::FloorCount
        | Tracer::FloorRing
        | Tracer::FloorHooks
        | Tracer::FloorRead
        | Tracer::FloorData => return None,
        Tracer::Json => {
            let mut c = Command::new(&paths.tcpstates);
            c.args(["--netns", &ns.0, "-o", "json"]);
            c
        }
        Tracer::Text => {
            let mut c = Command::new(&paths.tcpstates);
            c.args(["--netns", &ns.0]);
            c
        }
        Tracer::BaselineJson => {
            let mut c = Command::new(paths.baseline.as_ref()?);
            c.args(["--netns", &ns.0, "-o", "json"]);
            c
        }
        Tracer::BaselineText => {
            let mut c = Command::new(paths.baseline.as_ref()?);
            c.args(["--netns", &ns.0]);
            c
        }
        Tracer::Events => {
            let mut c = Command::new(&paths.tcpstates);
            c.args([
                "--netns",
                &ns.0,
                "-o",
                "json",
                "--events",
                "retransmit,reset,drop",
            ]);
            c
        }
        Tracer::Lifetimes => {
            let mut c = Command::new(&paths.tcpstates);
            c.args(["--netns", &ns.0, "-o", "json", "--lifetimes"]);
            c
        }
        Tracer::LibbpfTools => Command::new(paths.libbpf_tools.as_ref()?),
    };
    let child = cmd
        .stdout(File::create(out).expect("output file"))
        .stderr(File::create(err).expect("error file"))
        .spawn()
        .expect("starting the tracer");
    Some(child)
}

/// Transition lines in a tracer's output, leaving out TIME_WAIT -> CLOSE (not part of the ten).
/// A connection record stands for the five transitions of its socket.
fn count_transitions(tracer: Tracer, out: &str) -> u64 {
    match tracer {
        Tracer::Lifetimes => {
            5 * out
                .lines()
                .filter(|l| l.contains("\"type\":\"connection\""))
                .count() as u64
        }
        Tracer::Json | Tracer::BaselineJson | Tracer::Events => out
            .lines()
            .filter(|l| l.contains("\"type\":\"transition\""))
            .filter(|l| !l.contains("\"oldstate\":\"TIME_WAIT\""))
            .count() as u64,
        _ => out
            .lines()
            .skip(1)
            .filter(|l| !l.contains("TIME_WAIT   -> CLOSE"))
            .count() as u64,
    }
}

fn reported_lost(tracer: Tracer, out: &str, err: &str) -> u64 {
    let number_after = |line: &str, word: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == word)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .unwrap_or(0)
    };
    match tracer {
        Tracer::Json | Tracer::BaselineJson | Tracer::Events | Tracer::Lifetimes => out
            .lines()
            .filter(|l| l.contains("\"type\":\"lost\"") && l.contains("ring_buffer_full"))
            .map(|l| number_after(&l.replace([':', ','], " "), "\"count\""))
            .sum(),
        Tracer::Text | Tracer::BaselineText => err
            .lines()
            .filter(|l| l.starts_with("tcpstates: lost") && l.contains("ring buffer"))
            .map(|l| number_after(l, "lost"))
            .sum(),
        // libbpf-tools: "lost N events on CPU #C"
        Tracer::LibbpfTools => err
            .lines()
            .filter(|l| l.starts_with("lost"))
            .map(|l| number_after(l, "lost"))
            .sum(),
        _ => 0,
    }
}

fn run_once(paths: &Paths, tracer: Tracer, rate: Option<u32>, seconds: f64, n: usize) -> Sample {
    let ns = Netns::new(n);
    let dir = std::env::temp_dir();
    let out_path = dir.join(format!("tcpst-bench-{}.out", std::process::id()));
    let err_path = dir.join(format!("tcpst-bench-{}.err", std::process::id()));
    let before = max_prog_id();
    let start = Instant::now();
    let child = spawn_tracer(paths, tracer, &ns, &out_path, &err_path);
    let floor = (!tracer.floor_programs().is_empty()).then(|| attach_floor(&paths.floor, tracer));
    let ring_reader = match (&floor, tracer) {
        (Some(floor), Tracer::FloorRing) => Some(RingReader::start(floor)),
        _ => None,
    };
    let mut sample = Sample::default();

    let mut probe_events = 0;
    if child.is_some() {
        // A trickle of connections (one per ms) from just after exec: the first one written
        // tells when the tool started delivering. Probe events are left out of the counts.
        let mut probe = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(&paths.churn)
            .args(["--rate", "1000", "--seconds", "1", "--threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the probe");
        let text = matches!(tracer, Tracer::Text | Tracer::BaselineText);
        let first_line = if text { 2 } else { 1 };
        while start.elapsed() < Duration::from_secs(5) {
            let text = fs::read_to_string(&out_path).unwrap_or_default();
            if text.lines().count() >= first_line {
                sample.startup_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = probe.wait();
        std::thread::sleep(Duration::from_millis(300));
        probe_events =
            count_transitions(tracer, &fs::read_to_string(&out_path).unwrap_or_default());
    }
    let at_start = ProgTotals::read(before, tracer);
    let costs_at_start = program_costs(before);
    let (connections, achieved) = churn(paths, &ns, rate, seconds, 4);
    sample.programs = costs_since(program_costs(before), &costs_at_start);
    sample.achieved = achieved;
    sample.expected = connections * TRANSITIONS_PER_CONNECTION;
    let round = |sample: &mut Sample| {
        let totals = ProgTotals::read(before, tracer).since(at_start);
        sample.kernel_ns = totals.run_ns;
        // The churn's listener makes two changes of its own.
        sample.untraced = sample.expected as i64 + 2 - totals.invocations as i64;
        totals
    };

    if let Some(mut child) = child {
        std::thread::sleep(Duration::from_millis(500));
        let totals = round(&mut sample);
        let (cpu, rss) = proc_cpu_and_rss(child.id());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = child.wait();
        let out = fs::read_to_string(&out_path).unwrap_or_default();
        let err = fs::read_to_string(&err_path).unwrap_or_default();
        sample.captured = count_transitions(tracer, &out).saturating_sub(probe_events);
        sample.reported_lost = reported_lost(tracer, &out, &err);
        sample.recursion_misses = match tracer {
            Tracer::LibbpfTools => totals.misses,
            _ => reported_skips(&err).unwrap_or(0),
        };
        sample.cpu_s = cpu;
        sample.rss_kib = rss;
    }
    if let Some(floor) = floor {
        std::thread::sleep(Duration::from_millis(500));
        sample.recursion_misses = round(&mut sample).misses;
        sample.captured = match ring_reader {
            Some(reader) => reader.finish(),
            None => floor_count_at(&floor, 0),
        };
        sample.reported_lost = floor_count_at(&floor, 1);
    }
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    sample
}

/// Messages per second of examples/messages.rs in a namespace of its own, under `tracer`, and
/// its programs' costs over the run.
fn messages_once(
    paths: &Paths,
    tracer: Tracer,
    seconds: f64,
    n: usize,
) -> (f64, Vec<(String, u64, u64)>) {
    let ns = Netns::new(n);
    let before = max_prog_id();
    let dir = std::env::temp_dir();
    let out_path = dir.join(format!("tcpst-bench-msg-{}.out", std::process::id()));
    let err_path = dir.join(format!("tcpst-bench-msg-{}.err", std::process::id()));
    let mut child = spawn_tracer(paths, tracer, &ns, &out_path, &err_path);
    if let Some(running) = &mut child {
        // Loaded and attached well within this (start ms in the churn rows).
        std::thread::sleep(Duration::from_millis(1000));
        if let Ok(Some(status)) = running.try_wait() {
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{} exited with {status}: {err}", tracer.name());
        }
    }
    let _floor = (!tracer.floor_programs().is_empty()).then(|| attach_floor(&paths.floor, tracer));
    let costs_at_start = program_costs(before);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&paths.messages)
        .args(["--seconds", &seconds.to_string()])
        .stderr(Stdio::null())
        .output()
        .expect("messages");
    let programs = costs_since(program_costs(before), &costs_at_start);
    if let Some(mut child) = child {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = child.wait();
    }
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let rate = words
        .iter()
        .position(|w| *w == "rate")
        .and_then(|i| words.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (rate, programs)
}

/// The data-heavy rows: median messages per second and slowdown against no tracer.
fn messages_table(
    paths: &Paths,
    tracers: &[Tracer],
    seconds: f64,
    rounds: usize,
    n: &mut usize,
    with_stats: bool,
) {
    let mut samples: Vec<(Tracer, f64)> = Vec::new();
    let mut costs = Vec::new();
    for _ in 0..rounds {
        for &tracer in tracers {
            *n += 1;
            let (rate, programs) = messages_once(paths, tracer, seconds, *n);
            samples.push((tracer, rate));
            if tracer == Tracer::Json {
                costs = programs;
            }
        }
    }
    let rate = |tracer: Tracer| {
        median(
            samples
                .iter()
                .filter(|(t, _)| *t == tracer)
                .map(|(_, r)| *r)
                .collect(),
        )
    };
    let untraced = rate(Tracer::None);
    println!();
    println!(
        "{:<7} {:<26} {:>9} {:>8}",
        "load", "tracer", "msg/s", "slowdown"
    );
    for &tracer in tracers {
        let achieved = rate(tracer);
        println!(
            "{:<7} {:<26} {achieved:>9.0} {:>7.3}x",
            "msgs",
            tracer.name(),
            untraced / achieved.max(1.0)
        );
    }
    if with_stats {
        let messages = rate(Tracer::Json) * seconds;
        print_program_costs(
            "msgs tcpstates -o json, last round:",
            "msg",
            messages,
            &costs,
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rates: Vec<Option<u32>> = value("--rates")
        .unwrap_or_else(|| {
            if quick {
                "2000".into()
            } else {
                "20000,max".into()
            }
        })
        .split(',')
        .map(|r| r.parse().ok())
        .collect();
    let seconds: f64 = value("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1.0 } else { 5.0 });
    let rounds: usize = value("--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let paths = Paths {
        messages: sibling("messages"),
        tcpstates: sibling("tcpstates"),
        baseline: value("--baseline").map(PathBuf::from),
        churn: sibling("churn"),
        libbpf_tools: libbpf_tools(),
        floor: sibling("floor.bpf.o"),
    };

    let with_stats = !args.iter().any(|a| a == "--no-bpf-stats");
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = fs::read_to_string(stats_path).unwrap_or_else(|_| "0".into());
    fs::write(stats_path, if with_stats { "1" } else { "0" })
        .expect("setting kernel.bpf_stats_enabled (needs root)");
    // libbpf-tools attaches a classic tracepoint, which needs tracefs.
    let mounted_tracefs = paths.libbpf_tools.is_some()
        && !Path::new("/sys/kernel/tracing/events").exists()
        && Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .is_ok_and(|s| s.success());

    let mut tracers = vec![
        Tracer::None,
        Tracer::Json,
        Tracer::Text,
        Tracer::Events,
        Tracer::Lifetimes,
    ];
    if paths.baseline.is_some() {
        tracers.extend([Tracer::BaselineJson, Tracer::BaselineText]);
    }
    if paths.libbpf_tools.is_some() {
        tracers.push(Tracer::LibbpfTools);
    } else {
        eprintln!("libbpf-tools is not installed: measuring tcpstates only (apt-get install libbpf-tools)");
    }
    if quick || args.iter().any(|a| a == "--floor") {
        tracers.extend([
            Tracer::FloorEmpty,
            Tracer::FloorCount,
            Tracer::FloorRing,
            Tracer::FloorHooks,
        ]);
    }

    println!(
        "{:<7} {:<26} {:>9} {:>8} {:>9} {:>9} {:>6} {:>8} {:>7} {:>8} {:>11} {:>10} {:>7} {:>8}",
        "offered",
        "tracer",
        "conn/s",
        "slowdown",
        "expected",
        "captured",
        "lost",
        "bpf-skip",
        "missing",
        "untraced",
        "kernel ns/ev",
        "cpu s/1M ev",
        "rss MiB",
        "start ms"
    );
    let mut n = 0;
    let churn_rates = if args.iter().any(|a| a == "--messages-only") {
        &[][..]
    } else {
        &rates[..]
    };
    for rate in churn_rates {
        let mut samples: Vec<(Tracer, Sample)> = Vec::new();
        for _ in 0..rounds {
            for &tracer in &tracers {
                n += 1;
                samples.push((tracer, run_once(&paths, tracer, *rate, seconds, n)));
            }
        }
        let baseline = median(
            samples
                .iter()
                .filter(|(t, _)| *t == Tracer::None)
                .map(|(_, s)| s.achieved)
                .collect(),
        );
        for &tracer in &tracers {
            let of: Vec<&Sample> = samples
                .iter()
                .filter(|(t, _)| *t == tracer)
                .map(|(_, s)| s)
                .collect();
            let m = |f: &dyn Fn(&Sample) -> f64| median(of.iter().map(|s| f(s)).collect());
            let achieved = m(&|s| s.achieved);
            let offered = rate.map_or("max".to_string(), |r| r.to_string());
            if tracer == Tracer::None {
                println!(
                    "{offered:<7} {:<26} {achieved:>9.0} {:>8}",
                    tracer.name(),
                    "1.00x"
                );
                continue;
            }
            let events = |s: &Sample| s.expected.max(1) as f64;
            let (kernel, untraced) = if with_stats {
                (
                    format!("{:.0}", m(&|s| s.kernel_ns as f64 / events(s))),
                    format!("{:.0}", m(&|s| s.untraced as f64)),
                )
            } else {
                ("-".to_string(), "-".to_string())
            };
            if !tracer.floor_programs().is_empty() {
                // Loaded in this process: no output, CPU, memory or start of their own.
                let counted = |v: f64| {
                    if matches!(tracer, Tracer::FloorCount | Tracer::FloorRing) {
                        format!("{v:.0}")
                    } else {
                        "-".to_string()
                    }
                };
                let lost = if tracer == Tracer::FloorRing {
                    format!("{:.0}", m(&|s| s.reported_lost as f64))
                } else {
                    "-".to_string()
                };
                println!(
                    "{offered:<7} {:<26} {achieved:>9.0} {:>7.2}x {:>9.0} {:>9} {:>6} {:>8.0} {:>7} {untraced:>8} {kernel:>11} {:>10} {:>7} {:>8}",
                    tracer.name(),
                    baseline / achieved.max(1.0),
                    m(&|s| s.expected as f64),
                    counted(m(&|s| s.captured as f64)),
                    lost,
                    m(&|s| s.recursion_misses as f64),
                    counted(m(&|s| s.expected.saturating_sub(s.captured) as f64)),
                    "-",
                    "-",
                    "-",
                );
                continue;
            }
            println!(
                "{offered:<7} {:<26} {achieved:>9.0} {:>7.2}x {:>9.0} {:>9.0} {:>6.0} {:>8.0} {:>7.0} {untraced:>8} {:>11} {:>10.2} {:>7.1} {:>8}",
                tracer.name(),
                baseline / achieved.max(1.0),
                m(&|s| s.expected as f64),
                m(&|s| s.captured as f64),
                m(&|s| s.reported_lost as f64),
                m(&|s| s.recursion_misses as f64),
                m(&|s| s.expected.saturating_sub(s.captured) as f64),
                kernel,
                m(&|s| s.cpu_s / events(s) * 1e6),
                m(&|s| s.rss_kib as f64 / 1024.0),
                of.iter().filter_map(|s| s.startup_ms).map(|ms| format!("{ms:.0}")).collect::<Vec<_>>().join("/"),
            );
        }
        if with_stats {
            let offered = rate.map_or("max".to_string(), |r| r.to_string());
            for tracer in [Tracer::Json, Tracer::BaselineJson] {
                if let Some((_, last)) = samples.iter().rev().find(|(t, _)| *t == tracer) {
                    let what = format!("{offered} {}, last round:", tracer.name());
                    print_program_costs(&what, "ev", last.expected as f64, &last.programs);
                }
            }
        }
    }
    if !args.iter().any(|a| a == "--no-messages") {
        let mut traced: Vec<Tracer> = tracers
            .iter()
            .copied()
            .filter(|t| t.floor_programs().is_empty())
            .collect();
        if quick || args.iter().any(|a| a == "--floor") {
            traced.extend([Tracer::FloorRead, Tracer::FloorData]);
        }
        messages_table(&paths, &traced, seconds, rounds, &mut n, with_stats);
    }
    let _ = fs::write(stats_path, stats_before.trim());
    if mounted_tracefs {
        let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
    }
}
