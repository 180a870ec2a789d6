//! Command-line definition: clap derive, with the doc comments as help text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::tcp_state::{TcpState, UnknownState};

const EXAMPLES: &str = "\
Examples:
  tcpstates                         every transition on the host, IPv4 and IPv6
  tcpstates -T -w                   with wall-clock time and socket addresses
  tcpstates -L 80,443               connections with local port 80 or 443
  tcpstates -D 5432 -p 1234         to remote port 5432, owned by PID 1234
  tcpstates --state CLOSE_WAIT      transitions into or out of CLOSE_WAIT
  tcpstates --netns blue            only the network namespace /run/netns/blue
  tcpstates --cgroup system.slice/nginx.service
                                    sockets of a cgroup (v2) and its children
  tcpstates --service nginx.service sockets of a systemd unit, a container (id prefix)
                                    or a Kubernetes pod (UID)
  tcpstates -o json --duration 30s  30 s of JSON lines, one object per transition
  tcpstates -o csv --count 100      the first 100 transitions as CSV
  tcpstates --snapshot 5s           every 5 s: the connections now, per-state counts,
                                    transitions, CLOSE_WAIT holders, TIME_WAIT patterns
  tcpstates --snapshot 1s --count 1 -o json
                                    one snapshot as JSON, for scripts
  tcpstates --lifetimes             one line per connection when it ends: bytes, RTT,
                                    retransmits, who closed first, how it ended
  tcpstates --events retransmit,reset,drop
                                    transitions, retransmits, resets and TCP drops
  tcpstates --alert CLOSE_WAIT=30s  report sockets left in CLOSE_WAIT over 30 s
  tcpstates --snapshot 1s --count 1 --alert CLOSE_WAIT=30s
                                    a check for cron: exit status 3 if any fires
  tcpstates --metrics :9977 --quiet a Prometheus exporter: /metrics on port 9977";

