//! Turning the kernel's boot-time timestamps into wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds in `secs` seconds, saturating: a duration past the ~584
/// years a `u64` of nanoseconds holds is as good as forever, and a
/// configured or rule-given number of seconds must never overflow.
pub fn secs_to_ns(secs: u64) -> u64 {
    secs.saturating_mul(1_000_000_000)
}

/// How far `CLOCK_BOOTTIME` runs ahead of `CLOCK_MONOTONIC` (the time spent
/// suspended): what turns the kernel's last-seen stamps (monotonic, see
/// `monitor_common::event::FlowStats::last_ns`) into boot time.
pub fn monotonic_to_boot_ns() -> u64 {
    (now_ns(libc::CLOCK_BOOTTIME) - now_ns(libc::CLOCK_MONOTONIC)).max(0) as u64
}

/// The kernel's last-seen stamp `mono_ns` in boot time, given
/// [`monotonic_to_boot_ns`]. The stamp has tick resolution (up to a few ms
/// behind the precise clock), so comparisons with precise times allow
/// [`LAST_SEEN_SLACK_NS`].
pub fn last_seen_to_boot(mono_ns: u64, offset: u64) -> u64 {
    if mono_ns == 0 {
        0
    } else {
        mono_ns.saturating_add(offset)
    }
}

/// How far a last-seen stamp may lag the precise clock: a tick is 1 to
/// 10 ms (`CONFIG_HZ` 1000 to 100); twice the longest.
pub const LAST_SEEN_SLACK_NS: u64 = 20_000_000;

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

    #[test]
    fn last_seen_stamps_move_to_boot_time_and_unset_stays_unset() {
        assert_eq!(last_seen_to_boot(5_000, 2_000), 7_000);
        assert_eq!(last_seen_to_boot(0, 2_000), 0);
        assert_eq!(last_seen_to_boot(u64::MAX, 1), u64::MAX);
        // A coarse monotonic stamp taken now, moved to boot time, is close
        // to the boot clock now.
        let mono = now_ns(libc::CLOCK_MONOTONIC_COARSE) as u64;
        let boot = last_seen_to_boot(mono, monotonic_to_boot_ns());
        let now = BootClock::boot_now_ns();
        assert!(now.abs_diff(boot) < LAST_SEEN_SLACK_NS, "{now} vs {boot}");
    }
}
