//! The /metrics endpoint: served from threads of its own (src/http_server.rs), it encodes the
//! registry at each scrape, in the Prometheus text format or, when the scraper asks for it,
//! OpenMetrics. It only reads metric handles, so a slow or stuck scraper never holds up the
//! event loop.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

use crate::bpf::{self, Tracer};
use crate::clock::Clock;
use crate::config::MetricLabels;
use crate::http_server::{Request, Response, Server};
use crate::metrics::Metrics;
use crate::namespaces::PortRanges;
use crate::table::ConnTable;
use crate::web_config::WebConfig;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Metrics served for the length of a run: the metrics the event loop updates, the server that
/// reads them, and the kernel's BPF run-time statistics kept on.
pub struct Endpoint {
    pub metrics: Metrics,
    /// When the gauges were last brought up to date.
    refreshed: Option<Instant>,
    /// Each namespace's ip_local_port_range.
    port_ranges: PortRanges,
    /// Why the BPF run-time statistics are off, for stderr.
    warning: Option<String>,
    _run_stats: Option<OwnedFd>,
    _server: Exporter,
}

/// How often gauges (connections by state, CLOSE_WAIT owners, BPF costs) are brought up to date.
const REFRESH: Duration = Duration::from_secs(1);
/// Destinations exported with their ephemeral ports in use, the most used first.
const MAX_PORT_SERIES: usize = 100;

impl Endpoint {
    pub fn start(listener: TcpListener, labels: MetricLabels, web: WebConfig) -> Result<Endpoint> {
        let metrics = Metrics::new(labels);
        let (run_stats, warning) = match bpf::enable_run_stats() {
            Ok(fd) => (Some(fd), None),
            Err(err) => (
                None,
                Some(format!(
                    "tcpstates: {err:#}; tcpstates_bpf_run_seconds stays 0"
                )),
            ),
        };
        let server = Exporter::start(listener, metrics.registry(), web)?;
        Ok(Endpoint {
            metrics,
            refreshed: None,
            port_ranges: PortRanges::default(),
            warning,
            _run_stats: run_stats,
            _server: server,
        })
    }
}

impl Endpoint {
    /// A line for stderr about what the endpoint could not do, taken once.
    pub fn take_warning(&mut self) -> Option<String> {
        self.warning.take()
    }

    /// Sets the gauges from `table` and the programs' costs, at most once per REFRESH; `prepare`
    /// brings the table up to date first (what events do not).
    pub fn refresh_if_due(
        &mut self,
        table: &mut ConnTable,
        tracer: &Tracer<'_>,
        prepare: impl FnOnce(&mut ConnTable),
    ) {
        if self.refreshed.is_some_and(|at| at.elapsed() < REFRESH) {
            return;
        }
        self.refreshed = Some(Instant::now());
        prepare(table);
        self.metrics.refresh(table, Clock::boot_now_ns());
        self.metrics.bpf_programs(&tracer.program_stats());
        let uses = self.port_ranges.pressure(table.conns(), MAX_PORT_SERIES);
        self.metrics.port_pressure(&uses, self.port_ranges.known());
    }
}

/// The running server; dropping it stops it.
pub struct Exporter {
    _server: Server,
}

impl Exporter {
    /// Listens on `addr` now, so that a bad address or a port in use fails before tracing starts.
    pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
        TcpListener::bind(addr).with_context(|| format!("--metrics {addr}: cannot listen"))
    }

    /// Serves `registry` on `listener`, as the web configuration says (TLS, users).
    pub fn start(
        listener: TcpListener,
        registry: Arc<Registry>,
        web: WebConfig,
    ) -> Result<Exporter> {
        let server = Server::start(listener, web, move |request| respond(request, &registry))?;
        Ok(Exporter { _server: server })
    }
}

/// Does the scraper prefer OpenMetrics (as Prometheus does) to the Prometheus text format?
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The exposition of `registry` and its content type.
pub fn exposition(registry: &Registry, openmetrics: bool) -> (String, &'static str) {
    let mut body = String::with_capacity(16 << 10);
    // Encoding into a String cannot fail.
    let _ = if openmetrics {
        text::encode(&mut body, registry)
    } else {
        prometheus_text::encode(&mut body, registry)
    };
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        prometheus_text::CONTENT_TYPE
    };
    (body, content_type)
}

fn respond(request: &Request, registry: &Registry) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET" | "HEAD", "/metrics") => {
            let (body, content_type) =
                exposition(registry, wants_openmetrics(request.accept.as_deref()));
            Response {
                status: 200,
                content_type,
                body,
            }
        }
        ("GET" | "HEAD", "/") => Response::text(
            200,
            "tcpstates: TCP connection states and transitions. Metrics at /metrics\n",
        ),
        (_, "/metrics" | "/") => Response::text(405, "method not allowed\n"),
        _ => Response::text(404, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn negotiates_the_format() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(None));
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("tcpstates_x", "X", c.clone());
        c.inc();
        let (om, om_type) = exposition(&registry, true);
        assert_eq!(
            om,
            "# HELP tcpstates_x X.\n# TYPE tcpstates_x counter\ntcpstates_x_total 1\n# EOF\n"
        );
        assert!(om_type.starts_with("application/openmetrics-text"));
        let (prom, prom_type) = exposition(&registry, false);
        assert_eq!(
            prom,
            "# HELP tcpstates_x_total X.\n# TYPE tcpstates_x_total counter\ntcpstates_x_total 1\n"
        );
        assert_eq!(prom_type, "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn a_port_in_use_fails_with_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Exporter::bind(addr).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("--metrics {addr}: cannot listen: Address already in use (os error 98)")
        );
    }
}
