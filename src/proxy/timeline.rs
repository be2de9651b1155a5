//! Plays a scenario's `[[fault]]` timeline on a proxy during a run, and records what was
//! injected when, for the report's timeline.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::{Delay, Proxy};
use crate::scenario::faults::{FaultAction, FaultPlan};

/// A fault as injected, for the report (`faults`, beside the once-per-second timeline).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct FaultEvent {
    /// Seconds since the run started (the timeline's origin).
    pub t: f64,
    /// What was injected, e.g. `stall 1s`.
    pub fault: String,
    /// Connections affected (resets), when it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
}

/// Injects each fault at `origin + at` until `stop`; returns the events injected.
pub async fn play(
    proxy: Arc<Proxy>,
    faults: Vec<FaultPlan>,
    origin: Instant,
    stop: CancellationToken,
) -> Vec<FaultEvent> {
    let mut events = Vec::with_capacity(faults.len());
    for f in faults {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(origin + f.at) => {}
        }
        let connections = match f.action {
            FaultAction::Stall(d) => {
                proxy.stall(d);
                None
            }
            FaultAction::Delay { fixed, jitter } => {
                let d = Delay { fixed, jitter };
                proxy.set_delay(d, d);
                None
            }
            FaultAction::Reset(x) => Some(proxy.reset(x)),
            FaultAction::Bandwidth(b) => {
                proxy.set_bandwidth(b);
                None
            }
        };
        events.push(FaultEvent {
            t: round_ms(origin.elapsed()),
            fault: f.action.to_string(),
            connections,
        });
    }
    events
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyConfig;
    use std::sync::atomic::Ordering::Relaxed;

    #[tokio::test(start_paused = true)]
    async fn faults_fire_at_their_times_in_order() {
        let proxy = Arc::new(
            Proxy::start(ProxyConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream: "127.0.0.1:9".parse().unwrap(),
                up: Delay::default(),
                down: Delay::default(),
                bandwidth: None,
                seed: 0,
            })
            .await
            .unwrap(),
        );
        let s = Duration::from_secs;
        let plan = vec![
            FaultPlan {
                at: s(1),
                action: FaultAction::Stall(s(1)),
            },
            FaultPlan {
                at: s(3),
                action: FaultAction::Reset(1.0),
            },
            FaultPlan {
                at: s(4),
                action: FaultAction::Bandwidth(Some(1000)),
            },
        ];
        let origin = Instant::now();
        let events = play(proxy.clone(), plan, origin, CancellationToken::new()).await;
        assert_eq!(events.len(), 3);
        assert_eq!((events[0].t, events[0].fault.as_str()), (1.0, "stall 1s"));
        assert_eq!((events[1].t, events[1].connections), (3.0, Some(0)));
        assert_eq!(
            (events[2].t, events[2].fault.as_str()),
            (4.0, "bandwidth 1000 B/s")
        );
        assert_eq!(proxy.shared.bandwidth.load(Relaxed), 1000);
    }
}
