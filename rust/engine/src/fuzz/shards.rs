//! Target `shards`: two cores of one fabric. Shard 0 is the `World` (a publisher
//! with real SRTP and two subscribers); shard 1 holds one more subscriber that
//! follows shard 0's tracks through mirrors. The fuzzer interleaves publisher
//! RTP (to either shard's socket: the wrong one hands it over), junk and STUN from
//! fuzzed addresses naming either shard's ufrags, publish/unpublish/mute, follow
//! and unsubscribe, peer removal, time, and the delivery of the shards' messages.
//!
//! Checked against a model: shard 1 sends RTP only on m-lines of tracks its
//! subscriber subscribed to that are published (or whose end is still in flight)
//! and unmuted; a handed-over datagram is never handed on; the directory holds
//! exactly the live peers' ufrags.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::reader::{Reader, Writer};
use super::session::{addr, client, connect, negotiate, stun, Sub, VecSink, World, PUB_ADDR, SUB_IDS, TRACKS};
use crate::core::Core;
use crate::peer::Role;
use crate::shard::{CrossMsg, Fabric, Inbox, ShardLink};

/// The address of shard 1's subscriber.
const FAR_ADDR: ([u8; 4], u16) = ([10, 0, 3, 1], 40000);
/// Its peer id on shard 1 (`negotiate` names peers by `SUB_IDS`).
const FAR: usize = 0;

struct Pair {
    w: World,
    far: Core<VecSink>,
    far_sub: Option<Sub>,
    fabric: Arc<Fabric>,
    /// Published on shard 0: track -> (m-line index, muted).
    published: HashMap<&'static str, (usize, bool)>,
    /// Unpublished, but shard 1 may not have heard yet.
    ending: HashSet<&'static str>,
    /// Tracks the far subscriber subscribed to (via a mirror).
    followed: HashSet<&'static str>,
}

impl Pair {
    fn new() -> Self {
        let fabric = Arc::new(Fabric::new(vec![Inbox::new(None), Inbox::new(None)]));
        let w = World::new_on(Some(ShardLink { id: 0, fabric: fabric.clone() }));
        let mut far = Core::new(VecSink::default(), addr(super::session::ENGINE));
        far.set_shard(ShardLink { id: 1, fabric: fabric.clone() });
        let mut p = Self {
            w,
            far,
            far_sub: None,
            fabric,
            published: HashMap::new(),
            ending: HashSet::new(),
            followed: HashSet::new(),
        };
        p.add_far();
        p
    }

    fn add_far(&mut self) {
        let now = self.w.now;
        self.far.add_peer(SUB_IDS[FAR], Role::Subscriber, now).expect("fresh id");
        let mut sub = Sub { client: client(now), ssrcs: HashMap::new() };
        negotiate(&mut self.far, now, FAR, &mut sub);
        let ufrag = sub.client.direct_api().local_ice_credentials().ufrag;
        connect(&mut self.far, &self.w.mat, now, SUB_IDS[FAR], addr(FAR_ADDR), &ufrag);
        self.far_sub = Some(sub);
    }

    /// Exchange the shards' messages, as the run loops do after each turn.
    fn deliver(&mut self) {
        let now = self.w.now;
        self.w.core.deliver_outbox();
        self.far.deliver_outbox();
        for m in self.fabric.inbox(1).take() {
            self.far.handle_cross(m, now);
        }
        // Relayed packets of a track that ended may go out until its end arrives.
        self.far.flush(now);
        let sent = std::mem::take(&mut self.far.sink_mut().0);
        self.check_far_sent(&sent);
        assert!(
            !self.far.outbox.iter().any(|(_, m)| matches!(m, CrossMsg::Datagram { .. })),
            "a handed-over datagram was handed on"
        );
        for m in self.fabric.inbox(0).take() {
            self.w.core.handle_cross(m, now);
        }
        assert!(!self.w.core.outbox.iter().any(|(_, m)| matches!(m, CrossMsg::Datagram { .. })));
        self.ending.clear();
    }

