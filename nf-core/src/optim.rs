//! SGD with momentum and weight decay, and learning-rate schedules as pure functions of the step.
//!
//! [`Sgd::update`] follows `torch.optim.SGD` (dampening 0): the momentum buffer starts at zero,
//! which makes the first step equal to PyTorch's `buf = g` initialisation. Schedules map
//! `(base, step, total)` to a rate with no state, so a resumed run gets the same rates.
use core::f32::consts::PI;

/// Stochastic gradient descent with (optionally Nesterov) momentum and L2 weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Momentum coefficient μ (0 disables momentum).
    pub momentum: f32,
    /// L2 penalty added to the gradient as `weight_decay · param`.
    pub weight_decay: f32,
    /// Nesterov momentum: step along `g + μ·buf` instead of `buf`.
    pub nesterov: bool,
}

impl Default for Sgd {
    /// μ = 0.9, weight decay 5e-4, classical momentum.
    fn default() -> Self {
        Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
        }
    }
}

impl Sgd {
    /// One step on `param` with gradient `grad` and momentum buffer `mom` (same lengths; the
    /// buffer starts at zero): `g = grad + wd·p; buf = μ·buf + g; step = nesterov ? g + μ·buf :
    /// buf; p −= lr·step`.
    pub fn update(&self, lr: f32, param: &mut [f32], grad: &[f32], mom: &mut [f32]) {
        debug_assert!(grad.len() >= param.len() && mom.len() >= param.len());
        let (mu, wd) = (self.momentum, self.weight_decay);
        for ((p, &g0), b) in param.iter_mut().zip(grad).zip(mom.iter_mut()) {
            let g = g0 + wd * *p;
            *b = mu * *b + g;
            let step = if self.nesterov { g + mu * *b } else { *b };
            *p -= lr * step;
        }
    }
}

/// Learning-rate schedule over `total` optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// `base` at every step.
    Constant,
    /// One-cycle (Smith; the shape of PyTorch's `OneCycleLR` with cosine annealing). With
    /// `t = min(step, total)/total`: for `t ≤ 0.3`, `lr = base/25 + (base − base/25)·t/0.3`
    /// (linear warm-up); after, with `u = (t − 0.3)/0.7`,
    /// `lr = base·1e-4 + (base − base·1e-4)·(1 + cos(π·u))/2`, ending at `base·1e-4`.
    OneCycle,
    /// `base·(1 + cos(π·min(step, total)/total))/2`: from `base` down to 0 at `total`.
    Cosine,
    /// `base·gamma^⌊step/every⌋` (`every = 0` means never decay).
    Step {
        /// Steps between decays.
        every: u32,
        /// Factor applied at each decay.
        gamma: f32,
    },
}

/// Start of the one-cycle warm-up, as a fraction of `base`.
const ONECYCLE_START: f32 = 1.0 / 25.0;
/// End of the one-cycle anneal, as a fraction of `base`.
const ONECYCLE_END: f32 = 1e-4;
/// Fraction of the steps spent warming up in one-cycle.
const ONECYCLE_WARMUP: f32 = 0.3;

