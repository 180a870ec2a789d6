//! A scripted TCP client or server whose transitions the integration tests know in advance.
//!
//! ```text
//! tcp_peer server ADDR PORT [--connections N] [--hold]
//!     listen, print "listening PORT"; for each connection: accept, read to EOF (or an RST:
//!     print "reset N"), close (with --hold: never close the accepted sockets, leaving them in CLOSE_WAIT, until
//!     stdin closes), print "closed N"; then close the listener and exit.
//!     --reuseport: listen with SO_REUSEPORT (several servers share the port) and print
//!     "from PEERPORT" for each connection accepted.
//! tcp_peer client ADDR PORT [--bind-port P] [--connections N] [--pause-ms MS] [--idle | --hold]
//!     N times: connect (from port P if given, with SO_REUSEADDR), send a line, close first
//!     (so this side ends in TIME_WAIT), wait for the peer's FIN; print "closed LOCALPORT".
//!     --idle: stay ESTABLISHED instead; print "open LOCALPORT", close when stdin closes.
//!     --hold: shut down writing and keep the socket (FIN_WAIT2 once the peer acknowledges);
//!     print "holding LOCALPORT", close when stdin closes.
//!     --send BYTES [--chunk BYTES --chunk-pause-ms MS]: send this many bytes instead of the line,
//!     in writes of --chunk bytes (TCP_NODELAY) with pauses between them.
//!     --reset: after sending, close with SO_LINGER 0 (an RST); print "reset LOCALPORT".
//!     --orphan: after sending, close at once without waiting for the peer (the kernel finishes
//!     the close for an orphaned socket); print "orphaned LOCALPORT".
//!     --syn-retries N: TCP_SYNCNT, so that an unanswered connect times out sooner.
//!     A failed connect prints "failed ERRNO" (e.g. "failed ECONNREFUSED") and exits with 1.
//! tcp_peer pairs ADDR N
//!     open N connections to a listener of its own (2N sockets, all ESTABLISHED), print
//!     "ready N", close them all when stdin closes. For benchmarks: keep N under half the
//!     process's open-file limit.
//! ```

use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

struct Options {
    addr: IpAddr,
    port: u16,
    connections: usize,
    bind_port: Option<u16>,
    hold: bool,
    idle: bool,
    pause: Duration,
    send: Option<usize>,
    chunk: Option<usize>,
    chunk_pause: Duration,
    reset: bool,
    orphan: bool,
    syn_retries: Option<i32>,
    reuseport: bool,
}

fn parse(args: &[String]) -> Result<(String, Options), String> {
    let [role, addr, port, rest @ ..] = args else {
        return Err("usage: tcp_peer server|client ADDR PORT [options]".into());
    };
    let mut options = Options {
        addr: addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        port: port.parse().map_err(|e| format!("{port}: {e}"))?,
        connections: 1,
        bind_port: None,
        hold: false,
        idle: false,
        pause: Duration::ZERO,
        send: None,
        chunk: None,
        chunk_pause: Duration::ZERO,
        reset: false,
        orphan: false,
        syn_retries: None,
        reuseport: false,
    };
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--connections" => options.connections = value()?.parse().map_err(|_| "bad count")?,
            "--bind-port" => options.bind_port = Some(value()?.parse().map_err(|_| "bad port")?),
            "--pause-ms" => {
                options.pause = Duration::from_millis(value()?.parse().map_err(|_| "bad ms")?)
            }
            "--send" => options.send = Some(value()?.parse().map_err(|_| "bad size")?),
            "--chunk" => options.chunk = Some(value()?.parse().map_err(|_| "bad size")?),
            "--chunk-pause-ms" => {
                options.chunk_pause = Duration::from_millis(value()?.parse().map_err(|_| "bad ms")?)
            }
            "--syn-retries" => {
                options.syn_retries = Some(value()?.parse().map_err(|_| "bad count")?)
            }
            "--reset" => options.reset = true,
            "--orphan" => options.orphan = true,
            "--hold" => options.hold = true,
            "--idle" => options.idle = true,
            "--reuseport" => options.reuseport = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok((role.clone(), options))
}

fn server(o: &Options) -> io::Result<()> {
    let listener = if o.reuseport {
        socket2_free::reuseport_listener(SocketAddr::new(o.addr, o.port))?
    } else {
        TcpListener::bind(SocketAddr::new(o.addr, o.port))?
    };
    println!("listening {}", listener.local_addr()?.port());
    io::stdout().flush()?;
    let mut held = Vec::new();
    for n in 1..=o.connections {
        let (mut stream, peer) = listener.accept()?;
        if o.reuseport {
            println!("from {}", peer.port());
            io::stdout().flush()?;
        }
        let mut sink = Vec::new();
        if let Err(err) = stream.read_to_end(&mut sink) {
            if err.kind() != io::ErrorKind::ConnectionReset {
                return Err(err);
            }
            println!("reset {n}");
            io::stdout().flush()?;
            continue;
        }
        if o.hold {
            held.push(stream);
            println!("holding {n}");
        } else {
            drop(stream);
            println!("closed {n}");
        }
        io::stdout().flush()?;
    }
    drop(listener);
    if o.hold {
        // Keep the CLOSE_WAIT sockets until the test closes our stdin.
        for _ in io::stdin().lock().lines() {}
    }
    Ok(())
}

