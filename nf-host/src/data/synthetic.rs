//! Synthetic benchmark data: `synthetic:CxHxW:N`.
//!
//! `N` training and `ceil(N / 5)` test images, ten classes. Each class has a fixed smooth
//! pattern per channel, `sin(2π(fx·x/W + fy·y/H) + φ)` with its own frequencies and phase;
//! a sample is its class's pattern plus Gaussian noise of half the pattern's amplitude, stored
//! as `u8` (`128 + 48·v`, rounded and clamped), so a CNN learns the labels quickly. Every value
//! depends only on the spec: the patterns, the training set and the test set each come from
//! their own fixed seeds. [`parse`] knows the sizes without generating anything, so the set is
//! checked against the memory budget before a byte of it is made.

use std::f32::consts::PI;
use std::path::Path;

use nf_core::model::Shape;
use nf_core::rng::Rng;

use super::read::alloc;
use super::{Budget, DataError, Raw, Which};
use crate::limits::{MAX_INPUT_CHANNELS, MAX_INPUT_SIDE};

/// Classes of synthetic data.
pub(super) const CLASSES: usize = 10;
/// Standard deviation of the noise added to the unit-amplitude class pattern.
const NOISE: f32 = 0.5;
/// Stored value of 0 (the middle of `u8`).
const MID: f32 = 128.0;
/// Stored size of one unit of pattern amplitude.
const SCALE: f32 = 48.0;
/// Largest `H + W` for which each sample's pattern is built from per-row and per-column
/// tables (`8 * (H + W)` bytes); larger images evaluate the sine per pixel.
const TABLE_MAX: usize = 8192;
const PATTERN_SEED: u64 = 0x5EED_0001;
const TRAIN_SEED: u64 = 0x5EED_0002;
const TEST_SEED: u64 = 0x5EED_0003;

/// A parsed `synthetic:CxHxW:N` argument.
pub(super) struct Spec {
    /// The argument as given (errors name it).
    arg: String,
    /// Shape of one image.
    pub shape: Shape,
    /// Training images.
    pub n_train: usize,
    /// Test images, `ceil(n_train / 5)`.
    pub n_test: usize,
}

/// Parses `[synthetic:]CxHxW:N`: all four positive, the shape within the limits of `--input`
/// (at most 4096 channels and 8192 pixels a side), and the whole set (pixels and a 2-byte
/// label per image, both splits) countable in `u64` bytes.
pub(super) fn parse(arg: &str) -> Result<Spec, DataError> {
    let bad = |why: &str| {
        DataError::new(
            Path::new(arg),
            format!(
                "bad synthetic data spec: {why} (expected synthetic:CxHxW:N, e.g. \
                 synthetic:3x32x32:10000)"
            ),
        )
    };
    let body = arg.strip_prefix("synthetic:").unwrap_or(arg);
    let (dims, count) = body
        .split_once(':')
        .ok_or_else(|| bad("no ':N' image count"))?;
    let num = |s: &str, what: &str| -> Result<usize, DataError> {
        match s.trim().parse::<usize>() {
            Ok(0) => Err(bad(&format!("{what} is 0"))),
            Ok(v) => Ok(v),
            Err(_) => Err(bad(&format!("{what} {s:?} is not a positive integer"))),
        }
    };
    let parts: Vec<&str> = dims.split(['x', 'X']).collect();
    if parts.len() != 3 {
        return Err(bad(&format!("shape {dims:?} is not CxHxW")));
    }
    let c = num(parts[0], "channels")?;
    let h = num(parts[1], "height")?;
    let w = num(parts[2], "width")?;
    // The limits of `--input`, which keep every planned size far from overflow.
    if c > MAX_INPUT_CHANNELS || h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
        return Err(bad(&format!(
            "shape {c}x{h}x{w} is over {MAX_INPUT_CHANNELS} channels or {MAX_INPUT_SIDE} \
             pixels a side"
        )));
    }
    let n = num(count, "image count")?;
    let len = c
        .checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .filter(|&v| v < isize::MAX as usize)
        .ok_or_else(|| bad("shape too large"))?;
    let n_test = n.div_ceil(5);
    (n as u64)
        .checked_add(n_test as u64)
        .and_then(|k| k.checked_mul(len as u64 + 2))
        .ok_or_else(|| bad("too many bytes to count"))?;
    Ok(Spec {
        arg: arg.to_string(),
        shape: Shape::new(c, h, w),
        n_train: n,
        n_test,
    })
}

