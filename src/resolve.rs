//! Turns the network namespaces and cgroups a user names into the ids the kernel reports.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, NSFS_MAGIC};

use crate::services;

/// `ioctl(fd, NS_GET_NSTYPE)` from linux/nsfs.h: the CLONE_NEW* type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// A network namespace given as a name under /run/netns, a path, or an inode number: its inode,
/// and the file it was found at (None for an inode number).
pub fn netns(spec: &str) -> Result<(u32, Option<PathBuf>)> {
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        return match spec.parse::<u32>() {
            Ok(inode) if inode > 0 => Ok((inode, None)),
            _ => bail!("--netns {spec}: not a namespace inode number"),
        };
    }
    let path = if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        Path::new("/run/netns").join(spec)
    };
    let file = File::open(&path).map_err(|e| {
        anyhow!(
            "--netns {spec}: no network namespace at {} ({})",
            path.display(),
            io_reason(&e)
        )
    })?;
    let is_nsfs = statfs(&path)
        .map(|fs| fs.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false);
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open namespace file.
    let ns_type = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if !is_nsfs || ns_type != libc::CLONE_NEWNET {
        bail!(
            "--netns {spec}: {} is not a network namespace",
            path.display()
        );
    }
    let inode = file.metadata()?.ino();
    let inode = u32::try_from(inode)
        .with_context(|| format!("--netns {spec}: inode {inode} is out of range"))?;
    Ok((inode, Some(path)))
}

/// The inode of the caller's own network namespace.
pub fn own_netns() -> Result<u32> {
    let inode = std::fs::metadata("/proc/thread-self/ns/net")
        .context("reading this process's network namespace")?
        .ino();
    u32::try_from(inode).context("network namespace inode out of range")
}

/// The network namespace whose sockets are listed: `wanted` (--netns, with the file it was
/// named by, if any) or the tool's own; with a file of it to enter when it is not the tool's own.
pub fn netns_to_list(wanted: Option<u32>, named_at: Option<&Path>) -> Result<(u32, Option<File>)> {
    let own = own_netns()?;
    let target = wanted.unwrap_or(own);
    if target == own {
        return Ok((target, None));
    }
    let path = named_at
        .map(Path::to_path_buf)
        .or_else(|| find_netns(target))
        .with_context(|| {
            format!("--netns {target}: no /run/netns entry or process is in this network namespace")
        })?;
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok((target, Some(file)))
}

/// A file of the network namespace with this inode: a /run/netns entry or a process's.
pub fn find_netns(inode: u32) -> Option<PathBuf> {
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let of_processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    named
        .chain(of_processes)
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.ino() == u64::from(inode)))
}

/// The id of a cgroup v2 directory (its inode), given absolute or relative to the cgroup2 mount.
pub fn cgroup_id(path: &Path) -> Result<u64> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cgroup2_mount()?.join(path)
    };
    let shown = path.display();
    let meta = std::fs::metadata(&full).map_err(|e| {
        anyhow!(
            "--cgroup {shown}: no cgroup at {} ({})",
            full.display(),
            io_reason(&e)
        )
    })?;
    let is_cgroup2 = statfs(&full)
        .map(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if !meta.is_dir() || !is_cgroup2 {
        bail!(
            "--cgroup {shown}: {} is not a cgroup v2 directory",
            full.display()
        );
    }
    Ok(meta.ino())
}

/// An I/O error in words, without the "(os error N)" suffix.
fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        ErrorKind::NotFound => "it does not exist".to_string(),
        ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => err.to_string(),
    }
}

/// Where cgroup2 is mounted: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones.
fn cgroup2_mount() -> Result<PathBuf> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    services::cgroup2_mount(&mounts).context("--cgroup: no cgroup2 file system is mounted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_are_taken_as_given() {
        assert_eq!(netns("4026531840").unwrap(), (4026531840, None));
        assert_eq!(
            netns("0").unwrap_err().to_string(),
            "--netns 0: not a namespace inode number"
        );
    }

    #[test]
    fn own_network_namespace_resolves_by_path() {
        let expected = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let (inode, path) = netns("/proc/self/ns/net").unwrap();
        assert_eq!(u64::from(inode), expected);
        assert_eq!(path, Some(PathBuf::from("/proc/self/ns/net")));
        assert_eq!(u64::from(own_netns().unwrap()), expected);
        assert!(find_netns(inode).is_some());
    }

    #[test]
    fn other_namespace_types_are_refused() {
        let err = netns("/proc/self/ns/uts").unwrap_err().to_string();
        assert_eq!(
            err,
            "--netns /proc/self/ns/uts: /proc/self/ns/uts is not a network namespace"
        );
    }

    #[test]
    fn unknown_namespace_names_say_where_they_looked() {
        let err = netns("no-such-ns-for-tcpstates").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--netns no-such-ns-for-tcpstates: no network namespace at \
             /run/netns/no-such-ns-for-tcpstates (it does not exist)"
        );
    }

    #[test]
    fn non_cgroup_directories_are_refused() {
        let err = cgroup_id(Path::new("/tmp")).unwrap_err().to_string();
        assert_eq!(err, "--cgroup /tmp: /tmp is not a cgroup v2 directory");
    }
}
