//! Kernel CLOCK_BOOTTIME stamps turned into wall-clock time, without a syscall per event.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

/// Maps CLOCK_BOOTTIME (what `bpf_ktime_get_boot_ns` returns) to the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_BOOTTIME, in ns.
    offset_ns: i128,
}

fn nanos(clock: ClockId) -> i128 {
    clock_gettime(clock)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

impl Clock {
    /// Measures the offset now, keeping the tightest of a few samples.
    pub fn measure() -> Clock {
        let mut best = (i128::MAX, 0);
        for _ in 0..5 {
            let before = nanos(ClockId::CLOCK_BOOTTIME);
            let real = nanos(ClockId::CLOCK_REALTIME);
            let after = nanos(ClockId::CLOCK_BOOTTIME);
            if after - before < best.0 {
                best = (after - before, real - (before + after) / 2);
            }
        }
        Clock { offset_ns: best.1 }
    }

    /// A clock with a known offset, for tests.
    #[cfg(test)]
    pub fn with_offset_ns(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// CLOCK_BOOTTIME now, in ns.
    pub fn boot_now_ns() -> u64 {
        u64::try_from(nanos(ClockId::CLOCK_BOOTTIME)).unwrap_or(0)
    }

    /// The wall-clock time of a CLOCK_BOOTTIME stamp.
    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let unix_ns = i128::from(boot_ns) + self.offset_ns;
        let unix_ns = u64::try_from(unix_ns.max(0)).unwrap_or(u64::MAX);
        UNIX_EPOCH + Duration::from_nanos(unix_ns)
    }
}

/// Formats times as local HH:MM:SS.mmm, asking the C library for the UTC offset once a minute.
#[derive(Debug)]
pub struct LocalTime {
    fixed_offset: Option<i64>,
    cached_minute: i64,
    cached_offset: i64,
}

impl LocalTime {
    /// Local time as the system's time zone says (TZ or /etc/localtime).
    pub fn system() -> LocalTime {
        LocalTime {
            fixed_offset: None,
            cached_minute: i64::MIN,
            cached_offset: 0,
        }
    }

    /// A fixed offset east of UTC, for tests.
    #[cfg(test)]
    pub fn fixed(offset_secs: i64) -> LocalTime {
        LocalTime {
            fixed_offset: Some(offset_secs),
            cached_minute: i64::MIN,
            cached_offset: 0,
        }
    }

    fn offset_at(&mut self, unix_secs: i64) -> i64 {
        if let Some(offset) = self.fixed_offset {
            return offset;
        }
        if unix_secs.div_euclid(60) != self.cached_minute {
            self.cached_minute = unix_secs.div_euclid(60);
            self.cached_offset = utc_offset(unix_secs);
        }
        self.cached_offset
    }

    /// `HH:MM:SS.mmm` in local time.
    pub fn format(&mut self, t: SystemTime, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let unix_secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        let local = unix_secs + self.offset_at(unix_secs);
        let day_secs = local.rem_euclid(86_400);
        write!(
            out,
            "{:02}:{:02}:{:02}.{:03}",
            day_secs / 3600,
            day_secs / 60 % 60,
            day_secs % 60,
            since_epoch.subsec_millis()
        )
    }
}

fn utc_offset(unix_secs: i64) -> i64 {
    let t: libc::time_t = unix_secs;
    // SAFETY: an all-zero `tm` is valid; localtime_r writes only into it and reads `t`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_stamps_map_to_wall_time() {
        let clock = Clock::with_offset_ns(1_700_000_000_000_000_000);
        let wall = clock.wall(2_500_000_000);
        assert_eq!(
            wall.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_nanos(1_700_000_002_500_000_000)
        );
    }

    #[test]
    fn measured_offset_matches_the_system_clock() {
        let clock = Clock::measure();
        let wall = clock.wall(Clock::boot_now_ns());
        let diff = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }

    #[test]
    fn local_time_applies_the_offset() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut s = String::new();
        LocalTime::fixed(0).format(t, &mut s).unwrap();
        assert_eq!(s, "22:13:20.123");
        s.clear();
        LocalTime::fixed(-5 * 3600).format(t, &mut s).unwrap();
        assert_eq!(s, "17:13:20.123");
    }
}
