//! Batch normalisation over NCHW (per channel, statistics over `n·h·w`), PyTorch semantics.
//!
//! Training mode normalises with the batch's mean and biased variance and updates the running
//! statistics with the unbiased variance; evaluation mode uses the running statistics. Sums are
//! accumulated in `f64` (two passes: mean, then centred squares), so the variance does not
//! suffer from cancellation when the mean is large compared with the spread.
use super::Nchw;

/// Added to the variance before the square root (PyTorch's default `eps`).
pub const EPS: f32 = 1e-5;
/// Weight of the new batch in the running statistics (PyTorch's default `momentum`).
pub const MOMENTUM: f32 = 0.1;

/// Sum over the `n·h·w` elements of channel `c`, in `f64`, of `f(value)`.
fn channel_sum(d: &Nchw, x: &[f32], c: usize, mut f: impl FnMut(f32) -> f64) -> f64 {
    let hw = d.h * d.w;
    let mut s = 0f64;
    for n in 0..d.n {
        let base = (n * d.c + c) * hw;
        s += x[base..base + hw].iter().map(|&v| f(v)).sum::<f64>();
    }
    s
}

/// Applies `f(value) -> value` to every element of channel `c` of `x`, in place.
fn channel_map(d: &Nchw, x: &mut [f32], c: usize, mut f: impl FnMut(f32) -> f32) {
    let hw = d.h * d.w;
    for n in 0..d.n {
        let base = (n * d.c + c) * hw;
        x[base..base + hw].iter_mut().for_each(|v| *v = f(*v));
    }
}

/// Training-mode forward pass.
///
/// Per channel: `mean` and biased `var` over `n·h·w`; `invstd = 1/sqrt(var + EPS)` is stored in
/// `invstd[c]`; `x` is overwritten with `x̂ = (x − mean)·invstd` (what backward needs); `y =
/// γ·x̂ + β`. Running statistics become `(1 − MOMENTUM)·running + MOMENTUM·batch`, with the
/// unbiased variance `var·m/(m − 1)` (`m = n·h·w`; the biased one when `m = 1`, where PyTorch
/// refuses to train).
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    d: &Nchw,
    x: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    invstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
) {
    let len = d.len();
    let x = &mut x[..len];
    let y = &mut y[..len];
    let m = d.n * d.h * d.w;
    if m == 0 {
        return;
    }
    let mf = m as f64;
    for c in 0..d.c {
        let mean = channel_sum(d, x, c, f64::from) / mf;
        let var = channel_sum(d, x, c, |v| {
            let t = f64::from(v) - mean;
            t * t
        }) / mf;
        let is = 1.0 / libm::sqrt(var + f64::from(EPS));
        invstd[c] = is as f32;
        channel_map(d, x, c, |v| ((f64::from(v) - mean) * is) as f32);
        let unbiased = if m > 1 { var * mf / (mf - 1.0) } else { var };
        let mom = f64::from(MOMENTUM);
        running_mean[c] = ((1.0 - mom) * f64::from(running_mean[c]) + mom * mean) as f32;
        running_var[c] = ((1.0 - mom) * f64::from(running_var[c]) + mom * unbiased) as f32;
    }
    normalised_affine(d, x, gamma, beta, y);
}

/// `y = γ·x̂ + β` per channel.
fn normalised_affine(d: &Nchw, xhat: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    let hw = d.h * d.w;
    if hw == 0 {
        return;
    }
    for (i, (yp, xp)) in y[..d.len()]
        .chunks_exact_mut(hw)
        .zip(xhat[..d.len()].chunks_exact(hw))
        .enumerate()
    {
        let c = i % d.c;
        let (g, b) = (gamma[c], beta[c]);
        for (o, &v) in yp.iter_mut().zip(xp) {
            *o = g * v + b;
        }
    }
}

/// Evaluation-mode forward pass: `y = γ·(x − running_mean)/sqrt(running_var + EPS) + β`.
pub fn forward_eval(
    d: &Nchw,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    y: &mut [f32],
) {
    let hw = d.h * d.w;
    if hw == 0 {
        return;
    }
    for (i, (yp, xp)) in y[..d.len()]
        .chunks_exact_mut(hw)
        .zip(x[..d.len()].chunks_exact(hw))
        .enumerate()
    {
        let c = i % d.c;
        let scale = gamma[c] / libm::sqrtf(running_var[c] + EPS);
        let shift = beta[c] - running_mean[c] * scale;
        for (o, &v) in yp.iter_mut().zip(xp) {
            *o = scale * v + shift;
        }
    }
}

