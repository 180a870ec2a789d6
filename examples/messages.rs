//! Data-heavy loopback traffic for benchmarks: a few long connections carrying many small
//! messages, the cost a hook on reads or writes adds (connection churn does not show it).
//!
//! ```text
//! messages [--connections C] [--seconds S] [--size BYTES]
//! ```
//! C connections (default 4) to a listener of its own; on each, one thread writes BYTES-byte
//! messages (default 64, TCP_NODELAY: a segment each) as fast as it can, and another reads
//! them BYTES at a time. Prints `messages N seconds S rate R` (messages read per second).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Options {
    connections: usize,
    seconds: f64,
    size: usize,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        connections: 4,
        seconds: 5.0,
        size: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--connections" => o.connections = value()?.parse().map_err(|_| "bad count")?,
            "--seconds" => o.seconds = value()?.parse().map_err(|_| "bad seconds")?,
            "--size" => o.size = value()?.parse().map_err(|_| "bad size")?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn run(o: &Options) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..o.connections {
        let mut writer = TcpStream::connect(addr)?;
        writer.set_nodelay(true)?;
        let (mut reader, _) = listener.accept()?;
        let (size, stop_writing) = (o.size, Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let message = vec![b'm'; size];
            while !stop_writing.load(Ordering::Relaxed) {
                if writer.write_all(&message).is_err() {
                    break;
                }
            }
        }));
        let (size, stop_reading, count) = (o.size, Arc::clone(&stop), Arc::clone(&read));
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0; size];
            while !stop_reading.load(Ordering::Relaxed) {
                if reader.read_exact(&mut buf).is_err() {
                    break;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    let messages = read.load(Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    println!(
        "messages {messages} seconds {seconds:.3} rate {:.0}",
        messages as f64 / seconds
    );
    // The threads block on full or empty sockets: exiting closes them all.
    std::process::exit(0)
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(o) => o,
        Err(err) => {
            eprintln!("messages: {err}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("messages: {err}");
            ExitCode::FAILURE
        }
    }
}
