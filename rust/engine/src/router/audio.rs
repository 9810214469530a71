//! Audio levels from the RFC 6464 header extension, summarised per track.
//!
//! The forwarder feeds every audio packet's level to its track's [`LevelMeter`]
//! (a few integer operations); the core takes the summaries every
//! [`LEVEL_INTERVAL`] and sends them to the control plane in one event, which does
//! the smoothing and speaker selection (`pysfu/rtc/speakers.py`). Packets never
//! cross the door.
use std::time::Duration;

/// How often level summaries go to the control plane: the reference server's
/// audio update interval (400 ms).
pub const LEVEL_INTERVAL: Duration = Duration::from_millis(400);

/// Levels at or below this (0 loudest .. 127 silent, -dBov) count as speech: the
/// reference's `active_level` (-35 dBov).
pub const ACTIVE_LEVEL: u8 = 35;

/// The level of silence (RFC 6464: -127 dBov).
pub const SILENT_LEVEL: u8 = 127;

/// Longest time one packet stands for: a gap (DTX, a stall) must not count as a
/// long stretch of whatever level follows it.
const MAX_PACKET_MS: u32 = 500;

/// Audio activity of one track since the last summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelSummary {
    /// Media time the packets covered (by RTP timestamps), ms.
    pub observed_ms: u32,
    /// Of that, the time at or above speech level, ms.
    pub active_ms: u32,
    /// Loudest level among the active packets (`SILENT_LEVEL` if none).
    pub loudest: u8,
}

/// Accumulates one audio track's levels between summaries.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    clock_rate: u32,
    highest_ts: Option<u32>,
    observed_ms: u32,
    active_ms: u32,
    loudest: u8,
    packets: u32,
}

impl LevelMeter {
    /// A meter for a stream with this RTP clock rate (48 kHz for Opus).
    pub fn new(clock_rate: u32) -> Self {
        Self { clock_rate: clock_rate.max(1), highest_ts: None, observed_ms: 0, active_ms: 0, loudest: SILENT_LEVEL, packets: 0 }
    }

    /// One packet: its audio-level extension (str0m's value, -dBov as a negative
    /// number; `None` without the extension) and its RTP timestamp. A packet's
    /// duration is the timestamp advance since the newest packet seen, as the
    /// reference measures it; reordered packets count for nothing.
    pub fn observe(&mut self, level: Option<i8>, ts: u32) {
        let Some(level) = level else { return };
        let level = level.unsigned_abs().min(SILENT_LEVEL);
        self.packets = self.packets.saturating_add(1);
        let Some(highest) = self.highest_ts else {
            self.highest_ts = Some(ts);
            return;
        };
        let delta = ts.wrapping_sub(highest);
        if delta >= 1 << 31 {
            return;
        }
        self.highest_ts = Some(ts);
        let ms = ((u64::from(delta) * 1000) / u64::from(self.clock_rate)).min(u64::from(MAX_PACKET_MS)) as u32;
        self.observed_ms = self.observed_ms.saturating_add(ms);
        if level <= ACTIVE_LEVEL {
            self.active_ms = self.active_ms.saturating_add(ms);
            self.loudest = self.loudest.min(level);
        }
    }

    /// The summary since the last one (None if no packet carried a level), and a
    /// fresh start.
    pub fn take(&mut self) -> Option<LevelSummary> {
        if self.packets == 0 {
            return None;
        }
        let s = LevelSummary { observed_ms: self.observed_ms, active_ms: self.active_ms, loudest: self.loudest };
        self.observed_ms = 0;
        self.active_ms = 0;
        self.loudest = SILENT_LEVEL;
        self.packets = 0;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms Opus frames at 48 kHz.
    const FRAME: u32 = 960;

    #[test]
    fn loud_frames_are_active_and_quiet_ones_only_observed() {
        let mut m = LevelMeter::new(48_000);
        assert_eq!(m.take(), None);
        for i in 0..21u32 {
            // 10 loud frames (-6 dBov), then 10 quiet ones (-90 dBov).
            let level = if i <= 10 { -6 } else { -90 };
            m.observe(Some(level), 1000 + i * FRAME);
        }
        let s = m.take().unwrap();
        assert_eq!(s, LevelSummary { observed_ms: 400, active_ms: 200, loudest: 6 });
        // The next summary starts afresh but keeps the timestamp reference.
        m.observe(Some(-127), 1000 + 21 * FRAME);
        assert_eq!(m.take(), Some(LevelSummary { observed_ms: 20, active_ms: 0, loudest: SILENT_LEVEL }));
    }

    #[test]
    fn reordered_packets_gaps_and_missing_extensions() {
        let mut m = LevelMeter::new(48_000);
        m.observe(Some(-10), 0);
        m.observe(Some(-10), 2 * FRAME);
        m.observe(Some(-10), FRAME); // late: no time
        m.observe(None, 3 * FRAME); // no extension: ignored
        m.observe(Some(-10), 48_000 * 60); // a minute of DTX: capped
        let s = m.take().unwrap();
        assert_eq!(s.observed_ms, 40 + MAX_PACKET_MS);
        // Timestamps wrap around.
        let mut w = LevelMeter::new(48_000);
        w.observe(Some(-1), u32::MAX - 100);
        w.observe(Some(-1), (u32::MAX - 100).wrapping_add(FRAME));
        assert_eq!(w.take().unwrap().observed_ms, 20);
    }
}