/// Training-mode backward pass, in place on `dy`.
///
/// With `m = n·h·w`, per channel: `dβ = Σ dy`, `dγ = Σ dy·x̂` (both overwritten) and
/// `dx = γ·invstd/m · (m·dy − dβ − x̂·dγ)`, which accounts for the dependence of the batch mean
/// and variance on every input. `xhat` and `invstd` are what [`forward_train`] left.
pub fn backward(
    d: &Nchw,
    xhat: &[f32],
    gamma: &[f32],
    invstd: &[f32],
    dy: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let hw = d.h * d.w;
    let m = d.n * hw;
    let xhat = &xhat[..d.len()];
    let dy = &mut dy[..d.len()];
    for c in 0..d.c {
        let (mut sdy, mut sdyx) = (0f64, 0f64);
        for n in 0..d.n {
            let base = (n * d.c + c) * hw;
            for (&g, &xh) in dy[base..base + hw].iter().zip(&xhat[base..base + hw]) {
                sdy += f64::from(g);
                sdyx += f64::from(g) * f64::from(xh);
            }
        }
        dbeta[c] = sdy as f32;
        dgamma[c] = sdyx as f32;
        if m == 0 {
            continue;
        }
        let mf = m as f64;
        let k = f64::from(gamma[c]) * f64::from(invstd[c]);
        let (mean_dy, mean_dyx) = (sdy / mf, sdyx / mf);
        for n in 0..d.n {
            let base = (n * d.c + c) * hw;
            for (g, &xh) in dy[base..base + hw].iter_mut().zip(&xhat[base..base + hw]) {
                *g = (k * (f64::from(*g) - mean_dy - f64::from(xh) * mean_dyx)) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ops::gradcheck::{numeric_grad, project, random_vec, rel_error};
    use crate::rng::Rng;
    use std::println;
    use std::vec::Vec;

    /// Per-channel (mean, biased var, unbiased var) in f64.
    fn stats(d: &Nchw, x: &[f32]) -> Vec<(f64, f64, f64)> {
        (0..d.c)
            .map(|c| {
                let vals: Vec<f64> = (0..d.n)
                    .flat_map(|n| {
                        let base = (n * d.c + c) * d.h * d.w;
                        x[base..base + d.h * d.w].iter().map(|&v| f64::from(v))
                    })
                    .collect();
                let m = vals.len() as f64;
                let mean = vals.iter().sum::<f64>() / m;
                let ss = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
                (mean, ss / m, ss / (m - 1.0))
            })
            .collect()
    }

    #[test]
    fn train_output_is_normalised_and_running_stats_follow_pytorch() {
        let d = Nchw {
            n: 4,
            c: 3,
            h: 5,
            w: 6,
        };
        let mut rng = Rng::new(77);
        // Shifted and scaled inputs per channel: mean 3c+10, spread 1+c.
        let mut x: Vec<f32> = (0..d.len())
            .map(|i| {
                let c = (i / (d.h * d.w)) % d.c;
                (3 * c + 10) as f32 + (1 + c) as f32 * rng.normal()
            })
            .collect();
        let x_in = x.clone();
        let gamma = std::vec![1.0f32; d.c];
        let beta = std::vec![0.0f32; d.c];
        let mut y = std::vec![0f32; d.len()];
        let mut invstd = std::vec![0f32; d.c];
        let mut rm: Vec<f32> = std::vec![0.5, -1.0, 2.0];
        let mut rv: Vec<f32> = std::vec![1.0, 2.0, 0.5];
        let (rm0, rv0) = (rm.clone(), rv.clone());
        forward_train(
            &d,
            &mut x,
            &gamma,
            &beta,
            &mut y,
            &mut invstd,
            &mut rm,
            &mut rv,
        );
        let want = stats(&d, &x_in);
        for (c, &(mean, bvar, uvar)) in want.iter().enumerate() {
            let got = stats(&d, &y)[c];
            assert!(got.0.abs() < 1e-5, "channel {c}: output mean {}", got.0);
            // Biased variance of x̂ is var/(var+eps), just under 1.
            assert!(
                (got.1 - bvar / (bvar + 1e-5)).abs() < 1e-4,
                "channel {c}: var {}",
                got.1
            );
            let m = f64::from(MOMENTUM);
            let want_rm = (1.0 - m) * f64::from(rm0[c]) + m * mean;
            let want_rv = (1.0 - m) * f64::from(rv0[c]) + m * uvar;
            assert!((f64::from(rm[c]) - want_rm).abs() < 1e-5 * want_rm.abs().max(1.0));
            assert!(
                (f64::from(rv[c]) - want_rv).abs() < 1e-5 * want_rv.abs().max(1.0),
                "channel {c}: running_var {} want {want_rv} (unbiased)",
                rv[c]
            );
            // The unbiased variance is what is used: the biased one would differ visibly.
            let biased_rv = (1.0 - m) * f64::from(rv0[c]) + m * bvar;
            assert!((f64::from(rv[c]) - biased_rv).abs() > 1e-4);
            assert!((f64::from(invstd[c]) - 1.0 / (bvar + 1e-5).sqrt()).abs() < 1e-5);
        }
        // x was overwritten with x̂ and y = γ x̂ + β with γ = 1, β = 0.
        assert_eq!(x, y);

        // Eval mode uses the running statistics: different from the train output here.
        let mut y_eval = std::vec![0f32; d.len()];
        forward_eval(&d, &x_in, &gamma, &beta, &rm, &rv, &mut y_eval);
        for (i, &v) in y_eval.iter().enumerate() {
            let c = (i / (d.h * d.w)) % d.c;
            let want = (f64::from(x_in[i]) - f64::from(rm[c]))
                / (f64::from(rv[c]) + f64::from(EPS)).sqrt();
            assert!((f64::from(v) - want).abs() < 1e-4 * want.abs().max(1.0));
        }
        assert!(
            rel_error(&y_eval, &y) > 0.1,
            "eval output equals train output"
        );
    }

    #[test]
    fn eval_with_batch_stats_reproduces_train_output() {
        // With running stats set to the batch's biased statistics, eval == train.
        let d = Nchw {
            n: 3,
            c: 2,
            h: 4,
            w: 3,
        };
        let mut rng = Rng::new(5);
        let x_in = random_vec(&mut rng, d.len());
        let gamma = random_vec(&mut rng, d.c);
        let beta = random_vec(&mut rng, d.c);
        let mut x = x_in.clone();
        let (mut y, mut invstd) = (std::vec![0f32; d.len()], std::vec![0f32; d.c]);
        let (mut rm, mut rv) = (std::vec![0f32; d.c], std::vec![1f32; d.c]);
        forward_train(
            &d,
            &mut x,
            &gamma,
            &beta,
            &mut y,
            &mut invstd,
            &mut rm,
            &mut rv,
        );
        let s = stats(&d, &x_in);
        let bm: Vec<f32> = s.iter().map(|t| t.0 as f32).collect();
        let bv: Vec<f32> = s.iter().map(|t| t.1 as f32).collect();
        let mut y_eval = std::vec![0f32; d.len()];
        forward_eval(&d, &x_in, &gamma, &beta, &bm, &bv, &mut y_eval);
        let e = rel_error(&y, &y_eval);
        assert!(e < 1e-5, "rel err {e}");
    }

    /// Finite differences of `L = Σ r·BN_train(x)` (the batch statistics depend on x, so this
    /// checks the full backward, not just the affine part). Unit-scale inputs and eps = 1e-3:
    /// the truncation error is O(eps²) ≈ 1e-6 relative, the f32 output noise (≈1e-7·|y|, over
    /// ~100 outputs) divided by 2·eps stays near 1e-4 of a unit gradient; tolerance 1e-2.
    #[test]
    fn gradcheck_batchnorm_train() {
        let d = Nchw {
            n: 3,
            c: 2,
            h: 3,
            w: 4,
        };
        let mut rng = Rng::new(9);
        let mut x = random_vec(&mut rng, d.len());
        let mut gamma: Vec<f32> = (0..d.c).map(|_| 0.5 + rng.uniform()).collect();
        let mut beta = random_vec(&mut rng, d.c);
        let r = random_vec(&mut rng, d.len());
        let run = |x: &[f32], gamma: &[f32], beta: &[f32]| {
            let mut xh = x.to_vec();
            let (mut y, mut is) = (std::vec![0f32; d.len()], std::vec![0f32; d.c]);
            let (mut rm, mut rv) = (std::vec![0f32; d.c], std::vec![1f32; d.c]);
            forward_train(&d, &mut xh, gamma, beta, &mut y, &mut is, &mut rm, &mut rv);
            (xh, y, is)
        };
        let (xhat, _, invstd) = run(&x, &gamma, &beta);
        let mut dx = r.clone();
        let (mut dgamma, mut dbeta) = (std::vec![f32::NAN; d.c], std::vec![f32::NAN; d.c]);
        backward(&d, &xhat, &gamma, &invstd, &mut dx, &mut dgamma, &mut dbeta);

        let eps = 1e-3;
        let (g0, b0) = (gamma.clone(), beta.clone());
        let fd_x = numeric_grad(&mut x, eps, |x| project(&r, &run(x, &g0, &b0).1));
        let x0 = x.clone();
        let fd_g = numeric_grad(&mut gamma, eps, |g| project(&r, &run(&x0, g, &b0).1));
        let fd_b = numeric_grad(&mut beta, eps, |b| project(&r, &run(&x0, &g0, b).1));
        let (ex, eg, eb) = (
            rel_error(&dx, &fd_x),
            rel_error(&dgamma, &fd_g),
            rel_error(&dbeta, &fd_b),
        );
        println!("gradcheck batchnorm train: dx {ex:e}, dgamma {eg:e}, dbeta {eb:e}");
        assert!(ex < 1e-2, "bn dx rel err {ex}");
        assert!(eg < 1e-2, "bn dgamma rel err {eg}");
        assert!(eb < 1e-2, "bn dbeta rel err {eb}");
    }
}
