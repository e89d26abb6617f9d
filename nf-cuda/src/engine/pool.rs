//! Max and adaptive average pooling (nf-core `ops::pool`): one launch each over the whole batch
//! (`kernels/pool.cu`), so their launch counts do not depend on the batch size.
use nf_core::ops::Nchw;
use nf_core::region::Region;

use super::{i32_of, need, Device, Engine, Res};
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
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
}
