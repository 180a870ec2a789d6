//! A small HTTP/1.1 server for the metrics endpoint: plain or TLS (rustls), with basic auth
//! checked against bcrypt hashes, as the web configuration says. Requests are parsed by
//! httparse; each connection gets a thread of its own (at most MAX_CONNECTIONS at once), so a
//! scraper that stalls holds up only itself.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;

use crate::web_config::WebConfig;

/// A request, as much of it as the handler needs.
pub struct Request {
    pub method: String,
    pub path: String,
    pub accept: Option<String>,
}

/// A response: status, content type and body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may wait between requests, or take to send one.
const IDLE: Duration = Duration::from_secs(60);
/// How long a response may take to be taken by the client.
const WRITE: Duration = Duration::from_secs(10);
/// The largest request head read (request line and headers).
const MAX_HEAD: usize = 16 << 10;
/// How often the accept loop looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// The running server; dropping it stops accepting (connections being served finish alone).
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What every connection thread reads.
struct Shared {
    web: WebConfig,
    handler: Box<Handler>,
    /// Users and passwords that matched their hash, by digest: bcrypt costs tens of ms a check,
    /// and a scraper sends the same credentials every time.
    verified: Mutex<HashSet<[u8; 32]>>,
    open: AtomicUsize,
}

impl Server {
    /// Serves on `listener` from a thread of its own.
    pub fn start(
        listener: TcpListener,
        web: WebConfig,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Result<Server> {
        let shared = Arc::new(Shared {
            web,
            handler: Box::new(handler),
            verified: Mutex::new(HashSet::new()),
            open: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&listener, &shared, &stopping))
            .context("starting the metrics thread")?;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, stop: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let timeout = PollTimeout::try_from(STOP_CHECK).unwrap_or(PollTimeout::MAX);
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if shared.open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            shared.open.fetch_sub(1, Ordering::AcqRel);
            continue; // dropped: closed
        }
        let serving = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                serve(stream, &serving);
                serving.open.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // No thread: the connection went with the closure, closed.
            shared.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One connection: TLS first if configured, then requests until it closes.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(WRITE));
    let _ = stream.set_nodelay(true);
    match &shared.web.tls {
        None => exchange(stream, shared),
        Some(config) => {
            let Ok(connection) = rustls::ServerConnection::new(Arc::clone(config)) else {
                return;
            };
            // A failed handshake (plain HTTP, a client without the required certificate)
            // surfaces as an error on the first read: the connection is closed.
            exchange(rustls::StreamOwned::new(connection, stream), shared);
        }
    }
}

fn exchange(mut io: impl Read + Write, shared: &Shared) {
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let head = loop {
            match parse_head(&buffer) {
                Head::Complete(head) => break head,
                Head::Bad => {
                    let _ = respond(
                        &mut io,
                        &Response::text(400, "bad request\n"),
                        false,
                        false,
                        shared,
                    );
                    return;
                }
                Head::Partial if buffer.len() > MAX_HEAD => {
                    let _ = respond(
                        &mut io,
                        &Response::text(431, "request head too large\n"),
                        false,
                        false,
                        shared,
                    );
                    return;
                }
                Head::Partial => {}
            }
            match io.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        buffer.drain(..head.len);
        let response = if head.has_body {
            Response::text(400, "request bodies are not taken here\n")
        } else if !authorized(shared, head.authorization.as_deref()) {
            Response::text(401, "unauthorized\n")
        } else {
            (shared.handler)(&head.request)
        };
        let keep_alive = head.keep_alive && !head.has_body;
        let head_only = head.request.method == "HEAD";
        if respond(&mut io, &response, head_only, keep_alive, shared).is_err() || !keep_alive {
            return;
        }
    }
}

struct ParsedHead {
    request: Request,
    authorization: Option<Vec<u8>>,
    keep_alive: bool,
    has_body: bool,
    /// Bytes of the head, to drop from the buffer.
    len: usize,
}

enum Head {
    Complete(ParsedHead),
    Partial,
    Bad,
}

