//! Per-subscriber sequence number and timestamp rewriting.
//!
//! A subscriber sees one continuous RTP stream per track no matter which
//! simulcast layer (or which restart of the source after mute, unsubscribe or a
//! publisher SSRC change) feeds it: each switch rebases the mapping so the output
//! continues from the last packet sent.
use std::time::Instant;

/// Output sequence numbers start below this so the SRTP rollover counter starts at
/// zero (str0m warns about non-zero initial ROC).
const INITIAL_SEQ_MAX: u64 = 16_384;

/// Rewrites (extended seq, RTP timestamp) from one source onto a continuous output.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    /// Invariant once `started`: every emitted seq is `<= last_seq`.
    last_seq: u64,
    last_ts: u32,
    last_at: Option<Instant>,
    seq_offset: u64,
    ts_offset: u32,
    /// Source packets older than the switch point belong to the previous mapping.
    base_in_seq: u64,
    started: bool,
}

impl Rewriter {
    /// A rewriter for a stream with the given RTP clock rate; `seed` randomises the
    /// initial output seq/ts.
    pub fn new(clock_rate: u32, seed: u64) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            last_seq: seed % INITIAL_SEQ_MAX,
            last_ts: (seed >> 16) as u32,
            last_at: None,
            seq_offset: 0,
            ts_offset: 0,
            base_in_seq: 0,
            started: false,
        }
    }

    /// Rebase on a new source starting with this packet.
    pub fn switch(&mut self, in_seq: u64, in_ts: u32, now: Instant) {
        let (out_seq, out_ts) = match self.last_at {
            Some(at) => {
                let elapsed = now.saturating_duration_since(at);
                let ticks = (elapsed.as_secs_f64() * self.clock_rate as f64) as u64;
                (self.last_seq + 1, self.last_ts.wrapping_add(ticks.max(1) as u32))
            }
            None => (self.last_seq + 1, self.last_ts),
        };
        self.seq_offset = out_seq.wrapping_sub(in_seq);
        self.ts_offset = out_ts.wrapping_sub(in_ts);
        self.base_in_seq = in_seq;
        self.started = true;
    }

    /// Whether a source has been mapped yet.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Map a packet of the current source; `None` for packets from before the switch.
    pub fn map(&mut self, in_seq: u64, in_ts: u32, now: Instant) -> Option<(u64, u32)> {
        if !self.started || in_seq < self.base_in_seq {
            return None;
        }
        let seq = in_seq.wrapping_add(self.seq_offset);
        let ts = in_ts.wrapping_add(self.ts_offset);
        if seq > self.last_seq || self.last_at.is_none() {
            self.last_seq = seq;
            self.last_ts = ts;
            self.last_at = Some(now);
        }
        Some((seq, ts))
    }

    /// Forget the current source: the next packet needs a `switch`.
    pub fn stop(&mut self) {
        self.started = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continuity_across_switch() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 1000);
        assert_eq!(r.map(5, 100, t0), None);
        r.switch(5, 100, t0);
        let (s0, ts0) = r.map(5, 100, t0).unwrap();
        let (s1, _) = r.map(6, 100, t0).unwrap();
        assert_eq!(s1, s0 + 1);
        // Switch to another layer 100 ms later with unrelated numbering.
        let t1 = t0 + Duration::from_millis(100);
        r.switch(70_000, 9_999_999, t1);
        let (s2, ts2) = r.map(70_000, 9_999_999, t1).unwrap();
        assert_eq!(s2, s1 + 1);
        assert_eq!(ts2.wrapping_sub(ts0), 9_000);
        // Late packet of the old layer is dropped.
        assert_eq!(r.map(69_999, 0, t1), None);
        assert!(s0 < INITIAL_SEQ_MAX + 1);
    }
}
