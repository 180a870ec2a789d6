//! Every network namespace on the host, found where they are kept: each process's
//! (/proc/PID/ns/net) and the bind mounts of `ip netns` (/run/netns) and docker
//! (/run/docker/netns). Each is taken once, by inode, with a file to enter it by and a name
//! where it has one.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::os::fd::AsFd;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::ports::{self, PortRange, PortUse};
use crate::sockstat;
use crate::table::Conn;

/// Directories of bind-mounted namespaces, and what their entries' names are.
const NAMED: [&str; 2] = ["/run/netns", "/run/docker/netns"];

/// A network namespace to list the sockets of.
#[derive(Debug)]
pub struct Namespace {
    pub inode: u32,
    /// A file of it to enter it by; None for the tool's own.
    pub file: Option<File>,
    /// Its name under /run/netns or /run/docker/netns, if it has one.
    pub name: Option<String>,
}

/// Every network namespace now: the tool's own first, then the others in inode order.
pub fn all() -> Result<Vec<Namespace>> {
    let own = inode_of(Path::new("/proc/thread-self/ns/net"))
        .context("reading this process's network namespace")?;
    let mut found: HashMap<u32, (PathBuf, Option<String>)> = HashMap::new();
    for dir in NAMED {
        for path in entries(Path::new(dir)) {
            if let Some(inode) = inode_of(&path) {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                found.entry(inode).or_insert((path, name));
            }
        }
    }
    for pid in entries(Path::new("/proc")).filter(|p| is_pid(p)) {
        let path = pid.join("ns/net");
        // A process that exited meanwhile, or a kernel thread: nothing to add.
        if let Some(inode) = inode_of(&path) {
            found.entry(inode).or_insert((path, None));
        }
    }
    let mut namespaces = vec![Namespace {
        inode: own,
        file: None,
        name: found.remove(&own).and_then(|(_, name)| name),
    }];
    let mut others: Vec<(u32, (PathBuf, Option<String>))> = found.into_iter().collect();
    others.sort_by_key(|(inode, _)| *inode);
    for (inode, (path, name)) in others {
        // Gone since it was found (a process exited): then it has no sockets to list either.
        if let Ok(file) = File::open(&path) {
            if file.metadata().is_ok_and(|m| m.ino() == u64::from(inode)) {
                namespaces.push(Namespace {
                    inode,
                    file: Some(file),
                    name,
                });
            }
        }
    }
    Ok(namespaces)
}

fn entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
}

fn is_pid(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
}

/// The namespace inode behind a /proc or bind-mount path (stat follows it to the nsfs inode).
fn inode_of(path: &Path) -> Option<u32> {
    u32::try_from(std::fs::metadata(path).ok()?.ino()).ok()
}

/// Each namespace's ip_local_port_range (a per-namespace sysctl), read from a thread that
/// enters each in turn. One that cannot be entered or read is left out.
pub fn port_ranges(namespaces: &[Namespace]) -> HashMap<u32, PortRange> {
    let read = || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| PortRange::parse(&text))
    };
    let mut ranges = HashMap::new();
    for ns in namespaces.iter().filter(|ns| ns.file.is_none()) {
        if let Some(range) = read() {
            ranges.insert(ns.inode, range);
        }
    }
    let others: Vec<(u32, &File)> = namespaces
        .iter()
        .filter_map(|ns| Some((ns.inode, ns.file.as_ref()?)))
        .collect();
    if others.is_empty() {
        return ranges;
    }
    let entered = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                others
                    .into_iter()
                    .filter_map(|(inode, file)| {
                        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
                        Some((inode, read()?))
                    })
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap_or_default()
    });
    ranges.extend(entered);
    ranges
}

/// About how many TCP sockets (full and timewait) the namespaces hold now, from the kernel's
/// counters in /proc/net/sockstat: the room a table of them needs. One namespace: its own
/// counts, read from inside it. Several: every full socket of the host (that counter is
/// global) and the tool's own namespace's timewait ones. 0 if unreadable.
pub fn tcp_sockets(namespaces: &[Namespace]) -> u64 {
    let read = |fields: &[&str]| {
        let text = std::fs::read_to_string("/proc/thread-self/net/sockstat").ok()?;
        fields
            .iter()
            .map(|f| sockstat::tcp_count(&text, f))
            .sum::<Option<u64>>()
    };
    let counted = match namespaces {
        [Namespace {
            file: Some(file), ..
        }] => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
                    read(&["inuse", "tw"])
                })
                .join()
                .ok()
                .flatten()
        }),
        [_] => read(&["inuse", "tw"]),
        _ => read(&["alloc", "tw"]),
    };
    counted.unwrap_or(0)
}

/// Each namespace's ip_local_port_range, read again every REREAD, or sooner (at most every
/// RETRY) when a socket is in a namespace not read yet (one made since).
#[derive(Default)]
pub struct PortRanges {
    ranges: HashMap<u32, PortRange>,
    read: Option<std::time::Instant>,
}

impl PortRanges {
    const REREAD: std::time::Duration = std::time::Duration::from_secs(30);
    const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

    /// The ranges, up to date for the namespaces `netns` lists.
    pub fn of(&mut self, netns: impl IntoIterator<Item = u32>) -> &HashMap<u32, PortRange> {
        let age = self.read.map(|at| at.elapsed());
        let due = match age {
            None => true,
            Some(age) if age >= Self::REREAD => true,
            Some(age) if age >= Self::RETRY => {
                netns.into_iter().any(|ns| !self.ranges.contains_key(&ns))
            }
            _ => false,
        };
        if due {
            if let Ok(namespaces) = all() {
                self.ranges = port_ranges(&namespaces);
            }
            self.read = Some(std::time::Instant::now());
        }
        &self.ranges
    }

    /// The `limit` destinations of `conns` with the most ephemeral ports in use, against the
    /// ranges of their namespaces (read again when due).
    pub fn pressure<'a>(
        &mut self,
        conns: impl IntoIterator<Item = &'a Conn> + Clone,
        limit: usize,
    ) -> Vec<PortUse> {
        let ranges = self.of(conns.clone().into_iter().map(|c| c.netns));
        ports::pressure(conns, ranges, limit)
    }

    /// The ranges as last read.
    pub fn known(&self) -> &HashMap<u32, PortRange> {
        &self.ranges
    }
}

/// Names by inode, for display.
pub fn names(namespaces: &[Namespace]) -> HashMap<u32, String> {
    namespaces
        .iter()
        .filter_map(|ns| Some((ns.inode, ns.name.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_namespace_comes_first_and_each_comes_once() {
        let all = all().unwrap();
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(u64::from(all[0].inode), own);
        assert!(all[0].file.is_none());
        let mut inodes: Vec<u32> = all.iter().map(|n| n.inode).collect();
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), all.len());
        assert!(all[1..].iter().all(|n| n.file.is_some()));
    }
}