/// Trace TCP state transitions, live, with each socket's owning process.
///
/// Prints one line per TCP state change of every socket on the host (IPv4 and IPv6), including
/// TIME_WAIT, with the process that owns the socket, its addresses and the time spent in the old
/// state. With --snapshot, prints instead a netstat-like table of the connections of every network
/// namespace (or --netns) at every interval, each named by its service, container or pod. Needs
/// root, or CAP_BPF and CAP_PERFMON, and a kernel with BTF.
#[derive(Debug, Parser)]
#[command(name = "tcpstates", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Trace IPv4 sockets only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Trace IPv6 sockets only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only sockets with one of these local ports (comma-separated)
    #[arg(short = 'L', long = "localport", value_name = "PORTS", value_delimiter = ',', value_parser = parse_port)]
    pub localport: Vec<u16>,

    /// Only sockets with one of these remote ports (comma-separated)
    #[arg(short = 'D', long = "remoteport", value_name = "PORTS", value_delimiter = ',', value_parser = parse_port)]
    pub remoteport: Vec<u16>,

    /// Only sockets owned by this process ID
    #[arg(short = 'p', long, value_name = "PID", value_parser = parse_pid)]
    pub pid: Option<u32>,

    /// Only sockets owned by a process with this command name (exact; the kernel keeps 15 bytes)
    #[arg(short = 'c', long, value_name = "COMM")]
    pub comm: Option<String>,

    /// Only sockets in this cgroup (v2) or below it: a path, absolute or under the cgroup2 mount
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Only sockets of this service: a systemd unit (nginx.service), a container (at least 4
    /// hex digits of its id) or a Kubernetes pod (its UID); with all of its cgroup's children
    #[arg(long, value_name = "NAME", conflicts_with = "cgroup")]
    pub service: Option<String>,

    /// Only this network namespace: a name under /run/netns, a path such as /proc/PID/ns/net, or an inode number
    #[arg(long, value_name = "NS")]
    pub netns: Option<String>,

    /// Only transitions into or out of these states (comma-separated, e.g. SYN_SENT,CLOSE_WAIT)
    #[arg(long, value_name = "STATES", value_delimiter = ',')]
    pub state: Vec<TcpState>,

    /// Include a wall-clock time column (local time, HH:MM:SS.mmm)
    #[arg(short = 'T', long)]
    pub timestamp: bool,

    /// Wide output: socket address (SKADDR), IP version, full-width addresses and command
    #[arg(short = 'w', long)]
    pub wide: bool,

    /// Output format
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Instead of the stream, print what the connections are now, every INTERVAL (e.g. 1s, 5s, 1m)
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub snapshot: Option<Duration>,

    /// A live full-screen view, refreshed every INTERVAL [default: 1s]: per-state counts and
    /// their trend, who holds CLOSE_WAIT, TIME_WAIT by destination, the connections (sortable,
    /// filtered with /) and the latest transitions. Press ? for its keys, q to quit
    #[arg(
        long,
        value_name = "INTERVAL",
        num_args = 0..=1,
        require_equals = false,
        default_missing_value = "1s",
        value_parser = parse_duration,
        conflicts_with_all = ["snapshot", "lifetimes", "events", "alert", "count", "output", "quiet", "timestamp", "wide"]
    )]
    pub top: Option<Duration>,

    /// With --snapshot: only the counts and diagnoses, without the connection table
    #[arg(long, requires = "snapshot")]
    pub summary: bool,

    /// With --snapshot: RTT, retransmits and unacknowledged data of each connection (as ss -i)
    #[arg(short = 'i', long, requires = "snapshot")]
    pub info: bool,

    /// Instead of transitions, one record per connection when it ends: owner, addresses, start,
    /// duration, bytes, segments, retransmits, RTT, who closed first and how it ended
    #[arg(long, conflicts_with_all = ["snapshot", "state"])]
    pub lifetimes: bool,

    /// Also stream these events (comma-separated): retransmit, reset (sent and received), drop
    /// (TCP packets the kernel dropped, with its reason)
    #[arg(
        long,
        value_name = "KINDS",
        value_delimiter = ',',
        conflicts_with = "snapshot"
    )]
    pub events: Vec<EventKind>,

    /// Report each socket once when it stays in STATE longer than DURATION (e.g. CLOSE_WAIT=30s);
    /// repeatable. Exit status 3 if any alert fired
    #[arg(long, value_name = "STATE=DURATION", value_parser = parse_alert)]
    pub alert: Vec<(TcpState, Duration)>,

    /// Stop after N transitions (with --snapshot: after N snapshots)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,

    /// Stop after this long (e.g. 500ms, 5s, 2m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Serve Prometheus metrics on ADDR:PORT (e.g. 127.0.0.1:9977, or :9977 for every address)
    /// at /metrics, beside the stream or snapshots; covers every network namespace (or --netns)
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub metrics: Option<SocketAddr>,

    /// Extra metric labels (comma-separated): comm, lport, rport, cgroup, service, netns. Each
    /// multiplies the number of series; past 10000 per metric the rest are counted as "other"
    #[arg(
        long,
        value_name = "LABELS",
        value_delimiter = ',',
        requires = "metrics"
    )]
    pub metrics_labels: Vec<MetricLabel>,

    /// Serve --metrics as this Prometheus web configuration file says (the exporters'
    /// --web.config.file): TLS certificate and key, a client CA for mutual TLS, basic auth
    /// users with bcrypt hashes
    #[arg(long, value_name = "FILE", requires = "metrics")]
    pub web_config: Option<std::path::PathBuf>,

    /// Print no transitions, events or snapshots (with --metrics: run as an exporter only)
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Size of the kernel ring buffer (power of two, at least 4K; suffix K or M) [default: 1M
    /// per CPU, from 4M to 64M]
    #[arg(long, value_name = "SIZE", value_parser = parse_ring_size)]
    pub ring_size: Option<u32>,

    /// Scheduling niceness (-20 to 19) [default: -10 when started at the default 0, so that
    /// saturated CPUs do not starve the reader into losing events; a niceness the caller set,
    /// as with `nice -n 5 tcpstates`, is kept]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_nice)]
    pub nice: Option<i32>,

    /// Print libbpf's own messages to stderr
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// Events other than transitions that can be streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventKind {
    /// A segment retransmitted
    Retransmit,
    /// An RST sent or received
    Reset,
    /// A TCP packet dropped by the kernel, with its drop reason
    Drop,
}

/// Labels metrics can carry on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricLabel {
    /// The owner's command name
    Comm,
    /// The local port
    Lport,
    /// The remote port
    Rport,
    /// The socket's cgroup v2 id
    Cgroup,
    /// The socket's service: its systemd unit, container or Kubernetes pod
    Service,
    /// The socket's network namespace (inode)
    Netns,
}

