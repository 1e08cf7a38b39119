//! The runtime's own time histograms (`runtime.timeHistogram`): the run-queue
//! latencies behind `runtime/metrics` `/sched/latencies:seconds`
//! (`sched.timeToRun`) and the stop-the-world pauses (`sched.stwTotalTime*`).
//! The runtime records them itself, at no cost to anyone watching; for run-queue
//! latency it samples about one goroutine transition in eight (`gTrackingPeriod`
//! in `runtime/proc.go`).
//!
//! Counts are kept here in the order `runtime/metrics` reports them (an underflow
//! bucket for negative durations first), with the bucket bounds computed exactly
//! as that Go version's `runtime/histogram.go` does.

use serde::Serialize;

use crate::stats::aggregate::{Bucket, quantile_bound};

/// How a Go version lays out a `timeHistogram`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramLayout {
    /// Go 1.19: `counts [45*16]uint64` + `underflow`; 16 linear sub-buckets per
    /// power of two from 16 ns, and the last bucket has no upper bound.
    SuperBuckets,
    /// Go 1.20+: `counts [40*4]` + `underflow` + `overflow`; one bucket below
    /// 512 ns, then 4 sub-buckets per power of two up to 2^47 ns, then overflow.
    SubBucketBits2,
}

/// Go 1.19 (`histogram.go`): timeHistSubBucketBits, timeHistNumSuperBuckets.
const GO119_SUB_BUCKET_BITS: u32 = 4;
const GO119_SUPER_BUCKETS: u32 = 45;
/// Go 1.20+: timeHistMinBucketBits, timeHistMaxBucketBits (exclusive),
/// timeHistSubBucketBits.
const MIN_BUCKET_BITS: u32 = 9;
const MAX_BUCKET_BITS: u32 = 48;
const SUB_BUCKET_BITS: u32 = 2;

impl HistogramLayout {
    /// The layout with `counts` entries in the runtime's `counts` array, and
    /// whether it has an `overflow` counter; None for anything else.
    pub fn of(counts: u64, has_overflow: bool) -> Option<Self> {
        match (counts, has_overflow) {
            (720, false) => Some(Self::SuperBuckets),
            (160, true) => Some(Self::SubBucketBits2),
            _ => None,
        }
    }

    /// The `runtime/metrics` bucket boundaries in nanoseconds, after the
    /// underflow bucket (-inf, 0): boundary i is the lower bound of bucket i+1;
    /// the last bucket is unbounded above. `timeHistogramMetricsBuckets` of the
    /// version, in integer nanoseconds (the runtime divides these by 1e9).
    pub fn lower_bounds_ns(self) -> Vec<u64> {
        match self {
            Self::SuperBuckets => {
                let sub = 1u64 << GO119_SUB_BUCKET_BITS;
                let mut bounds: Vec<u64> = (0..sub).collect();
                for i in 0..GO119_SUPER_BUCKETS - 1 {
                    for j in 0..sub {
                        bounds.push((1u64 << (i + GO119_SUB_BUCKET_BITS)) | (j << i));
                    }
                }
                bounds
            }
            Self::SubBucketBits2 => {
                let sub = 1u64 << SUB_BUCKET_BITS;
                let mut bounds: Vec<u64> = (0..sub)
                    .map(|j| j << (MIN_BUCKET_BITS - 1 - SUB_BUCKET_BITS))
                    .collect();
                for i in MIN_BUCKET_BITS..MAX_BUCKET_BITS {
                    for j in 0..sub {
                        bounds.push((1u64 << (i - 1)) | (j << (i - 1 - SUB_BUCKET_BITS)));
                    }
                }
                // The overflow bucket.
                bounds.push(1u64 << (MAX_BUCKET_BITS - 1));
                bounds
            }
        }
    }

    /// Buckets as `runtime/metrics` reports them, the underflow one included.
    pub fn buckets(self) -> usize {
        self.lower_bounds_ns().len() + 1
    }
}

/// A histogram's cumulative counts, in `runtime/metrics` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCounts {
    pub layout: HistogramLayout,
    pub counts: Vec<u64>,
}

impl RuntimeCounts {
    /// From the runtime's `counts`, `underflow` and (1.20+) `overflow`.
    pub fn new(layout: HistogramLayout, counts: &[u64], underflow: u64, overflow: u64) -> Self {
        let mut ordered = Vec::with_capacity(layout.buckets());
        ordered.push(underflow);
        ordered.extend_from_slice(counts);
        if layout == HistogramLayout::SubBucketBits2 {
            ordered.push(overflow);
        }
        Self {
            layout,
            counts: ordered,
        }
    }

    /// What was recorded after `before` (None: since the process started).
    pub fn since(&self, before: Option<&Self>) -> RuntimeHistogram {
        let previous = |i: usize| {
            before
                .filter(|b| b.layout == self.layout)
                .and_then(|b| b.counts.get(i).copied())
                .unwrap_or(0)
        };
        let counts: Vec<u64> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c.saturating_sub(previous(i)))
            .collect();
        let bounds = self.layout.lower_bounds_ns();
        let buckets: Vec<Bucket> = counts
            .iter()
            .enumerate()
            .skip(1)
            .filter(|&(_, &count)| count > 0)
            .map(|(i, &count)| Bucket {
                from_ns: bounds[i - 1],
                to_ns: bounds.get(i).copied().unwrap_or(u64::MAX),
                count,
            })
            .collect();
        RuntimeHistogram {
            count: counts.iter().sum(),
            underflow: counts.first().copied().unwrap_or(0),
            p50_ns: quantile_bound(&buckets, 0.5),
            p99_ns: quantile_bound(&buckets, 0.99),
            buckets,
        }
    }
}

/// What a runtime histogram recorded over a span.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RuntimeHistogram {
    /// Values recorded (the underflow included).
    pub count: u64,
    /// Negative durations (a clock that went back).
    pub underflow: u64,
    /// Upper bounds of the buckets holding the median and the 99th percentile.
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// The non-empty buckets, `[from_ns, to_ns)`; `to_ns` = u64::MAX: unbounded.
    pub buckets: Vec<Bucket>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket counts `runtime/metrics` reports: 721 in Go 1.19, 162 after.
    #[test]
    fn bucket_counts_match_runtime_metrics() {
        assert_eq!(HistogramLayout::SuperBuckets.buckets(), 721);
        assert_eq!(HistogramLayout::SubBucketBits2.buckets(), 162);
        for layout in [
            HistogramLayout::SuperBuckets,
            HistogramLayout::SubBucketBits2,
        ] {
            let bounds = layout.lower_bounds_ns();
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{layout:?}");
        }
    }
}
