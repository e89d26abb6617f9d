//! Linear layers (nf-core `ops::linear`): one cuBLAS GEMM per product over the whole batch, the
//! bias added by `kernels/linear.cu` and its gradient a per-channel reduction ([`super::reduce`]).
use nf_core::region::Region;

use super::{i32_of, i64_of, need, Device, Engine, Res};
use crate::gemm::RowGemm;
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
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
}
