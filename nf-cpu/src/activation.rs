//! The activation kernels of [`nf_core::ops::activation`] on the host (ReLU, the residual
//! add), split into contiguous ranges once they are large enough to pay for waking the workers
//! (`Pool::elementwise_parts`). Each element is computed exactly as by the reference, so
//! results are bit-identical to it; the ReLU is written as a select rather than a conditional
//! store so that it vectorises.
//!
//! Every tensor argument is generic over its element type ([`Store`]: `f32` or bf16): each
//! element is loaded as `f32`, computed as in the f32 kernel and rounded once when stored, so
//! the result is the f32 kernel's on the widened inputs, rounded to the output type.
use crate::par::{Parts, Pool};
use crate::store::Store;
use crate::wide::wide;

/// [`nf_core::ops::activation::relu_forward`], in place.
pub fn relu_forward<T: Store>(pool: &Pool, x: &mut [T]) {
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
                    let u = v.load();
                    *v = T::store(if u < 0.0 { 0.0 } else { u });
                }
            },
        )
    });
}

/// [`nf_core::ops::activation::relu_backward`], in place on `dy` (`y` as long as `dy`).
pub fn relu_backward<Y: Store, D: Store>(pool: &Pool, y: &[Y], dy: &mut [D]) {
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
                    *g = D::store(if v.load() <= 0.0 { 0.0 } else { g.load() });
                }
            },
        )
    });
}

/// [`nf_core::ops::activation::add_assign`]: `y += x`.
pub fn add_assign<Y: Store, X: Store>(pool: &Pool, y: &mut [Y], x: &[X]) {
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
                for (a, &b) in part.into_slice().iter_mut().zip(&x[r]) {
                    *a = Y::store(a.load() + b.load());
                }
            },
        )
    });
}
