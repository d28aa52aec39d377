//! The accounting behind the report: a mergeable histogram for percentiles, the
//! check of each stream's `num` sequence for gaps and repeats, and the same check for a
//! stream of several channels (ids in one order, a count per channel).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Values below this are kept exactly; above it each power of two is cut into
/// `SUB_BUCKETS` buckets, so a percentile is at most 1/64 (1.6 %) above the true value.
const EXACT: u64 = 128;
const SUB_BUCKETS: u64 = 64;
const SUB_BITS: u32 = 6;

/// A log-linear histogram of `u64` values (microseconds here), in the spirit of
/// HdrHistogram: fixed relative precision, cheap to record into, and mergeable across
/// worker processes by adding counts, which raw samples would make heavy in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Counts by bucket index; trailing empty buckets are not stored.
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    fn index(v: u64) -> usize {
        if v < EXACT {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = (v >> shift) - SUB_BUCKETS;
        (EXACT + u64::from(shift - 1) * SUB_BUCKETS + sub) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT {
            return i;
        }
        let shift = (i - EXACT) / SUB_BUCKETS + 1;
        let sub = (i - EXACT) % SUB_BUCKETS + SUB_BUCKETS;
        // In u128: the top bucket's edge is 2^64 - 1, one past what u64 arithmetic holds.
        let edge = (u128::from(sub + 1) << shift) - 1;
        u64::try_from(edge).unwrap_or(u64::MAX)
    }

    pub fn record(&mut self, v: u64) {
        let i = Self::index(v);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += u128::from(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        if self.count == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at percentile `p` (0–100) by the nearest-rank method: the smallest
    /// recorded value such that at least `p` % of values are at or below it, reported
    /// as its bucket's upper edge but never above the true maximum. `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max).max(self.min));
            }
        }
        Some(self.max)
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            p50: self.percentile(50.0),
            p99: self.percentile(99.0),
            max: (self.count > 0).then_some(self.max),
            mean: (self.count > 0).then(|| (self.sum / u128::from(self.count)) as u64),
        }
    }
}

/// What the report shows of a histogram.
/// Its fields are all required (`null` when the histogram is empty) and no others are
/// accepted: see [`crate::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub count: u64,
    #[serde(deserialize_with = "Option::deserialize")]
    pub p50: Option<u64>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub p99: Option<u64>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub max: Option<u64>,
    #[serde(deserialize_with = "Option::deserialize")]
    pub mean: Option<u64>,
}

/// Checks one stream's `num` values: each should be one more than the last, starting
/// at 1 (or, for a stream that joins a count already under way, at whatever comes
/// first). A jump forward counts the missing numbers as gaps; a number at or below the
/// last counts as one repeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqCheck {
    last: u64,
    /// Whether the next number is taken as the start, not checked against `last`.
    starting: bool,
    pub gaps: u64,
    pub repeats: u64,
}

impl SeqCheck {
    /// A count that starts at 1: a per-client counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A count joined mid-way: the first number seen is the start (a subscriber of the
    /// shared counter).
    pub fn from_first() -> Self {
        SeqCheck {
            starting: true,
            ..Self::default()
        }
    }

    /// The count goes on from `num`, whatever came before (the server said so: a reset).
    pub fn restart_at(&mut self, num: u64) {
        self.last = num;
        self.starting = false;
    }

    pub fn observe(&mut self, num: u64) {
        if self.starting {
            self.restart_at(num);
            return;
        }
        if num <= self.last {
            self.repeats += 1;
            return;
        }
        self.gaps += num - self.last - 1;
        self.last = num;
    }

    pub fn last(&self) -> u64 {
        self.last
    }
}

/// Checks one `/api/events` stream: the seqs of its ids (`<epoch>-<seq>`) must rise
/// (they are the store's one order, not consecutive when several channels are
/// published), and on each channel the publisher's own count `n` must go up by one,
/// counted from the first event the stream sees on that channel. An event that breaks
/// either rule is one repeat (never two); the numbers skipped on a channel are gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelCheck {
    /// The epoch and seq of the last id, when there was one.
    last_id: Option<(String, u64)>,
    per_channel: HashMap<String, SeqCheck>,
    pub gaps: u64,
    pub repeats: u64,
}

