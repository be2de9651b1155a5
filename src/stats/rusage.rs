//! The process's own CPU time and peak memory, from `getrusage(2)`.
//!
//! Benchmarks report CPU time per operation rather than wall time: the machines this runs on
//! are shared and noisy, and CPU time is what a load generator must keep small so that the
//! broker, not the client, bounds the figures.

use std::time::Duration;

/// Resource usage of this process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time of all threads.
    pub cpu: Duration,
    /// Peak resident set size in bytes.
    pub max_rss_bytes: u64,
}

/// Reads this process's usage.
pub fn usage() -> Usage {
    // SAFETY: getrusage only writes the struct we pass; all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Usage::default();
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_bytes: ru.ru_maxrss as u64 * 1024,
    }
}

/// Current resident set size in bytes (Linux `/proc/self/statm`; 0 elsewhere). Unlike the
/// peak, this shows what a fleet holds while it is connected.
pub fn current_rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_advances_with_work() {
        let before = super::usage();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = super::usage();
        assert!(after.cpu > before.cpu);
        assert!(after.max_rss_bytes > 0);
        assert!(super::current_rss_bytes() > 0);
    }
}
