//! libbpf's own messages: printed with -v, else kept to explain a failure in one line.

use std::sync::Mutex;

use anyhow::anyhow;
use libbpf_rs::PrintLevel;

/// libbpf's warnings, kept to explain a failure when -v was not given.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn keep_warning(level: PrintLevel, msg: String) {
    if level == PrintLevel::Warn {
        if let Ok(mut warnings) = WARNINGS.lock() {
            warnings.push(msg.trim_end().to_string());
        }
    }
}

fn print_everything(_level: PrintLevel, msg: String) {
    eprint!("{msg}");
}

/// Routes libbpf's messages: all of them to stderr (`verbose`), or its warnings kept.
pub fn route(verbose: bool) {
    libbpf_rs::set_print(Some(if verbose {
        (
            PrintLevel::Debug,
            print_everything as fn(PrintLevel, String),
        )
    } else {
        (PrintLevel::Warn, keep_warning as fn(PrintLevel, String))
    }));
}

/// libbpf's first warning, usually the cause of what failed after it, to append to an error.
pub fn libbpf_says() -> String {
    WARNINGS
        .lock()
        .ok()
        .and_then(|w| w.first().cloned())
        .map(|w| {
            format!(
                " (libbpf: {}; run with -v for details)",
                w.trim_start_matches("libbpf: ")
            )
        })
        .unwrap_or_default()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, which libbpf raises only where it
/// may (CAP_SYS_RESOURCE): a map refused for permission is most likely that.
pub fn memlock_hint(err: &libbpf_rs::Error) -> &'static str {
    let map_refused = WARNINGS.lock().is_ok_and(|w| {
        w.iter()
            .any(|l| l.contains("bpf_create_map") || l.contains("map '"))
    });
    if err.kind() == libbpf_rs::ErrorKind::PermissionDenied && map_refused {
        "; this kernel counts BPF maps against the locked-memory limit: raise it (`ulimit -l \
         unlimited`, systemd LimitMEMLOCK=infinity) or run as root"
    } else {
        ""
    }
}

/// The error of a hook that would not attach.
pub fn attach_failed(hook: &str, err: libbpf_rs::Error) -> anyhow::Error {
    anyhow!("attaching to {hook} failed: {err}{}", libbpf_says())
}
