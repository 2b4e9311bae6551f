//! Turning the kernel's boot-time timestamps into wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds in `secs` seconds, saturating: a duration past the ~584
/// years a `u64` of nanoseconds holds is as good as forever, and a
/// configured or rule-given number of seconds must never overflow.
pub fn secs_to_ns(secs: u64) -> u64 {
    secs.saturating_mul(1_000_000_000)
}

/// Maps `CLOCK_BOOTTIME` nanoseconds to wall-clock time. The offset is
/// taken once; [`BootClock::refresh`] follows wall-clock steps (NTP).
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    /// Wall-clock ns since the epoch at boot.
    boot_epoch_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl BootClock {
    pub fn new() -> Self {
        let mut c = Self { boot_epoch_ns: 0 };
        c.refresh();
        c
    }

    pub fn refresh(&mut self) {
        self.boot_epoch_ns = now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_BOOTTIME);
    }

    /// Nanoseconds since boot now.
    pub fn boot_now_ns() -> u64 {
        now_ns(libc::CLOCK_BOOTTIME) as u64
    }

    pub fn to_system_time(&self, boot_ns: u64) -> SystemTime {
        let ns = (self.boot_epoch_ns + boot_ns as i128).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// RFC 3339 with nanoseconds, UTC.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.to_system_time(boot_ns)).to_string()
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_maps_to_now() {
        let c = BootClock::new();
        let t = c.to_system_time(BootClock::boot_now_ns());
        let drift = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(drift < Duration::from_secs(1), "{drift:?}");
        assert!(c.rfc3339(0).ends_with('Z'));
    }
}
