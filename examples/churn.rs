//! Loopback connection churn for benchmarks: many short connections, each with exactly ten
//! state transitions (client: CLOSE->SYN_SENT->ESTABLISHED->FIN_WAIT1->FIN_WAIT2->TIME_WAIT;
//! server: LISTEN->SYN_RECV->ESTABLISHED->CLOSE_WAIT->LAST_ACK->CLOSE).
//!
//! ```text
//! churn [--rate CONN_PER_S | --max] [--seconds S] [--ipv6] [--sources K] [--threads T]
//! ```
//! Clients connect from K loopback source addresses (127.0.0.1.. or, with --ipv6, ::1 only) so
//! that TIME_WAIT does not exhaust the ports; each closes first, the server closes after EOF.
//! Prints `connections N seconds S rate R` when done.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

struct Options {
    rate: Option<f64>,
    seconds: f64,
    ipv6: bool,
    sources: u8,
    threads: usize,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        rate: Some(1000.0),
        seconds: 5.0,
        ipv6: false,
        sources: 16,
        threads: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--rate" => o.rate = Some(value()?.parse().map_err(|_| "bad rate")?),
            "--max" => o.rate = None,
            "--seconds" => o.seconds = value()?.parse().map_err(|_| "bad seconds")?,
            "--ipv6" => o.ipv6 = true,
            "--sources" => o.sources = value()?.parse().map_err(|_| "bad sources")?,
            "--threads" => o.threads = value()?.parse().map_err(|_| "bad threads")?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// A client socket bound to `source` (port chosen by the kernel), connected to `server`.
fn connect_from(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let family = if source.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, socket::sockopt::ReuseAddr, &true)?;
    // Choose the port at connect(), against the whole 4-tuple: a port chosen at bind() must be
    // free of every TIME_WAIT socket, and finding one gets slow as they pile up.
    socket::setsockopt(&fd, socket::sockopt::IpBindAddressNoPort, &true)?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(source, 0)),
    )?;
    socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(server))?;
    // SAFETY: a connected TCP socket we own, handed over to TcpStream.
    Ok(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) })
}

/// A listener with a deep accept queue: at full churn, an overflow drops SYNs and stalls
/// clients for a second-long retransmission, which would measure the queue, not the tracer.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, socket::sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, socket::Backlog::MAXCONN)?;
    // SAFETY: a listening TCP socket we own, handed over to TcpListener.
    Ok(unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) })
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("churn: {e}");
            return ExitCode::from(2);
        }
    };
    let any: IpAddr = if o.ipv6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let listener = match listen(SocketAddr::new(any, 0)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("churn: listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let server: SocketAddr = if o.ipv6 {
        (Ipv6Addr::LOCALHOST, port).into()
    } else {
        (Ipv4Addr::LOCALHOST, port).into()
    };
    let listener = Arc::new(listener);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    // Server sockets closed after their client's EOF: each one's connection has made its ten.
    let closed = Arc::new(AtomicU64::new(0));

    // Servers: accept, read to EOF (the client closes first), close.
    for _ in 0..o.threads {
        let listener = Arc::clone(&listener);
        let closed = Arc::clone(&closed);
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            while let Ok((mut s, _)) = listener.accept() {
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                drop(s);
                closed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let per_thread_interval = o
        .rate
        .map(|r| Duration::from_secs_f64(o.threads as f64 / r));
    let clients: Vec<_> = (0..o.threads)
        .map(|t| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            let sources = o.sources.max(1);
            let ipv6 = o.ipv6;
            std::thread::spawn(move || {
                let mut next = Instant::now();
                let mut n = t;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let source: IpAddr = if ipv6 {
                        Ipv6Addr::LOCALHOST.into()
                    } else {
                        Ipv4Addr::new(127, 0, 0, 1 + (n % usize::from(sources)) as u8).into()
                    };
                    n += 1;
                    match connect_from(source, server) {
                        Ok(stream) => {
                            drop(stream);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("churn: connect: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    if let Some(interval) = per_thread_interval {
                        next += interval;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    // Let the servers accept the last connections, see their EOFs and close, so that every
    // counted connection has made all its transitions (the listener closing on exit would reset
    // the ones still queued). Bounded, in case a server thread is stuck.
    let n = done.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while closed.load(Ordering::Relaxed) < n && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The last ACK, which takes each server socket from LAST_ACK to CLOSE, follows its close.
    std::thread::sleep(Duration::from_millis(20));
    println!(
        "connections {n} seconds {elapsed:.3} rate {:.0}",
        n as f64 / elapsed
    );
    ExitCode::SUCCESS
}