fn pairs(o: &Options) -> io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(o.addr, 0))?;
    let target = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * usize::from(o.port));
    for _ in 0..o.port {
        held.push(std::net::TcpStream::connect(target)?);
        held.push(listener.accept()?.0);
    }
    println!("ready {}", o.port);
    io::stdout().flush()?;
    for _ in io::stdin().lock().lines() {}
    Ok(())
}

fn client(o: &Options) -> io::Result<()> {
    for _ in 0..o.connections {
        let socket = match o.addr {
            IpAddr::V4(_) => socket2_free::tcp_socket(libc::AF_INET)?,
            IpAddr::V6(_) => socket2_free::tcp_socket(libc::AF_INET6)?,
        };
        setsockopt(&socket.as_fd(), sockopt::ReuseAddr, &true).map_err(io::Error::from)?;
        if let Some(port) = o.bind_port {
            let local = match o.addr {
                IpAddr::V4(_) => SocketAddr::new(IpAddr::from([0u8; 4]), port),
                IpAddr::V6(_) => SocketAddr::new(IpAddr::from([0u16; 8]), port),
            };
            socket2_free::bind(&socket, local)?;
        }
        if let Some(retries) = o.syn_retries {
            socket2_free::set_syn_retries(&socket, retries)?;
        }
        let mut stream = match socket2_free::connect(socket, SocketAddr::new(o.addr, o.port)) {
            Ok(stream) => stream,
            Err(err) => {
                let errno = nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(0));
                println!("failed {errno:?}");
                io::stdout().flush()?;
                return Err(err);
            }
        };
        match o.send {
            None => stream.write_all(b"hello\n")?,
            Some(total) => {
                stream.set_nodelay(true)?;
                let chunk = o.chunk.unwrap_or(total).max(1);
                let data = vec![b'x'; total];
                for (i, part) in data.chunks(chunk).enumerate() {
                    if i > 0 {
                        std::thread::sleep(o.chunk_pause);
                    }
                    stream.write_all(part)?;
                }
            }
        }
        let local_port = stream.local_addr()?.port();
        if o.reset {
            setsockopt(
                &stream.as_fd(),
                sockopt::Linger,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )
            .map_err(io::Error::from)?;
            drop(stream);
            println!("reset {local_port}");
            io::stdout().flush()?;
            std::thread::sleep(o.pause);
            continue;
        }
        if o.orphan {
            drop(stream);
            println!("orphaned {local_port}");
            io::stdout().flush()?;
            std::thread::sleep(o.pause);
            continue;
        }
        if o.idle || o.hold {
            if o.hold {
                stream.shutdown(std::net::Shutdown::Write)?;
            }
            println!("{} {local_port}", if o.hold { "holding" } else { "open" });
            io::stdout().flush()?;
            for _ in io::stdin().lock().lines() {}
            continue;
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        // Wait for the server's FIN so both sides finish before we report.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest)?;
        drop(stream);
        println!("closed {local_port}");
        io::stdout().flush()?;
        std::thread::sleep(o.pause);
    }
    Ok(())
}

/// Socket creation and binding before connect, which std::net does not offer.
mod socket2_free {
    use std::io;
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::{FromRawFd, OwnedFd};

    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

    pub fn tcp_socket(family: i32) -> io::Result<OwnedFd> {
        let family = if family == libc::AF_INET {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
            .map_err(io::Error::from)
    }

    pub fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(io::Error::from)
    }

    /// A listener on `addr` with SO_REUSEPORT, so that other processes can listen there too.
    pub fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        use std::os::fd::IntoRawFd;
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = tcp_socket(family)?;
        socket::setsockopt(&fd, socket::sockopt::ReusePort, &true).map_err(io::Error::from)?;
        bind(&fd, addr)?;
        socket::listen(&fd, socket::Backlog::new(128).map_err(io::Error::from)?)
            .map_err(io::Error::from)?;
        // SAFETY: the descriptor is a listening TCP socket that we own and hand over.
        Ok(unsafe { std::net::TcpListener::from_raw_fd(fd.into_raw_fd()) })
    }

    pub fn set_syn_retries(fd: &OwnedFd, retries: i32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid socket descriptor, and a pointer to an int of the size given.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_SYNCNT,
                (&retries as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn connect(fd: OwnedFd, addr: SocketAddr) -> io::Result<TcpStream> {
        use std::os::fd::{AsRawFd, IntoRawFd};
        socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(io::Error::from)?;
        // SAFETY: the descriptor is a connected TCP socket that we own and hand over.
        Ok(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (role, options) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("tcp_peer: {err}");
            return ExitCode::from(2);
        }
    };
    let result = match role.as_str() {
        "server" => server(&options),
        "client" => client(&options),
        "pairs" => pairs(&options),
        other => Err(io::Error::other(format!("unknown role {other}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcp_peer: {err}");
            ExitCode::FAILURE
        }
    }
}
