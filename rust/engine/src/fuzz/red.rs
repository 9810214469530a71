//! Target `red`: the RFC 2198 primary extraction (`router::red::primary`) on fuzzed
//! RED payloads (they come from publishers), checked against a one-pass model: the
//! primary is the tail after every block header and every redundant block.
use crate::router::red::primary;

/// Where the primary block starts, or None when the headers or lengths overrun.
fn model(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut redundant = 0usize;
    loop {
        let first = *data.get(at)?;
        if first & 0x80 == 0 {
            at += 1;
            break;
        }
        let h = data.get(at..at + 4)?;
        redundant += (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        at += 4;
    }
    (at + redundant <= data.len()).then_some(at + redundant)
}

pub fn run(data: &[u8]) {
    let got = primary(data);
    if let Some(p) = got {
        assert!(data.ends_with(p), "the primary is the payload's tail");
    }
    // str0m bounds the number of redundant blocks; the model does not.
    let headers = data.iter().step_by(4).take_while(|b| *b & 0x80 != 0).count();
    if headers <= 16 {
        let want = model(data).map(|at| &data[at..]).filter(|p| !p.is_empty());
        assert_eq!(got, want);
    }
}

pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use str0m::rtp::{RedEncoder, RedundantBlock};
    let block = |n: u8| RedundantBlock { pt: 111, timestamp_offset: 960 * u32::from(n), payload: vec![n; 40] };
    vec![
        ("primary_only".to_string(), RedEncoder::encode(111, &[0xfc; 60], &[])),
        ("one_redundant".to_string(), RedEncoder::encode(111, &[0xfc; 60], &[block(1)])),
        ("two_redundant".to_string(), RedEncoder::encode(111, &[0xfc; 60], &[block(2), block(1)])),
    ]
}
