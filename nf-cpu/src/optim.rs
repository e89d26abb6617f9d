//! The SGD update of [`nf_core::optim`] on the host, split into contiguous ranges once the
//! parameters are many enough to pay for waking the workers ([`Pool::elementwise_parts`]). Each
//! element is updated by [`Sgd::update`] itself, so results are bit-identical to the reference.
use nf_core::optim::Sgd;

use crate::par::{Parts, Pool};
use crate::wide::wide;

/// [`Sgd::update`] over `param`, `grad` and `mom` (same length).
pub fn sgd(pool: &Pool, opt: &Sgd, lr: f32, param: &mut [f32], grad: &[f32], mom: &mut [f32]) {
    let len = param.len().min(grad.len()).min(mom.len());
    let t = pool.elementwise_parts(len);
    let ps = Parts::new(&mut param[..len], 1, len, t);
    let ms = Parts::new(&mut mom[..len], 1, len, t);
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
