//! Loss, duplicates and reordering, per publisher, from the sequence numbers subscribers see.
//!
//! Each subscriber keeps one [`SequenceTracker`]; a received message's header gives its
//! publisher and sequence number (see `traffic::payload::Header`). A bitmap per publisher
//! records which sequence numbers arrived, so duplicates are exact (not guessed from order),
//! and loss is settled at the end against what each publisher says it sent: a message is lost
//! when it was sent after the subscription began and never arrived. The bitmap grows by whole
//! words as sequence numbers rise (amortised, never per message).

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
    /// First sequence number received: earlier ones were sent before this subscriber listened.
    first: Option<u64>,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SequenceTotals {
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages that arrived after a later one of the same publisher.
    pub reordered: u64,
    /// Messages sent after this subscriber's first receipt from that publisher that never
    /// arrived.
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
        s.first = Some(s.first.map_or(seq, |f| f.min(seq)));
        if seq + 1 >= s.next {
            s.next = seq + 1;
            Arrival::InOrder
        } else {
            s.reordered += 1;
            Arrival::Reordered
        }
    }

    /// Settles the counts: `sent(publisher)` is how many messages that publisher sent in all
    /// (sequence numbers `0..sent`). Publishers never heard from count nothing as lost here:
    /// whether this subscriber should have heard them is the caller's knowledge.
    pub fn totals(&self, sent: impl Fn(u32) -> u64) -> SequenceTotals {
        let mut t = SequenceTotals::default();
        for (p, s) in self.publishers.iter().enumerate() {
            t.unique += s.unique;
            t.duplicates += s.duplicates;
            t.reordered += s.reordered;
            if let Some(first) = s.first {
                let expected = sent(p as u32).saturating_sub(first);
                t.lost += expected.saturating_sub(s.unique);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_reordering_and_loss() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.record(0, 0), Arrival::InOrder);
        assert_eq!(t.record(0, 2), Arrival::InOrder); // 1 is late
        assert_eq!(t.record(0, 1), Arrival::Reordered);
        assert_eq!(t.record(0, 1), Arrival::Duplicate);
        assert_eq!(t.record(0, 200), Arrival::InOrder);
        assert_eq!(t.record(3, 5), Arrival::InOrder); // joined late: 0..5 not expected
        let totals = t.totals(|p| if p == 0 { 300 } else { 10 });
        assert_eq!(totals.unique, 5);
        assert_eq!(totals.duplicates, 1);
        assert_eq!(totals.reordered, 1);
        // publisher 0: 300 sent, 4 unique -> 296 lost; publisher 3: 10 - 5 = 5 expected, 1 seen.
        assert_eq!(totals.lost, 296 + 4);
    }

    #[test]
    fn everything_delivered_means_no_loss() {
        let mut t = SequenceTracker::default();
        for seq in 0..10_000 {
            for p in 0..3 {
                assert_eq!(t.record(p, seq), Arrival::InOrder);
            }
        }
        let totals = t.totals(|_| 10_000);
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
