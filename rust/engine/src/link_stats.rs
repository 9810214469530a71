//! Per-peer link statistics (loss, jitter, RTT) from str0m's per-stream stats
//! events, summarised once per [`LINK_STATS_INTERVAL`] for the control plane,
//! which scores connection quality (`pysfu/rtc/quality.py`).
//!
//! A publisher peer's loss is what the server saw arriving (the fraction lost in
//! the receiver reports it sends); a subscriber peer's is what its client reports
//! in its receiver reports about what the server sent.
use std::time::Duration;

use str0m::stats::{MediaEgressStats, MediaIngressStats};

/// How often str0m reports stream stats and the engine passes them on.
pub const LINK_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// One peer's link over the last interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkStat {
    /// Mean fraction of packets lost (0..=1) over the streams that reported it;
    /// None when no receiver report came in.
    pub loss: Option<f32>,
    /// Highest interarrival jitter of its streams, ms.
    pub jitter_ms: f32,
    /// Highest round-trip time reported, ms.
    pub rtt_ms: Option<f32>,
}

/// Accumulates stream stats of one peer between summaries.
#[derive(Debug, Clone, Default)]
pub struct LinkAcc {
    loss_sum: f32,
    loss_n: u32,
    jitter_ms: f32,
    rtt_ms: Option<f32>,
    reports: u32,
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}

impl LinkAcc {
    fn add(&mut self, loss: Option<f32>, jitter_ms: f32, rtt: Option<Duration>) {
        self.reports += 1;
        if let Some(l) = loss.filter(|l| l.is_finite()) {
            self.loss_sum += l.clamp(0.0, 1.0);
            self.loss_n += 1;
        }
        if jitter_ms.is_finite() {
            self.jitter_ms = self.jitter_ms.max(jitter_ms);
        }
        if let Some(r) = rtt.map(ms) {
            self.rtt_ms = Some(self.rtt_ms.map_or(r, |x| x.max(r)));
        }
    }

    /// Stats of a stream the peer sends us (`clock_rate`: its RTP clock).
    pub fn ingress(&mut self, s: &MediaIngressStats, clock_rate: u32) {
        self.add(s.loss, s.jitter as f32 * 1000.0 / clock_rate.max(1) as f32, s.rtt);
    }

    /// Stats of a stream we send the peer, from its receiver reports.
    pub fn egress(&mut self, s: &MediaEgressStats, clock_rate: u32) {
        let jitter = s.remote.as_ref().map_or(0.0, |r| r.jitter as f32 * 1000.0 / clock_rate.max(1) as f32);
        self.add(s.loss, jitter, s.rtt);
    }

    /// The summary since the last one (None if no stream reported), and a fresh start.
    pub fn take(&mut self) -> Option<LinkStat> {
        if self.reports == 0 {
            return None;
        }
        let loss = (self.loss_n > 0).then(|| self.loss_sum / self.loss_n as f32);
        let s = LinkStat { loss, jitter_ms: self.jitter_ms, rtt_ms: self.rtt_ms };
        *self = Self::default();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_average_loss_and_keep_the_worst_delay() {
        let mut acc = LinkAcc::default();
        assert_eq!(acc.take(), None);
        acc.add(Some(0.1), 5.0, Some(Duration::from_millis(20)));
        acc.add(None, 9.0, None);
        acc.add(Some(0.3), 1.0, Some(Duration::from_millis(10)));
        acc.add(Some(f32::NAN), f32::INFINITY, None);
        let s = acc.take().unwrap();
        assert!((s.loss.unwrap() - 0.2).abs() < 1e-6);
        assert_eq!(s.jitter_ms, 9.0);
        assert_eq!(s.rtt_ms, Some(20.0));
        acc.add(None, 0.0, None);
        assert_eq!(acc.take(), Some(LinkStat { loss: None, jitter_ms: 0.0, rtt_ms: None }));
    }
}
