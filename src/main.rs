//! tcpstates: trace TCP state transitions with eBPF. Thin entry point: args, config, run, exit code.

mod bpf;
mod cli;
mod clock;
mod config;
mod event;
mod live;
mod preflight;
mod render;
mod resolve;
mod sanitize;
mod signals;
mod tcp_state;

mod skel {
    #![allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        unsafe_op_in_unsafe_fn,
        warnings
    )]
    include!(concat!(env!("OUT_DIR"), "/tcpstates.skel.rs"));
}

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::Args;
use crate::config::Config;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => return usage_error(err),
    };
    match Config::from_args(args).and_then(|config| live::run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcpstates: {}", one_line(&format!("{err:#}")));
            ExitCode::FAILURE
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
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!(
                "tcpstates: {}",
                first.strip_prefix("error: ").unwrap_or(first)
            );
            ExitCode::from(2)
        }
    }
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