impl Schedule {
    /// Learning rate at `step` (0-based) of `total`. Total-safe: `step ≥ total` gives the final
    /// rate, and `total = 0` counts as already finished (never NaN, never a panic).
    pub fn lr(&self, base: f32, step: u32, total: u32) -> f32 {
        // Progress in [0, 1]; computed in f64 so large step counts stay exact enough.
        let t = if total == 0 {
            1.0
        } else {
            (f64::from(step.min(total)) / f64::from(total)) as f32
        };
        match *self {
            Schedule::Constant => base,
            Schedule::OneCycle => {
                if t <= ONECYCLE_WARMUP {
                    let start = base * ONECYCLE_START;
                    start + (base - start) * (t / ONECYCLE_WARMUP)
                } else {
                    let end = base * ONECYCLE_END;
                    let u = (t - ONECYCLE_WARMUP) / (1.0 - ONECYCLE_WARMUP);
                    end + (base - end) * 0.5 * (1.0 + libm::cosf(PI * u))
                }
            }
            Schedule::Cosine => base * 0.5 * (1.0 + libm::cosf(PI * t)),
            Schedule::Step { every, gamma } => match step.checked_div(every) {
                Some(k) => base * libm::powf(gamma, k as f32),
                None => base,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn sgd_momentum_weight_decay_by_hand() {
        let opt = Sgd {
            momentum: 0.9,
            weight_decay: 0.1,
            nesterov: false,
        };
        let mut p = [1.0f32, -2.0];
        let mut buf = [0.0f32; 2];
        let lr = 0.5;
        // Step 1: g = [0.5 + 0.1, 1.0 - 0.2] = [0.6, 0.8]; buf = g; p = [0.7, -2.4].
        opt.update(lr, &mut p, &[0.5, 1.0], &mut buf);
        assert!(
            close(buf[0], 0.6, 1e-6) && close(buf[1], 0.8, 1e-6),
            "{buf:?}"
        );
        assert!(close(p[0], 0.7, 1e-6) && close(p[1], -2.4, 1e-6), "{p:?}");
        // Step 2: g = [0.5 + 0.07, 1.0 - 0.24] = [0.57, 0.76];
        // buf = [0.54 + 0.57, 0.72 + 0.76] = [1.11, 1.48]; p = [0.7 - 0.555, -2.4 - 0.74].
        opt.update(lr, &mut p, &[0.5, 1.0], &mut buf);
        assert!(
            close(buf[0], 1.11, 1e-6) && close(buf[1], 1.48, 1e-6),
            "{buf:?}"
        );
        assert!(
            close(p[0], 0.145, 1e-5) && close(p[1], -2.4 - 0.74, 1e-6),
            "{p:?}"
        );
    }

    #[test]
    fn sgd_nesterov_by_hand() {
        let opt = Sgd {
            momentum: 0.9,
            weight_decay: 0.1,
            nesterov: true,
        };
        let mut p = [1.0f32];
        let mut buf = [0.0f32];
        // Step 1: g = 0.6; buf = 0.6; step = 0.6 + 0.54 = 1.14; p = 1 - 0.5·1.14 = 0.43.
        opt.update(0.5, &mut p, &[0.5], &mut buf);
        assert!(
            close(buf[0], 0.6, 1e-6) && close(p[0], 0.43, 1e-6),
            "{p:?} {buf:?}"
        );
        // Step 2: g = 0.5 + 0.043 = 0.543; buf = 0.54 + 0.543 = 1.083;
        // step = 0.543 + 0.9747 = 1.5177; p = 0.43 - 0.75885 = -0.32885.
        opt.update(0.5, &mut p, &[0.5], &mut buf);
        assert!(
            close(buf[0], 1.083, 1e-6) && close(p[0], -0.32885, 1e-5),
            "{p:?} {buf:?}"
        );
    }

    #[test]
    fn sgd_default_is_pytorch_cifar_recipe() {
        assert_eq!(
            Sgd::default(),
            Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: false
            }
        );
        // Without momentum and decay it is plain gradient descent.
        let plain = Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        };
        let (mut p, mut b) = ([3.0f32], [0.0f32]);
        plain.update(0.1, &mut p, &[2.0], &mut b);
        assert!(close(p[0], 2.8, 1e-6));
    }

    #[test]
    fn onecycle_shape() {
        let (base, total) = (0.1f32, 1000u32);
        let s = Schedule::OneCycle;
        assert!(close(s.lr(base, 0, total), base / 25.0, 1e-6));
        assert!(close(s.lr(base, 300, total), base, 1e-6), "peak at 30%");
        // Rising before the peak, falling after.
        assert!(s.lr(base, 150, total) < s.lr(base, 299, total));
        assert!(s.lr(base, 301, total) > s.lr(base, 700, total));
        let peak = (0..=total)
            .map(|i| s.lr(base, i, total))
            .fold(0.0, f32::max);
        assert!(close(peak, base, 1e-6));
        // Ends small: base·1e-4 at the end and beyond.
        let end = s.lr(base, total, total);
        assert!(close(end, base * 1e-4, 1e-3), "end {end}");
        assert!(s.lr(base, total - 1, total) < base * 1e-3);
        assert_eq!(s.lr(base, total + 50, total), end);
        assert!(s.lr(base, 0, 0).is_finite() && s.lr(base, 5, 0).is_finite());
    }

    #[test]
    fn cosine_endpoints() {
        let s = Schedule::Cosine;
        assert!(close(s.lr(0.2, 0, 100), 0.2, 1e-6));
        assert!(close(s.lr(0.2, 50, 100), 0.1, 1e-5));
        assert!(s.lr(0.2, 100, 100).abs() < 1e-7);
        assert!(s.lr(0.2, 1000, 100).abs() < 1e-7);
        assert!(s.lr(0.2, 0, 0).is_finite());
    }

    #[test]
    fn step_decay_and_constant() {
        let s = Schedule::Step {
            every: 30,
            gamma: 0.1,
        };
        assert!(close(s.lr(1.0, 0, 100), 1.0, 1e-6));
        assert!(close(s.lr(1.0, 29, 100), 1.0, 1e-6));
        assert!(close(s.lr(1.0, 30, 100), 0.1, 1e-6));
        assert!(close(s.lr(1.0, 65, 100), 0.01, 1e-5));
        assert!(close(s.lr(1.0, 95, 0), 0.001, 1e-5));
        let never = Schedule::Step {
            every: 0,
            gamma: 0.5,
        };
        assert_eq!(never.lr(0.3, 1000, 10), 0.3);
        assert_eq!(Schedule::Constant.lr(0.3, 7, 0), 0.3);
    }
}