    /// RTP shard 1 sent goes only where the model allows.
    fn check_far_sent(&self, sent: &[(SocketAddr, Vec<u8>)]) {
        let Some(sub) = &self.far_sub else { return };
        for (_, dg) in sent {
            if dg.len() < 12 || dg[0] >> 6 != 2 || (192..=223).contains(&dg[1]) {
                continue;
            }
            let ssrc = u32::from_be_bytes([dg[8], dg[9], dg[10], dg[11]]);
            let Some((tid, sending)) = sub.ssrcs.get(&ssrc) else { continue };
            let tid = tid.as_str();
            let live = self.published.get(tid).is_some_and(|(_, muted)| !muted) || self.ending.contains(tid);
            assert!(*sending && live && self.followed.contains(tid), "shard 1 sent RTP of {tid}");
        }
    }
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut p = Pair::new();
    let mut steps = 0;
    while !r.is_empty() && steps < 200 {
        steps += 1;
        let now = p.w.now;
        match r.below(12) {
            0 => {
                p.w.now += Duration::from_millis(u64::from(r.u8()) * 4);
                let now = p.w.now;
                p.w.core.handle_timeout(now);
                p.far.handle_timeout(now);
            }
            1 | 2 => {
                // Publisher RTP, mostly to its own shard's socket.
                let (_, dg) = p.w.rtp(&mut r);
                if r.u8() < 200 {
                    p.w.core.handle_datagram(addr(PUB_ADDR), &dg, now);
                } else {
                    p.far.handle_datagram(addr(PUB_ADDR), &dg, now);
                }
            }
            3 => {
                // STUN naming any peer's ufrag, from anywhere, to either shard.
                let names = ["pub", "sub0", "sub1"];
                let on_far = r.bool();
                let ufrag = if on_far {
                    p.far._rtc_mut(SUB_IDS[FAR]).map(|rtc| rtc.direct_api().local_ice_credentials().ufrag)
                } else {
                    p.w.core._rtc_mut(r.pick(&names)).map(|rtc| rtc.direct_api().local_ice_credentials().ufrag)
                };
                let username = format!("{}:remote", ufrag.unwrap_or_else(|| "zzzz".into()));
                let dg = stun(&username, r.bool(), Some(b"wrong"));
                let from = match r.below(4) {
                    // The publisher's own address: shard 1 learns to hand its media over.
                    0 => addr(PUB_ADDR),
                    _ => SocketAddr::from(([10, 9, r.u8(), r.u8()], r.u16())),
                };
                if r.bool() {
                    p.far.handle_datagram(from, &dg, now);
                } else {
                    p.w.core.handle_datagram(from, &dg, now);
                }
            }
            4 => {
                let from = SocketAddr::from(([10, 9, r.u8(), r.u8()], r.u16()));
                let dg = r.chunk(300).to_vec();
                p.far.handle_datagram(from, &dg, now);
            }
            5 => {
                let mid_i = r.below(p.w.mids.len());
                let tid = r.pick(&TRACKS);
                let mid = p.w.mids[mid_i].to_string();
                if p.w.core.publish_track("pub", &mid, tid, now).is_ok() {
                    // A recycled m-line ends the track it carried.
                    let ended: Vec<&'static str> =
                        p.published.iter().filter(|(_, (m, _))| *m == mid_i).map(|(t, _)| *t).collect();
                    for t in ended {
                        p.published.remove(t);
                        p.ending.insert(t);
                    }
                    p.published.insert(tid, (mid_i, false));
                }
            }
            6 => {
                let tid = r.pick(&TRACKS);
                if p.w.core.unpublish_track(tid).is_ok() {
                    p.published.remove(tid);
                    p.ending.insert(tid);
                }
            }
            7 => {
                // Mute at home and on the mirror, as the façade does.
                let tid = r.pick(&TRACKS);
                let muted = r.bool();
                if p.w.core.set_muted(tid, muted, now).is_ok() {
                    let _ = p.far.set_muted(tid, muted, now);
                    if let Some(t) = p.published.get_mut(tid) {
                        t.1 = muted;
                    }
                }
            }
            8 => {
                // Follow a track from shard 1 and subscribe its subscriber.
                let tid = r.pick(&TRACKS);
                if let Ok(export) = p.w.core.follow_track(tid, 1) {
                    p.far.mirror_track(export, now);
                    if p.far.subscribe(SUB_IDS[FAR], tid, &format!("PA|{tid}"), now).is_ok() {
                        p.followed.insert(tid);
                    }
                }
            }
            9 => {
                let tid = r.pick(&TRACKS);
                let _ = p.far.unsubscribe(SUB_IDS[FAR], tid);
                p.followed.remove(tid);
            }
            10 => {
                if let Some(sub) = p.far_sub.as_mut() {
                    negotiate(&mut p.far, now, FAR, sub);
                }
            }
            _ => {
                if r.u8() < 40 {
                    p.far.remove_peer(SUB_IDS[FAR], now);
                    p.followed.clear();
                    p.add_far();
                } else {
                    p.deliver();
                }
            }
        }
        p.w.core.flush(p.w.now);
        p.far.flush(p.w.now);
        let sent = std::mem::take(&mut p.far.sink_mut().0);
        p.check_far_sent(&sent);
        p.w.core.sink_mut().0.clear();
        p.w.core.events.clear();
        p.far.events.clear();
    }
    p.deliver();
    // Three peers on shard 0 and one on shard 1, one ufrag each (no ICE restarts).
    assert_eq!(p.fabric.ufrag_count(), 4);
}

