//! Element-wise operations, pooling, linear layers and the SGD update: one launch (or one
//! GEMM) each over the whole batch, so their launch counts do not depend on the batch size.
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::region::Region;

use super::{i32_of, i64_of, need, Device, Engine, Res};
use crate::gemm::RowGemm;
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
    pub(super) fn relu_backward_impl(&mut self, y: Region, dy: Region) -> Res {
        let n = y.len.min(dy.len);
        self.launch(
            Kernel::ReluBackward,
            n,
            &[Arg::Buf(y.prefix(n)), Arg::Buf(dy.prefix(n)), i64_of(n)],
        )
    }

    pub(super) fn add_assign_impl(&mut self, y: Region, x: Region) -> Res {
        let n = y.len.min(x.len);
        self.launch(
            Kernel::AddAssign,
            n,
            &[Arg::Buf(y.prefix(n)), Arg::Buf(x.prefix(n)), i64_of(n)],
        )
    }

    pub(super) fn maxpool_forward_impl(&mut self, d: &Nchw, x: Region, y: Region) -> Res {
        let (planes, ho, wo) = (d.n * d.c, d.h / 2, d.w / 2);
        if planes * ho * wo == 0 {
            return Ok(());
        }
        need(x, d.len(), "max-pool input")?;
        need(y, planes * ho * wo, "max-pool output")?;
        self.launch(
            Kernel::MaxPool2Forward,
            planes * ho * wo,
            &[
                Arg::Buf(x.prefix(d.len())),
                Arg::Buf(y.prefix(planes * ho * wo)),
                Arg::I32(i32_of(planes, "planes")?),
                Arg::I32(i32_of(d.h, "height")?),
                Arg::I32(i32_of(d.w, "width")?),
            ],
        )
    }

    pub(super) fn maxpool_backward_impl(
        &mut self,
        d: &Nchw,
        x: Region,
        dy: Region,
        dx: Region,
    ) -> Res {
        let (planes, ho, wo) = (d.n * d.c, d.h / 2, d.w / 2);
        if d.is_empty() {
            return Ok(());
        }
        need(x, d.len(), "max-pool input")?;
        need(dx, d.len(), "max-pool input gradient")?;
        need(dy, planes * ho * wo, "max-pool output gradient")?;
        self.launch(
            Kernel::MaxPool2Backward,
            d.len(),
            &[
                Arg::Buf(x.prefix(d.len())),
                Arg::Buf(dy.prefix(planes * ho * wo)),
                Arg::Buf(dx.prefix(d.len())),
                Arg::I32(i32_of(planes, "planes")?),
                Arg::I32(i32_of(d.h, "height")?),
                Arg::I32(i32_of(d.w, "width")?),
            ],
        )
    }

    pub(super) fn avgpool_forward_impl(&mut self, d: &Nchw, s: usize, x: Region, y: Region) -> Res {
        let planes = d.n * d.c;
        if d.h * d.w == 0 || s == 0 || planes == 0 {
            return Ok(());
        }
        need(x, d.len(), "average-pool input")?;
        need(y, planes * s * s, "average-pool output")?;
        self.launch(
            Kernel::AvgPoolForward,
            planes * s * s,
            &[
                Arg::Buf(x.prefix(d.len())),
                Arg::Buf(y.prefix(planes * s * s)),
                Arg::I32(i32_of(planes, "planes")?),
                Arg::I32(i32_of(d.h, "height")?),
                Arg::I32(i32_of(d.w, "width")?),
                Arg::I32(i32_of(s, "pool size")?),
            ],
        )
    }

    pub(super) fn avgpool_backward_impl(
        &mut self,
        d: &Nchw,
        s: usize,
        dy: Region,
        dx: Region,
    ) -> Res {
        let planes = d.n * d.c;
        if d.is_empty() {
            return Ok(());
        }
        need(dx, d.len(), "average-pool input gradient")?;
        if s == 0 {
            return self.fill_at(dx.prefix(d.len()), 0.0);
        }
        need(dy, planes * s * s, "average-pool output gradient")?;
        self.launch(
            Kernel::AvgPoolBackward,
            d.len(),
            &[
                Arg::Buf(dy.prefix(planes * s * s)),
                Arg::Buf(dx.prefix(d.len())),
                Arg::I32(i32_of(planes, "planes")?),
                Arg::I32(i32_of(d.h, "height")?),
                Arg::I32(i32_of(d.w, "width")?),
                Arg::I32(i32_of(s, "pool size")?),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_forward_impl(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        y: Region,
    ) -> Res {
        if n == 0 || fout == 0 {
            return Ok(());
        }
        need(x, n * fin, "linear input")?;
        need(wb, fout * fin + fout, "linear weight and bias")?;
        need(y, n * fout, "linear output")?;
        self.gemm(RowGemm::single(
            false, true, n, fout, fin, x.offset, wb.offset, y.offset, 0.0,
        ))?;
        self.launch(
            Kernel::BiasAdd,
            n * fout,
            &[
                Arg::Buf(y.prefix(n * fout)),
                Arg::Buf(wb.sub(fin * fout, fout)),
                i64_of(n * fout),
                Arg::I32(i32_of(fout, "outputs")?),
                Arg::I32(1),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_backward_impl(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        dy: Region,
        dwb: Region,
        dx: Region,
    ) -> Res {
        need(dwb, fout * fin + fout, "linear weight and bias gradient")?;
        if fout == 0 {
            return Ok(());
        }
        need(x, n * fin, "linear input")?;
        need(dy, n * fout, "linear output gradient")?;
        self.gemm(RowGemm::single(
            true, false, fout, fin, n, dy.offset, x.offset, dwb.offset, 0.0,
        ))?;
        self.channel_sum(dy, n, fout, 1, dwb.sub(fin * fout, fout))?;
        if !dx.is_empty() {
            need(wb, fout * fin, "linear weight")?;
            need(dx, n * fin, "linear input gradient")?;
            self.gemm(RowGemm::single(
                false, false, n, fin, fout, dy.offset, wb.offset, dx.offset, 0.0,
            ))?;
        }
        Ok(())
    }

    pub(super) fn sgd_impl(
        &mut self,
        opt: &Sgd,
        lr: f32,
        param: Region,
        grad: Region,
        mom: Region,
    ) -> Res {
        let n = param.len;
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
