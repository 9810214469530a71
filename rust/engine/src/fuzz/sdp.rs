//! Target `sdp`: the SDP helpers and the engine's negotiation with fuzzed remote
//! SDP: a publisher offer through `accept_offer` (then binding its m-lines to
//! tracks), a subscriber answer through `accept_answer`, trickled candidates.
//!
//! Invariants: no panic; an offer the engine accepted yields an answer str0m can
//! parse back; removing the peers empties every table.
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};

use super::reader::{Reader, Writer};
use super::session::NullSink;
use crate::core::Core;
use crate::peer::Role;
use crate::sdp::{msid_tracks_by_mid, parse_candidate};

thread_local! {
    /// One core per thread: its certificate costs a key pair.
    static CORE: RefCell<Option<(Core<NullSink>, Instant)>> = const { RefCell::new(None) };
}

fn with_core(f: impl FnOnce(&mut Core<NullSink>, &mut Instant)) {
    CORE.with(|c| {
        let mut c = c.borrow_mut();
        let (core, now) = c.get_or_insert_with(|| {
            let addr: SocketAddr = "10.0.0.1:5000".parse().expect("literal address");
            (Core::new(NullSink, addr), Instant::now())
        });
        f(core, now)
    })
}

/// A munging step: the fuzzer edits a real SDP line by line.
fn munge(sdp: &str, r: &mut Reader) -> String {
    let mut lines: Vec<String> = sdp.lines().map(str::to_string).collect();
    for _ in 0..r.below(8) {
        if lines.is_empty() {
            break;
        }
        let i = r.below(lines.len());
        match r.below(5) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let dup = lines[i].clone();
                lines.insert(r.below(lines.len() + 1), dup);
            }
            2 => {
                let cut = r.below(lines[i].len() + 1);
                let s = &lines[i];
                let cut = (0..=cut).rev().find(|c| s.is_char_boundary(*c)).unwrap_or(0);
                lines[i].truncate(cut);
            }
            3 => {
                let tail = String::from_utf8_lossy(r.chunk(40)).into_owned();
                lines[i].push_str(&tail);
            }
            _ => {
                let new = String::from_utf8_lossy(r.chunk(80)).into_owned();
                lines.insert(i, new);
            }
        }
    }
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    s
}

fn check_helpers(text: &str) {
    let _ = msid_tracks_by_mid(text);
    for line in text.lines() {
        let _ = parse_candidate(line);
    }
}

/// A publisher offer as a LiveKit client sends it: audio, simulcast video, data.
pub fn client_offer() -> String {
    let mut rtc = crate::testkit::client_config().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, Some("PA_s".into()), Some("TR_audio".into()), None);
    let mut sim = Simulcast::new();
    for rid in ["q", "h", "f"] {
        sim.add_send_layer(SimulcastLayer::new(rid));
    }
    api.add_media(MediaKind::Video, Direction::SendOnly, Some("PA_s".into()), Some("TR_video".into()), Some(sim));
    api.add_channel("_reliable".into());
    let (offer, _) = api.apply().expect("media was added");
    offer.to_sdp_string()
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let base = if mode & 1 == 0 {
        // Raw fuzzed SDP text.
        String::from_utf8_lossy(r.chunk(4096)).into_owned()
    } else {
        // A real offer, munged.
        munge(&client_offer(), &mut r)
    };
    check_helpers(&base);
    with_core(|core, now| {
        *now += Duration::from_millis(1);
        core.add_peer("p", Role::Publisher, *now).expect("fresh id");
        if let Ok(answer) = core.accept_offer("p", &base, *now) {
            assert!(
                SdpAnswer::from_sdp_string(&answer).is_ok(),
                "engine answer does not parse back: {answer}"
            );
            for (i, (mid, _track)) in msid_tracks_by_mid(&base).into_iter().enumerate() {
                let _ = core.publish_track("p", &mid, &format!("T{i}"), *now);
            }
            // A re-offer on top (renegotiation), munged again.
            let again = munge(&base, &mut r);
            check_helpers(&again);
            let _ = core.accept_offer("p", &again, *now);
        }
        let cand = String::from_utf8_lossy(r.chunk(200)).into_owned();
        let _ = core.add_remote_candidate("p", &cand, *now);

        // Subscriber: our offer, a fuzzed answer.
        core.add_peer("s", Role::Subscriber, *now).expect("fresh id");
        let _ = core.subscribe("s", "T0", "PA_s|TR_video", *now);
        if let Ok(offer) = core.create_offer("s", *now) {
            let answer = if mode & 2 == 0 {
                String::from_utf8_lossy(r.rest()).into_owned()
            } else {
                // The answer a client makes, munged.
                let mut client = crate::testkit::client_config().build(*now);
                let offer = SdpOffer::from_sdp_string(&offer).expect("engine offer parses");
                let ans = client.sdp_api().accept_offer(offer).expect("client accepts engine offer");
                munge(&ans.to_sdp_string(), &mut r)
            };
            check_helpers(&answer);
            let _ = core.accept_answer("s", &answer, *now);
        }
        core.handle_timeout(*now);
        core.remove_peer("p", *now);
        core.remove_peer("s", *now);
        let (peers, tracks, addrs, sub_mids) = core._table_sizes();
        assert_eq!((peers, tracks, addrs, sub_mids), (0, 0, 0, 0), "tables after removing every peer");
        core.events.clear();
    });
}

pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let offer = client_offer();
    let mut raw = Writer::default();
    raw.u8(0).chunk(offer.as_bytes());
    let mut munged = Writer::default();
    munged.u8(3).u8(0).u8(0).u8(0).u8(0).u8(0).u8(0);
    let chrome = include_str!("chrome_offer.sdp");
    let mut chrome_raw = Writer::default();
    chrome_raw.u8(0).chunk(chrome.as_bytes()).u8(0).u8(0).chunk(b"candidate:1 1 udp 2113937151 192.0.2.7 54400 typ host");
    vec![("client_offer".into(), raw.0), ("munge_client".into(), munged.0), ("chrome_offer".into(), chrome_raw.0)]
}
