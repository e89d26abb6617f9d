//! The fuzz harness behind `tests/fuzz.rs`: a counting allocator, a seeded generator, byte
//! mutators and the loop that feeds inputs to a parser and checks every answer.
//!
//! A [`Probe`] runs one parser call: it catches a panic, measures the most bytes live on the
//! calling thread during the call (beyond those live when it started), and checks the answer:
//! `Ok`, or an error whose message is one line (and, where asked, names a path); a peak over
//! the call's bound is a failure too. [`fuzz`] runs a target's generator and checker over
//! [`iterations`] inputs, prints one line per parser call kind (inputs, Ok/Err counts, wall
//! time, largest peak), saves every failing input under the target directory's
//! `fuzz-failures/` (ready to be copied into `tests/fuzz_corpus/`) and fails the test.
#![allow(dead_code)]

pub mod checkpoint;
pub mod data;
pub mod describe;
pub mod stores;
pub mod text;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

// ---------------------------------------------------------------------------------------------
// Counting allocator: tests/peak_alloc (per thread).

#[path = "../peak_alloc/mod.rs"]
pub mod peak_alloc;
pub use peak_alloc::Counting;

/// Runs `f`, returning its result (or the panic message) and the most bytes live on this
/// thread during it beyond those live when it started.
fn peak_during<R>(f: impl FnOnce() -> R) -> (Result<R, String>, u64) {
    peak_alloc::peak_during(|| {
        catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
            e.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into())
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Seeded generator.

/// SplitMix64: small, fast, and every input follows from (seed, target, index).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// `true` with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
}

/// 32-bit values that break length and count arithmetic.
pub const INTERESTING_U32: [u32; 20] = [
    0,
    1,
    2,
    3,
    7,
    8,
    9,
    10,
    16,
    28,
    32,
    0x7f,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// An interesting `u32`, or `near` moved by a little.
pub fn interesting_u32(rng: &mut Rng, near: u32) -> u32 {
    match rng.below(3) {
        0 => *rng.pick(&INTERESTING_U32),
        1 => near.wrapping_add(rng.below(5) as u32).wrapping_sub(2),
        _ => rng.u64() as u32,
    }
}

/// One to `max_ops` random edits of `data`: bit flips, interesting bytes, 32-bit fields
/// (either endianness) set to interesting values, insertions, deletions, truncation,
/// extension, duplicated chunks.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, max_ops: usize) {
    for _ in 0..rng.range(1, max_ops) {
        let n = data.len();
        match rng.below(10) {
            0 | 1 if n > 0 => {
                let i = rng.below(n);
                data[i] ^= 1 << rng.below(8);
            }
            2 if n > 0 => {
                let i = rng.below(n);
                data[i] = *rng.pick(&[0u8, 1, 9, 10, 19, 20, 99, 100, 0x7f, 0x80, 0xff]);
            }
            3 if n >= 4 => {
                let i = rng.below(n - 3);
                let old = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                let v = interesting_u32(rng, old);
                let b = if rng.one_in(2) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                data[i..i + 4].copy_from_slice(&b);
            }
            4 => {
                let i = rng.below(n + 1);
                let k = rng.range(1, 16);
                let ins = rng.bytes(k);
                data.splice(i..i, ins);
            }
            5 if n > 0 => {
                let i = rng.below(n);
                let k = rng.range(1, (n - i).min(64));
                data.drain(i..i + k);
            }
            6 => data.truncate(rng.below(n + 1)),
            7 => {
                let k = rng.range(1, 4096);
                let tail = if rng.one_in(2) {
                    vec![0u8; k]
                } else {
                    rng.bytes(k)
                };
                data.extend(tail);
            }
            8 if n > 0 => {
                let i = rng.below(n);
                let k = rng.range(1, (n - i).min(256));
                let chunk = data[i..i + k].to_vec();
                let at = rng.below(n + 1);
                data.splice(at..at, chunk);
            }
            _ if n > 1 => {
                let (i, j) = (rng.below(n), rng.below(n));
                data.swap(i, j);
            }
            _ => data.push(rng.u64() as u8),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The loop.

/// Inputs per target: `NF_FUZZ_ITERS` if set, else the target's bounded CI count.
pub fn iterations(ci_default: usize) -> usize {
    std::env::var("NF_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(ci_default)
}

/// The base seed: `NF_FUZZ_SEED` if set, else a fixed one (CI runs the same inputs each time).
pub fn base_seed() -> u64 {
    std::env::var("NF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x4E46_5A5A)
}

/// With `NF_FUZZ_VERBOSE` set, the report lists each call's most frequent errors (digits
/// folded), to see how deep the inputs reach.
fn verbose() -> bool {
    std::env::var_os("NF_FUZZ_VERBOSE").is_some()
}

/// What one kind of parser call gave over a run.
#[derive(Default, Clone)]
struct Tally {
    oks: u64,
    errs: u64,
    peak: u64,
    time: Duration,
    slowest: Duration,
    /// Error messages, digits folded and cut short, by count (only when [`verbose`]).
    kinds: BTreeMap<String, u64>,
}

/// `m` with its digit runs folded to `#`, at most 90 characters.
fn kind(m: &str) -> String {
    let mut k = String::new();
    for c in m.chars() {
        if !(c.is_ascii_digit() && k.ends_with('#')) {
            k.push(if c.is_ascii_digit() { '#' } else { c });
        }
    }
    k.chars().take(90).collect()
}

/// Runs parser calls for one input, checking each answer; collects the findings.
#[derive(Default)]
pub struct Probe {
    tallies: BTreeMap<&'static str, Tally>,
    /// Findings about the current input.
    pub failures: Vec<String>,
}

impl Probe {
    /// Calls parser `name` through `f`, which may allocate at most `bound` bytes; an error
    /// must display as one non-empty line containing `must_name` (when given). Returns the
    /// answer, or `None` if the call panicked.
    pub fn call<T, E: Display>(
        &mut self,
        name: &'static str,
        bound: u64,
        must_name: Option<&str>,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        let t0 = Instant::now();
        let (r, peak) = peak_during(f);
        let dt = t0.elapsed();
        let tally = self.tallies.entry(name).or_default();
        tally.peak = tally.peak.max(peak);
        tally.time += dt;
        tally.slowest = tally.slowest.max(dt);
        if peak > bound {
            self.failures.push(format!(
                "{name}: peak allocation {peak} B over its bound {bound} B"
            ));
        }
        let r = match r {
            Ok(r) => r,
            Err(msg) => {
                self.failures.push(format!("{name}: panicked: {msg}"));
                return None;
            }
        };
        match &r {
            Ok(_) => tally.oks += 1,
            Err(e) => {
                tally.errs += 1;
                let m = e.to_string();
                if verbose() {
                    *tally.kinds.entry(kind(&m)).or_default() += 1;
                }
                if m.trim().is_empty() || m.contains(['\n', '\r']) {
                    self.failures
                        .push(format!("{name}: error is not one line: {m:?}"));
                }
                if let Some(p) = must_name {
                    if !m.contains(p) {
                        self.failures
                            .push(format!("{name}: error does not name {p:?}: {m:?}"));
                    }
                }
            }
        }
        Some(r)
    }

    /// A finding that is not about a single call (an answer contradicting another).
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }
}

/// A fresh, empty directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("nf-fuzz-{}-{k}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where failing inputs of `target` are saved.
pub fn failure_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(target)
}

/// The committed regression inputs of `target` (`tests/fuzz_corpus/<target>/*`), sorted.
pub fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Fuzzes `target`: `iters` inputs from `generate` (given a generator seeded from the base
/// seed, the target and the input's index), each checked by `check` through a [`Probe`];
/// failing inputs are written by `save` under [`failure_dir`]. Prints the per-call summary and
/// panics listing the failures (at most 20 are kept).
pub fn fuzz<I>(
    target: &str,
    iters: usize,
    mut generate: impl FnMut(&mut Rng) -> I,
    mut check: impl FnMut(&I, &mut Probe),
    save: impl Fn(&I, &Path),
) {
    let seed = base_seed();
    let salt = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut probe = Probe::default();
    let mut failures = Vec::new();
    let t0 = Instant::now();
    for i in 0..iters {
        let mut rng = Rng::new(seed ^ salt ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let input = generate(&mut rng);
        check(&input, &mut probe);
        if !probe.failures.is_empty() {
            let dir = failure_dir(target).join(format!("{seed}-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            save(&input, &dir);
            for f in probe.failures.drain(..) {
                if failures.len() < 20 {
                    failures.push(format!("input {i} (saved in {}): {f}", dir.display()));
                }
            }
        }
    }
    let wall = t0.elapsed();
    report(target, iters, wall, &probe.tallies);
    assert!(
        failures.is_empty(),
        "{target}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Replays the corpus inputs `inputs` of `target` through `check`, adding what fails to
/// `failures`; returns how many inputs there were.
pub fn replay<I>(
    target: &str,
    inputs: impl IntoIterator<Item = (String, I)>,
    mut check: impl FnMut(&I, &mut Probe),
    failures: &mut Vec<String>,
) -> usize {
    let mut probe = Probe::default();
    let mut n = 0;
    for (name, input) in inputs {
        n += 1;
        check(&input, &mut probe);
        failures.extend(
            probe
                .failures
                .drain(..)
                .map(|f| format!("{target}: {name}: {f}")),
        );
    }
    n
}

fn report(target: &str, iters: usize, wall: Duration, tallies: &BTreeMap<&'static str, Tally>) {
    println!(
        "fuzz {target}: {iters} inputs in {:.1} s (seed {})",
        wall.as_secs_f64(),
        base_seed()
    );
    for (name, t) in tallies {
        println!(
            "  {name:<28} ok {:>7}  err {:>7}  time {:>7.1} s  slowest {:>7.1} ms  max peak {}",
            t.oks,
            t.errs,
            t.time.as_secs_f64(),
            t.slowest.as_secs_f64() * 1e3,
            nf_host::size::format_size(t.peak)
        );
        let mut kinds: Vec<(&String, &u64)> = t.kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (k, n) in kinds.iter().take(12) {
            println!("      {n:>7}  {k}");
        }
    }
}
