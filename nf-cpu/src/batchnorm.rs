//! Batch normalisation on the host, split over channels: each worker owns a range of channels
//! in every sample. As in the reference ([`nf_core::ops::batchnorm`]) the per-channel
//! statistics are sums in `f64`, but over eight partial sums, so that they vectorise instead
//! of waiting on one long chain of additions, and in one pass (shifted sums of `x` and `x²`)
//! where the reference makes two; the element-wise parts then run in `f32`. Results differ from
//! the reference by rounding only (about one unit in the last place).
//!
//! Every tensor argument is generic over its element type ([`Store`]: `f32` or bf16); the
//! per-channel parameters and statistics stay `f32`. Elements are loaded as `f32`, every sum
//! and product is the f32 kernel's, and each output element is rounded once when stored: the
//! result is the f32 kernel's on the widened inputs, rounded to the output types.
use nf_core::ops::batchnorm::{EPS, MOMENTUM};
use nf_core::ops::Nchw;

use crate::par::{Parts, Pool};
use crate::store::Store;
use crate::wide::wide;

/// Work below this many elements runs on the calling thread alone.
const SERIAL_BELOW: usize = 1 << 14;

fn parts(pool: &Pool, d: &Nchw) -> usize {
    if d.len() < SERIAL_BELOW {
        1
    } else {
        pool.threads().min(d.c).max(1)
    }
}

/// [`nf_core::ops::batchnorm::forward_train`]: `x` becomes x̂, `y = γ·x̂ + β` (from x̂
/// before it is rounded to `X`).
#[allow(clippy::too_many_arguments)]
pub fn forward_train<X: Store, Y: Store>(
    pool: &Pool,
    d: &Nchw,
    x: &mut [X],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [Y],
    invstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
) {
    let (hw, cs) = (d.h * d.w, d.c * d.h * d.w);
    let m = d.n * hw;
    if m == 0 || d.c == 0 {
        return;
    }
    let t = parts(pool, d);
    let xs = Parts::rows(&mut x[..d.len()], d.n, cs, hw, d.c, t);
    let ys = Parts::rows(&mut y[..d.len()], d.n, cs, hw, d.c, t);
    let inv = Parts::new(&mut invstd[..d.c], 1, d.c, t);
    let rm = Parts::new(&mut running_mean[..d.c], 1, d.c, t);
    let rv = Parts::new(&mut running_var[..d.c], 1, d.c, t);
    let mf = m as f64;
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                let (mut xp, mut yp) = (xs.take(w), ys.take(w));
                let c0 = xp.units().start;
                let (inv, rm, rv) = (
                    inv.take(w).into_slice(),
                    rm.take(w).into_slice(),
                    rv.take(w).into_slice(),
                );
                for j in 0..xp.units().len() {
                    let c = c0 + j;
                    let plane = j * hw..(j + 1) * hw;
                    // One pass over the channel: sums of d and d² for d = x − x₀ (shifting by the
                    // first value keeps the f64 difference of squares exact enough; the reference
                    // makes two passes).
                    let shift = f64::from(xp.row(0)[plane.start].load());
                    let mut mom = Moments::default();
                    for s in 0..d.n {
                        mom.add(&xp.row(s)[plane.clone()], shift);
                    }
                    let (s1, s2) = mom.totals();
                    let mean = shift + s1 / mf;
                    let var = ((s2 - s1 * s1 / mf) / mf).max(0.0);
                    // Square roots are correctly rounded, so this equals the reference's `libm::sqrt`.
                    let is = 1.0 / (var + f64::from(EPS)).sqrt();
                    inv[j] = is as f32;
                    let (g, b, mean32, is32) = (gamma[c], beta[c], mean as f32, is as f32);
                    for s in 0..d.n {
                        let xr = xp.row(s);
                        let yr = yp.row(s);
                        for (o, v) in yr[plane.clone()].iter_mut().zip(&mut xr[plane.clone()]) {
                            let xh = (v.load() - mean32) * is32;
                            *v = X::store(xh);
                            *o = Y::store(g * xh + b);
                        }
                    }
                    let unbiased = if m > 1 { var * mf / (mf - 1.0) } else { var };
                    let mom = f64::from(MOMENTUM);
                    rm[j] = ((1.0 - mom) * f64::from(rm[j]) + mom * mean) as f32;
                    rv[j] = ((1.0 - mom) * f64::from(rv[j]) + mom * unbiased) as f32;
                }
            },
        )
    });
}

/// [`nf_core::ops::batchnorm::forward_eval`].
#[allow(clippy::too_many_arguments)]
pub fn forward_eval<X: Store, Y: Store>(
    pool: &Pool,
    d: &Nchw,
    x: &[X],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    y: &mut [Y],
) {
    let hw = d.h * d.w;
    if hw == 0 || d.is_empty() {
        return;
    }
    let planes = d.n * d.c;
    let t = if d.len() < SERIAL_BELOW {
        1
    } else {
        pool.threads().min(planes)
    };
    let ys = Parts::new(&mut y[..d.len()], hw, planes, t);
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                let part = ys.take(w);
                let p0 = part.units().start;
                for (i, yp) in part.into_slice().chunks_exact_mut(hw).enumerate() {
                    let p = p0 + i;
                    let c = p % d.c;
                    let scale = gamma[c] / (running_var[c] + EPS).sqrt();
                    let shift = beta[c] - running_mean[c] * scale;
                    for (o, &v) in yp.iter_mut().zip(&x[p * hw..(p + 1) * hw]) {
                        *o = Y::store(scale * v.load() + shift);
                    }
                }
            },
        )
    });
}

