//! What subscribers observed: a latency histogram and per-stream loss.
use std::collections::HashMap;
use std::time::Instant;

/// Histogram resolution and range: 10 µs buckets up to 200 ms, then one
/// overflow bucket (forwarding latency beyond that is a failure anyway).
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;

#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: vec![0; BUCKETS + 1], count: 0, max_us: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(BUCKETS);
        self.buckets[i] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// Upper bound (µs) of the bucket holding the `q`-quantile (0.0..=1.0); 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return if i == BUCKETS { self.max_us } else { (i as u64 + 1) * BUCKET_US };
            }
        }
        self.max_us
    }
}

/// Sequence counters seen on one received stream.
#[derive(Debug, Clone, Copy)]
struct Span {
    low: u32,
    high: u32,
    received: u64,
}

/// Packets that arrived after a later one of their stream (`LossTracker`).
pub type Reordered = u64;

/// Loss per (receiving peer, track): packets the publisher numbered between
/// the first and last one seen, against those that arrived.
#[derive(Debug, Default, Clone)]
pub struct LossTracker {
    spans: HashMap<u32, Span>,
    reordered: Reordered,
}

impl LossTracker {
    pub fn record(&mut self, track: u32, counter: u32) {
        let span = self.spans.entry(track).or_insert(Span { low: counter, high: counter, received: 0 });
        if counter < span.high {
            self.reordered += 1;
        }
        span.low = span.low.min(counter);
        span.high = span.high.max(counter);
        span.received += 1;
    }

    /// Packets that should have arrived: duplicates can make this smaller than
    /// what was received, so callers clamp loss at zero.
    pub fn expected(&self) -> u64 {
        self.spans.values().map(|s| u64::from(s.high - s.low) + 1).sum()
    }

    /// Packets that arrived after a later packet of the same stream.
    pub fn reordered(&self) -> Reordered {
        self.reordered
    }

    pub fn clear(&mut self) {
        self.spans.clear();
        self.reordered = 0;
    }
}

/// Totals for one measurement window.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Zero of the trailer clock; survives [`Totals::reset`].
    pub epoch: Instant,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub latency: Histogram,
}

impl Totals {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            packets_sent: 0,
            bytes_sent: 0,
            packets_received: 0,
            bytes_received: 0,
            latency: Histogram::default(),
        }
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.epoch);
    }

    /// ns since the epoch: the trailer's time base.
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), 0);
        for us in 1..=100 {
            h.record(us * 100);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_us(0.5), 5010);
        assert_eq!(h.quantile_us(0.99), 9910);
        assert_eq!(h.max_us(), 10_000);
        h.record(5_000_000);
        assert_eq!(h.quantile_us(1.0), 5_000_000);
    }

    #[test]
    fn loss_counts_gaps_inside_each_stream() {
        let mut l = LossTracker::default();
        for c in [10, 11, 13, 14] {
            l.record(1, c);
        }
        for c in 0..5 {
            l.record(2, c);
        }
        assert_eq!(l.expected(), 5 + 5);
        l.clear();
        assert_eq!(l.expected(), 0);
    }
}
