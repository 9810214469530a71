//! Per-subscriber layer allocation: which simulcast layer of each video track a
//! subscriber can take within its bandwidth estimate. Pure.
//!
//! As the reference's stream allocator, in spirit: every track first gets its
//! lowest live layer, then tracks are raised one layer at a time, in turn, while
//! the next layer fits the budget and does not exceed what the subscriber asked
//! for. A track whose lowest layer does not fit what is left gets nothing: it is
//! paused (after [`PAUSE_AFTER`] such allocations in a row, see [`Pause`]) and its
//! subscriber told with StreamStateUpdate, as the reference's stream allocator does.
//!
//! Priorities (UpdateTrackSettings.priority, 1 the highest, 0 unset): tracks are
//! served in priority order, so a higher one gets its lowest layer first, and
//! each priority is raised as far as the budget allows before the next one gets
//! more; tracks of one priority are raised in turn.

/// Share of the estimate given to video: audio, RTCP and retransmissions need room.
pub const VIDEO_SHARE: f64 = 0.85;

/// What one video down track could take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Highest layer the subscriber asked for (0 LOW .. 2 HIGH).
    pub requested: u8,
    /// Measured bitrate (bit/s) of each layer by quality; None where the layer is
    /// not live.
    pub layers: [Option<u64>; 3],
    /// Serving rank from the subscriber's priority: lower first (see [`rank`]).
    pub rank: u32,
}

/// The serving rank of a subscriber's priority: 1 (the highest) first, unset (0)
/// after every set one.
pub fn rank(priority: u32) -> u32 {
    if priority == 0 {
        u32::MAX
    } else {
        priority
    }
}

impl Demand {
    /// The lowest live layer.
    pub fn lowest(&self) -> Option<u8> {
        (0..3u8).find(|&q| self.layers[usize::from(q)].is_some())
    }

    /// The next live layer above `q`, up to the requested one.
    fn next_above(&self, q: u8) -> Option<u8> {
        (q + 1..=self.requested.min(2)).find(|&n| self.layers[usize::from(n)].is_some())
    }

    fn cost(&self, q: u8) -> u64 {
        self.layers[usize::from(q)].unwrap_or(0)
    }

    /// The highest live layer up to the requested one.
    pub fn top(&self) -> Option<u8> {
        (0..=self.requested.min(2)).rev().find(|&q| self.layers[usize::from(q)].is_some())
    }

    /// Bitrate of everything the subscriber asked for (what probing aims at).
    pub fn wanted_bps(&self) -> u64 {
        self.top().map_or(0, |q| self.cost(q))
    }

    /// Whether a cap `allocate` gave serves all that was asked for.
    pub fn served_by(&self, cap: Option<u8>) -> bool {
        self.lowest().is_none() || cap == self.top()
    }
}

/// The layer cap of each track (same order as `demands`, which is the order tracks
/// are served in, by ascending `rank`) within `estimate_bps`; None for a track
/// whose lowest live layer does not fit what the tracks before it left. A track
/// with no live layer keeps its request (nothing to choose between).
pub fn allocate(estimate_bps: u64, demands: &[Demand]) -> Vec<Option<u8>> {
    debug_assert!(demands.windows(2).all(|w| w[0].rank <= w[1].rank), "served by rank");
    let budget = (estimate_bps as f64 * VIDEO_SHARE) as u64;
    let mut used: u64 = 0;
    let mut caps: Vec<Option<u8>> = Vec::with_capacity(demands.len());
    for d in demands {
        let cap = d.lowest().filter(|&q| used + d.cost(q) <= budget);
        used += cap.map_or(0, |q| d.cost(q));
        caps.push(cap);
    }
    // One rank at a time: its tracks are raised in turn until none can be.
    let mut start = 0;
    while start < demands.len() {
        let rank = demands[start].rank;
        let end = start + demands[start..].iter().take_while(|d| d.rank == rank).count();
        loop {
            let mut raised = false;
            for (d, cap) in demands[start..end].iter().zip(caps[start..end].iter_mut()) {
                let Some(q) = *cap else { continue };
                let Some(next) = d.next_above(q) else { continue };
                let extra = d.cost(next).saturating_sub(d.cost(q));
                if used + extra <= budget {
                    used += extra;
                    *cap = Some(next);
                    raised = true;
                }
            }
            if !raised {
                break;
            }
        }
        start = end;
    }
    demands.iter().zip(caps).map(|(d, c)| if d.lowest().is_none() { Some(d.requested) } else { c }).collect()
}

