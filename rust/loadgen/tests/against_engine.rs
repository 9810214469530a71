//! The generator against pysfu's own engine over real loopback UDP: a
//! publisher's synthetic audio and video reach two subscribers, measured.
use std::thread::sleep;
use std::time::{Duration, Instant};

use pysfu_engine::{Engine, EngineConfig, MediaEvent, Role};
use pysfu_loadgen::synth::Kind;
use pysfu_loadgen::{LoadGen, TrackSpec};

fn stat(stats: &[(&str, u64)], key: &str) -> u64 {
    stats.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// A publisher on shard 0 and subscribers on the given shards, all on one port.
struct Room {
    engine: Engine,
    gen: LoadGen,
    subscribers: Vec<(String, u32)>,
}

fn room(workers: usize, subscriber_shards: &[usize]) -> Room {
    let mut config = EngineConfig::new("127.0.0.1".parse().unwrap());
    config.workers = workers;
    // These tests are about fan-out, not congestion control. With several tests
    // running at once on two cores the generator's thread falls behind, its TWCC
    // feedback shows the delay, the estimate drops below the 532 kbit/s it is sent,
    // and str0m's pacer queues video for up to two seconds (its queue limit).
    config.bandwidth_estimation = false;
    let engine = Engine::start(config).unwrap();
    assert_eq!(engine.shards(), workers);
    let gen = LoadGen::start("127.0.0.1".parse().unwrap()).unwrap();

    let publisher = gen.add_peer().unwrap();
    let tracks = vec![
        TrackSpec { cid: "TR_a".into(), kind: Kind::Audio, kbps: 32 },
        TrackSpec { cid: "TR_v".into(), kind: Kind::Video, kbps: 500 },
    ];
    let offer = gen.publisher_offer(publisher, tracks).unwrap();
    engine.add_peer("pub", Role::Publisher, Some(0)).unwrap();
    let answer = engine.accept_offer("pub", &offer).unwrap();
    gen.accept_answer(publisher, answer).unwrap();

    let mut arrived = Vec::new();
    wait_for("both tracks to arrive", || {
        for e in engine.drain_events() {
            if let MediaEvent::TrackArrived { mid, track_id, .. } = e {
                arrived.push((mid, track_id));
            }
        }
        arrived.len() == 2
    });
    for (mid, cid) in &arrived {
        engine.publish_track("pub", mid, &format!("S_{cid}")).unwrap();
    }

    let mut subscribers = Vec::new();
    for (i, shard) in subscriber_shards.iter().enumerate() {
        let id = format!("sub{i}");
        engine.add_peer(&id, Role::Subscriber, Some(*shard)).unwrap();
        assert_eq!(engine.shard_of_peer(&id).unwrap(), *shard);
        for (_, cid) in &arrived {
            engine.subscribe(&id, &format!("S_{cid}"), "PA_pub").unwrap();
        }
        let offer = engine.create_offer(&id).unwrap();
        let peer = gen.add_peer().unwrap();
        let answer = gen.accept_offer(peer, offer).unwrap();
        engine.accept_answer(&id, &answer).unwrap();
        subscribers.push((id, peer));
    }
    wait_for("media at every subscriber", || {
        subscribers.iter().all(|(_, s)| {
            let info = gen.peer_info(*s).unwrap();
            stat(&info, "first_media_ns") > 0
        })
    });
    // First media may be audio; video starts at the next keyframe, which a
    // subscriber's request brings within a keyframe-request interval or two.
    sleep(Duration::from_millis(1200));
    Room { engine, gen, subscribers }
}

/// Every live subscriber receives every packet of both tracks, in order, within
/// a window of `window`.
fn assert_every_packet_in_order(room: &Room, live: u64, window: Duration) {
    room.gen.reset_stats().unwrap();
    sleep(window);
    let stats = room.gen.stats().unwrap();
    let sent = stat(&stats, "packets_sent");
    let received = stat(&stats, "packets_received");
    let expected = stat(&stats, "packets_expected");
    assert!(sent > 100, "{stats:?}");
    // Give or take the packets in flight at the window's edges.
    assert!(received + 40 >= live * sent && received <= live * sent + 40, "{stats:?}");
    assert!(expected >= received && expected - received <= received / 50, "{stats:?}");
    assert_eq!(stat(&stats, "packets_reordered"), 0, "{stats:?}");
    assert_eq!(stat(&stats, "latency_samples"), received);
    assert!(stat(&stats, "latency_p50_us") > 0);
}

#[test]
fn publisher_media_reaches_subscribers_with_trailers_intact() {
    let room = room(1, &[0, 0]);
    assert_every_packet_in_order(&room, 2, Duration::from_millis(1500));
    assert_eq!(stat(&room.gen.stats().unwrap(), "peers_connected"), 3);
    let first = room.subscribers[0].1;
    room.gen.remove_peer(first).unwrap();
    room.gen.remove_peer(first).unwrap();
    assert!(room.gen.peer_info(first).is_err());
    room.gen.close();
    room.engine.close();
}

#[test]
fn subscribers_on_other_shards_get_every_packet_in_order() {
    // The publisher's shard decrypts once and relays; shard 1's subscribers are
    // fed by its mirror of each track.
    let room = room(2, &[0, 1, 1]);
    assert_every_packet_in_order(&room, 3, Duration::from_millis(1500));
    let stats = room.engine.stats().unwrap();
    assert_eq!(stat(&stats, "shards"), 2);
    room.gen.close();
    room.engine.close();
}

#[test]
fn removing_a_peer_on_one_shard_leaves_the_others_untouched() {
    let room = room(2, &[0, 1, 1]);
    room.engine.remove_peer("sub1").unwrap();
    assert!(room.engine.shard_of_peer("sub1").is_err());
    room.gen.remove_peer(room.subscribers[1].1).unwrap();
    // The other subscriber on shard 1 and the one on shard 0 carry on.
    assert_every_packet_in_order(&room, 2, Duration::from_millis(1500));
    // Two tracks at home on shard 0, a mirror of each on shard 1.
    assert_eq!(stat(&room.engine.stats().unwrap(), "tracks"), 4);
    // The publisher going takes its mirrors with it, before the call returns.
    room.engine.remove_peer("pub").unwrap();
    assert_eq!(stat(&room.engine.stats().unwrap(), "tracks"), 0);
    assert!(room.engine.subscribe("sub2", "S_TR_a", "PA_pub").is_err());
    room.gen.close();
    room.engine.close();
}
