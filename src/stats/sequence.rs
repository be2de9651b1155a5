//! Loss, duplicates and reordering, per publisher, from the sequence numbers subscribers see.
//!
//! Each subscriber keeps one [`SequenceTracker`]; a received message's header gives its
//! publisher and sequence number (see `traffic::payload::Header`). A bitmap per publisher
//! records which sequence numbers arrived, so duplicates are exact (not guessed from order),
//! and loss is settled at the end against what each publisher the subscriber should hear
//! says it sent (subscriptions are made before any traffic starts, so every message of a
//! matching publisher is expected). The bitmap grows by whole words as sequence numbers rise
//! (amortised, never per message).

/// One subscriber's view of every publisher it hears from.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    publishers: Vec<PublisherSeen>,
}

#[derive(Debug, Default, Clone)]
struct PublisherSeen {
    /// Bit `seq` set when `seq` arrived.
    seen: Vec<u64>,
    /// Highest sequence number received, plus one (0: nothing yet).
    next: u64,
    unique: u64,
    duplicates: u64,
    reordered: u64,
}

/// What happened to one message on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected message, or one after a gap.
    InOrder,
    /// Earlier than one already received (it was overtaken), first time seen.
    Reordered,
    /// Already received.
    Duplicate,
}

/// Totals over publishers once the run is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SequenceTotals {
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages that arrived after a later one of the same publisher.
    pub reordered: u64,
    /// Messages of expected publishers that never arrived.
    pub lost: u64,
}

impl SequenceTracker {
    /// Records message `seq` of publisher `publisher`.
    pub fn record(&mut self, publisher: u32, seq: u64) -> Arrival {
        let p = publisher as usize;
        if p >= self.publishers.len() {
            self.publishers.resize(p + 1, PublisherSeen::default());
        }
        let s = &mut self.publishers[p];
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= s.seen.len() {
            s.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if s.seen[word] & bit != 0 {
            s.duplicates += 1;
            return Arrival::Duplicate;
        }
        s.seen[word] |= bit;
        s.unique += 1;
        if seq + 1 >= s.next {
            s.next = seq + 1;
            Arrival::InOrder
        } else {
            s.reordered += 1;
            Arrival::Reordered
        }
    }

    /// Adds another subscriber's view to this one, as if one subscriber had received both:
    /// a message both received is a duplicate. Members of a shared subscription are settled
    /// this way, since the broker hands each message to only one of them.
    pub fn absorb(&mut self, other: &SequenceTracker) {
        if other.publishers.len() > self.publishers.len() {
            self.publishers
                .resize(other.publishers.len(), PublisherSeen::default());
        }
        for (s, o) in self.publishers.iter_mut().zip(&other.publishers) {
            if o.seen.len() > s.seen.len() {
                s.seen.resize(o.seen.len(), 0);
            }
            let mut overlap = 0u64;
            for (a, b) in s.seen.iter_mut().zip(&o.seen) {
                overlap += u64::from((*a & *b).count_ones());
                *a |= *b;
            }
            s.unique = s.unique + o.unique - overlap;
            s.duplicates += o.duplicates + overlap;
            s.reordered += o.reordered;
            s.next = s.next.max(o.next);
        }
    }

    /// Settles the counts. `expected` lists the publishers this subscriber should hear, with
    /// how many messages each sent (sequence numbers `0..sent`).
    pub fn totals(&self, expected: &[(u32, u64)]) -> SequenceTotals {
        let mut t = SequenceTotals::default();
        for s in &self.publishers {
            t.unique += s.unique;
            t.duplicates += s.duplicates;
            t.reordered += s.reordered;
        }
        for &(p, sent) in expected {
            let heard = self.publishers.get(p as usize).map_or(0, |s| s.unique);
            t.lost += sent.saturating_sub(heard);
        }
        t
    }

    /// Distinct messages received from the `expected` publishers (for a [`LossLedger`]).
    pub fn heard(&self, expected: &[(u32, u64)]) -> u64 {
        expected
            .iter()
            .map(|&(p, _)| self.publishers.get(p as usize).map_or(0, |s| s.unique))
            .sum()
    }
}

/// One subscriber group's loss inputs in a shard report, so that a merge can settle loss
/// across shards: a shard knows what its own publishers sent and what its own subscribers
/// heard (from publishers of every shard), but not what other shards' publishers sent. Loss
/// is linear in both, so summing each over the shards and settling once is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LossLedger {
    /// Subscribers of the group in this shard (a shared subscription's members are one).
    pub subscribers: u64,
    /// Messages this shard's publishers sent on topics the group's filters match: each
    /// subscriber expects every one.
    pub sent_to_each: u64,
    /// Distinct messages the group's subscribers received from publishers they expect.
    pub heard: u64,
}

