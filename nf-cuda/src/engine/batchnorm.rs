//! Batch normalisation (nf-core `ops::batchnorm`, `kernels/batchnorm.cu`), its per-channel
//! statistics and parameter gradients from the reductions of [`super::reduce`]. The number of
//! launches of each op is fixed (it does not grow with the batch).
use nf_core::ops::batchnorm::{EPS, MOMENTUM};
use nf_core::ops::Nchw;
use nf_core::region::Region;

use super::{i32_of, i64_of, need, Device, Engine, Res};
use crate::error::CudaError;
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
    fn nchw_args(d: &Nchw) -> Result<[Arg; 3], CudaError> {
        Ok([
            Arg::I32(i32_of(d.n, "batch")?),
            Arg::I32(i32_of(d.c, "channels")?),
            Arg::I32(i32_of(d.h * d.w, "plane")?),
        ])
    }

    pub(super) fn bn_forward_train_impl(
        &mut self,
        d: &Nchw,
        x: Region,
        gb: Region,
        y: Region,
        invstd: Region,
        running: Region,
    ) -> Res {
        let (c, hw) = (d.c, d.h * d.w);
        let m = d.n * hw;
        if m == 0 || c == 0 {
            return Ok(());
        }
        need(x, d.len(), "batch-norm input")?;
        need(y, d.len(), "batch-norm output")?;
        need(gb, 2 * c, "batch-norm gamma and beta")?;
        need(invstd, c, "batch-norm invstd")?;
        need(running, 2 * c, "batch-norm running statistics")?;
        let (x, y) = (x.prefix(d.len()), y.prefix(d.len()));
        let mean = self.red.prefix(c);
        let parts = self.parts(c, m, 1, c)?;
        let part = self.red.sub(c, c * parts);
        let [ni, ci, hwi] = Self::nchw_args(d)?;
        let pi = Arg::I32(i32_of(parts, "parts")?);
        self.launch(
            Kernel::ChanPartial,
            c * parts,
            &[
                Arg::Buf(x),
                Arg::Buf(Region::NONE),
                Arg::Buf(part),
                ni,
                ci,
                hwi,
                pi,
            ],
        )?;
        self.launch(
            Kernel::ChanFinish,
            c,
            &[Arg::Buf(part), Arg::Buf(mean), ci, pi, i64_of(m)],
        )?;
        self.launch(
            Kernel::ChanPartial,
            c * parts,
            &[Arg::Buf(x), Arg::Buf(mean), Arg::Buf(part), ni, ci, hwi, pi],
        )?;
        self.launch(
            Kernel::BnStats,
            c,
            &[
                Arg::Buf(part),
                Arg::Buf(mean),
                Arg::Buf(invstd.prefix(c)),
                Arg::Buf(running.prefix(2 * c)),
                ci,
                pi,
                ni,
                hwi,
                Arg::F32(EPS),
                Arg::F32(MOMENTUM),
            ],
        )?;
        self.launch(
            Kernel::BnNormalize,
            d.len(),
            &[
                Arg::Buf(x),
                Arg::Buf(y),
                Arg::Buf(mean),
                Arg::Buf(invstd.prefix(c)),
                Arg::Buf(gb.prefix(2 * c)),
                ni,
                ci,
                hwi,
            ],
        )
    }

    pub(super) fn bn_backward_impl(
        &mut self,
        d: &Nchw,
        xhat: Region,
        gb: Region,
        invstd: Region,
        dy: Region,
        dgb: Region,
    ) -> Res {
        let (c, hw) = (d.c, d.h * d.w);
        let m = d.n * hw;
        if c == 0 {
            return Ok(());
        }
        need(dgb, 2 * c, "batch-norm gradient of gamma and beta")?;
        let dgb = dgb.prefix(2 * c);
        if m == 0 {
            return self.fill_at(dgb, 0.0);
        }
        need(xhat, d.len(), "batch-norm x-hat")?;
        need(dy, d.len(), "batch-norm output gradient")?;
        need(gb, c, "batch-norm gamma")?;
        need(invstd, c, "batch-norm invstd")?;
        let (xhat, dy) = (xhat.prefix(d.len()), dy.prefix(d.len()));
        let parts = self.parts(c, m, 2, 0)?;
        let pa = self.red.prefix(c * parts);
        let pb = self.red.sub(c * parts, c * parts);
        let [ni, ci, hwi] = Self::nchw_args(d)?;
        let pi = Arg::I32(i32_of(parts, "parts")?);
        self.launch(
            Kernel::ChanPartial2,
            c * parts,
            &[
                Arg::Buf(dy),
                Arg::Buf(xhat),
                Arg::Buf(pa),
                Arg::Buf(pb),
                ni,
                ci,
                hwi,
                pi,
            ],
        )?;
        // dgamma = Σ dy·x̂, dbeta = Σ dy.
        self.launch(
            Kernel::ChanFinish,
            c,
            &[Arg::Buf(pb), Arg::Buf(dgb.prefix(c)), ci, pi, Arg::I64(1)],
        )?;
        self.launch(
            Kernel::ChanFinish,
            c,
            &[Arg::Buf(pa), Arg::Buf(dgb.sub(c, c)), ci, pi, Arg::I64(1)],
        )?;
        // Only gamma is read here: the region may hold gamma alone (the reference's slice).
        self.launch(
            Kernel::BnBackwardDx,
            d.len(),
            &[
                Arg::Buf(dy),
                Arg::Buf(xhat),
                Arg::Buf(gb.prefix(c)),
                Arg::Buf(invstd.prefix(c)),
                Arg::Buf(dgb),
                ni,
                ci,
                hwi,
            ],
        )
    }

    pub(super) fn bn_forward_eval_impl(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        running: Region,
        y: Region,
    ) -> Res {
        if d.is_empty() {
            return Ok(());
        }
        let c = d.c;
        need(x, d.len(), "batch-norm input")?;
        need(y, d.len(), "batch-norm output")?;
        need(gamma_beta, 2 * c, "batch-norm gamma and beta")?;
        need(running, 2 * c, "batch-norm running statistics")?;
        let [ni, ci, hwi] = Self::nchw_args(d)?;
        self.launch(
            Kernel::BnEval,
            d.len(),
            &[
                Arg::Buf(x.prefix(d.len())),
                Arg::Buf(y.prefix(d.len())),
                Arg::Buf(gamma_beta.prefix(2 * c)),
                Arg::Buf(running.prefix(2 * c)),
                ni,
                ci,
                hwi,
                Arg::F32(EPS),
            ],
        )
    }
}
