//! Process limits that bound fleet size.
//!
//! Each session holds one file descriptor (two when the embedded broker runs in-process). The
//! hard limit here is 20,000 and cannot be raised, so start-up lifts the soft limit to it.

/// Raises the open-file soft limit to the hard limit; returns the new (soft, hard).
pub fn raise_nofile() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    nofile()
}

/// The current open-file limits (soft, hard).
pub fn nofile() -> (u64, u64) {
    // SAFETY: as above.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        (lim.rlim_cur as u64, lim.rlim_max as u64)
    }
}
