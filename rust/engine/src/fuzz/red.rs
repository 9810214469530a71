//! Target `red`: the RFC 2198 primary extraction (`router::red::primary`) on fuzzed
//! RED payloads (they come from publishers), checked against a one-pass model: the
//! primary is the tail after every block header and every redundant block. Then the
//! loss recovery: `Received` fed a fuzzed run of sequence numbers (jumps, copies,
//! reordering) against a set of what arrived, and `recover` on the payload against
//! the blocks str0m's decoder finds.
use std::collections::HashSet;

use crate::router::red::{primary, recover, Received, HISTORY};
use str0m::rtp::RedDecoder;

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

/// `Received::note` against the set of sequence numbers seen: a packet newer than
/// all before it names exactly the ones of the 8 before it, from the first packet
/// on, that never arrived; any other names none.
fn check_received(steps: &[u8]) {
    let mut r = Received::default();
    let mut seen = HashSet::new();
    let (mut seq, mut first, mut newest) = (1_000u64, None::<u64>, None::<u64>);
    for &b in steps {
        // Mostly small steps forward, some copies, reorders and long jumps.
        seq = match b >> 6 {
            0 | 1 => seq + u64::from(b & 0x07),
            2 => seq.saturating_sub(u64::from(b & 0x0f)).max(1),
            _ => seq + u64::from(b & 0x3f) * 3,
        };
        let got = r.note(seq);
        let first = *first.get_or_insert(seq);
        let want = if newest.is_some_and(|n| seq <= n) || newest.is_none() {
            0
        } else {
            (1..=HISTORY)
                .filter(|k| seq >= first + k && !seen.contains(&(seq - k)))
                .fold(0u8, |m, k| m | 1 << (k - 1))
        };
        assert_eq!(got, want, "packet {seq}, first {first}, newest {newest:?}");
        seen.insert(seq);
        newest = Some(newest.map_or(seq, |n| n.max(seq)));
    }
}

pub fn run(data: &[u8]) {
    // Layout: a count n (low 5 bits), n sequence steps, then the RED payload.
    let Some((&n, rest)) = data.split_first() else { return };
    let (steps, data) = rest.split_at(rest.len().min(usize::from(n & 0x1f)));
    check_received(steps);
    let missing = steps.last().copied().unwrap_or(u8::MAX);
    let got = recover(data, missing);
    let blocks = RedDecoder::decode(data).map(|b| b.into_iter().filter(|b| !b.is_primary).collect::<Vec<_>>());
    match blocks {
        Ok(blocks) => {
            for r in &got {
                assert!((1..=HISTORY).contains(&r.back) && missing & (1 << (r.back - 1)) != 0);
                let b = &blocks[blocks.len() - r.back as usize];
                assert_eq!((&r.payload[..], r.timestamp_offset, r.pt), (b.payload, b.timestamp_offset, b.pt));
            }
            assert!(got.windows(2).all(|w| w[0].back > w[1].back), "oldest first");
        }
        Err(_) => assert!(got.is_empty(), "nothing from a malformed payload"),
    }
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
    // Steps: in order, a loss of two, a copy, a late one, a long jump.
    let steps = [1u8, 1, 3, 0, 0x81, 1, 0xc8, 1];
    let with_steps = |payload: Vec<u8>| [&[steps.len() as u8][..], &steps, &payload].concat();
    vec![
        ("primary_only".to_string(), with_steps(RedEncoder::encode(111, &[0xfc; 60], &[]))),
        ("one_redundant".to_string(), with_steps(RedEncoder::encode(111, &[0xfc; 60], &[block(1)]))),
        ("two_redundant".to_string(), with_steps(RedEncoder::encode(111, &[0xfc; 60], &[block(2), block(1)]))),
    ]
}