/// Receiver-reported loss above which a subscriber's link counts as congested.
pub const LOSS_HIGH: f32 = 0.10;
/// Loss below which a loss-based cap is raised again.
pub const LOSS_LOW: f32 = 0.02;
/// How fast a loss-based cap rises per interval of low loss (libwebrtc's 8 %), and
/// at least by [`LOSS_CAP_STEP_BPS`], so that a cap far down recovers in seconds.
pub const LOSS_CAP_INCREASE: f64 = 1.08;
pub const LOSS_CAP_STEP_BPS: u64 = 50_000;
/// The lowest a loss-based cap goes.
pub const LOSS_CAP_FLOOR_BPS: u64 = 10_000;

/// Intervals in a row in which video went to a subscriber and no receiver report
/// came back before that silence counts as loss: a link starved far below what it
/// is sent can delay the client's RTCP for many seconds, and the delay-based
/// estimate, fed by the same feedback, then stands still (libwebrtc's send-side
/// estimator lowers its estimate on a feedback timeout too).
pub const FEEDBACK_TIMEOUT_INTERVALS: u8 = 3;
/// The loss such a silent interval counts as.
pub const FEEDBACK_TIMEOUT_LOSS: f32 = 0.5;

/// A loss-based cap over str0m's delay-based estimate, as libwebrtc's send-side
/// estimator keeps one: str0m has only the delay-based part, and a link whose
/// bottleneck queue is full and dropping shows a steady delay, so that estimate
/// holds (or grows) while most packets are lost. Each interval with a receiver
/// report: loss above [`LOSS_HIGH`] cuts the cap by half the loss; below
/// [`LOSS_LOW`] it rises (see [`LOSS_CAP_INCREASE`]), and goes once it is back
/// above the estimate; in between, or without a report, it holds. The caller
/// passes no loss for an interval in which nothing was sent (a paused track gets
/// no receiver reports), so a cap cannot hold its own track paused. Pure.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LossCap {
    cap: Option<u64>,
}

impl LossCap {
    /// One interval's loss (0..=1; None: no report) and the delay-based estimate;
    /// returns the estimate to allocate within.
    pub fn update(&mut self, estimate: u64, loss: Option<f32>) -> u64 {
        match loss {
            Some(l) if l > LOSS_HIGH => {
                let from = self.cap.map_or(estimate, |c| c.min(estimate)) as f64;
                let cut = (from * (1.0 - 0.5 * f64::from(l.min(1.0)))) as u64;
                self.cap = Some(cut.max(LOSS_CAP_FLOOR_BPS));
            }
            Some(l) if l < LOSS_LOW => {
                if let Some(c) = self.cap {
                    let up = ((c as f64 * LOSS_CAP_INCREASE) as u64).max(c + LOSS_CAP_STEP_BPS);
                    self.cap = (up < estimate).then_some(up);
                }
            }
            _ => {}
        }
        self.cap.map_or(estimate, |c| c.min(estimate))
    }

    /// The cap, while loss holds the estimate down.
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }
}

/// Allocations in a row in which a down track's lowest layer must not fit before it
/// is paused: one low estimate (a burst of loss, a failed probe) must not cut video
/// that would have carried on at its lowest layer.
pub const PAUSE_AFTER: u8 = 3;

/// Whether the allocator holds one down track paused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    misses: u8,
    paused: bool,
}

