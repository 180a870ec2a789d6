//! The reader's scheduling priority: raised at start, so that a host whose CPUs are saturated
//! does not starve the one thread that drains the ring buffer into losing events.
//!
//! The reader uses CPU in proportion to the events and sleeps otherwise: a higher priority
//! changes when it runs, not how much. auditd raises itself the same way (priority_boost).

use std::io;

/// The niceness taken when the caller left the default one (0).
pub const DEFAULT_BOOST: i32 = -10;

/// The niceness to set, if any: the one asked for, else the boost when the process runs at the
/// default niceness. A niceness the caller chose (`nice -n 5 tcpstates`) is kept.
pub fn wanted(requested: Option<i32>, current: i32) -> Option<i32> {
    match requested {
        Some(n) => (n != current).then_some(n),
        None => (current == 0).then_some(DEFAULT_BOOST),
    }
}

/// Sets the niceness of this thread, and so of every thread it starts later (on Linux the
/// niceness is per thread, inherited). Call before any thread is started.
/// Returns a line for stderr when asked for one that could not be set, or with `verbose`.
pub fn apply(requested: Option<i32>, verbose: bool) -> Option<String> {
    let current = current()?;
    let nice = wanted(requested, current)?;
    match set(nice) {
        Ok(()) if verbose => Some(format!("tcpstates: running at niceness {nice}")),
        Ok(()) => None,
        Err(err) if requested.is_some() || verbose => Some(format!(
            "tcpstates: cannot set niceness {nice} ({err}): running at {current}"
        )),
        Err(_) => None,
    }
}

fn current() -> Option<i32> {
    // getpriority() may return -1 as a value: errno tells an error apart.
    nix::errno::Errno::clear();
    // SAFETY: getpriority reads the calling thread's priority; no memory is passed.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    (nice != -1 || nix::errno::Errno::last_raw() == 0).then_some(nice)
}

fn set(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority changes the calling thread's priority; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_niceness_is_raised() {
        assert_eq!(wanted(None, 0), Some(DEFAULT_BOOST));
    }

    #[test]
    fn a_niceness_the_caller_chose_is_kept() {
        assert_eq!(wanted(None, 5), None);
        assert_eq!(wanted(None, -3), None);
    }

    #[test]
    fn an_asked_niceness_is_set_unless_already_so() {
        assert_eq!(wanted(Some(0), 0), None);
        assert_eq!(wanted(Some(0), 5), Some(0));
        assert_eq!(wanted(Some(-20), 0), Some(-20));
        assert_eq!(wanted(Some(19), 19), None);
    }
}
