//! Target `rewrite`: keyframe detection on every codec, and the per-subscriber
//! seq/timestamp and VP8 descriptor rewriting across fuzzed layer switches.
//!
//! Invariants: no panic on any payload; the engine's VP8 keyframe test agrees
//! with str0m's descriptor parser wherever that parser accepts the payload; an
//! output sequence number is never reused for a different packet and continues
//! at +1 after a switch; a VP8 field that needs rewriting always gets a patch;
//! the first PictureID after a switch repeats none of the last ones sent. Packets
//! dropped on purpose (VP8 temporal layers) leave no output number used twice;
//! the temporal-field parser takes any payload.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use str0m::rtp::Vp8Descriptor;

use super::reader::{Reader, Writer};
use crate::keyframe::{is_keyframe_start, CodecKind};
use crate::rewrite::{Rewriter, Vp8Rewriter};
use crate::router::temporal;

const CODECS: [CodecKind; 6] = [
    CodecKind::Opus,
    CodecKind::Vp8,
    CodecKind::H264,
    CodecKind::Vp9,
    CodecKind::Av1,
    CodecKind::Other,
];

/// VP8 payload: X=1,S=1 | I,L,T,K | 15- or 7-bit PictureID | TL0PICIDX | TID/KEYIDX | header.
fn vp8_payload(pid: u16, wide: bool, tl0: u8, keyidx: u8, key: bool) -> Vec<u8> {
    let mut p = vec![0x90, 0xf0];
    if wide {
        p.extend_from_slice(&[0x80 | (pid >> 8) as u8 & 0x7f, pid as u8]);
    } else {
        p.push(pid as u8 & 0x7f);
    }
    p.extend_from_slice(&[tl0, 0x20 | (keyidx & 0x1f), u8::from(!key), 0x9d, 0x01, 0x2a]);
    p
}

