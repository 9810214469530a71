//! Fuzz targets: one function per target, taking raw fuzzer bytes.
//!
//! cargo-fuzz (`fuzz/rust`, feature `fuzz`) calls them under libFuzzer and
//! sanitizers for long runs; `cargo test` replays them over the checked-in seed
//! corpus plus a few thousand seeded pseudo-random inputs (the CI smoke run; see
//! `docs/fuzzing.md`). A target panics only on a bug: a panic inside the engine,
//! or a broken invariant checked against a small reference model.
//!
//! | target     | drives                                                         |
//! |------------|----------------------------------------------------------------|
//! | `demux`    | [`Demux`](crate::demux::Demux) routing vs a model: STUN, junk  |
//! | `rewrite`  | keyframe detection, seq/ts and VP8 picture-id rewriting        |
//! | `sdp`      | SDP helpers, `accept_offer`/`accept_answer` with fuzzed SDP    |
//! | `datagram` | a live `Core` (publisher + 2 subscribers) fed STUN/DTLS/SRTP/SRTCP from fuzzed addresses |
//! | `burst`    | run-loop read turns under bursts of thousands of datagrams (junk, unknown-ufrag STUN, errors, real SRTP) |
//! | `router`   | the same `Core` driven by publish/subscribe/mute/packet events, checked against a model |
//! | `tcp`      | the ICE-TCP RFC 4571 framer under fuzzed segmentation vs a model, frames routed as TCP |
//! | `shards`   | two shards of one fabric: hand-over, relayed media to a mirror, its end, vs a model |
//! | `red`      | the RFC 2198 (audio/red) primary extraction vs a model          |
mod burst;
mod demux;
mod reader;
mod red;
mod rewrite;
mod sdp;
mod session;
mod shards;
mod tcp;

pub use reader::Reader;
pub use session::sha1_hmac;

/// A fuzz target: raw bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, as cargo-fuzz and the corpus directories call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("demux", demux::run),
    ("rewrite", rewrite::run),
    ("sdp", sdp::run),
    ("datagram", session::run_datagram),
    ("router", session::run_router),
    ("burst", burst::run),
    ("tcp", tcp::run),
    ("shards", shards::run),
    ("red", red::run),
];

/// Target `demux`.
pub fn demux(data: &[u8]) {
    demux::run(data)
}

/// Target `rewrite`.
pub fn rewrite(data: &[u8]) {
    rewrite::run(data)
}

/// Target `sdp`.
pub fn sdp(data: &[u8]) {
    sdp::run(data)
}

/// Target `datagram`.
pub fn datagram(data: &[u8]) {
    session::run_datagram(data)
}

/// Target `router`.
pub fn router(data: &[u8]) {
    session::run_router(data)
}

/// Target `tcp`.
pub fn tcp(data: &[u8]) {
    tcp::run(data)
}

/// Target `shards`.
pub fn shards(data: &[u8]) {
    shards::run(data)
}

/// Target `red`.
pub fn red(data: &[u8]) {
    red::run(data)
}

/// Target `burst`.
pub fn burst(data: &[u8]) {
    burst::run(data)
}

/// Seed inputs built from real traffic (str0m's own writers and a live `Core`),
/// written to `fuzz/rust/corpus/<target>/` by `cargo test -p pysfu-engine --
/// --ignored write_seed_corpus`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, data) in demux::seeds() {
        out.push(("demux", name, data));
    }
    for (name, data) in rewrite::seeds() {
        out.push(("rewrite", name, data));
    }
    for (name, data) in sdp::seeds() {
        out.push(("sdp", name, data));
    }
    for (name, data) in session::seeds_datagram() {
        out.push(("datagram", name, data));
    }
    for (name, data) in session::seeds_router() {
        out.push(("router", name, data));
    }
    for (name, data) in burst::seeds() {
        out.push(("burst", name, data));
    }
    for (name, data) in tcp::seeds() {
        out.push(("tcp", name, data));
    }
    for (name, data) in shards::seeds() {
        out.push(("shards", name, data));
    }
    for (name, data) in red::seeds() {
        out.push(("red", name, data));
    }
    out
}

#[cfg(test)]
mod smoke;