impl ChannelCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// One event: its id's epoch and seq, its channel and its `n`.
    pub fn observe(&mut self, epoch: &str, seq: u64, channel: &str, n: u64) {
        let out_of_order = self
            .last_id
            .as_ref()
            .is_some_and(|(e, last)| e == epoch && seq <= *last);
        if self.last_id.as_ref().is_none_or(|(e, _)| e != epoch) {
            self.last_id = Some((epoch.to_owned(), seq));
        } else if let Some((_, last)) = &mut self.last_id {
            *last = (*last).max(seq);
        }
        let check = self
            .per_channel
            .entry(channel.to_owned())
            .or_insert_with(SeqCheck::from_first);
        let (gaps, repeats) = (check.gaps, check.repeats);
        check.observe(n);
        self.gaps += check.gaps - gaps;
        if out_of_order || check.repeats > repeats {
            self.repeats += 1;
        }
    }

    /// The server said it could not continue these channels (a `reset`): their counts
    /// start again from the next event seen on each.
    pub fn reset<'a>(&mut self, channels: impl IntoIterator<Item = &'a str>) {
        for c in channels {
            self.per_channel.remove(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_count_from_their_first_event_and_ids_only_rise() {
        let mut c = ChannelCheck::new();
        // Two channels interleaved: seqs rise but skip, each channel's n is consecutive.
        c.observe("e", 3, "a", 10);
        c.observe("e", 5, "b", 1);
        c.observe("e", 9, "a", 11);
        c.observe("e", 12, "b", 2);
        assert_eq!((c.gaps, c.repeats), (0, 0));
        // A lost event on `a` (n 12 missing) is one gap.
        c.observe("e", 20, "a", 13);
        assert_eq!((c.gaps, c.repeats), (1, 0));
        // The same event twice is one repeat, however many rules it breaks.
        c.observe("e", 20, "a", 13);
        assert_eq!((c.gaps, c.repeats), (1, 1));
        // An id going back with a fresh n is still a repeat.
        c.observe("e", 19, "b", 3);
        assert_eq!((c.gaps, c.repeats), (1, 2));
    }

    #[test]
    fn a_reset_or_a_new_epoch_starts_the_checks_again() {
        let mut c = ChannelCheck::new();
        c.observe("e", 7, "a", 5);
        c.reset(["a"]);
        c.observe("e", 8, "a", 1);
        assert_eq!((c.gaps, c.repeats), (0, 0));
        // Another epoch's seqs start over: not a repeat.
        c.observe("f", 1, "a", 2);
        assert_eq!((c.gaps, c.repeats), (0, 0));
        c.observe("f", 2, "a", 4);
        assert_eq!((c.gaps, c.repeats), (1, 0));
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(0.0), Some(1));
        let s = h.summary();
        assert_eq!((s.count, s.max, s.mean), (100, Some(100), Some(50)));
    }

    #[test]
    fn large_values_are_within_the_precision() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for (p, want) in [(50.0, 500_000.0), (99.0, 990_000.0), (99.9, 999_000.0)] {
            let got = h.percentile(p).unwrap() as f64;
            assert!(
                got >= want && got <= want * (1.0 + 1.0 / 64.0),
                "p{p}: got {got}, want about {want}"
            );
        }
        assert_eq!(h.percentile(100.0), Some(1_000_000));
    }

    #[test]
    fn every_bucket_holds_its_own_values() {
        for v in (0..20u32)
            .flat_map(|s| [1u64 << s, (1u64 << s) + 1, (3u64 << s) - 1])
            .chain([u64::MAX, u64::MAX / 3])
        {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v, "{v} above its bucket's edge");
            if i > 0 {
                assert!(Histogram::upper(i - 1) < v, "{v} fits the bucket below");
            }
        }
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..5_000u64 {
            let v = v * v % 70_001;
            if v % 3 == 0 { &mut a } else { &mut b }.record(v);
            all.record(v);
        }
        let mut merged = Histogram::new();
        merged.merge(&b);
        merged.merge(&Histogram::new());
        merged.merge(&a);
        assert_eq!(merged, all);
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.summary().max, None);
    }

    #[test]
    fn a_clean_sequence_has_no_gaps_or_repeats() {
        let mut s = SeqCheck::new();
        (1..=10).for_each(|n| s.observe(n));
        assert_eq!((s.gaps, s.repeats, s.last()), (0, 0, 10));
    }

    #[test]
    fn jumps_count_each_missing_number() {
        let mut s = SeqCheck::new();
        for n in [2, 3, 7, 8] {
            s.observe(n);
        }
        // 1 is missing before 2, then 4, 5 and 6.
        assert_eq!((s.gaps, s.repeats), (4, 0));
    }

    #[test]
    fn a_count_joined_mid_way_starts_at_the_first_number_seen() {
        let mut s = SeqCheck::from_first();
        for n in [41, 42, 44, 44] {
            s.observe(n);
        }
        assert_eq!((s.gaps, s.repeats, s.last()), (1, 1, 44));
        s.restart_at(100);
        s.observe(101);
        assert_eq!((s.gaps, s.repeats, s.last()), (1, 1, 101));
    }

    #[test]
    fn going_back_counts_repeats_and_keeps_the_high_mark() {
        let mut s = SeqCheck::new();
        for n in [1, 2, 2, 1, 3] {
            s.observe(n);
        }
        assert_eq!((s.gaps, s.repeats, s.last()), (0, 2, 3));
    }
}
