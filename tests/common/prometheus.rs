//! A real Prometheus server (Debian's `prometheus` package) of a test's own, on loopback, that
//! scrapes tcpstates every second, plainly or over TLS with basic auth or a client certificate,
//! and answers queries through its HTTP API.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.0 GET on loopback: the body, or None if the server did not answer 200.
pub fn get(port: u16, path_and_query: &str, accept: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// `query` percent-encoded for a URL.
pub fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How Prometheus reaches tcpstates.
#[derive(Default)]
pub struct Scrape {
    /// https, trusting this CA.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, String)>,
    /// Rule files to load.
    pub rule_files: Vec<PathBuf>,
}

/// A Prometheus server of the test's own on loopback, with its data in a temporary directory.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Scrapes 127.0.0.1:`target_port` plainly, every second.
    pub fn start(target_port: u16) -> Prometheus {
        Self::start_with(target_port, &Scrape::default())
    }

    pub fn start_with(target_port: u16, scrape: &Scrape) -> Prometheus {
        assert!(
            Path::new("/usr/bin/prometheus").exists(),
            "Debian's prometheus package is needed: bash .ci/install-deps"
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tcpstates-prometheus-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text(target_port, scrape)).unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        Prometheus { child, port, dir }
    }

    /// The result of an instant query (its `data.result`), if Prometheus answered.
    pub fn query(&self, query: &str) -> Option<Vec<Value>> {
        let body = get(
            self.port,
            &format!("/api/v1/query?query={}", encode(query)),
            None,
        )?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"].as_array().cloned()
    }

    /// The value of an instant query's single result, if it has one.
    pub fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query)?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` gives `want`; returns what it gave last.
    pub fn wait_for(&self, query: &str, want: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.value(query);
            if last == Some(want) {
                break;
            }
            thread::sleep(Duration::from_millis(250));
        }
        last
    }

    /// The last scrape's error for the tcpstates target, as Prometheus reports it.
    /// Waits until Prometheus scrapes the tool (up == 1); fails with the scrape's error.
    pub fn assert_scraping(&self) {
        assert_eq!(
            self.wait_for("up{job=\"tcpstates\"}", 1.0),
            Some(1.0),
            "Prometheus does not scrape tcpstates; scrape error: {:?}",
            self.scrape_error()
        );
    }

    pub fn scrape_error(&self) -> Option<String> {
        let body = get(self.port, "/api/v1/targets", None)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let target = v["data"]["activeTargets"].as_array()?.first()?.clone();
        target["lastError"].as_str().map(str::to_string)
    }
}

fn config_text(target_port: u16, scrape: &Scrape) -> String {
    let mut text = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n");
    if !scrape.rule_files.is_empty() {
        text.push_str("  evaluation_interval: 1s\nrule_files:\n");
        for file in &scrape.rule_files {
            text.push_str(&format!("  - {}\n", file.display()));
        }
    }
    text.push_str("scrape_configs:\n  - job_name: tcpstates\n");
    if let Some(ca) = &scrape.ca_file {
        text.push_str(&format!(
            "    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n",
            ca.display()
        ));
        if let Some((cert, key)) = &scrape.client_cert {
            text.push_str(&format!(
                "      cert_file: {}\n      key_file: {}\n",
                cert.display(),
                key.display()
            ));
        }
    }
    if let Some((user, password)) = &scrape.basic_auth {
        text.push_str(&format!(
            "    basic_auth:\n      username: {user}\n      password: {password}\n"
        ));
    }
    text.push_str(&format!(
        "    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    ));
    text
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
