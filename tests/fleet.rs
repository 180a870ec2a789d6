//! The exporter as a fleet runs it (root): a real Prometheus (Debian's package) scrapes
//! `--metrics` over TLS with basic auth and with mutual TLS, while a wrong password, no
//! password, plain HTTP and a client without a certificate are turned away (curl); a bad web
//! configuration is one line and exit status 2; the shipped rules pass `promtool test rules`;
//! every query of the shipped dashboard returns data while a scenario runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::prometheus::{free_port, Prometheus, Scrape};
use common::*;
use serde_json::Value;

/// A CA, a server certificate for localhost and 127.0.0.1, a client certificate from the CA
/// and one from nobody, made with openssl in a directory removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "tcpstates-pki-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(&pki.dir)
                .output()
                .expect("openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        sh(&format!(
            "openssl req -x509 {key} -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca"
        ));
        for (name, usage, san) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            sh(&format!(
                "openssl req {key} -keyout {name}.key -out {name}.csr -subj /CN={name}\n\
                 printf '{san}basicConstraints=CA:FALSE\\nextendedKeyUsage={usage}\\n' > {name}.ext\n\
                 openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                 -out {name}.crt -days 2 -extfile {name}.ext"
            ));
        }
        sh(&format!("openssl req -x509 {key} -keyout stranger.key -out stranger.crt -days 2 -subj /CN=stranger"));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A web configuration file next to the certificates.
    fn web_config(&self, text: &str) -> PathBuf {
        let path = self.path("web.yml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// curl's HTTP status for a request to the exporter ("000": no HTTP answer at all).
fn curl_status(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(args)
        .output()
        .expect("curl (Debian package curl)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exporter(port: u16, web_config: &Path) -> Tool {
    let tool = Tool::start(&[
        "--metrics",
        &format!("127.0.0.1:{port}"),
        "--web-config",
        web_config.to_str().unwrap(),
        "-q",
    ]);
    tool
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_nothing_else_gets_in() {
    let pki = Pki::new();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         basic_auth_users:\n  prometheus: {hash}\n"
    ));
    let port = free_port();
    let tool = exporter(port, &web);
    let prometheus = Prometheus::start_with(
        port,
        &Scrape {
            ca_file: Some(pki.path("ca.crt")),
            basic_auth: Some(("prometheus".into(), "s3cret".into())),
            ..Scrape::default()
        },
    );
    prometheus.assert_scraping();
    assert_eq!(prometheus.wait_for("tcpstates_build_info", 1.0), Some(1.0));

    let url = format!("https://localhost:{port}/metrics");
    let ca = pki.path("ca.crt");
    let ca = ca.to_str().unwrap();
    assert_eq!(
        curl_status(&["--cacert", ca, "-u", "prometheus:s3cret", &url]),
        "200"
    );
    assert_eq!(
        curl_status(&["--cacert", ca, "-u", "prometheus:wrong", &url]),
        "401"
    );
    assert_eq!(
        curl_status(&["--cacert", ca, "-u", "nobody:s3cret", &url]),
        "401"
    );
    assert_eq!(curl_status(&["--cacert", ca, &url]), "401");
    assert_eq!(
        curl_status(&[
            "-u",
            "prometheus:s3cret",
            &format!("http://127.0.0.1:{port}/metrics")
        ]),
        "000",
        "plain HTTP to the TLS port"
    );
    // The server's certificate is checked by the client: an untrusting client gets nothing.
    assert_eq!(curl_status(&["-u", "prometheus:s3cret", &url]), "000");

    let out = tool.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("metrics at https://127.0.0.1:{port}/metrics")),
        "{}",
        out.stderr
    );
}

#[test]
fn prometheus_scrapes_with_mutual_tls_and_clients_without_the_cas_certificate_fail() {
    let pki = Pki::new();
    let web = pki.web_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
         min_version: TLS13\n",
    );
    let port = free_port();
    let _tool = exporter(port, &web);
    let prometheus = Prometheus::start_with(
        port,
        &Scrape {
            ca_file: Some(pki.path("ca.crt")),
            client_cert: Some((pki.path("client.crt"), pki.path("client.key"))),
            ..Scrape::default()
        },
    );
    prometheus.assert_scraping();
    let url = format!("https://localhost:{port}/metrics");
    let file = |name: &str| pki.path(name).to_str().unwrap().to_string();
    let ca = file("ca.crt");
    assert_eq!(
        curl_status(&[
            "--cacert",
            &ca,
            "--cert",
            &file("client.crt"),
            "--key",
            &file("client.key"),
            &url
        ]),
        "200"
    );
    assert_eq!(
        curl_status(&["--cacert", &ca, &url]),
        "000",
        "no client certificate"
    );
    assert_eq!(
        curl_status(&[
            "--cacert",
            &ca,
            "--cert",
            &file("stranger.crt"),
            "--key",
            &file("stranger.key"),
            &url
        ]),
        "000",
        "a certificate the CA did not sign"
    );
    assert_eq!(
        curl_status(&[
            "--cacert",
            &ca,
            "--tls-max",
            "1.2",
            "--cert",
            &file("client.crt"),
            "--key",
            &file("client.key"),
            &url
        ]),
        "000",
        "TLS 1.2 below min_version"
    );
}

