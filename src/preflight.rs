//! Checks of the environment made before loading BPF, so a missing piece gets a clear message.

use std::path::Path;

use anyhow::{bail, Context, Result};

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The kernel must describe its own types (BTF) for CO-RE relocations and BTF tracepoints.
pub fn check_kernel_btf() -> Result<()> {
    if !Path::new(KERNEL_BTF).exists() {
        bail!(
            "this kernel has no BTF ({KERNEL_BTF} is missing): tcpstates needs Linux 5.10 or \
             later built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}

/// Loading tracing programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which implies both).
pub fn check_capabilities() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective =
        effective_capabilities(&status).context("no CapEff line in /proc/self/status")?;
    let missing = missing_capabilities(effective);
    if !missing.is_empty() {
        bail!(
            "permission denied: tracing needs root, or the capabilities CAP_BPF and CAP_PERFMON \
             (missing: {})",
            missing.join(", ")
        );
    }
    Ok(())
}

fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000000c000000000\n";
        assert_eq!(effective_capabilities(status), Some(0xc0_0000_0000));
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
    }
}
