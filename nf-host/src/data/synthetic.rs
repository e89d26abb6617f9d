//! Synthetic benchmark data: `synthetic:CxHxW:N`.
//!
//! Ten classes, each a fixed smooth pattern (per channel a 2-D sinusoid with its own
//! frequencies and phase), plus Gaussian noise of half the pattern's amplitude, so a CNN learns
//! the labels quickly. Every value depends only on the spec: the patterns, the training set and
//! the test set each come from their own fixed seed.

use std::path::PathBuf;

use nf_core::model::Shape;
use nf_core::rng::Rng;

use super::{DataError, Dataset, Splits};

/// Classes of synthetic data.
const CLASSES: usize = 10;
/// Standard deviation of the noise added to the unit-amplitude class pattern.
const NOISE: f32 = 0.5;
/// Most pixels (training plus test) a spec may ask for: 2^31 `f32`s, 8 GiB.
const MAX_PIXELS: u64 = 1 << 31;
const PATTERN_SEED: u64 = 0x5EED_0001;
const TRAIN_SEED: u64 = 0x5EED_0002;
const TEST_SEED: u64 = 0x5EED_0003;

/// Generates the data named by `spec`, `synthetic:CxHxW:N` (the `synthetic:` prefix may be
/// left out): `N` training and `ceil(N / 5)` test images of `C` channels of `H`x`W`, 10
/// classes, deterministic, standardised per channel with the training split's mean and std.
pub fn synthetic(spec: &str) -> Result<Splits, DataError> {
    let (shape, n) = parse(spec)?;
    let n_test = n.div_ceil(5);
    let too_large = || {
        DataError::new(
            PathBuf::from(spec),
            format!("too large: more than {MAX_PIXELS} pixels in all"),
        )
    };
    let total = (n as u64 + n_test as u64)
        .checked_mul(shape.len() as u64)
        .ok_or_else(too_large)?;
    if total > MAX_PIXELS {
        return Err(too_large());
    }
    let patterns = patterns(shape);
    let mut train = generate(shape, n, &patterns, TRAIN_SEED);
    let mut test = generate(shape, n_test, &patterns, TEST_SEED);
    let (mean, std) = channel_stats(&train.images, shape);
    for d in [&mut train, &mut test] {
        standardise(&mut d.images, shape, &mean, &std);
        d.mean = mean.clone();
        d.std = std.clone();
    }
    Ok(Splits { train, test })
}

/// Parses `[synthetic:]CxHxW:N` into a shape and a count, all positive.
fn parse(spec: &str) -> Result<(Shape, usize), DataError> {
    let bad = |why: &str| {
        DataError::new(
            PathBuf::from(spec),
            format!(
                "bad synthetic data spec: {why} (expected synthetic:CxHxW:N, e.g. \
                 synthetic:3x32x32:10000)"
            ),
        )
    };
    let body = spec.strip_prefix("synthetic:").unwrap_or(spec);
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
    let n = num(count, "image count")?;
    c.checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .filter(|&v| v as u64 <= MAX_PIXELS)
        .ok_or_else(|| bad("shape too large"))?;
    Ok((Shape::new(c, h, w), n))
}

/// One unit-amplitude pattern per class, `shape.len()` values each.
fn patterns(shape: Shape) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(PATTERN_SEED);
    let two_pi = 2.0 * std::f32::consts::PI;
    (0..CLASSES)
        .map(|_| {
            let mut p = Vec::with_capacity(shape.len());
            for _ in 0..shape.c {
                // Spatial frequencies of 0.5 to 3 cycles per image along each axis.
                let fx = 0.5 + 2.5 * rng.uniform();
                let fy = 0.5 + 2.5 * rng.uniform();
                let phase = two_pi * rng.uniform();
                for y in 0..shape.h {
                    for x in 0..shape.w {
                        let t = fx * x as f32 / shape.w as f32 + fy * y as f32 / shape.h as f32;
                        p.push((two_pi * t + phase).sin());
                    }
                }
            }
            p
        })
        .collect()
}

/// `n` samples: a uniformly random class each, its pattern plus noise.
fn generate(shape: Shape, n: usize, patterns: &[Vec<f32>], seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * shape.len());
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let k = rng.below(CLASSES as u32) as usize;
        labels.push(k as u16);
        images.extend(patterns[k].iter().map(|&v| v + NOISE * rng.normal()));
    }
    Dataset {
        images,
        labels,
        shape,
        classes: CLASSES,
        n,
        mean: Vec::new(),
        std: Vec::new(),
    }
}

/// Per-channel mean and std (std 1 for a constant channel).
fn channel_stats(images: &[f32], shape: Shape) -> (Vec<f32>, Vec<f32>) {
    let plane = shape.h * shape.w;
    let mut sum = vec![0f64; shape.c];
    let mut sq = vec![0f64; shape.c];
    for img in images.chunks_exact(shape.len()) {
        for c in 0..shape.c {
            for &v in &img[c * plane..(c + 1) * plane] {
                sum[c] += f64::from(v);
                sq[c] += f64::from(v) * f64::from(v);
            }
        }
    }
    let count = (images.len() / shape.len().max(1) * plane).max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|&s| (s / count) as f32).collect();
    let std = sum
        .iter()
        .zip(&sq)
        .map(|(&s, &q)| {
            let m = s / count;
            let sd = (q / count - m * m).max(0.0).sqrt();
            if sd > 1e-6 {
                sd as f32
            } else {
                1.0
            }
        })
        .collect();
    (mean, std)
}

fn standardise(images: &mut [f32], shape: Shape, mean: &[f32], std: &[f32]) {
    let plane = shape.h * shape.w;
    for img in images.chunks_exact_mut(shape.len()) {
        for c in 0..shape.c {
            for v in &mut img[c * plane..(c + 1) * plane] {
                *v = (*v - mean[c]) / std[c];
            }
        }
    }
}
