//! The activation kernels of [`nf_core::ops::activation`] on the host (ReLU, the residual
//! add), split into contiguous ranges once they are large enough to pay for waking the workers
//! ([`Pool::elementwise_parts`]). Each element is computed exactly as by the reference, so
//! results are bit-identical to it; the ReLU is written as a select rather than a conditional
//! store so that it vectorises.
use nf_core::ops::activation;

use crate::par::{Parts, Pool};
use crate::wide::wide;

/// [`activation::relu_forward`], in place.
pub fn relu_forward(pool: &Pool, x: &mut [f32]) {
    let t = pool.elementwise_parts(x.len());
    let len = x.len();
    let xs = Parts::new(x, 1, len, t);
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
    let t = pool.elementwise_parts(len);
    let ds = Parts::new(&mut dy[..len], 1, len, t);
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
    let t = pool.elementwise_parts(len);
    let ys = Parts::new(&mut y[..len], 1, len, t);
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
