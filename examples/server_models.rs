//! TCP servers in the process models real servers use, for the owner tests: which process holds
//! each connection is what tcpstates must name.
//!
//! ```text
//! server_models MODEL ADDR PORT [--workers N]
//!   prefork  a master listens and forks N workers (default 2) that accept on the shared listener
//!   prefork-silent   the same, but the workers never read, write or close what they accept
//!   fork     the parent accepts and forks a child per connection, then closes its copy
//!   pass     a supervisor accepts and hands each connection to a backend process over a unix
//!            socket (SCM_RIGHTS), then closes its copy
//!   exec     the parent accepts and forks a child per connection, which execs /proc/self/exe
//!            (so its command name becomes "exe") and serves the connection as its fd 3
//! ```
//! Prints "listening PORT" once, then "serving PID PEERPORT" from the process that serves each
//! connection, before it reads. Each connection sends one line: `close` (the server replies
//! "bye" and closes first), `hold` (it replies "ok" and closes when the client has), `leak`
//! (it replies "ok" and never closes: CLOSE_WAIT once the client has closed). Every process ends
//! when stdin closes (the master's) or its parent dies. A connection handed on (fork, pass,
//! exec) is served only once the process that handed it on has closed its copy, so that the
//! server's close is the last one, by the process that served it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::{fork, ForkResult};

