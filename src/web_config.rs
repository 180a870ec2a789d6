//! `--web-config FILE`: the Prometheus web configuration file that every official exporter reads
//! (`--web.config.file`): TLS with a certificate and key, an optional client CA for mutual TLS,
//! and basic auth users with bcrypt hashes. Read and checked once, before anything loads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

/// The file as written. Unknown keys are errors, as in the Prometheus exporter toolkit.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    /// The certificate and key inline, as PEM text.
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Go's TLS knobs: rustls keeps its own safe list of suites and curves.
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// HTTP/2: this server speaks HTTP/1.1, which every scraper speaks.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The response headers the file may set (as the exporter toolkit allows).
const SETTABLE_HEADERS: [&str; 5] = [
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
];

/// A checked web configuration.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// TLS, if configured: certificate, key, versions and client verification.
    pub tls: Option<Arc<ServerConfig>>,
    /// User names and their bcrypt hashes; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks `path`. Relative file names in it are relative to its directory.
    pub fn load(path: &Path) -> Result<WebConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--web-config {}: cannot read it", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).with_context(|| format!("--web-config {}", path.display()))
    }

    fn parse(text: &str, dir: &Path) -> Result<WebConfig> {
        // An empty file is a valid configuration: plain HTTP, no authentication.
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(text).map_err(|e| anyhow!("{}", one_line(&e.to_string())))?
        };
        let tls = file.tls_server_config.map(|t| tls(t, dir)).transpose()?;
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            check_hash(user, hash)?;
        }
        let mut headers = Vec::new();
        for (name, value) in file
            .http_server_config
            .and_then(|h| h.headers)
            .unwrap_or_default()
        {
            let Some(known) = SETTABLE_HEADERS
                .iter()
                .find(|h| h.eq_ignore_ascii_case(&name))
            else {
                bail!(
                    "http_server_config.headers: {name} cannot be set (only {})",
                    SETTABLE_HEADERS.join(", ")
                );
            };
            if value.contains(['\r', '\n']) {
                bail!("http_server_config.headers: the value of {name} spans lines");
            }
            headers.push((known.to_string(), value));
        }
        Ok(WebConfig {
            tls: tls.map(Arc::new),
            users,
            headers,
        })
    }
}

/// A bcrypt hash as the exporter toolkit takes them ($2a$, $2b$ or $2y$, cost 4 to 31).
fn check_hash(user: &str, hash: &str) -> Result<()> {
    if user.contains(':') {
        bail!("basic_auth_users: the user name {user:?} contains ':'");
    }
    match hash.parse::<bcrypt::HashParts>() {
        Ok(_) => Ok(()),
        Err(_) => bail!(
            "basic_auth_users: the password of {user} is not a bcrypt hash (make one with \
             `htpasswd -nBC 10 {user}`)"
        ),
    }
}

/// How clients must identify themselves, in the exporter toolkit's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    /// VerifyClientCertIfGiven: a certificate is optional, but checked when sent.
    IfGiven,
    /// RequireAndVerifyClientCert: mutual TLS.
    Required,
}

fn client_auth(name: Option<&str>) -> Result<ClientAuth> {
    match name.unwrap_or("NoClientCert") {
        "" | "NoClientCert" => Ok(ClientAuth::None),
        "VerifyClientCertIfGiven" => Ok(ClientAuth::IfGiven),
        "RequireAndVerifyClientCert" => Ok(ClientAuth::Required),
        unverified @ ("RequestClientCert" | "RequireAnyClientCert") => bail!(
            "tls_server_config.client_auth_type {unverified} (a client certificate not checked \
             against a CA) is not supported: use VerifyClientCertIfGiven or \
             RequireAndVerifyClientCert with client_ca_file"
        ),
        other => bail!(
            "tls_server_config.client_auth_type {other:?} is not one of NoClientCert, \
             VerifyClientCertIfGiven, RequireAndVerifyClientCert"
        ),
    }
}

/// The TLS versions rustls offers, oldest first.
const VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS12, &rustls::version::TLS13];

/// min_version or max_version as an index into VERSIONS.
fn version(name: Option<&str>, default: usize, key: &str) -> Result<usize> {
    match name {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(0),
        Some("TLS13") => Ok(1),
        Some(old @ ("TLS10" | "TLS11")) => {
            bail!("tls_server_config.{key} {old}: TLS before 1.2 is not supported")
        }
        Some(other) => bail!("tls_server_config.{key} {other:?} is not TLS12 or TLS13"),
    }
}

