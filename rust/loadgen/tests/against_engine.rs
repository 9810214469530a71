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

#[test]
fn publisher_media_reaches_subscribers_with_trailers_intact() {
    let engine = Engine::start(EngineConfig::new("127.0.0.1".parse().unwrap()))
    .unwrap();
    let gen = LoadGen::start("127.0.0.1".parse().unwrap()).unwrap();

    let publisher = gen.add_peer().unwrap();
    let tracks = vec![
        TrackSpec { cid: "TR_a".into(), kind: Kind::Audio, kbps: 32 },
        TrackSpec { cid: "TR_v".into(), kind: Kind::Video, kbps: 500 },
    ];
    let offer = gen.publisher_offer(publisher, tracks).unwrap();
    engine.add_peer("pub", Role::Publisher).unwrap();
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
    for i in 0..2 {
        let id = format!("sub{i}");
        engine.add_peer(&id, Role::Subscriber).unwrap();
        for (_, cid) in &arrived {
            engine.subscribe(&id, &format!("S_{cid}"), "PA_pub").unwrap();
        }
        let offer = engine.create_offer(&id).unwrap();
        let peer = gen.add_peer().unwrap();
        let answer = gen.accept_offer(peer, offer).unwrap();
        engine.accept_answer(&id, &answer).unwrap();
        subscribers.push(peer);
    }
    wait_for("media at every subscriber", || {
        subscribers.iter().all(|&s| {
            let info = gen.peer_info(s).unwrap();
            stat(&info, "first_media_ns") > 0
        })
    });

    gen.reset_stats().unwrap();
    sleep(Duration::from_millis(1500));
    let stats = gen.stats().unwrap();
    let sent = stat(&stats, "packets_sent");
    let received = stat(&stats, "packets_received");
    let expected = stat(&stats, "packets_expected");
    assert!(sent > 100, "{stats:?}");
    // Two subscribers receive every packet of both tracks, give or take the
    // packets in flight at the window's edges.
    assert!(received + 40 >= 2 * sent && received <= 2 * sent + 40, "{stats:?}");
    assert!(expected >= received && expected - received <= received / 50, "{stats:?}");
    assert_eq!(stat(&stats, "latency_samples"), received);
    assert!(stat(&stats, "latency_p50_us") > 0);
    assert_eq!(stat(&stats, "peers_connected"), 3);

    gen.remove_peer(subscribers[0]).unwrap();
    gen.remove_peer(subscribers[0]).unwrap();
    assert!(gen.peer_info(subscribers[0]).is_err());
    gen.close();
    engine.close();
}