/// How transitions are written to stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, as BCC's tcpstates prints them
    Text,
    /// One JSON object per line
    Json,
    /// Comma-separated values with a header row
    Csv,
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .map_err(|_| "a port is a number from 0 to 65535".to_string())
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err("a PID is a number from 1 to 4294967295".to_string()),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("the count is a whole number, at least 1".to_string()),
    }
}

fn parse_nice(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(n),
        _ => Err("the niceness is a whole number from -20 to 19".to_string()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    use humantime::DurationError;
    let duration = humantime::parse_duration(s).map_err(|e| match e {
        // humantime says only "expected number at 0" for, say, "abc" or "-5s".
        DurationError::InvalidCharacter(_) | DurationError::NumberExpected(_) => {
            "expected a number and a unit, e.g. 500ms, 5s or 1m".to_string()
        }
        other => other.to_string(),
    })?;
    if duration.is_zero() {
        return Err("the duration must be greater than zero".to_string());
    }
    Ok(duration)
}

fn parse_alert(s: &str) -> Result<(TcpState, Duration), String> {
    let (state, duration) = s
        .split_once('=')
        .ok_or_else(|| "expected STATE=DURATION, e.g. CLOSE_WAIT=30s".to_string())?;
    let state: TcpState = state.parse().map_err(|e: UnknownState| e.to_string())?;
    if matches!(
        state,
        TcpState::Close | TcpState::NewSynRecv | TcpState::BoundInactive
    ) {
        return Err(format!("no socket stays in {state}"));
    }
    Ok((state, parse_duration(duration)?))
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let wrong = || "expected ADDR:PORT, e.g. 127.0.0.1:9977, [::1]:9977 or :9977".to_string();
    if let Some(port) = s.strip_prefix(':') {
        // Every address: IPv6 and, on Linux unless bindv6only is set, IPv4 too.
        let port = port.parse::<u16>().map_err(|_| wrong())?;
        return Ok(SocketAddr::new(
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            port,
        ));
    }
    s.parse().map_err(|_| wrong())
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let (digits, unit) = match s.trim().to_ascii_uppercase() {
        t if t.ends_with('K') => (t[..t.len() - 1].to_string(), 1u64 << 10),
        t if t.ends_with('M') => (t[..t.len() - 1].to_string(), 1u64 << 20),
        t => (t, 1),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| "expected a size such as 4096, 64K or 4M".to_string())?;
    if !(4096..=(1 << 30)).contains(&bytes) || !bytes.is_power_of_two() {
        return Err("the ring buffer size must be a power of two from 4K to 1024M".to_string());
    }
    u32::try_from(bytes).map_err(|_| "the ring buffer size is too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tcpstates").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn port_lists_are_comma_separated() {
        let args = parse(&["-L", "80,443", "-D", "5432"]).unwrap();
        assert_eq!(args.localport, vec![80, 443]);
        assert_eq!(args.remoteport, vec![5432]);
    }

    #[test]
    fn out_of_range_port_is_rejected() {
        let err = parse(&["-L", "70000"]).unwrap_err().to_string();
        let first = err.lines().next().unwrap();
        assert_eq!(
            first,
            "error: invalid value '70000' for '--localport <PORTS>': a port is a number from 0 to 65535"
        );
    }

    #[test]
    fn states_parse_by_name() {
        let args = parse(&["--state", "close_wait,TIME_WAIT"]).unwrap();
        assert_eq!(args.state, vec![TcpState::CloseWait, TcpState::TimeWait]);
        assert!(parse(&["--state", "FOO"]).is_err());
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(
            parse(&["--duration", "500ms"]).unwrap().duration,
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse(&["--duration", "2m"]).unwrap().duration,
            Some(Duration::from_secs(120))
        );
        assert!(parse(&["--duration", "5x"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in ["abc", "-5s", "5 s s"] {
            let err = parse(&[&format!("--snapshot={bad}")])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("expected a number and a unit, e.g. 500ms, 5s or 1m"),
                "{bad}: {err}"
            );
        }
        let err = parse(&["--snapshot", "5"]).unwrap_err().to_string();
        assert!(err.contains("time unit needed"), "{err}");
    }

    #[test]
    fn nice_takes_negative_values_within_the_kernel_range() {
        assert_eq!(parse(&[]).unwrap().nice, None);
        assert_eq!(parse(&["--nice", "-20"]).unwrap().nice, Some(-20));
        assert_eq!(parse(&["--nice", "19"]).unwrap().nice, Some(19));
        assert!(parse(&["--nice", "-21"]).is_err());
        assert!(parse(&["--nice", "x"]).is_err());
    }

    #[test]
    fn ring_size_takes_suffixes_and_powers_of_two() {
        assert_eq!(parse(&[]).unwrap().ring_size, None);
        assert_eq!(
            parse(&["--ring-size", "4096"]).unwrap().ring_size,
            Some(4096)
        );
        assert_eq!(
            parse(&["--ring-size", "64k"]).unwrap().ring_size,
            Some(64 << 10)
        );
        assert!(parse(&["--ring-size", "5000"]).is_err());
        assert!(parse(&["--ring-size", "1K"]).is_err());
    }

    #[test]
    fn snapshot_takes_an_interval_and_summary_needs_it() {
        let args = parse(&["--snapshot", "5s", "--summary"]).unwrap();
        assert_eq!(args.snapshot, Some(Duration::from_secs(5)));
        assert!(args.summary);
        assert!(parse(&["--summary"]).is_err());
        assert!(parse(&["--snapshot", "soon"]).is_err());
    }

    #[test]
    fn alerts_take_a_state_and_a_duration() {
        let args = parse(&["--alert", "close_wait=30s", "--alert", "SYN_SENT=3s"]).unwrap();
        assert_eq!(
            args.alert,
            vec![
                (TcpState::CloseWait, Duration::from_secs(30)),
                (TcpState::SynSent, Duration::from_secs(3))
            ]
        );
        let err = |a: &str| {
            parse(&["--alert", a])
                .unwrap_err()
                .to_string()
                .lines()
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err("CLOSE_WAIT"),
            "error: invalid value 'CLOSE_WAIT' for '--alert <STATE=DURATION>': expected STATE=DURATION, e.g. CLOSE_WAIT=30s"
        );
        assert!(err("FOO=1s").ends_with("unknown TCP state 'FOO' (expected one of: ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV, BOUND_INACTIVE)"), "{}", err("FOO=1s"));
        assert_eq!(
            err("CLOSE=1s"),
            "error: invalid value 'CLOSE=1s' for '--alert <STATE=DURATION>': no socket stays in CLOSE"
        );
        assert!(err("CLOSE_WAIT=soon").contains("for '--alert <STATE=DURATION>'"));
    }

    #[test]
    fn lifetimes_and_events() {
        let args = parse(&["--lifetimes", "--events", "reset,drop"]).unwrap();
        assert!(args.lifetimes);
        assert_eq!(args.events, vec![EventKind::Reset, EventKind::Drop]);
        assert!(parse(&["--lifetimes", "--snapshot", "1s"]).is_err());
        assert!(parse(&["--lifetimes", "--state", "CLOSE_WAIT"]).is_err());
        assert!(parse(&["--events", "syn"]).is_err());
        assert!(parse(&["-i"]).is_err());
    }

    #[test]
    fn metrics_listen_addresses() {
        let at = |s: &str| parse(&["--metrics", s]).map(|a| a.metrics.unwrap().to_string());
        assert_eq!(at("127.0.0.1:9977").unwrap(), "127.0.0.1:9977");
        assert_eq!(at("[::1]:9977").unwrap(), "[::1]:9977");
        assert_eq!(at(":9977").unwrap(), "[::]:9977");
        let err = at("localhost").unwrap_err().to_string();
        assert_eq!(
            err.lines().next().unwrap(),
            "error: invalid value 'localhost' for '--metrics <ADDR:PORT>': expected ADDR:PORT, e.g. 127.0.0.1:9977, [::1]:9977 or :9977"
        );
        assert!(at("127.0.0.1:99999").is_err());
        assert!(
            parse(&["--metrics-labels", "comm"]).is_err(),
            "needs --metrics"
        );
        let args = parse(&["--metrics", ":1", "--metrics-labels", "comm,rport", "-q"]).unwrap();
        assert_eq!(
            args.metrics_labels,
            vec![MetricLabel::Comm, MetricLabel::Rport]
        );
        assert!(args.quiet);
    }

    #[test]
    fn families_are_exclusive() {
        assert!(parse(&["-4", "-6"]).is_err());
    }

    #[test]
    fn output_formats() {
        assert_eq!(parse(&["-o", "json"]).unwrap().output, OutputFormat::Json);
        assert!(parse(&["-o", "xml"]).is_err());
    }
}
