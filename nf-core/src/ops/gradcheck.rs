//! Test-only helpers for finite-difference gradient checks.
//!
//! The loss closures return `f64` so that summing many `f32` outputs adds no rounding error of
//! its own; the only noise left is the `f32` rounding of the op's outputs, which a central
//! difference divides by `2 eps`.
extern crate std;

use std::vec::Vec;

/// Relative error `‖a − b‖ / (‖a‖ + ‖b‖)` (0 when both are zero), computed in `f64`.
pub(crate) fn rel_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "rel_error: length mismatch");
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        d += (x - y) * (x - y);
        na += x * x;
        nb += y * y;
    }
    let den = libm::sqrt(na) + libm::sqrt(nb);
    if den == 0.0 {
        0.0
    } else {
        (libm::sqrt(d) / den) as f32
    }
}

/// Central-difference gradient of `loss` at `x`, one coordinate at a time.
///
/// The step actually taken is `(x + eps) − (x − eps)` as rounded in `f32`, so the quotient
/// uses the true spacing of the two evaluation points. `x` is restored exactly afterwards.
pub(crate) fn numeric_grad(
    x: &mut [f32],
    eps: f32,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> Vec<f32> {
    let mut g = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let orig = x[i];
        let (hi, lo) = (orig + eps, orig - eps);
        x[i] = hi;
        let lp = loss(x);
        x[i] = lo;
        let lm = loss(x);
        x[i] = orig;
        g.push(((lp - lm) / f64::from(hi - lo)) as f32);
    }
    g
}

/// Fills a vector of `len` values drawn uniformly from `[-1, 1)` with a seeded generator.
pub(crate) fn random_vec(rng: &mut crate::rng::Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

/// `Σ r_i · y_i` in `f64`: a random projection that makes every output count in a check.
pub(crate) fn project(r: &[f32], y: &[f32]) -> f64 {
    r.iter()
        .zip(y)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}