impl LossLedger {
    /// A group's loss over every shard's ledger. A `shared` group's members, in whichever
    /// shard, are one subscriber: the broker hands each message to one of them.
    pub fn settle(ledgers: &[LossLedger], shared: bool) -> u64 {
        let subscribers = match shared {
            true => u64::from(ledgers.iter().any(|l| l.subscribers > 0)),
            false => ledgers.iter().map(|l| l.subscribers).sum(),
        };
        let sent: u64 = ledgers.iter().map(|l| l.sent_to_each).sum();
        let heard: u64 = ledgers.iter().map(|l| l.heard).sum();
        (subscribers * sent).saturating_sub(heard)
    }
}

impl std::ops::AddAssign for SequenceTotals {
    fn add_assign(&mut self, o: SequenceTotals) {
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.lost += o.lost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledgers_settle_across_shards_as_one_process_would() {
        // Publishers 0 (shard 0) and 1 (shard 1) sent 10 each; subscribers A (shard 0) and
        // B (shard 1) expect both. A heard 0..10 of each, B 0..7 of publisher 0 and 0..10 of 1.
        let (mut a, mut b) = (SequenceTracker::default(), SequenceTracker::default());
        for seq in 0..10 {
            a.record(0, seq);
            a.record(1, seq);
            b.record(1, seq);
        }
        for seq in 0..7 {
            b.record(0, seq);
        }
        let whole = [(0, 10), (1, 10)];
        let one_process = a.totals(&whole).lost + b.totals(&whole).lost;
        assert_eq!(one_process, 3);
        // Each shard knows only its own publisher's sent count.
        let (in_0, in_1) = ([(0, 10), (1, 0)], [(0, 0), (1, 10)]);
        let shard = |t: &SequenceTracker, own: &[(u32, u64)]| LossLedger {
            subscribers: 1,
            sent_to_each: own.iter().map(|&(_, n)| n).sum(),
            heard: t.heard(&whole),
        };
        let ledgers = [shard(&a, &in_0), shard(&b, &in_1)];
        // What each shard settles alone: A misses nothing it knows of, B misses 0..7 of 1's 0.
        assert_eq!(a.totals(&in_0).lost + b.totals(&in_1).lost, 0);
        assert_eq!(LossLedger::settle(&ledgers, false), one_process);
        // As one share: 20 expected once, 20 distinct heard in all (here, with copies).
        assert_eq!(LossLedger::settle(&ledgers, true), 0);
    }

    #[test]
    fn counts_duplicates_reordering_and_loss() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.record(0, 0), Arrival::InOrder);
        assert_eq!(t.record(0, 2), Arrival::InOrder); // 1 is late
        assert_eq!(t.record(0, 1), Arrival::Reordered);
        assert_eq!(t.record(0, 1), Arrival::Duplicate);
        assert_eq!(t.record(0, 200), Arrival::InOrder);
        assert_eq!(t.record(3, 5), Arrival::InOrder);
        // Publisher 7 was expected but never heard; publisher 3 was heard but not expected.
        let totals = t.totals(&[(0, 300), (7, 12)]);
        assert_eq!(totals.unique, 5);
        assert_eq!(totals.duplicates, 1);
        assert_eq!(totals.reordered, 1);
        // publisher 0: 300 sent, 4 unique -> 296 lost; publisher 7: all 12 lost.
        assert_eq!(totals.lost, 296 + 12);
    }

    #[test]
    fn members_of_a_share_are_settled_together() {
        // Publisher 0 sent 0..10: member a got the even ones, member b the odd ones and 4 again.
        let (mut a, mut b) = (SequenceTracker::default(), SequenceTracker::default());
        for seq in (0..10).step_by(2) {
            a.record(0, seq);
        }
        for seq in (1..10).step_by(2).chain([4]) {
            b.record(0, seq);
        }
        // Alone, each member would count the other's half as lost.
        assert_eq!(a.totals(&[(0, 10)]).lost, 5);
        a.absorb(&b);
        let t = a.totals(&[(0, 10)]);
        assert_eq!((t.unique, t.duplicates, t.lost), (10, 1, 0));
    }

    #[test]
    fn everything_delivered_means_no_loss() {
        let mut t = SequenceTracker::default();
        for seq in 0..10_000 {
            for p in 0..3 {
                assert_eq!(t.record(p, seq), Arrival::InOrder);
            }
        }
        let totals = t.totals(&[(0, 10_000), (1, 10_000), (2, 10_000)]);
        assert_eq!(
            totals,
            SequenceTotals {
                unique: 30_000,
                duplicates: 0,
                reordered: 0,
                lost: 0
            }
        );
    }
}