impl Spec {
    /// Counts what the set (both splits, or the test split) will put in memory against
    /// `budget`; an error naming the argument when it does not fit.
    pub fn check(&self, which: Which, budget: &mut Budget) -> Result<(), DataError> {
        let s = self.shape;
        let (what, count) = match which {
            Which::Both => (
                format!("{} training and {} test images", self.n_train, self.n_test),
                self.n_train + self.n_test,
            ),
            Which::Test => (format!("{} test images", self.n_test), self.n_test),
        };
        budget.add(
            Path::new(&self.arg),
            &format!("{what} of {}x{}x{}", s.c, s.h, s.w),
            count as u64 * (s.len() as u64 + 2),
        )
    }

    /// Generates the training split (`test` false) or the test split.
    pub fn generate(&self, test: bool) -> Result<Raw, DataError> {
        let (n, seed) = if test {
            (self.n_test, TEST_SEED)
        } else {
            (self.n_train, TRAIN_SEED)
        };
        let shape = self.shape;
        let path = Path::new(&self.arg);
        let mut raw = Raw {
            pixels: alloc(path, n.saturating_mul(shape.len()), "the images")?,
            labels: alloc(path, n, "the labels")?,
        };
        let tables = shape.h + shape.w <= TABLE_MAX;
        let (mut rows, mut cols) = if tables {
            (vec![(0.0, 0.0); shape.h], vec![(0.0, 0.0); shape.w])
        } else {
            (Vec::new(), Vec::new())
        };
        let mut rng = Rng::new(seed);
        for _ in 0..n {
            let k = rng.below(CLASSES as u32) as usize;
            raw.labels.push(k as u16);
            for c in 0..shape.c {
                let (fx, fy, phase) = pattern(k, c);
                let col = |x: usize| 2.0 * PI * fx * x as f32 / shape.w as f32 + phase;
                let row = |y: usize| 2.0 * PI * fy * y as f32 / shape.h as f32;
                if tables {
                    // sin(a + b) = sin a cos b + cos a sin b.
                    cols.iter_mut()
                        .enumerate()
                        .for_each(|(x, t)| *t = col(x).sin_cos());
                    rows.iter_mut()
                        .enumerate()
                        .for_each(|(y, t)| *t = row(y).sin_cos());
                }
                let at = |y: usize, x: usize| {
                    if tables {
                        let ((sa, ca), (sb, cb)) = (cols[x], rows[y]);
                        sa * cb + ca * sb
                    } else {
                        (col(x) + row(y)).sin()
                    }
                };
                for y in 0..shape.h {
                    for x in 0..shape.w {
                        let v = at(y, x) + NOISE * rng.normal();
                        raw.pixels
                            .push((MID + SCALE * v).round().clamp(0.0, 255.0) as u8);
                    }
                }
            }
        }
        Ok(raw)
    }
}

/// Frequencies along x and y (0.5 to 3 cycles per image) and phase of class `k`'s pattern on
/// channel `c`.
fn pattern(k: usize, c: usize) -> (f32, f32, f32) {
    let mut rng = Rng::new(PATTERN_SEED ^ ((k as u64) << 48) ^ c as u64);
    let fx = 0.5 + 2.5 * rng.uniform();
    let fy = 0.5 + 2.5 * rng.uniform();
    (fx, fy, 2.0 * PI * rng.uniform())
}