/// The fd an exec'd handler finds its connection at.
const HANDLER_FD: RawFd = 3;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [serve, fd] if serve == "serve-fd" => serve_fd(fd),
        [model, addr, port, rest @ ..] => run(model, addr, port, rest),
        _ => Err(io::Error::other(
            "usage: server_models prefork|fork|pass|exec ADDR PORT [--workers N]",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("server_models: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(model: &str, addr: &str, port: &str, rest: &[String]) -> io::Result<()> {
    let addr: SocketAddr = format!("{addr}:{port}")
        .parse()
        .or_else(|_| format!("[{addr}]:{port}").parse())
        .map_err(io::Error::other)?;
    let workers = match rest {
        [flag, n] if flag == "--workers" => n.parse().map_err(io::Error::other)?,
        [] => 2,
        _ => return Err(io::Error::other("unknown options")),
    };
    // Children are reaped by the kernel: a fork-per-connection parent never waits.
    // SAFETY: setting a disposition, no handler code runs.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.map_err(io::Error::other)?;
    let listener = TcpListener::bind(addr)?;
    say(&format!("listening {}", listener.local_addr()?.port()));
    match model {
        "prefork" => prefork(listener, workers, serve),
        "prefork-silent" => prefork(listener, workers, hold_untouched),
        "fork" => fork_per_connection(listener, None),
        "exec" => fork_per_connection(listener, Some(HANDLER_FD)),
        "pass" => pass(listener),
        other => Err(io::Error::other(format!("unknown model {other}"))),
    }
}

/// One line on stdout, in one write: the processes share it.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// Runs `child` in a new process that dies with this one; returns in the parent.
fn spawn(child: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    // SAFETY: the child runs only `child` and exits; this program's threads hold no locks the
    // child needs (it forks before starting threads, or from the accepting thread).
    match unsafe { fork() }.map_err(io::Error::other)? {
        ForkResult::Parent { .. } => Ok(()),
        ForkResult::Child => {
            // SAFETY: prctl with an integer argument.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let code = match child() {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("server_models: {err}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// Blocks until every write end of the pipe `gate` is closed.
fn wait_for_close(mut gate: impl Read) -> io::Result<()> {
    io::copy(&mut gate, &mut io::sink()).map(drop)
}

/// Blocks until stdin closes, then returns (ending the master and, with it, its children).
fn wait_for_stdin() -> io::Result<()> {
    wait_for_close(io::stdin())
}

fn prefork(
    listener: TcpListener,
    workers: usize,
    handle: fn(TcpStream) -> io::Result<()>,
) -> io::Result<()> {
    for _ in 0..workers {
        let listener = listener.try_clone()?;
        spawn(move || loop {
            let (stream, _) = listener.accept()?;
            std::thread::spawn(move || handle(stream));
        })?;
    }
    wait_for_stdin()
}

/// Holds a connection without a call on it: no read, write or close.
fn hold_untouched(stream: TcpStream) -> io::Result<()> {
    say(&format!(
        "serving {} {}",
        std::process::id(),
        stream.peer_addr()?.port()
    ));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Accepts and forks a child per connection; with `exec_fd`, the child execs a handler that
/// finds the connection at that fd.
fn fork_per_connection(listener: TcpListener, exec_fd: Option<RawFd>) -> io::Result<()> {
    std::thread::spawn(move || -> io::Result<()> {
        loop {
            let (stream, _) = listener.accept()?;
            let fd = stream.as_raw_fd();
            // The child starts once the parent's copy is closed, so that the child's close is
            // the connection's last, as the tests expect (else a slow parent's may be).
            let (gate, opened) = io::pipe()?;
            let opened_fd = opened.as_raw_fd();
            // The parent drops the closure, and with it its copy of the connection.
            spawn(move || {
                // SAFETY: the child's inherited copy of the parent's write end; the child
                // never uses or drops the parent's object for it.
                unsafe { libc::close(opened_fd) };
                wait_for_close(gate)?;
                match exec_fd {
                    None => serve(stream),
                    Some(target) => exec_handler(fd, target),
                }
            })?;
            drop(opened);
        }
    });
    wait_for_stdin()
}

fn exec_handler(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 onto a fixed number; the original is left open (closed at exec if CLOEXEC).
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let exe = std::ffi::CString::new("/proc/self/exe").map_err(io::Error::other)?;
    let args = [
        std::ffi::CString::new("server_models").map_err(io::Error::other)?,
        std::ffi::CString::new("serve-fd").map_err(io::Error::other)?,
        std::ffi::CString::new(target.to_string()).map_err(io::Error::other)?,
    ];
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: NUL-terminated strings and a NULL-terminated argv that outlive the call.
    unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
    Err(io::Error::last_os_error())
}

/// The exec'd handler: its connection is `fd`.
fn serve_fd(fd: &str) -> io::Result<()> {
    let fd: RawFd = fd.parse().map_err(io::Error::other)?;
    // SAFETY: the parent left this fd open for us, and nothing else owns it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    serve(stream)
}

/// A supervisor that accepts and a backend that serves, the connection passed over a unix
/// socket with SCM_RIGHTS.
fn pass(listener: TcpListener) -> io::Result<()> {
    let (to_backend, from_supervisor) = UnixStream::pair()?;
    let listener_fd = listener.as_raw_fd();
    spawn(move || {
        // SAFETY: the backend's copy of the listener, which it must not hold.
        unsafe { libc::close(listener_fd) };
        loop {
            let fd = receive_fd(&from_supervisor)?;
            // SAFETY: the descriptor just arrived with SCM_RIGHTS: ours alone.
            let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            // Served once the supervisor's copy is closed: the backend's close is the last.
            (&from_supervisor).read_exact(&mut [0u8])?;
            std::thread::spawn(move || serve(stream));
        }
    })?;
    std::thread::spawn(move || -> io::Result<()> {
        loop {
            let (stream, _) = listener.accept()?;
            let fds = [stream.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [io::IoSlice::new(b"c")];
            sendmsg::<()>(to_backend.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                .map_err(io::Error::other)?;
            drop(stream); // the supervisor's copy
            (&to_backend).write_all(b"g")?;
        }
    });
    wait_for_stdin()
}

fn receive_fd(from: &UnixStream) -> io::Result<RawFd> {
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        from.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(io::Error::other)?;
    if msg.bytes == 0 {
        return Err(io::Error::other("the supervisor is gone"));
    }
    for cmsg in msg.cmsgs().map_err(io::Error::other)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::other("a message without a descriptor"))
}

/// Serves one connection as its first line asks.
fn serve(stream: TcpStream) -> io::Result<()> {
    let peer = stream.peer_addr()?.port();
    say(&format!("serving {} {peer}", std::process::id()));
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut writer = stream;
    match line.trim() {
        "close" => writer.write_all(b"bye\n")?,
        "hold" => {
            writer.write_all(b"ok\n")?;
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
        }
        "leak" => {
            writer.write_all(b"ok\n")?;
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            // Never closed: held in CLOSE_WAIT until the process ends.
            let _ = writer.into_raw_fd();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        other => return Err(io::Error::other(format!("unknown request {other:?}"))),
    }
    Ok(())
}