fn parse_head(buffer: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Bad,
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let connection = header("Connection").map(|v| v.to_ascii_lowercase());
    let keep_alive = match (request.version, connection.as_deref()) {
        (_, Some(b"close")) => false,
        (Some(1), _) => true,
        (_, Some(b"keep-alive")) => true,
        _ => false,
    };
    let has_body = header("Transfer-Encoding").is_some()
        || header("Content-Length").is_some_and(|v| v.iter().any(|&b| b != b'0'));
    let path = request.path.unwrap_or("/");
    Head::Complete(ParsedHead {
        request: Request {
            method: request.method.unwrap_or("").to_string(),
            path: path.split('?').next().unwrap_or("").to_string(),
            accept: header("Accept").map(|v| String::from_utf8_lossy(v).into_owned()),
        },
        authorization: header("Authorization").map(<[u8]>::to_vec),
        keep_alive,
        has_body,
        len,
    })
}

/// Basic auth against the users' bcrypt hashes; everyone when there are no users.
fn authorized(shared: &Shared, authorization: Option<&[u8]>) -> bool {
    let users = &shared.web.users;
    if users.is_empty() {
        return true;
    }
    let Some((user, password)) = authorization.and_then(basic_credentials) else {
        return false;
    };
    let Some(hash) = users.get(&user) else {
        return false;
    };
    let digest = credentials_digest(&user, &password, hash);
    let mut verified = shared.verified.lock().unwrap_or_else(|e| e.into_inner());
    if verified.contains(&digest) {
        return true;
    }
    drop(verified);
    if !bcrypt::verify(&password, hash).unwrap_or(false) {
        return false;
    }
    verified = shared.verified.lock().unwrap_or_else(|e| e.into_inner());
    // Bounded: one entry per user and password that ever matched, few in practice.
    if verified.len() < 1024 {
        verified.insert(digest);
    }
    true
}

/// The user and password of an `Authorization: Basic ...` header.
fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let encoded = value.strip_prefix(b"Basic ")?.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn credentials_digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash] {
        context.update(part.as_bytes());
        context.update(&[0]);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn respond(
    io: &mut impl Write,
    response: &Response,
    head_only: bool,
    keep_alive: bool,
    shared: &Shared,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(response.body.len() + 256);
    write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    )?;
    if response.status == 401 {
        out.extend_from_slice(b"WWW-Authenticate: Basic realm=\"tcpstates\"\r\n");
    }
    for (name, value) in &shared.web.headers {
        write!(out, "{name}: {value}\r\n")?;
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(response.body.as_bytes());
    }
    io.write_all(&out)?;
    io.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ParsedHead {
        match parse_head(text.as_bytes()) {
            Head::Complete(head) => head,
            _ => panic!("not a complete head: {text:?}"),
        }
    }

    #[test]
    fn requests_are_parsed_with_what_the_handler_and_auth_need() {
        let h = head(
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text\r\n\
             Authorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n",
        );
        assert_eq!(
            (h.request.method.as_str(), h.request.path.as_str()),
            ("GET", "/metrics")
        );
        assert_eq!(
            h.request.accept.as_deref(),
            Some("application/openmetrics-text")
        );
        assert!(h.keep_alive && !h.has_body);
        assert_eq!(
            h.authorization.as_deref().and_then(basic_credentials),
            Some(("alice".to_string(), "secret".to_string()))
        );
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(head("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").has_body);
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost"),
            Head::Partial
        ));
        assert!(matches!(
            parse_head(b"\x16\x03\x01\x00\xa5\r\n\r\n"),
            Head::Bad
        ));
    }

    #[test]
    fn basic_auth_checks_the_bcrypt_hash_once_per_credentials() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let shared = Shared {
            web: WebConfig {
                users: [("alice".to_string(), hash)].into(),
                ..WebConfig::default()
            },
            handler: Box::new(|_| Response::text(200, "")),
            verified: Mutex::new(HashSet::new()),
            open: AtomicUsize::new(0),
        };
        let basic = |creds: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            )
        };
        assert!(!authorized(&shared, None));
        assert!(!authorized(&shared, Some(basic("alice:wrong").as_bytes())));
        assert!(!authorized(&shared, Some(basic("bob:secret").as_bytes())));
        assert!(shared.verified.lock().unwrap().is_empty());
        assert!(authorized(&shared, Some(basic("alice:secret").as_bytes())));
        assert_eq!(shared.verified.lock().unwrap().len(), 1);
        assert!(authorized(&shared, Some(basic("alice:secret").as_bytes())));
        assert!(!authorized(&shared, Some(b"Bearer x")));
    }
}
