//! `Core::subscribe_on_mid` (`/rtc/v1`, one PeerConnection): a track forwarded on an
//! m-line the client offered recvonly, on the same peer that publishes.
use std::time::Instant;

use str0m::media::{Direction, MediaKind};
use str0m::Rtc;

use crate::core::Core;
use crate::peer::Role;
use crate::testkit::{client_rtc, VecSink};

fn client(now: Instant) -> Rtc {
    client_rtc("10.0.1.1:5000".parse().unwrap(), now)
}

#[test]
fn a_track_goes_out_on_a_free_receive_section_of_the_same_peer() {
    let now = Instant::now();
    let mut core = Core::new(VecSink::default(), "10.0.0.1:7882".parse().unwrap());
    core.add_peer("alice", Role::Publisher, now).unwrap();
    core.add_peer("bob", Role::Publisher, now).unwrap();
    // Alice publishes audio; Bob's one PeerConnection offers to receive audio and video.
    let mut alice = client(now);
    let mut api = alice.sdp_api();
    let sending = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("PA".into()), Some("TA".into()), None);
    let (offer, _) = api.apply().unwrap();
    core.accept_offer("alice", &offer.to_sdp_string(), now).unwrap();
    core.publish_track("alice", &sending.to_string(), "TR_audio", now).unwrap();
    let mut bob = client(now);
    let mut api = bob.sdp_api();
    let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    let answer = core.accept_offer("bob", &offer.to_sdp_string(), now).unwrap();
    assert!(answer.contains("a=sendonly"), "the answer sends on the receive sections");

    let (audio, video) = (audio.to_string(), video.to_string());
    assert!(core.subscribe_on_mid("bob", "TR_audio", "PA|TR_audio", &video, now).is_err(), "wrong kind");
    assert!(core.subscribe_on_mid("bob", "TR_audio", "PA|TR_audio", "nope", now).is_err(), "unknown mid");
    assert!(core.subscribe_on_mid("bob", "TR_nope", "PA|TR_nope", &audio, now).is_err(), "unknown track");
    core.subscribe_on_mid("bob", "TR_audio", "PA|TR_audio", &audio, now).unwrap();
    assert!(core.subscribe_on_mid("bob", "TR_audio", "PA|TR_audio", &audio, now).is_err(), "mid taken");
    assert_eq!(core._table_sizes().3, 1, "one (subscriber, mid) route");
    // Alice's own published mid is no sending section of hers.
    assert!(core.subscribe_on_mid("alice", "TR_audio", "PA|TR_audio", &sending.to_string(), now).is_err());
    core.remove_peer("bob", now);
    assert_eq!(core._table_sizes().3, 0, "removing the peer leaves no route behind");
}
