//! The SGD update (nf-core `optim::Sgd::update`): one launch per parameter tensor
//! (`kernels/optim.cu`).
use nf_core::optim::Sgd;
use nf_core::region::Region;

use super::{i64_of, need, Device, Engine, Res};
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
    pub(super) fn sgd_impl(
        &mut self,
        opt: &Sgd,
        lr: f32,
        param: Region,
        grad: Region,
        mom: Region,
    ) -> Res {
        let n = param.len();
        need(grad, n, "gradient")?;
        need(mom, n, "momentum")?;
        self.launch(
            Kernel::Sgd,
            n,
            &[
                Arg::Buf(param),
                Arg::Buf(grad.prefix(n)),
                Arg::Buf(mom.prefix(n)),
                i64_of(n),
                Arg::F32(lr),
                Arg::F32(opt.momentum),
                Arg::F32(opt.weight_decay),
                Arg::I32(i32::from(opt.nesterov)),
            ],
        )
    }
}