/// [`nf_core::ops::batchnorm::backward`]: `dy` becomes dL/dx in place.
#[allow(clippy::too_many_arguments)]
pub fn backward<XH: Store, DY: Store>(
    pool: &Pool,
    d: &Nchw,
    xhat: &[XH],
    gamma: &[f32],
    invstd: &[f32],
    dy: &mut [DY],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let (hw, cs) = (d.h * d.w, d.c * d.h * d.w);
    let m = d.n * hw;
    if d.c == 0 {
        return;
    }
    let t = parts(pool, d);
    let dys = Parts::rows(&mut dy[..d.len()], d.n, cs, hw, d.c, t);
    let dgs = Parts::new(&mut dgamma[..d.c], 1, d.c, t);
    let dbs = Parts::new(&mut dbeta[..d.c], 1, d.c, t);
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                let mut gp = dys.take(w);
                let c0 = gp.units().start;
                let (dg, db) = (dgs.take(w).into_slice(), dbs.take(w).into_slice());
                for j in 0..gp.units().len() {
                    let c = c0 + j;
                    let (mut lsdy, mut lsdyx) = (Lanes::default(), Lanes::default());
                    for s in 0..d.n {
                        let base = (s * d.c + c) * hw;
                        let g = &gp.row(s)[j * hw..(j + 1) * hw];
                        lsdy.add(g, |v| v);
                        lsdyx.add2(g, &xhat[base..base + hw]);
                    }
                    let (sdy, sdyx) = (lsdy.total(), lsdyx.total());
                    db[j] = sdy as f32;
                    dg[j] = sdyx as f32;
                    if m == 0 {
                        continue;
                    }
                    let mf = m as f64;
                    let k = (f64::from(gamma[c]) * f64::from(invstd[c])) as f32;
                    let (mean_dy, mean_dyx) = ((sdy / mf) as f32, (sdyx / mf) as f32);
                    for s in 0..d.n {
                        let base = (s * d.c + c) * hw;
                        let g = &mut gp.row(s)[j * hw..(j + 1) * hw];
                        for (gv, &xh) in g.iter_mut().zip(&xhat[base..base + hw]) {
                            *gv = DY::store(k * (gv.load() - mean_dy - xh.load() * mean_dyx));
                        }
                    }
                }
            },
        )
    });
}

/// Eight partial sums of `d` and `d²` (`d = x − shift`, in `f64`), so that the sums vectorise.
#[derive(Default)]
struct Moments([f64; 8], [f64; 8]);

impl Moments {
    #[inline]
    fn add<X: Store>(&mut self, xs: &[X], shift: f64) {
        let chunks = xs.chunks_exact(8);
        let tail = chunks.remainder();
        for ch in chunks {
            for ((a, b), &v) in self.0.iter_mut().zip(self.1.iter_mut()).zip(ch) {
                let d = f64::from(v.load()) - shift;
                *a += d;
                *b += d * d;
            }
        }
        for ((a, b), &v) in self.0.iter_mut().zip(self.1.iter_mut()).zip(tail) {
            let d = f64::from(v.load()) - shift;
            *a += d;
            *b += d * d;
        }
    }
    fn totals(&self) -> (f64, f64) {
        (Lanes(self.0).total(), Lanes(self.1).total())
    }
}

/// Eight partial `f64` sums, so that a long sum vectorises.
#[derive(Default)]
struct Lanes([f64; 8]);

impl Lanes {
    /// Add `f(v)` for every `v` of `xs` (in `f64`).
    #[inline]
    fn add<X: Store>(&mut self, xs: &[X], f: impl Fn(f64) -> f64) {
        let chunks = xs.chunks_exact(8);
        let tail = chunks.remainder();
        for ch in chunks {
            for (acc, &v) in self.0.iter_mut().zip(ch) {
                *acc += f(f64::from(v.load()));
            }
        }
        for (acc, &v) in self.0.iter_mut().zip(tail) {
            *acc += f(f64::from(v.load()));
        }
    }
    /// Add `a[i]·b[i]` for every `i` (in `f64`).
    #[inline]
    fn add2<A: Store, B: Store>(&mut self, a: &[A], b: &[B]) {
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ta, tb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for ((acc, &u), &v) in self.0.iter_mut().zip(x).zip(y) {
                *acc += f64::from(u.load()) * f64::from(v.load());
            }
        }
        for ((acc, &u), &v) in self.0.iter_mut().zip(ta).zip(tb) {
            *acc += f64::from(u.load()) * f64::from(v.load());
        }
    }
    /// The sum of the lanes, in a fixed order.
    fn total(&self) -> f64 {
        let l = &self.0;
        ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
    }
}