struct Source {
    seq: u64,
    ts: u32,
    pid: u16,
    tl0: u8,
    keyidx: u8,
}

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let t0 = Instant::now();
    let mut now = t0;
    let mut rw = Rewriter::new(if r.bool() { 48_000 } else { 90_000 }, r.u64());
    let mut vp8 = Vp8Rewriter::default();
    let wide = r.bool();
    let mut sources: Vec<Source> = (0..3)
        .map(|_| Source { seq: u64::from(r.u32()), ts: r.u32(), pid: r.u16(), tl0: r.u8(), keyidx: r.u8() })
        .collect();
    let mut current: Option<usize> = None;
    let mut epoch = 0u32;
    // out seq -> (epoch, in seq): who used it.
    let mut used: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut max_out: Option<u64> = None;
    let mut recent_pids: VecDeque<u16> = VecDeque::new();
    let mut switched = false;
    let mut ops = 0;
    while !r.is_empty() && ops < 512 {
        ops += 1;
        match r.below(4) {
            0 => {
                // Keyframe detection on raw payloads, all codecs.
                let payload = r.chunk(64);
                let verdicts: Vec<bool> = CODECS.iter().map(|c| is_keyframe_start(*c, payload)).collect();
                if let Some(t) = temporal::parse(payload) {
                    assert!(payload[0] & 0x80 != 0 && t.tid <= temporal::MAX_TID);
                }
                if let Ok(d) = Vp8Descriptor::parse(payload) {
                    assert_eq!(
                        verdicts[1],
                        d.starts_keyframe(payload),
                        "VP8 keyframe verdict differs from str0m's on {payload:02x?}"
                    );
                }
            }
            1 => {
                now += Duration::from_millis(u64::from(r.u8()) * 4);
            }
            2 => {
                // Stop (mute/unsubscribe); the next packet needs a switch.
                rw.stop();
                current = None;
            }
            _ => {
                let i = r.below(3);
                let s = &mut sources[i];
                s.seq = s.seq.saturating_add_signed(i64::from(r.u8() as i8));
                s.ts = s.ts.wrapping_add(u32::from(r.u16()));
                let new_frame = r.bool();
                if new_frame {
                    s.pid = s.pid.wrapping_add(u16::from(r.u8() % 4));
                    s.tl0 = s.tl0.wrapping_add(r.u8() % 2);
                    s.keyidx = s.keyidx.wrapping_add(r.u8() % 2);
                }
                let key = r.bool();
                let payload = vp8_payload(s.pid, wide, s.tl0, s.keyidx, key);
                let desc = Vp8Descriptor::parse(&payload).expect("built well-formed");
                if current != Some(i) {
                    // As core: switch only on a keyframe start.
                    if !is_keyframe_start(CodecKind::Vp8, &payload) {
                        continue;
                    }
                    rw.switch(s.seq, s.ts, now);
                    vp8.switch(&desc, &payload);
                    current = Some(i);
                    epoch += 1;
                    switched = true;
                }
                if !switched && r.below(4) == 0 {
                    // A frame of a temporal layer this subscriber does not get.
                    rw.skip(s.seq);
                    if new_frame {
                        vp8.skip_picture(s.seq);
                    }
                    continue;
                }
                let Some((out, _ts)) = rw.map(s.seq, s.ts, now) else { continue };
                if switched {
                    if let Some(m) = max_out {
                        assert_eq!(out, m + 1, "first packet after a switch continues the sequence");
                    }
                }
                if let Some(prev) = used.insert(out, (epoch, s.seq)) {
                    assert_eq!(prev, (epoch, s.seq), "output seq {out} reused");
                }
                max_out = Some(max_out.map_or(out, |m| m.max(out)));

                let mut probe = vp8.clone();
                let fields = probe.map_fields(&desc, &payload, s.seq);
                let changed = fields.picture_id != desc.picture_id()
                    || fields.tl0_pic_idx != desc.tl0_pic_idx()
                    || fields.key_idx != desc.key_idx();
                let patch = vp8.map(&desc, &payload, s.seq);
                assert_eq!(patch.is_some(), changed, "patch iff a field changes");
                let pid = fields.picture_id.expect("descriptor has a PictureID");
                if switched && new_frame {
                    assert!(!recent_pids.contains(&pid), "PictureID {pid} repeated after a switch: {recent_pids:?}");
                }
                switched = false;
                if recent_pids.back() != Some(&pid) {
                    recent_pids.push_back(pid);
                    if recent_pids.len() > 4 {
                        recent_pids.pop_front();
                    }
                }
            }
        }
    }
}

pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // Keyframe payloads per codec, as encoders send them.
    let payloads: [(&str, Vec<u8>); 6] = [
        ("vp8_key", vec![0x90, 0x80, 0x81, 0x23, 0x10, 0x9d, 0x01, 0x2a]),
        ("h264_stapa", vec![0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]),
        ("h264_fua", vec![0x7c, 0x85, 1, 2]),
        ("vp9_key", vec![0xa8, 0x05, 0x00, 0x82]),
        ("av1_new_seq", vec![0x18, 0x0a, 0x0b]),
        ("vp8_bad_l", vec![0x90, 0x40, 0x05, 0x10]),
    ];
    for (name, p) in payloads {
        let mut w = Writer::default();
        w.u8(0).u64(0).u8(0).bytes(&[0; 3 * 9]);
        w.u8(0).chunk(&p);
        out.push((format!("kf_{name}"), w.0));
    }
    // Simulcast-like switching: packets on source 0, then 1, then back, 15-bit ids.
    let mut w = Writer::default();
    w.u8(1).u64(0x1234_5678).u8(1);
    for i in 0..3u32 {
        w.u32(1000 * i).u32(90_000 * i).u16(0x7ff0 + i as u16).u8(i as u8).u8(0);
    }
    for (src, key) in [(0, 1), (0, 0), (0, 0), (1, 1), (1, 0), (2, 0), (2, 1), (0, 1)] {
        w.u8(3).u8(src).u8(1).u16(3000).u8(1).u8(1).u8(1).u8(0).u8(key);
        w.u8(1).u8(8);
    }
    out.push(("switch_layers".into(), w.0));
    out
}