fn tls(file: TlsFile, dir: &Path) -> Result<ServerConfig> {
    for (set, key) in [
        (file.cipher_suites.is_some(), "cipher_suites"),
        (file.curve_preferences.is_some(), "curve_preferences"),
        (file.client_allowed_sans.is_some(), "client_allowed_sans"),
    ] {
        if set {
            bail!(
                "tls_server_config.{key} is not supported (rustls chooses from its own safe list)"
            );
        }
    }
    let _ = file.prefer_server_cipher_suites; // no effect with TLS 1.3's suites, as in Go
    let (certs, key) = identity(&file, dir)?;
    let min = version(file.min_version.as_deref(), 0, "min_version")?;
    let max = version(file.max_version.as_deref(), 1, "max_version")?;
    if min > max {
        bail!("tls_server_config: min_version is above max_version");
    }
    // ring, not aws-lc-rs (a large C build): no post-quantum key exchange, which rustls marks
    // by deprecating this; X25519 and the P curves stay.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&VERSIONS[min..=max])
        .map_err(|e| anyhow!("tls_server_config: {e}"))?;
    let auth = client_auth(file.client_auth_type.as_deref())?;
    let builder = match (&auth, &file.client_ca_file) {
        (ClientAuth::None, None) => builder.with_no_client_auth(),
        (ClientAuth::None, Some(_)) => bail!(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert: \
             say RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
        ),
        (_, None) => bail!(
            "tls_server_config: client_auth_type verifies clients but client_ca_file is missing"
        ),
        (auth, Some(path)) => {
            builder.with_client_cert_verifier(client_verifier(*auth, &dir.join(path), provider)?)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow!("tls_server_config: the certificate and key do not go together: {e}")
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The server's certificate chain and private key, from files (relative to the web config's
/// directory) or inline PEM.
fn identity(
    file: &TlsFile,
    dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let at = |p: &PathBuf| dir.join(p);
    let certs: Vec<CertificateDer<'static>> = match (&file.cert_file, &file.cert) {
        (Some(path), None) => CertificateDer::pem_file_iter(at(path))
            .and_then(|certs| certs.collect())
            .map_err(|e| anyhow!("tls_server_config.cert_file {}: {e}", at(path).display()))?,
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("tls_server_config.cert: {e}"))?,
        (Some(_), Some(_)) => bail!("tls_server_config: cert_file and cert are both set"),
        (None, None) => bail!("tls_server_config: cert_file is missing"),
    };
    if certs.is_empty() {
        bail!("tls_server_config: no certificate in cert_file");
    }
    let key = match (&file.key_file, &file.key) {
        (Some(path), None) => PrivateKeyDer::from_pem_file(at(path))
            .map_err(|e| anyhow!("tls_server_config.key_file {}: {e}", at(path).display()))?,
        (None, Some(pem)) => PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| anyhow!("tls_server_config.key: {e}"))?,
        (Some(_), Some(_)) => bail!("tls_server_config: key_file and key are both set"),
        (None, None) => bail!("tls_server_config: key_file is missing"),
    };
    Ok((certs, key))
}

/// Checks clients' certificates against the CAs in `ca_file`; with `IfGiven`, a client without
/// one is let through (basic auth may still ask for a password).
fn client_verifier(
    auth: ClientAuth,
    ca_file: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let bad = |e: &dyn std::fmt::Display| {
        anyhow!(
            "tls_server_config.client_ca_file {}: {e}",
            ca_file.display()
        )
    };
    let cas = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(&e))?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = if auth == ClientAuth::IfGiven {
        verifier.allow_unauthenticated()
    } else {
        verifier
    };
    verifier
        .build()
        .map_err(|e| anyhow!("tls_server_config.client_ca_file: {e}"))
}

/// YAML errors come on several lines; one line for stderr.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig> {
        WebConfig::parse(text, Path::new("/nonexistent"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn an_empty_file_serves_plain_http_without_authentication() {
        let config = parse("").unwrap();
        assert!(config.tls.is_none() && config.users.is_empty() && config.headers.is_empty());
    }

    #[test]
    fn users_need_bcrypt_hashes() {
        let alice = bcrypt::hash("secret", 4).unwrap();
        let config = parse(&format!("basic_auth_users:\n  alice: {alice}\n")).unwrap();
        assert_eq!(config.users.get("alice"), Some(&alice));
        assert_eq!(
            error("basic_auth_users:\n  bob: secret\n"),
            "basic_auth_users: the password of bob is not a bcrypt hash (make one with \
             `htpasswd -nBC 10 bob`)"
        );
    }

    #[test]
    fn unknown_keys_and_unsupported_settings_are_refused() {
        assert!(error("tls_config:\n  cert_file: x\n").contains("unknown field `tls_config`"));
        assert_eq!(
            error("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            "tls_server_config.cipher_suites is not supported (rustls chooses from its own safe \
             list)"
        );
        assert_eq!(
            error("http_server_config:\n  headers:\n    Server: x\n"),
            "http_server_config.headers: Server cannot be set (only Content-Security-Policy, \
             Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection)"
        );
    }

    #[test]
    fn tls_needs_readable_files_and_known_settings() {
        assert_eq!(
            error("tls_server_config:\n  key_file: k.pem\n"),
            "tls_server_config: cert_file is missing"
        );
        assert!(
            error("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n")
                .starts_with("tls_server_config.cert_file /nonexistent/c.pem: ")
        );
        assert_eq!(
            client_auth(Some("RequireAnyClientCert"))
                .unwrap_err()
                .to_string(),
            "tls_server_config.client_auth_type RequireAnyClientCert (a client certificate not \
             checked against a CA) is not supported: use VerifyClientCertIfGiven or \
             RequireAndVerifyClientCert with client_ca_file"
        );
        assert_eq!(client_auth(None).unwrap(), ClientAuth::None);
        assert!(version(Some("TLS11"), 0, "min_version").is_err());
    }
}
