//! The iterators: the owners of existing sockets (iter/task_file, as `ss -p` finds them) and
//! the TCP sockets of a network namespace (iter/tcp), read as records.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};

use super::libbpf_log::libbpf_says;
use super::Tracer;
use crate::event::{self, Socket, OWNER_RECORD_SIZE, SOCKET_RECORD_SIZE};
use crate::holders::Holdings;
use crate::seeds::{self, Seeds};

const OWNERS_READ: &str = "reading the owners of existing sockets";

impl Tracer<'_> {
    /// Finds the owners of the sockets that exist now and writes them where the hooks look
    /// for the owner of a socket they did not see being opened. Returns how many did not fit.
    pub(super) fn seed_owners(&self) -> Result<usize> {
        let (_link, mut iter) = self.start_owner_iter()?;
        let mut records = Vec::new();
        read_records(&mut iter, OWNER_RECORD_SIZE, OWNERS_READ, |bytes| {
            records.extend(
                bytes
                    .chunks_exact(OWNER_RECORD_SIZE)
                    .filter_map(event::decode_owner_record),
            );
            Ok(())
        })?;
        let found = Seeds::from_records(records);
        let maps = &self.skel.maps;
        let sockets = seeds::write_map(&maps.seeds, &found.sockets, &found.owners)?;
        let listeners = seeds::write_map(&maps.listeners, &found.places, &found.listeners)?;
        Ok(found.sockets.len() - sockets + found.places.len() - listeners)
    }

    /// Who holds each socket now, from a walk of every process's files (as `ss -p` finds them).
    pub fn walk_owners(&self) -> Result<Holdings> {
        let (_link, mut iter) = self.start_owner_iter()?;
        read_owners(&mut iter)
    }

    /// The task_file iterator that finds the owners of existing sockets. Reading the iterator
    /// runs it; the link must outlive the reading.
    fn start_owner_iter(&self) -> Result<(libbpf_rs::Link, libbpf_rs::Iter)> {
        let link = self.skel.progs.seed_owners.attach().map_err(|err| {
            anyhow!(
                "starting the BPF task_file iterator failed: {err}{}",
                libbpf_says()
            )
        })?;
        let iter = libbpf_rs::Iter::new(&link).context("starting the BPF task_file iterator")?;
        Ok((link, iter))
    }

    /// Hands `each` every TCP socket that exists now, read by the iter/tcp program in each
    /// network namespace of `netns` (an open namespace file, or None for the caller's own).
    /// `each` may run on another thread.
    pub fn dump_sockets(
        &self,
        netns: &[Option<&File>],
        mut each: impl FnMut(Socket) + Send,
    ) -> Result<()> {
        let link = self.skel.progs.dump_sockets.attach().map_err(|err| {
            anyhow!(
                "starting the BPF tcp iterator failed: {err}{}",
                libbpf_says()
            )
        })?;
        // Each namespace's walk reads the whole hash table, skipping other namespaces' sockets.
        let walk_all = |hand_on: &mut dyn FnMut(Vec<Socket>)| -> Result<()> {
            for ns in netns {
                read_sockets(&mut tcp_iter_in(&link, *ns)?, &mut *hand_on)?;
            }
            Ok(())
        };
        if self.parts.hooks {
            return walk_all(&mut |batch| batch.into_iter().for_each(&mut each));
        }
        // Without hooks the owners come from a walk of every task's files, as `ss -p` does it.
        // The two walks are independent, so they run at the same time; the task_file walk is
        // the shorter, and its thread then joins owners to the sockets read meanwhile and hands
        // them on, while the tcp walk goes on.
        let (_owner_link, mut owner_iter) = self.start_owner_iter()?;
        let (pid, comm) = &self.owner_filters;
        let wanted = |s: &Socket| {
            pid.is_none_or(|p| s.owner.is_some_and(|o| o.pid == p))
                && comm
                    .as_deref()
                    .is_none_or(|c| s.owner.is_some_and(|o| o.comm.as_bytes() == c))
        };
        let (batches, read) = std::sync::mpsc::channel::<Vec<Socket>>();
        std::thread::scope(|scope| {
            let joiner = scope.spawn(move || -> Result<()> {
                let owners = read_owners(&mut owner_iter)?;
                for batch in read {
                    for mut socket in batch {
                        // A TIME_WAIT socket has no file, so no owner of its own.
                        if socket.twaddr.is_none() {
                            let holding = owners.get(socket.skaddr);
                            socket.owner = holding.map(|h| h.owner);
                            socket.holders = Some(holding.map_or(0, |h| h.holders));
                        } else {
                            socket.holders = Some(0);
                        }
                        if wanted(&socket) {
                            each(socket);
                        }
                    }
                }
                Ok(())
            });
            // A send fails only once the joiner has stopped on an error, which join returns.
            let sockets = walk_all(&mut |batch| drop(batches.send(batch)));
            drop(batches);
            let joined = joiner
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the task_file iterator's reader panicked")));
            sockets.and(joined)
        })
    }
}

/// The tcp iterator over `netns`, or the caller's own: it walks the namespace of the thread
/// that creates it.
fn tcp_iter_in(link: &libbpf_rs::Link, netns: Option<&File>) -> Result<libbpf_rs::Iter> {
    let iter = match netns {
        None => libbpf_rs::Iter::new(link),
        Some(target) => {
            let own = File::open("/proc/thread-self/ns/net")
                .context("opening this thread's network namespace")?;
            setns(target.as_fd(), CloneFlags::CLONE_NEWNET).context(
                "entering the network namespace to list its sockets (needs CAP_SYS_ADMIN)",
            )?;
            let iter = libbpf_rs::Iter::new(link);
            setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
                .context("returning to the tool's own network namespace")?;
            iter
        }
    };
    iter.context("starting the BPF tcp iterator")
}

/// Runs a BPF iterator to its end, handing the `size`-byte records it writes to `each` as they
/// come, as many whole records at a time as one read gave: the records of 100,000 sockets need
/// not be held at once.
fn read_records(
    iter: &mut libbpf_rs::Iter,
    size: usize,
    what: &'static str,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0; 64 * 1024];
    let mut filled = 0;
    loop {
        let n = match iter.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context(what),
        };
        filled += n;
        let whole = filled - filled % size;
        each(&buf[..whole])?;
        // A read may end inside a record: keep its start for the next.
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    if filled != 0 {
        anyhow::bail!("{what}: the iterator ended inside a record");
    }
    Ok(())
}

/// Runs the tcp iterator and hands on the sockets it wrote, a batch per read.
fn read_sockets(iter: &mut libbpf_rs::Iter, each: &mut dyn FnMut(Vec<Socket>)) -> Result<()> {
    read_records(
        iter,
        SOCKET_RECORD_SIZE,
        "reading the sockets from the BPF tcp iterator",
        |records| {
            let batch = records
                .chunks_exact(SOCKET_RECORD_SIZE)
                .map(event::decode_socket)
                .collect::<Result<_>>()?;
            each(batch);
            Ok(())
        },
    )
}

/// Runs the task_file iterator in records mode and returns who holds each socket it found.
fn read_owners(iter: &mut libbpf_rs::Iter) -> Result<Holdings> {
    let mut owners = Holdings::default();
    read_records(iter, OWNER_RECORD_SIZE, OWNERS_READ, |records| {
        let decoded = records
            .chunks_exact(OWNER_RECORD_SIZE)
            .filter_map(event::decode_owner);
        for (skaddr, owner) in decoded {
            owners.add(skaddr, owner);
        }
        Ok(())
    })?;
    Ok(owners)
}