impl Pause {
    pub fn paused(self) -> bool {
        self.paused
    }

    /// One allocation's outcome for the track (whether its lowest layer fitted);
    /// the new state when it changed: paused after `PAUSE_AFTER` misses in a row,
    /// resumed by the first allocation in which it fits again.
    pub fn record(&mut self, fits: bool) -> Option<bool> {
        if fits {
            self.misses = 0;
            return std::mem::take(&mut self.paused).then_some(false);
        }
        self.misses = self.misses.saturating_add(1);
        if !self.paused && self.misses >= PAUSE_AFTER {
            self.paused = true;
            return Some(true);
        }
        None
    }
}

/// Allocations in a row in which everything a subscriber asked for fits before its
/// video is sent unpaced again.
pub const UNPACE_AFTER: u8 = 5;

/// Whether a subscriber's video goes through str0m's pacer. Unpaced while its
/// estimate holds everything it asked for, as the reference sends (its pacer does
/// not queue): nothing is delayed on a wide link. Paced from the first allocation
/// that cannot serve everything (the estimate, or the loss cap, is below what was
/// asked for): on a thin link with a short bottleneck queue an unpaced keyframe
/// burst overflows that queue, and the picture the subscriber needs to switch
/// layers is lost with it; the pacer spreads the burst at the estimate. Back to
/// unpaced after [`UNPACE_AFTER`] allocations in a row that fit. Pure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    fits: u8,
    paced: bool,
}

impl Pacing {
    pub fn paced(self) -> bool {
        self.paced
    }

