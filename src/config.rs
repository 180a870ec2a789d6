//! Validated configuration: the only place where raw command-line options are read.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::{Args, EventKind, MetricLabel, OutputFormat};
use crate::resolve;
use crate::services::Services;
use crate::tcp_state::TcpState;
use crate::web_config::WebConfig;

/// The kernel's command names are at most 15 bytes (TASK_COMM_LEN - 1).
pub const COMM_LEN: usize = 15;

/// Address family of the sockets to trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The kernel's AF_* number.
    pub fn af(self) -> u16 {
        match self {
            Family::Ipv4 => libc::AF_INET as u16,
            Family::Ipv6 => libc::AF_INET6 as u16,
        }
    }
}

/// What to trace; every filter is applied in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub family: Option<Family>,
    pub local_ports: Vec<u16>,
    pub remote_ports: Vec<u16>,
    pub pid: Option<u32>,
    /// The command name as the kernel stores it: at most 15 bytes.
    pub comm: Option<Vec<u8>>,
    pub cgroup: Option<u64>,
    pub netns: Option<u32>,
    /// Bit `1 << state` for each state of interest; 0 = all.
    pub state_mask: u32,
}

/// What the run prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every transition as it happens.
    Live,
    /// The connections of one namespace every `interval`.
    Snapshot {
        interval: Duration,
        summary: bool,
        /// Per-connection RTT, retransmit and in-flight columns.
        info: bool,
    },
    /// A full-screen view for a person, refreshed every `interval`.
    Top { interval: Duration },
}

/// Events streamed besides transitions (--events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub retransmit: bool,
    pub reset: bool,
    pub drop: bool,
}

impl Events {
    pub fn any(self) -> bool {
        self.retransmit || self.reset || self.drop
    }
}

/// Labels a user may opt in to (--metrics-labels); each multiplies the number of series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricLabels {
    pub comm: bool,
    pub lport: bool,
    pub rport: bool,
    pub cgroup: bool,
    /// The unit, container or pod (as text shows it).
    pub service: bool,
    /// The network namespace's inode.
    pub netns: bool,
}

/// Report a socket that stays in `state` longer than `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertRule {
    pub state: TcpState,
    pub after: Duration,
}

/// Everything the run needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub filters: Filters,
    /// A file of the --netns namespace, when it was given by name or path.
    pub netns_path: Option<PathBuf>,
    pub output: OutputFormat,
    pub timestamp: bool,
    pub wide: bool,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub ring_size: u32,
    /// The niceness asked for (--nice); None: the default boost (see priority).
    pub nice: Option<i32>,
    pub verbose: bool,
    /// Connection records instead of transitions.
    pub lifetimes: bool,
    pub events: Events,
    pub alerts: Vec<AlertRule>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// How --metrics is served: TLS, users (--web-config).
    pub web: WebConfig,
    pub metric_labels: MetricLabels,
    /// Nothing on stdout.
    pub quiet: bool,
    /// stdout is a terminal: snapshot tables get borders.
    pub terminal: bool,
    /// Colour on stdout: a terminal, and NO_COLOR unset or empty.
    pub color: bool,
}