/// Seeds: publish, follow, media, mute, unpublish, with deliveries between.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut w = Writer::default();
    // publish T0 on m-line 0, follow it, RTP, deliver, RTP, unpublish, deliver.
    w.u8(5).u8(0).u8(0);
    w.u8(8).u8(0);
    w.u8(10);
    for _ in 0..4 {
        w.u8(1).bytes(&[0; 24]);
        w.u8(11).u8(255);
    }
    w.u8(7).u8(0).u8(1);
    w.u8(6).u8(0);
    w.u8(11).u8(255);
    vec![("publish_follow_unpublish".into(), w.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_shard_forwards_relayed_media_until_the_track_ends() {
        let mut p = Pair::new();
        let now = p.w.now;
        let mid = p.w.mids[0].to_string();
        p.w.core.publish_track("pub", &mid, "T0", now).unwrap();
        let export = p.w.core.follow_track("T0", 1).unwrap();
        p.far.mirror_track(export, now);
        p.far.subscribe(SUB_IDS[FAR], "T0", "PA|T0", now).unwrap();
        p.published.insert("T0", (0, false));
        p.followed.insert("T0");
        let sub = p.far_sub.as_mut().unwrap();
        negotiate(&mut p.far, now, FAR, sub);
        // The kernel sends a 4-tuple to one socket: the publisher's checks reach
        // shard 1 first, and teach the directory its address.
        let creds = p.w.core._rtc_mut("pub").unwrap().direct_api().local_ice_credentials();
        let check = stun(&format!("{}:remote", creds.ufrag), false, Some(creds.pass.as_bytes()));
        p.far.handle_datagram(addr(PUB_ADDR), &check, now);
        p.deliver();
        // Every byte 3: the audio m-line, its seq advancing by 3 per packet.
        let threes = [3u8; 64];
        for _ in 0..5 {
            let (_, dg) = p.w.rtp(&mut Reader::new(&threes));
            // Through shard 1's socket: handed over to shard 0, relayed back.
            p.far.handle_datagram(addr(PUB_ADDR), &dg, now);
            p.deliver();
            p.deliver();
        }
        assert!(p.far.counters.handed_over >= 5);
        assert!(p.w.core.counters.rtp_relayed >= 5, "{:?}", p.w.core.counters);
        assert!(p.far.counters.rtp_forwarded >= 5, "{:?}", p.far.counters);
        p.w.core.unpublish_track("T0").unwrap();
        p.published.remove("T0");
        p.ending.insert("T0");
        p.deliver();
        assert!(p.far.subscribe(SUB_IDS[FAR], "T0", "PA|T0", now).is_err(), "the mirror went with its track");
    }
}