    /// One allocation: whether everything asked for fitted; the new state when it
    /// changed.
    pub fn record(&mut self, fits: bool) -> Option<bool> {
        if !fits {
            self.fits = 0;
            return (!std::mem::replace(&mut self.paced, true)).then_some(true);
        }
        self.fits = self.fits.saturating_add(1);
        if self.paced && self.fits >= UNPACE_AFTER {
            self.paced = false;
            return Some(false);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULCAST: [Option<u64>; 3] = [Some(150_000), Some(500_000), Some(1_500_000)];

    #[test]
    fn a_narrow_link_gets_the_lowest_layer_a_wide_one_the_requested() {
        let d = Demand { requested: 2, layers: SIMULCAST, rank: rank(0) };
        assert_eq!(allocate(400_000, &[d]), vec![Some(0)]);
        assert_eq!(allocate(700_000, &[d]), vec![Some(1)]);
        assert_eq!(allocate(3_000_000, &[d]), vec![Some(2)]);
        // Never above the request, whatever the estimate.
        assert_eq!(allocate(3_000_000, &[Demand { requested: 1, ..d }]), vec![Some(1)]);
        // Below even the lowest layer: nothing (paused).
        assert_eq!(allocate(10_000, &[d]), vec![None]);
        assert_eq!(d.wanted_bps(), 1_500_000);
    }

    #[test]
    fn tracks_are_raised_in_turn_and_missing_layers_skipped() {
        let d = Demand { requested: 2, layers: SIMULCAST, rank: rank(0) };
        // Two tracks, 1.2 Mbit/s: both can have MEDIUM, neither HIGH.
        assert_eq!(allocate(1_200_000, &[d, d]), vec![Some(1), Some(1)]);
        // A track without a live MEDIUM jumps from LOW to HIGH when that fits.
        let gappy = Demand { requested: 2, layers: [Some(150_000), None, Some(900_000)], rank: rank(0) };
        assert_eq!(allocate(1_200_000, &[gappy]), vec![Some(2)]);
        // A track with nothing live keeps its request.
        let dry = Demand { requested: 1, layers: [None; 3], rank: rank(0) };
        assert_eq!(allocate(100_000, &[dry, d]), vec![Some(1), None]);
        // Only one lowest layer fits: the first track gets it, the second nothing.
        assert_eq!(allocate(250_000, &[d, d]), vec![Some(0), None]);
    }

    #[test]
    fn higher_priorities_are_served_and_raised_first() {
        let top = Demand { requested: 2, layers: SIMULCAST, rank: rank(1) };
        let next = Demand { rank: rank(2), ..top };
        let unset = Demand { rank: rank(0), ..top };
        // 2 Mbit/s (1.7 for video): the first track goes to HIGH, the next gets LOW.
        assert_eq!(allocate(2_000_000, &[top, next]), vec![Some(2), Some(0)]);
        // Unset ranks after set ones, and in turn among themselves.
        assert_eq!(allocate(2_200_000, &[next, unset, unset]), vec![Some(2), Some(0), Some(0)]);
        assert_eq!(allocate(3_500_000, &[next, unset, unset]), vec![Some(2), Some(1), Some(1)]);
        // Too little for two lowest layers: the higher priority keeps video.
        assert_eq!(allocate(250_000, &[top, unset]), vec![Some(0), None]);
        assert!(rank(1) < rank(7) && rank(7) < rank(0));
    }

    #[test]
    fn loss_cuts_below_a_steady_delay_based_estimate_and_low_loss_lifts_the_cut() {
        let mut c = LossCap::default();
        assert_eq!(c.update(500_000, None), 500_000, "no report: the estimate as it is");
        assert_eq!(c.update(500_000, Some(0.05)), 500_000, "some loss alone changes nothing");
        // A 30 kbit/s link under 500 kbit/s: ~94 % lost, every interval.
        let mut e = 0;
        for _ in 0..3 {
            e = c.update(500_000, Some(0.94));
        }
        assert!(e < 80_000, "three intervals of heavy loss: {e}");
        for _ in 0..20 {
            e = c.update(500_000, Some(0.94));
        }
        assert_eq!(e, LOSS_CAP_FLOOR_BPS);
        // A lower delay-based estimate is never raised by the cap.
        assert_eq!(c.update(5_000, None), 5_000);
        // Loss gone: the cap rises (by the step while it is low, then 8 % an
        // interval) and goes once above the estimate.
        let before = c.cap().unwrap();
        assert_eq!(c.update(500_000, Some(0.0)), before + LOSS_CAP_STEP_BPS);
        let mut d = LossCap { cap: Some(1_000_000) };
        assert_eq!(d.update(5_000_000, Some(0.0)), 1_080_000);
        for _ in 0..100 {
            e = c.update(500_000, Some(0.0));
        }
        assert_eq!((e, c.cap()), (500_000, None));
    }

    #[test]
    fn a_track_pauses_after_repeated_misses_and_resumes_at_once() {
        let mut p = Pause::default();
        for _ in 1..PAUSE_AFTER {
            assert_eq!(p.record(false), None);
        }
        assert!(!p.paused());
        assert_eq!(p.record(true), None, "a fit resets the count");
        for _ in 1..PAUSE_AFTER {
            assert_eq!(p.record(false), None);
        }
        assert_eq!(p.record(false), Some(true));
        assert!(p.paused());
        assert_eq!(p.record(false), None, "told once");
        assert_eq!(p.record(true), Some(false));
        assert!(!p.paused());
    }

    #[test]
    fn pacing_starts_at_the_first_shortfall_and_ends_after_a_run_that_fits() {
        let mut p = Pacing::default();
        assert!(!p.paced());
        assert_eq!(p.record(true), None, "unpaced while everything fits");
        assert_eq!(p.record(false), Some(true), "paced at once");
        assert_eq!(p.record(false), None);
        for _ in 1..UNPACE_AFTER {
            assert_eq!(p.record(true), None);
        }
        assert_eq!(p.record(false), None, "a shortfall restarts the run");
        for _ in 1..UNPACE_AFTER {
            assert_eq!(p.record(true), None);
        }
        assert_eq!(p.record(true), Some(false));
        assert!(!p.paced());
    }
}