impl Config {
    /// Validates the options and resolves names (netns, cgroup) into kernel ids.
    pub fn from_args(args: Args) -> Result<Config> {
        let (filters, netns_path) = filters(&args)?;
        let mode = match args.snapshot {
            Some(interval) => Mode::Snapshot {
                interval,
                summary: args.summary,
                info: args.info,
            },
            None => match args.top {
                Some(interval) => Mode::Top { interval },
                None => Mode::Live,
            },
        };
        let terminal = std::io::stdout().is_terminal();
        if args.top.is_some() && !terminal {
            return Err(BadInput(
                "--top needs a terminal on stdout; for a pipe or a file, use --snapshot INTERVAL"
                    .to_string(),
            )
            .into());
        }
        if args.lifetimes
            && args.output == OutputFormat::Csv
            && (!args.events.is_empty() || !args.alert.is_empty())
        {
            bail!("--lifetimes -o csv writes connection rows only; use -o json or text with --events or --alert");
        }
        Ok(Config {
            mode,
            netns_path,
            filters,
            output: args.output,
            timestamp: args.timestamp,
            wide: args.wide,
            count: args.count,
            duration: args.duration,
            ring_size: args
                .ring_size
                .unwrap_or_else(|| default_ring_size(online_cpus())),
            nice: args.nice,
            verbose: args.verbose,
            lifetimes: args.lifetimes,
            events: Events {
                retransmit: args.events.contains(&EventKind::Retransmit),
                reset: args.events.contains(&EventKind::Reset),
                drop: args.events.contains(&EventKind::Drop),
            },
            alerts: alert_rules(args.alert),
            metrics: args.metrics,
            web: match &args.web_config {
                Some(path) => WebConfig::load(path).map_err(|e| BadInput(format!("{e:#}")))?,
                None => WebConfig::default(),
            },
            metric_labels: MetricLabels {
                comm: args.metrics_labels.contains(&MetricLabel::Comm),
                lport: args.metrics_labels.contains(&MetricLabel::Lport),
                rport: args.metrics_labels.contains(&MetricLabel::Rport),
                cgroup: args.metrics_labels.contains(&MetricLabel::Cgroup),
                service: args.metrics_labels.contains(&MetricLabel::Service),
                netns: args.metrics_labels.contains(&MetricLabel::Netns),
            },
            quiet: args.quiet,
            terminal,
            color: terminal
                && !no_color(std::env::var_os("NO_COLOR"))
                && !monochrome(std::env::var_os("TERM")),
        })
    }
}

/// The filters, resolved (names to cgroup ids, namespace paths to inodes); and the path of the
/// one namespace to watch, when one was named by path.
fn filters(args: &Args) -> Result<(Filters, Option<PathBuf>)> {
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => Some(Family::Ipv4),
        (_, true) => Some(Family::Ipv6),
        _ => None,
    };
    let comm = args.comm.as_deref().map(comm_filter).transpose()?;
    let cgroup = match (&args.cgroup, &args.service) {
        (Some(path), _) => Some(resolve::cgroup_id(path)?),
        (None, Some(name)) => Some(
            Services::of_host()
                .resolve(name)
                .map_err(anyhow::Error::msg)?
                .0,
        ),
        (None, None) => None,
    };
    let netns = args.netns.as_deref().map(resolve::netns).transpose()?;
    let netns_path = netns.as_ref().and_then(|(_, path)| path.clone());
    let filters = Filters {
        family,
        local_ports: dedup(args.localport.clone()),
        remote_ports: dedup(args.remoteport.clone()),
        pid: args.pid,
        comm,
        cgroup,
        netns: netns.map(|(inode, _)| inode),
        state_mask: args.state.iter().fold(0, |mask, s| mask | s.mask()),
    };
    Ok((filters, netns_path))
}

/// NO_COLOR (no-color.org): set and not empty turns colour off.
impl Config {
    /// Where --metrics serves, as a URL (https with a TLS web config).
    pub fn metrics_url(&self) -> Option<String> {
        let scheme = if self.web.tls.is_some() {
            "https"
        } else {
            "http"
        };
        self.metrics
            .map(|addr| format!("{scheme}://{addr}/metrics"))
    }
}

/// Input to fix that an option names (a file it cannot use): exit status 2, as a usage error.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// The ring buffer when not given: every CPU can fill it at once while the one reader is away,
/// so 1 MiB per online CPU (about 9,000 records each, some 20 ms of the fastest loopback churn
/// one CPU makes), within 4 to 64 MiB.
fn default_ring_size(cpus: usize) -> u32 {
    let bytes = (cpus.max(1) as u64) << 20;
    bytes.next_power_of_two().clamp(4 << 20, 64 << 20) as u32
}

