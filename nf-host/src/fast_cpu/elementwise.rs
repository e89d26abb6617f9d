//! Element-wise kernels on the host (ReLU, residual add, the SGD update), split into
//! contiguous ranges once they are large enough to pay for waking the workers. Each element is
//! computed exactly as by the reference, so results are bit-identical to it; the ReLU is
//! written as a select rather than a conditional store so that it vectorises.
use nf_core::ops::activation;
use nf_core::optim::Sgd;

use super::par::{Pool, Split};
use super::wide::wide;

/// Arrays shorter than this run on the calling thread alone (waking a worker costs a few
/// microseconds; a core streams about 2^15 floats in that time).
const SERIAL_BELOW: usize = 1 << 16;

fn parts(pool: &Pool, len: usize) -> usize {
    if len < SERIAL_BELOW {
        1
    } else {
        pool.threads()
    }
}

/// [`activation::relu_forward`], in place.
pub fn relu_forward(pool: &Pool, x: &mut [f32]) {
    let t = parts(pool, x.len());
    let len = x.len();
    let xs = Split::new(x, 1, len, t);
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                for v in xs.take(w).into_slice() {
                    // Same as the reference: negatives become 0, everything else (-0, NaN) stays.
                    *v = if *v < 0.0 { 0.0 } else { *v };
                }
            },
        )
    });
}

/// [`activation::relu_backward`], in place on `dy` (`y` as long as `dy`).
pub fn relu_backward(pool: &Pool, y: &[f32], dy: &mut [f32]) {
    let len = dy.len().min(y.len());
    let t = parts(pool, len);
    let ds = Split::new(&mut dy[..len], 1, len, t);
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                let part = ds.take(w);
                let r = part.units();
                for (g, &v) in part.into_slice().iter_mut().zip(&y[r]) {
                    *g = if v <= 0.0 { 0.0 } else { *g };
                }
            },
        )
    });
}

/// [`activation::add_assign`]: `y += x`.
pub fn add_assign(pool: &Pool, y: &mut [f32], x: &[f32]) {
    let len = y.len().min(x.len());
    let t = parts(pool, len);
    let ys = Split::new(&mut y[..len], 1, len, t);
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                let part = ys.take(w);
                let r = part.units();
                activation::add_assign(part.into_slice(), &x[r]);
            },
        )
    });
}

/// [`Sgd::update`] over `param`, `grad` and `mom` (same length).
pub fn sgd(pool: &Pool, opt: &Sgd, lr: f32, param: &mut [f32], grad: &[f32], mom: &mut [f32]) {
    let len = param.len().min(grad.len()).min(mom.len());
    let t = parts(pool, len);
    let ps = Split::new(&mut param[..len], 1, len, t);
    let ms = Split::new(&mut mom[..len], 1, len, t);
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                let p = ps.take(w);
                let r = p.units();
                opt.update(lr, p.into_slice(), &grad[r], ms.take(w).into_slice());
            },
        )
    });
}
