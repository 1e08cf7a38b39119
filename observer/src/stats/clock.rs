//! The kernel's clock (CLOCK_MONOTONIC, `bpf_ktime_get_ns`) and wall-clock time.

/// Converts the kernel's monotonic timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    unix_minus_monotonic: i128,
}

impl Clock {
    /// Measures the offset between the two clocks now.
    pub fn measure() -> Self {
        let unix = read_clock(libc::CLOCK_REALTIME);
        let monotonic = read_clock(libc::CLOCK_MONOTONIC);
        Self {
            unix_minus_monotonic: unix as i128 - monotonic as i128,
        }
    }

    pub fn to_unix_ns(self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.unix_minus_monotonic).max(0) as u64
    }

    pub fn now_unix_ns(self) -> u64 {
        read_clock(libc::CLOCK_REALTIME)
    }
}

pub fn read_clock(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