fn online_cpus() -> usize {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 1,
    }
}

fn no_color(value: Option<std::ffi::OsString>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// A terminal without colours, as its TERM names it (dumb, or a terminfo "-m"/"-mono" entry).
fn monochrome(term: Option<std::ffi::OsString>) -> bool {
    let term = term
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    term == "dumb" || term.ends_with("-m") || term.ends_with("-mono")
}

/// One rule per state: the last one given wins, as with repeated options elsewhere.
fn alert_rules(raw: Vec<(TcpState, Duration)>) -> Vec<AlertRule> {
    let mut rules: Vec<AlertRule> = Vec::new();
    for (state, after) in raw {
        rules.retain(|r| r.state != state);
        rules.push(AlertRule { state, after });
    }
    rules
}

/// The kernel truncates command names to 15 bytes, so a longer name matches its first 15.
fn comm_filter(comm: &str) -> Result<Vec<u8>> {
    if comm.is_empty() {
        bail!("--comm: the command name is empty");
    }
    let bytes = comm.as_bytes();
    Ok(bytes[..bytes.len().min(COMM_LEN)].to_vec())
}

fn dedup(mut ports: Vec<u16>) -> Vec<u16> {
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_state::TcpState;

    /// The states a mask selects, in kernel order.
    fn states_in(mask: u32) -> Vec<TcpState> {
        TcpState::ALL
            .into_iter()
            .filter(|s| mask & s.mask() != 0)
            .collect()
    }
    use clap::Parser;

    fn config(args: &[&str]) -> Result<Config> {
        Config::from_args(Args::parse_from(
            std::iter::once("tcpstates").chain(args.iter().copied()),
        ))
    }

    #[test]
    fn defaults_trace_everything() {
        let c = config(&[]).unwrap();
        assert_eq!(c.filters, Filters::default());
        assert_eq!(c.output, OutputFormat::Text);
        assert_eq!(c.ring_size, default_ring_size(online_cpus()));
    }

    #[test]
    fn the_default_ring_grows_with_the_cpus_that_fill_it() {
        assert_eq!(default_ring_size(1), 4 << 20);
        assert_eq!(default_ring_size(2), 4 << 20);
        assert_eq!(default_ring_size(6), 8 << 20);
        assert_eq!(default_ring_size(16), 16 << 20);
        assert_eq!(default_ring_size(512), 64 << 20);
    }

    #[test]
    fn filters_are_collected() {
        let c = config(&[
            "-6",
            "-L",
            "443,80,443",
            "-p",
            "42",
            "--state",
            "LISTEN,CLOSE",
        ])
        .unwrap();
        assert_eq!(c.filters.family, Some(Family::Ipv6));
        assert_eq!(c.filters.local_ports, vec![80, 443]);
        assert_eq!(c.filters.pid, Some(42));
        assert_eq!(
            states_in(c.filters.state_mask),
            vec![TcpState::Close, TcpState::Listen]
        );
    }

    #[test]
    fn no_color_needs_a_value() {
        assert!(!no_color(None));
        assert!(!no_color(Some("".into())));
        assert!(no_color(Some("1".into())));
    }

    #[test]
    fn monochrome_terminals_get_no_colour() {
        assert!(monochrome(Some("dumb".into())));
        assert!(monochrome(Some("vt100-mono".into())));
        assert!(monochrome(Some("xterm-m".into())));
        assert!(!monochrome(Some("xterm-256color".into())));
        assert!(!monochrome(Some("tmux-256color".into())));
        assert!(!monochrome(None));
    }

    #[test]
    fn long_command_names_are_truncated_like_the_kernel() {
        let c = config(&["-c", "systemd-resolved"]).unwrap();
        assert_eq!(c.filters.comm.as_deref(), Some(&b"systemd-resolve"[..]));
        assert_eq!(
            config(&["-c", ""]).unwrap_err().to_string(),
            "--comm: the command name is empty"
        );
    }
}
