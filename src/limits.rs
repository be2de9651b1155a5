//! Process limits that bound fleet size.
//!
//! Each session holds one file descriptor (two when the embedded broker runs in-process: it
//! holds the other end). The hard limit here is 20,000 and cannot be raised, so start-up lifts
//! the soft limit to it and says how many sessions that allows; a fleet larger than that is
//! refused before anything is signed, with the number of processes (`--processes N`, or
//! `--shard i/N` across machines) that would hold it.

/// Descriptors kept free for everything that is not a session: the runtime, the identity
/// cache, logs, the Prometheus listener, the fault proxy's own pair per session excepted.
pub const FD_RESERVE: u64 = 200;

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

/// How many sessions one process can hold under its open-file limit, so a fleet that cannot
/// fit is refused up front instead of failing with `EMFILE` halfway through the ramp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionBudget {
    /// The open-file limit the process runs with (after [`raise_nofile`]).
    pub open_files: u64,
    /// Descriptors per session: 1, or 2 with the in-process embedded broker.
    pub fds_per_session: u64,
    /// Descriptors kept for everything else ([`FD_RESERVE`]).
    pub reserve: u64,
}

/// A fleet larger than one process can hold.
#[derive(Debug, thiserror::Error)]
pub struct TooManySessions {
    /// Devices the scenario asks for (in this process).
    pub devices: u64,
    /// Descriptors they would need.
    pub needed: u64,
    /// Sessions one process can hold.
    pub sessions: u64,
    /// Processes that would hold the fleet (`u64::MAX` when not even one session fits).
    pub processes: u64,
    /// The budget that was exceeded.
    pub budget: SessionBudget,
}

impl std::fmt::Display for TooManySessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.budget;
        write!(
            f,
            "{} devices need {} open files ({} per session + {} reserved) but one process may open {} (at most {} sessions); ",
            self.devices, self.needed, b.fds_per_session, b.reserve, b.open_files, self.sessions
        )?;
        if self.sessions == 0 {
            write!(
                f,
                "raise the open-file hard limit (ulimit -Hn) above {}",
                b.reserve
            )?;
        } else {
            let n = self.processes;
            write!(
                f,
                "split the fleet: `--processes {n}` on this machine or `--shard i/{n}` on {n} machines"
            )?;
        }
        if b.fds_per_session == 2 || b.fds_per_session == 4 {
            write!(
                f,
                ", or run `thingswarm broker` separately (the in-process embedded broker holds the other end of every session)"
            )?;
        }
        Ok(())
    }
}

impl SessionBudget {
    /// The budget under `open_files` descriptors; `embedded_broker` when the broker runs in
    /// this process (two descriptors per session).
    pub fn new(open_files: u64, embedded_broker: bool) -> SessionBudget {
        SessionBudget {
            open_files,
            fds_per_session: if embedded_broker { 2 } else { 1 },
            reserve: FD_RESERVE,
        }
    }

    /// The same budget when a fault proxy runs in this process: it holds two more
    /// descriptors per session (the devices' connection and its own to the target).
    pub fn with_fault_proxy(mut self) -> SessionBudget {
        self.fds_per_session += 2;
        self
    }

    /// Sessions one process can hold.
    pub fn sessions(&self) -> u64 {
        self.open_files.saturating_sub(self.reserve) / self.fds_per_session
    }

    /// Processes (or shards) needed so that each holds at most [`SessionBudget::sessions`].
    pub fn processes_for(&self, devices: u64) -> u64 {
        match self.sessions() {
            0 => u64::MAX,
            per => devices.div_ceil(per).max(1),
        }
    }

    /// `Ok` when `devices` sessions fit in this process.
    pub fn check(&self, devices: u64) -> Result<(), TooManySessions> {
        if devices <= self.sessions() {
            return Ok(());
        }
        Err(TooManySessions {
            devices,
            needed: devices
                .saturating_mul(self.fds_per_session)
                .saturating_add(self.reserve),
            sessions: self.sessions(),
            processes: self.processes_for(devices),
            budget: *self,
        })
    }

    /// The start-up line: `open files 20000 (hard 20000): up to 19800 sessions per process
    /// (1 fd each + 200 reserved)`.
    pub fn describe(&self, hard: u64) -> String {
        format!(
            "open files {} (hard {hard}): up to {} sessions per process ({} fd{} each + {} reserved)",
            self.open_files,
            self.sessions(),
            self.fds_per_session,
            if self.fds_per_session == 1 { "" } else { "s" },
            self.reserve
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_leave_the_reserve_and_count_both_ends_in_process() {
        let external = SessionBudget::new(20_000, false);
        assert_eq!(external.sessions(), 19_800);
        let embedded = SessionBudget::new(20_000, true);
        assert_eq!(embedded.sessions(), 9_900);
        assert_eq!(SessionBudget::new(100, false).sessions(), 0);
        let proxied = SessionBudget::new(20_000, false).with_fault_proxy();
        assert_eq!(proxied.sessions(), 6_600);
    }

    #[test]
    fn a_fleet_that_does_not_fit_names_the_processes_it_needs() {
        let budget = SessionBudget::new(20_000, false);
        assert!(budget.check(19_800).is_ok());
        let err = budget.check(19_801).unwrap_err();
        assert_eq!(err.processes, 2);
        assert_eq!(err.needed, 20_001);
        let text = err.to_string();
        assert!(text.contains("--processes 2"), "{text}");
        assert!(text.contains("--shard i/2"), "{text}");
        assert!(text.contains("at most 19800 sessions"), "{text}");
        assert!(!text.contains("embedded"), "{text}");
        assert_eq!(budget.processes_for(100_000), 6);

        let embedded = SessionBudget::new(20_000, true).check(10_000).unwrap_err();
        assert_eq!(embedded.processes, 2);
        assert!(embedded.to_string().contains("thingswarm broker"));
    }

    #[test]
    fn no_room_at_all_is_an_error_not_a_division_by_zero() {
        let budget = SessionBudget::new(150, false);
        let err = budget.check(1).unwrap_err();
        assert_eq!(err.processes, u64::MAX);
        assert!(err.to_string().contains("ulimit -Hn"), "{err}");
    }

    #[test]
    fn the_start_up_line_says_the_numbers() {
        assert_eq!(
            SessionBudget::new(20_000, false).describe(20_000),
            "open files 20000 (hard 20000): up to 19800 sessions per process (1 fd each + 200 reserved)"
        );
    }
}