#[test]
fn a_bad_web_config_is_one_line_and_exit_status_2() {
    let pki_dir = std::env::temp_dir().join(format!("tcpstates-badweb-{}", std::process::id()));
    std::fs::create_dir_all(&pki_dir).unwrap();
    let run = |text: Option<&str>| {
        let path = pki_dir.join("web.yml");
        let _ = std::fs::remove_file(&path);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let out = Command::new(tool_path())
            .args(["--metrics", "127.0.0.1:0", "--web-config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            path,
        )
    };
    let (code, stderr, path) = run(Some("basic_auth_users:\n  bob: secret\n"));
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!(
            "tcpstates: --web-config {}: basic_auth_users: the password of bob is not a bcrypt \
             hash (make one with `htpasswd -nBC 10 bob`)\n",
            path.display()
        )
    );
    let (code, stderr, path) = run(Some(
        "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
    ));
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with(&format!(
            "tcpstates: --web-config {}: tls_server_config.cert_file {}: ",
            path.display(),
            pki_dir.join("none.crt").display()
        )) && stderr.lines().count() == 1,
        "{stderr}"
    );
    let (code, stderr, _) = run(Some("tls_server_config:\n  cert_file: a\n  bogus: 1\n"));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("unknown field `bogus`") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let (code, stderr, path) = run(None);
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with(&format!(
            "tcpstates: --web-config {}: cannot read it: ",
            path.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&pki_dir);
    // Without --metrics there is nothing to configure: a usage error.
    let out = Command::new(tool_path())
        .args(["--web-config", "x.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(file)
}

#[test]
fn the_shipped_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        vec!["check", "rules", "prometheus/tcpstates-rules.yml"],
        vec!["test", "rules", "prometheus/tcpstates-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(packaging(""))
            .output()
            .expect("promtool (Debian package prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every panel query of the dashboard, with Grafana's variables given test values.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(packaging("grafana/tcpstates-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$__rate_interval", "30s")
                .replace("$__range", "5m");
            queries.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    queries
}

#[test]
fn every_dashboard_query_returns_data_while_the_alerts_see_the_scenario() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 14, "{queries:?}");
    // Its range set before the tool starts: the tool rereads ranges every 30 s, longer than
    // this test, and could otherwise keep the default it read in between.
    let full = Netns::new();
    full.run_inside(|| std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40009"))
        .unwrap();
    let port = free_port();
    let tool = Tool::start(&["--metrics", &format!("127.0.0.1:{port}"), "-q"]);
    let prometheus = Prometheus::start_with(
        port,
        &Scrape {
            rule_files: vec![packaging("prometheus/tcpstates-rules.yml")],
            ..Scrape::default()
        },
    );
    prometheus.assert_scraping();

    // The scenario. A namespace of ten ephemeral ports, filled by connections to one
    // destination (their ports held in TIME_WAIT).
    let mut server = Peer::spawn(
        &full,
        &["server", "127.0.0.1", "8000", "--connections", "10"],
    );
    server.expect("listening");
    let mut churn = Peer::spawn(
        &full,
        &["client", "127.0.0.1", "8000", "--connections", "10"],
    );
    for _ in 0..10 {
        churn.expect("closed");
    }
    churn.finish();
    server.finish();
    // Another: a server that never closes what its clients closed (a leak, growing), and
    // connects refused.
    let ns = Netns::new();
    let mut leaky = Peer::spawn(
        &ns,
        &[
            "server",
            "127.0.0.1",
            "7000",
            "--connections",
            "60",
            "--hold",
        ],
    );
    leaky.expect("listening");
    let mut failed = 0;
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut leaked = 0;
    while Instant::now() < deadline {
        // Refused connects, tens a second (bash's /dev/tcp), and CLOSE_WAIT growing by 5 a
        // round.
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.name, "bash", "-c"])
            .arg("for i in $(seq 40); do (exec 3<>/dev/tcp/127.0.0.1/9) 2>/dev/null; done; true")
            .status()
            .unwrap();
        assert!(status.success());
        failed += 40;
        if leaked < 60 {
            let mut leak = Peer::spawn(
                &ns,
                &[
                    "client",
                    "127.0.0.1",
                    "7000",
                    "--connections",
                    "5",
                    "--orphan",
                ],
            );
            for _ in 0..5 {
                leak.expect("orphaned");
            }
            leak.finish();
            leaked += 5;
        }
        thread::sleep(Duration::from_millis(700));
    }
    assert!(failed >= 300, "{failed} connects refused");

    let mut empty = Vec::new();
    for (title, query) in &queries {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut result = Vec::new();
        while Instant::now() < deadline {
            result = prometheus.query(query).unwrap_or_default();
            if !result.is_empty() {
                break;
            }
            thread::sleep(Duration::from_millis(500));
        }
        if result.is_empty() {
            empty.push(format!("{title}: {query}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );

    // The alerts whose conditions the scenario meets are pending (their `for` is minutes;
    // the rules' unit tests show them firing); the others stay quiet.
    let pending = |alert: &str| {
        prometheus
            .query(&format!("ALERTS{{alertname=\"{alert}\"}}"))
            .is_some_and(|r| !r.is_empty())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let caught = [
        "TcpstatesEphemeralPortsRunningOut",
        "TcpstatesConnectFailures",
        "TcpstatesCloseWaitGrowing",
    ];
    while Instant::now() < deadline && !caught.iter().all(|a| pending(a)) {
        thread::sleep(Duration::from_millis(500));
    }
    for alert in caught {
        assert!(pending(alert), "{alert} is not pending");
    }
    for quiet in [
        "TcpstatesDown",
        "TcpstatesLostEvents",
        "TcpstatesCloseWaitOld",
    ] {
        assert!(!pending(quiet), "{quiet} is pending");
    }
    drop(prometheus);
    let out = tool.stop();
    assert!(out.status.success(), "{}", out.stderr);
}
