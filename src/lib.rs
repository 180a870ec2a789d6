//! tcpstates as a library: the modules of the binary, public so that the benchmarks can drive
//! them. The command-line program is src/main.rs.

pub mod alerts;
pub mod bpf;
pub mod cli;
pub mod clock;
pub mod config;
pub mod drop_reasons;
pub mod event;
pub mod exporter;
pub mod features;
#[cfg(test)]
mod generated;
pub mod holders;
pub mod http_server;
pub mod lifetimes;
pub mod live;
pub mod losses;
pub mod metrics;
pub mod namespaces;
pub mod plural;
pub mod ports;
pub mod preflight;
pub mod priority;
pub mod render;
pub mod report;
pub mod resolve;
pub mod sanitize;
pub mod seeds;
pub mod services;
pub mod session;
pub mod signals;
pub mod snapshots;
pub mod sockstat;
pub mod table;
pub mod tcp_state;
pub mod top;
pub mod web_config;

pub mod skel {
    #![allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        unsafe_op_in_unsafe_fn,
        warnings
    )]
    include!(concat!(env!("OUT_DIR"), "/tcpstates.skel.rs"));
}
