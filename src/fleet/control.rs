//! Live control of a run's traffic: pause and resume publishing, and change the publish rate
//! in steps (the dashboard's `p`, `+` and `-`).
//!
//! The controller publishes the current [`Control`] on a watch channel that every device reads
//! (one `changed()` branch in its loop, nothing per message) and logs each change with its
//! time, so the report says when the traffic was not what the scenario planned. Connections
//! stay up while paused; messages whose time falls in a pause are not owed afterwards (a paused
//! fleet is quiet, not backlogged), so a pause is never counted as loss.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One `+`/`-` step, in percent of the scenario's planned rate.
pub const RATE_STEP_PERCENT: u32 = 10;
/// The lowest rate `-` reaches (a zero rate would be a pause by another name).
pub const MIN_RATE_PERCENT: u32 = 10;
/// The highest rate `+` reaches.
pub const MAX_RATE_PERCENT: u32 = 1000;

/// What the devices obey now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Control {
    /// Publishing is paused (sessions stay connected).
    pub paused: bool,
    /// Publish rate in percent of each group's planned rate (rate "max" groups ignore it).
    pub rate_percent: u32,
}

impl Default for Control {
    fn default() -> Control {
        Control {
            paused: false,
            rate_percent: 100,
        }
    }
}

impl Control {
    /// `rate` (messages per second) scaled to this control's percentage.
    pub fn scale(self, rate: f64) -> f64 {
        rate * f64::from(self.rate_percent) / 100.0
    }
}

/// What a [`ControlEvent`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    /// Publishing paused.
    Pause,
    /// Publishing resumed.
    Resume,
    /// The rate changed by a step.
    Rate,
}

/// A change of the traffic during the run, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlEvent {
    /// Seconds since the run started.
    pub t: f64,
    /// What changed.
    pub action: ControlAction,
    /// The rate in force after the change, in percent of the plan.
    pub rate_percent: u32,
}

/// Owns the current [`Control`] and the log of changes. Shared by the UI (which changes it)
/// and the runner (which hands receivers to devices and the log to the report).
pub struct Controller {
    tx: watch::Sender<Control>,
    log: Mutex<Vec<(Instant, ControlAction, u32)>>,
}

impl Default for Controller {
    fn default() -> Controller {
        Controller {
            tx: watch::Sender::new(Control::default()),
            log: Mutex::new(Vec::new()),
        }
    }
}

impl Controller {
    /// A receiver for a device.
    pub fn subscribe(&self) -> watch::Receiver<Control> {
        self.tx.subscribe()
    }

    /// What is in force now.
    pub fn current(&self) -> Control {
        *self.tx.borrow()
    }

    /// Pauses publishing, or resumes it; returns the new state.
    pub fn toggle_pause(&self) -> Control {
        self.change(|c| c.paused = !c.paused)
    }

    /// Raises (`up`) or lowers the rate by one step, within its bounds; returns the new state.
    pub fn step(&self, up: bool) -> Control {
        self.change(|c| {
            c.rate_percent = if up {
                (c.rate_percent + RATE_STEP_PERCENT).min(MAX_RATE_PERCENT)
            } else {
                c.rate_percent
                    .saturating_sub(RATE_STEP_PERCENT)
                    .max(MIN_RATE_PERCENT)
            }
        })
    }

    /// The changes so far, timed from `started` (the run's start).
    pub fn events(&self, started: Instant) -> Vec<ControlEvent> {
        self.log
            .lock()
            .expect("control log lock")
            .iter()
            .map(|&(at, action, rate_percent)| ControlEvent {
                t: (at.saturating_duration_since(started).as_secs_f64() * 1000.0).round() / 1000.0,
                action,
                rate_percent,
            })
            .collect()
    }

    fn change(&self, f: impl FnOnce(&mut Control)) -> Control {
        let before = self.current();
        let mut after = before;
        f(&mut after);
        if after != before {
            let action = match (before.paused, after.paused) {
                (false, true) => ControlAction::Pause,
                (true, false) => ControlAction::Resume,
                _ => ControlAction::Rate,
            };
            self.log.lock().expect("control log lock").push((
                Instant::now(),
                action,
                after.rate_percent,
            ));
            self.tx.send_replace(after);
        }
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_bounded_and_logged_with_their_time() {
        let started = Instant::now();
        let c = Controller::default();
        let rx = c.subscribe();
        assert_eq!(c.step(true).rate_percent, 110);
        assert!(c.toggle_pause().paused);
        assert!(rx.has_changed().unwrap());
        assert!(!c.toggle_pause().paused);
        for _ in 0..20 {
            c.step(false);
        }
        assert_eq!(c.current().rate_percent, MIN_RATE_PERCENT);
        for _ in 0..200 {
            c.step(true);
        }
        assert_eq!(c.current().rate_percent, MAX_RATE_PERCENT);
        let events = c.events(started);
        let actions: Vec<_> = events.iter().take(3).map(|e| e.action).collect();
        use ControlAction::*;
        assert_eq!(actions, [Rate, Pause, Resume]);
        // Steps that change nothing (at a bound) are not events.
        assert_eq!(events.len(), 3 + 10 + 99);
        assert!(events.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(Control::default().scale(50.0), 50.0);
        assert_eq!(c.current().scale(2.0), 20.0);
    }
}
