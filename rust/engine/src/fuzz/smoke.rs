//! The CI smoke run: every fuzz target over its checked-in corpus
//! (`fuzz/rust/corpus/<target>/`) and a bounded number of seeded pseudo-random
//! inputs, some of them mutations of the corpus. Long runs use cargo-fuzz; see
//! `docs/fuzzing.md`.
use std::path::PathBuf;

use super::{seeds, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/rust/corpus").join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let Ok(dir) = std::fs::read_dir(corpus_dir(target)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn input(&mut self, base: Option<&[u8]>) -> Vec<u8> {
        match base {
            // Mutate a corpus entry: flip, overwrite, truncate or extend.
            Some(b) if !b.is_empty() => {
                let mut v = b.to_vec();
                for _ in 0..=self.next() % 8 {
                    let i = (self.next() as usize) % v.len();
                    match self.next() % 4 {
                        0 => v[i] ^= 1 << (self.next() % 8),
                        1 => v[i] = self.next() as u8,
                        2 => v.truncate(i.max(1)),
                        _ => v.insert(i, self.next() as u8),
                    }
                }
                v
            }
            _ => {
                let len = (self.next() % 512) as usize;
                (0..len).map(|_| self.next() as u8).collect()
            }
        }
    }
}

/// Replays `name`'s corpus, then `random` seeded inputs, half of them corpus mutations.
fn smoke(name: &str, random: usize) {
    let target = TARGETS.iter().find(|(n, _)| *n == name).expect("known target").1;
    let corpus = corpus(name);
    assert!(!corpus.is_empty(), "no seed corpus for {name} in {:?}", corpus_dir(name));
    for input in &corpus {
        target(input);
    }
    let mut rng = Rng(0x5eed_f00d ^ name.len() as u64);
    for i in 0..random {
        let base = (i % 2 == 0).then(|| corpus[i % corpus.len()].as_slice());
        target(&rng.input(base));
    }
}

// One test per target so the harness runs them in parallel; the counts keep the
// whole smoke run under ~30 s of CPU in a debug build.
#[test]
fn smoke_demux() {
    smoke("demux", 3000);
}

#[test]
fn smoke_rewrite() {
    smoke("rewrite", 3000);
}

#[test]
fn smoke_sdp() {
    smoke("sdp", 200);
}

#[test]
fn smoke_datagram() {
    smoke("datagram", 150);
}

#[test]
fn smoke_router() {
    smoke("router", 150);
}

#[test]
fn smoke_tcp() {
    smoke("tcp", 3000);
}

#[test]
fn smoke_burst() {
    smoke("burst", 40);
}

#[test]
fn smoke_red() {
    smoke("red", 3000);
}

#[test]
fn every_target_has_a_smoke_test() {
    assert_eq!(TARGETS.len(), 9);
}

/// Regenerates the seed corpus: `cargo test -p pysfu-engine --lib -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes files; run by hand after changing a target's input format"]
fn write_seed_corpus() {
    for (target, name, data) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed_{name}")), data).expect("write seed");
    }
}

#[test]
fn seeds_run_clean() {
    for (target, name, data) in seeds() {
        let f = TARGETS.iter().find(|(n, _)| *n == target).expect("known target").1;
        eprintln!("{target}/{name}");
        f(&data);
    }
}
