//! Shards: one run's fleet split across processes or machines (`run --shard i/N`), each shard
//! running a disjoint, deterministic slice of every group's devices.
//!
//! Why strided slices (device `k` of a group belongs to shard `k mod N`) rather than
//! contiguous ranges: a device keeps its index, so its identity in the cache, its client ID
//! (`{index}`), its connect due time (`pacer.due(k)`) and its traffic phase are exactly those
//! of the unsharded run; and because every shard owns devices spread over the whole ramp, all
//! shards ramp together at `rate / N` each, end their ramp together and open their traffic
//! windows together, so shard timelines line up on run-relative seconds and the merged
//! connect rate is the plan's. With contiguous ranges, shard `N-1` would sit idle until its
//! part of the ramp came due and its traffic window would start later than shard 0's.
//!
//! Shard indices are 0-based (`0/4` .. `3/4`), like Kubernetes' `JOB_COMPLETION_INDEX`.

use std::fmt;
use std::str::FromStr;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::fleet::control::{Control, Controller, MAX_RATE_PERCENT, RATE_STEP_PERCENT};
use crate::stats::{Counts, Distribution, ErrorRow, MessageLatency, Percentiles, Phase, Snapshot};

/// Largest shard count accepted (far beyond any fleet a single broker test needs).
pub const MAX_SHARDS: u32 = 10_000;

/// Which shard of how many this process runs. `0/1` is the whole fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based shard index, `< count`.
    pub index: u32,
    /// Number of shards the fleet is split into (>= 1).
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard::WHOLE
    }
}

/// `--shard` could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--shard {value:?}: {why} (expected i/N with 0 <= i < N <= {MAX_SHARDS}, 0-based, e.g. 0/4)"
)]
pub struct ShardError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Shard {
    /// The whole fleet in one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Whether this is a real split (more than one shard).
    pub fn is_split(&self) -> bool {
        self.count > 1
    }

    /// The slice of a group of `devices` devices this shard runs.
    pub fn slice(&self, devices: u64) -> Slice {
        let (i, n) = (u64::from(self.index), u64::from(self.count));
        let count = if devices > i {
            (devices - i).div_ceil(n)
        } else {
            0
        };
        Slice {
            first: i,
            step: n,
            count,
        }
    }

    /// Whether device `k` of a group belongs to this shard.
    pub fn owns(&self, k: u64) -> bool {
        k % u64::from(self.count) == u64::from(self.index)
    }

