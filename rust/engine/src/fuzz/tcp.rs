//! Target `tcp`: the RFC 4571 framer of ICE over TCP (`net::tcp::Framer`) fed a
//! fuzzed byte stream in fuzzed chunk sizes, checked against a one-pass model
//! (frames must not depend on how TCP segmented the stream; the partial frame held
//! is bounded), then every frame routed by the demux as TCP traffic.
use std::net::SocketAddr;

use crate::demux::{Demux, Transport};
use crate::net::tcp::{frame, Framer};

/// Frames of a whole stream, read once front to back; a trailing partial frame
/// yields nothing.
fn model(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= stream.len() {
        let len = u16::from_be_bytes([stream[at], stream[at + 1]]) as usize;
        if at + 2 + len > stream.len() {
            break;
        }
        if len > 0 {
            out.push(stream[at + 2..at + 2 + len].to_vec());
        }
        at += 2 + len;
    }
    out
}

pub fn run(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let mut framer = Framer::default();
    let mut got = Vec::new();
    let mut rest = stream;
    let mut x = u32::from(seed) | 1;
    while !rest.is_empty() {
        // Chunk sizes from a tiny LCG: 1 byte up to the whole stream.
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = if seed == 0 { rest.len() } else { 1 + (x as usize >> 4) % (usize::from(seed) * 8) };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        framer.push(chunk, &mut |f| got.push(f.to_vec()));
        assert!(framer.buffered() <= 2 + u16::MAX as usize, "framer holds more than one frame");
        rest = tail;
    }
    assert_eq!(got, model(stream), "frames depend on segmentation");
    let mut demux = Demux::default();
    demux.add_peer("ufrag".into(), 1);
    let remote = SocketAddr::from(([192, 0, 2, 1], 50_000));
    for f in &got {
        let _ = demux.classify_on(Transport::Tcp, remote, f);
        assert_eq!(frame(f).map(|w| w.len()), Some(f.len() + 2));
    }
}

pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut stream = Vec::new();
    for p in [&b"\x00\x01\x00\x00\x21\x12\xa4\x42ufrag"[..], b"", b"\x16\xfe\xfd dtls", &[0x80; 200]] {
        stream.extend(frame(p).unwrap());
    }
    stream.extend_from_slice(&[0x05, 0xdc, 1, 2, 3]); // a partial frame at the end
    let mut out = Vec::new();
    for seed in [0u8, 1, 3, 200] {
        let mut input = vec![seed];
        input.extend_from_slice(&stream);
        out.push((format!("chunks_{seed}"), input));
    }
    out
}
