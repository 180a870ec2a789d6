//! tcpstates: trace TCP state transitions with eBPF. Thin entry point: args, config, run, exit code.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use tcpstates::cli::Args;
use tcpstates::config::{BadInput, Config, Mode};
use tcpstates::live::Stream;
use tcpstates::render::snapshot::Style;
use tcpstates::session::{self, Outcome};
use tcpstates::snapshots::Ticker;
use tcpstates::top::{Theme, Top};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => return usage_error(err),
    };
    match Config::from_args(args).and_then(|config| run(&config)) {
        Ok(outcome) if outcome.alerts > 0 => ExitCode::from(ALERTS_FIRED),
        Ok(_) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<BadInput>().is_some() => {
            eprintln!("tcpstates: {}", one_line(&format!("{err:#}")));
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("tcpstates: {}", one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// The exit status when an --alert fired (1 is an error, 2 a usage error).
const ALERTS_FIRED: u8 = 3;

/// One session, into the mode's sink.
fn run(config: &Config) -> anyhow::Result<Outcome> {
    match config.mode {
        Mode::Live => session::run(config, |clock| Stream::new(config, clock)),
        Mode::Snapshot {
            interval,
            summary,
            info,
        } => {
            let style = Style {
                summary,
                info,
                terminal: config.terminal,
                color: config.color,
            };
            session::run(config, |clock| Ticker::new(config, interval, style, clock))
        }
        Mode::Top { interval } => {
            let theme = Theme {
                color: config.color,
            };
            session::run(config, |clock| {
                Top::new(interval, theme, clock, config.verbose)
            })
        }
    }
}

/// Help and version go to stdout; a usage error is one line on stderr and exit status 2.
fn usage_error(err: clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("tcpstates: {}", usage_error_line(&err.to_string()));
            ExitCode::from(2)
        }
    }
}

/// clap's message in one line: the error, possible values and tips, without usage and help hints.
fn usage_error_line(rendered: &str) -> String {
    let mut line = String::new();
    for part in rendered.lines().map(str::trim) {
        if part.is_empty() || part.starts_with("Usage:") || part.starts_with("For more information")
        {
            continue;
        }
        if !line.is_empty() {
            line.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(part.strip_prefix("error: ").unwrap_or(part));
    }
    line
}

/// `tcpstates | head` ends with EPIPE: the reader is done, which is success.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_fit_on_one_line() {
        let rendered = "error: invalid value 'xml' for '--output <FORMAT>'\n  [possible values: text, json, csv]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "invalid value 'xml' for '--output <FORMAT>' [possible values: text, json, csv]"
        );
        let rendered = "error: unexpected argument '--cont' found\n\n  tip: a similar argument exists: '--count'\n\nUsage: tcpstates --count <N>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "unexpected argument '--cont' found; tip: a similar argument exists: '--count'"
        );
    }
}