    /// A per-group cap (like `max_in_flight`) split over the shards, so the shards together
    /// keep the plan's cap (at least 1 each).
    pub fn share(&self, cap: usize) -> usize {
        cap.div_ceil(self.count as usize).max(1)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let err = |why| ShardError {
            value: s.to_string(),
            why,
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(|| err("no '/'"))?;
        let index: u32 = i.trim().parse().map_err(|_| err("i is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| err("N is not a number"))?;
        if count == 0 || count > MAX_SHARDS {
            return Err(err("N out of range"));
        }
        if index >= count {
            return Err(err("i must be below N (shards are 0-based)"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Device indices `first, first + step, ...` (`count` of them) of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// First device index.
    pub first: u64,
    /// Distance between consecutive indices (the shard count).
    pub step: u64,
    /// How many devices.
    pub count: u64,
}

impl Slice {
    /// The device indices, in order.
    pub fn indices(&self) -> impl Iterator<Item = u64> {
        let (first, step) = (self.first, self.step.max(1));
        (0..self.count).map(move |j| first + j * step)
    }
}

/// What a shard's report records about its part: which shard, and per group the device
/// indices it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// 0-based shard index.
    pub index: u32,
    /// Shard count.
    pub count: u32,
    /// Per group, in plan order.
    pub groups: Vec<GroupSlice>,
}

/// One group's devices in a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSlice {
    /// Group name.
    pub group: String,
    /// Device indices `first + j * step`, `j < count`.
    #[serde(flatten)]
    pub slice: Slice,
    /// A subscriber group's loss inputs: the merge settles loss across shards from these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<crate::stats::sequence::LossLedger>,
}

impl ShardInfo {
    /// The record for `shard` of a plan with these `(group name, devices, loss ledger)`.
    pub fn of<'a>(
        shard: Shard,
        groups: impl IntoIterator<Item = (&'a str, u64, Option<crate::stats::sequence::LossLedger>)>,
    ) -> ShardInfo {
        ShardInfo {
            index: shard.index,
            count: shard.count,
            groups: groups
                .into_iter()
                .map(|(name, devices, loss)| GroupSlice {
                    group: name.to_string(),
                    slice: shard.slice(devices),
                    loss,
                })
                .collect(),
        }
    }
}

/// What a merged report records about the shards it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeInfo {
    /// Shard count of the run.
    pub count: u32,
    /// Shards merged, by index.
    pub shards: Vec<u32>,
    /// Shards missing (then the report is partial and `interrupted`).
    pub missing: Vec<u32>,
}

/// What a shard report's figures cover, stated in its `definitions`.
pub const DEFINITION: &str = "this report covers one shard of a split run: devices k with k mod count = index of each group (same identities, client IDs and schedules as the whole run); planned and counted figures are this shard's; sequence loss is settled against this shard's publishers only (groups[].loss in `shard` lets the merge settle it across shards); SLOs are recorded but judged on the merge (a shard exits 0 whatever they say)";

/// Prefix of the machine-readable snapshot lines a `--processes` child prints on stdout.
pub const SNAPSHOT_PREFIX: &str = "snapshot ";

/// A `--processes` child's live view for its parent: one `snapshot <JSON>` line per second on
/// stdout (the parent aggregates them with [`aggregate`] for its progress lines or dashboard).
/// The run's final snapshot follows with [`snapshot_line`] once the fleet has ended, so the
/// parent's last aggregate (and final push) holds the same totals as the merged report.
pub async fn snapshot_lines(mut rx: watch::Receiver<Arc<Snapshot>>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.tick().await;
    loop {
        every.tick().await;
        let s = rx.borrow_and_update().clone();
        snapshot_line(&s);
    }
}

/// Prints one `snapshot <JSON>` line of `s` on stdout.
pub fn snapshot_line(s: &Snapshot) {
    use std::io::Write as _;
    let Ok(json) = serde_json::to_string(s) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    // A parent that went away is not this child's problem: the report still gets written.
    let _ = writeln!(out, "{SNAPSHOT_PREFIX}{json}");
    let _ = out.flush();
}

/// Prefix of the control lines a `--processes` parent writes to its children's stdin when its
/// dashboard's pause and rate keys change the traffic.
pub const CONTROL_PREFIX: &str = "control ";

/// The line a parent sends for `c`: `control paused=false rate=110`.
pub fn control_line(c: Control) -> String {
    format!(
        "{CONTROL_PREFIX}paused={} rate={}\n",
        c.paused, c.rate_percent
    )
}

/// The control a [`control_line`] carries.
pub fn parse_control_line(line: &str) -> Option<Control> {
    let rest = line.trim().strip_prefix(CONTROL_PREFIX)?;
    let (mut paused, mut rate) = (None, None);
    for field in rest.split_whitespace() {
        match field.split_once('=')? {
            ("paused", v) => paused = v.parse().ok(),
            ("rate", v) => rate = v.parse().ok(),
            _ => return None,
        }
    }
    Some(Control {
        paused: paused?,
        rate_percent: rate?,
    })
}

/// A `--processes` child: applies the parent's control lines from stdin to `control` (by
/// the same toggles and steps the keys make, so the child's report logs them) until stdin
/// closes.
pub async fn follow_control(control: Arc<Controller>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(want) = parse_control_line(&line) else {
            continue;
        };
        if control.current().paused != want.paused {
            control.toggle_pause();
        }
        // Bounded: the rate moves one step per iteration within MIN..=MAX.
        for _ in 0..(MAX_RATE_PERCENT / RATE_STEP_PERCENT) {
            let now = control.current().rate_percent;
            if now == want.rate_percent || control.step(want.rate_percent > now).rate_percent == now
            {
                break;
            }
        }
    }
}

/// The line's snapshot, when it is a [`snapshot_lines`] line.
pub fn parse_snapshot_line(line: &str) -> Option<Snapshot> {
    serde_json::from_str(line.strip_prefix(SNAPSHOT_PREFIX)?).ok()
}

fn phase_rank(p: Phase) -> u8 {
    match p {
        Phase::Ramp => 0,
        Phase::Hold => 1,
        Phase::Drain => 2,
        Phase::Done => 3,
    }
}

fn worst_latency(a: MessageLatency, b: MessageLatency) -> MessageLatency {
    MessageLatency {
        ack: Percentiles::upper_bound(a.ack, b.ack),
        ack_corrected: Percentiles::upper_bound(a.ack_corrected, b.ack_corrected),
        e2e_corrected: Percentiles::upper_bound(a.e2e_corrected, b.e2e_corrected),
        e2e_uncorrected: Percentiles::upper_bound(a.e2e_uncorrected, b.e2e_uncorrected),
    }
}

fn sum_distribution(a: Distribution, b: &Distribution) -> Distribution {
    let mut d = a;
    for (x, y) in d.0.iter_mut().zip(b.0) {
        *x += y;
    }
    d
}

/// The fleet-wide live view from the shards' latest snapshots: counters, gauges, rates, error
/// counts and distributions summed (exact); the phase is the least advanced shard's; latency
/// percentiles are the worst shard's (an upper bound: the live lines carry percentiles, not
/// histograms; the merged report's percentiles are exact).
pub fn aggregate(parts: &[Snapshot]) -> Snapshot {
    let mut all = Snapshot {
        phase: parts
            .iter()
            .map(|p| p.phase)
            .min_by_key(|p| phase_rank(*p))
            .unwrap_or_default(),
        ..Snapshot::default()
    };
    let mut errors: BTreeMap<String, ErrorRow> = BTreeMap::new();
    for p in parts {
        all.elapsed = all.elapsed.max(p.elapsed);
        all.planned += p.planned;
        all.totals += p.totals;
        if all.groups.len() < p.groups.len() {
            all.groups.resize(p.groups.len(), Counts::default());
        }
        for (g, c) in all.groups.iter_mut().zip(&p.groups) {
            *g += *c;
        }
        all.connects_per_s += p.connects_per_s;
        all.connect_interval = Percentiles::upper_bound(all.connect_interval, p.connect_interval);
        all.connect_total = Percentiles::upper_bound(all.connect_total, p.connect_total);
        all.rates.sent_per_s += p.rates.sent_per_s;
        all.rates.acked_per_s += p.rates.acked_per_s;
        all.rates.delivered_per_s += p.rates.delivered_per_s;
        all.rates.delivered_bytes_per_s += p.rates.delivered_bytes_per_s;
        all.rates.sent_bytes_per_s += p.rates.sent_bytes_per_s;
        all.latency_interval = worst_latency(all.latency_interval, p.latency_interval);
        all.latency_total = worst_latency(all.latency_total, p.latency_total);
        for e in &p.errors {
            errors
                .entry(e.class.clone())
                .and_modify(|r| r.count += e.count)
                .or_insert_with(|| e.clone());
        }
        let d = &mut all.distribution;
        d.connect = sum_distribution(d.connect, &p.distribution.connect);
        d.ack = sum_distribution(d.ack, &p.distribution.ack);
        d.e2e_corrected = sum_distribution(d.e2e_corrected, &p.distribution.e2e_corrected);
        d.e2e_uncorrected = sum_distribution(d.e2e_uncorrected, &p.distribution.e2e_uncorrected);
    }
    all.errors = errors.into_values().collect();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("0/1".parse(), Ok(Shard::WHOLE));
        assert_eq!("3/4".parse(), Ok(Shard { index: 3, count: 4 }));
        for bad in ["4/4", "1", "a/2", "1/b", "0/0", "-1/2", "0/10001", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.to_string().contains("expected i/N"), "{e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn aggregate_sums_counters_and_keeps_the_worst_latency() {
        let mut a = Snapshot {
            planned: 5,
            phase: Phase::Hold,
            groups: vec![Counts {
                connected: 5,
                ..Counts::default()
            }],
            connects_per_s: 10.0,
            ..Snapshot::default()
        };
        a.totals.connected = 5;
        a.connect_total = Percentiles {
            count: 5,
            p99: 900,
            ..Percentiles::default()
        };
        a.distribution.connect.0[3] = 5;
        a.errors.push(ErrorRow {
            class: "tls: unknown CA".into(),
            count: 2,
            example: "x".into(),
        });
        let mut b = a.clone();
        b.phase = Phase::Ramp;
        b.connect_total.p99 = 2_000;
        b.elapsed = std::time::Duration::from_secs(3);
        // A line survives the trip through a child's stdout.
        let line = format!("{SNAPSHOT_PREFIX}{}", serde_json::to_string(&b).unwrap());
        let b = parse_snapshot_line(&line).unwrap();
        assert!(parse_snapshot_line("  connected 3/3").is_none());
        let all = aggregate(&[a, b]);
        assert_eq!((all.planned, all.totals.connected), (10, 10));
        assert_eq!(all.groups[0].connected, 10);
        assert_eq!(all.connects_per_s, 20.0);
        assert_eq!(all.phase, Phase::Ramp, "the least advanced shard's phase");
        assert_eq!(all.elapsed, std::time::Duration::from_secs(3));
        assert_eq!(
            (all.connect_total.count, all.connect_total.p99),
            (10, 2_000)
        );
        assert_eq!(all.distribution.connect.0[3], 10);
        assert_eq!(all.errors.len(), 1);
        assert_eq!(all.errors[0].count, 4);
    }

    #[test]
    fn control_lines_round_trip() {
        let c = Control {
            paused: true,
            rate_percent: 130,
        };
        assert_eq!(parse_control_line(&control_line(c)), Some(c));
        assert_eq!(parse_control_line("control paused=maybe rate=1"), None);
        assert_eq!(parse_control_line("snapshot {}"), None);
    }

    #[test]
    fn slices_are_strided() {
        let s = Shard { index: 1, count: 3 }.slice(8);
        assert_eq!(s.indices().collect::<Vec<_>>(), [1, 4, 7]);
        assert_eq!(Shard { index: 5, count: 8 }.slice(3).count, 0);
        assert_eq!(Shard { index: 0, count: 3 }.share(10), 4);
        assert_eq!(
            Shard {
                index: 0,
                count: 30
            }
            .share(10),
            1
        );
    }
}
