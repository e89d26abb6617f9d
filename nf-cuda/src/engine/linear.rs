//! Linear layers (nf-core `ops::linear`): one cuBLAS GEMM per product over the whole batch, the
//! bias added by `kernels/linear.cu` and its gradient a per-channel reduction ([`super::reduce`]).
//! With bf16 operands the input, the weight and the output gradient are rounded to bf16 into
//! the workspace first ([`super::bf16::linear_floats`]).
use nf_core::region::Region;

use super::bf16::{linear_floats, pieces};
use super::{i32_of, i64_of, need, Device, Engine, Res};
use crate::error::failed;
use crate::gemm::{GemmPrecision, RowGemm};
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
    /// The bf16 scratch of a linear layer in `ws`: where the input, the weight and the output
    /// gradient go.
    fn linear_scratch(
        &self,
        [n, fin, fout]: [usize; 3],
        backward: bool,
        ws: Region,
    ) -> Result<[Region; 3], super::CudaError> {
        let want = linear_floats(n, fin, fout, backward, self.align, GemmPrecision::Bf16);
        if ws.len() < want {
            return Err(failed(format!(
                "linear layer ({n}x{fin} -> {fout}): workspace of {} elements, {want} needed \
                 for its bf16 operands (plan the run for bf16)",
                ws.len()
            )));
        }
        let lens = [n * fin, fout * fin, n * fout];
        let (at, _) = pieces(0, lens, self.align);
        let r = |i: usize| {
            let len = super::bf16::bf16_floats(lens[i]);
            if backward || i < 2 {
                ws.sub(at[i], len)
            } else {
                Region::NONE
            }
        };
        Ok([r(0), r(1), r(2)])
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
        ws: Region,
    ) -> Res {
        if n == 0 || fout == 0 {
            return Ok(());
        }
        need(x, n * fin, "linear input")?;
        need(wb, fout * fin + fout, "linear weight and bias")?;
        need(y, n * fout, "linear output")?;
        let g = RowGemm::single(
            false, true, n, fout, fin, x.offset, wb.offset, y.offset, 0.0,
        );
        match self.precision {
            GemmPrecision::F32 => self.gemm(g)?,
            GemmPrecision::Bf16 => {
                let [x16, w16, _] = self.linear_scratch([n, fin, fout], false, ws)?;
                let a = self.round_bf16(x.prefix(n * fin), x16)?;
                let b = self.round_bf16(wb.prefix(fout * fin), w16)?;
                self.gemm_bf16(g, a, b)?;
            }
        }
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
        ws: Region,
    ) -> Res {
        need(dwb, fout * fin + fout, "linear weight and bias gradient")?;
        if fout == 0 {
            return Ok(());
        }
        need(x, n * fin, "linear input")?;
        need(dy, n * fout, "linear output gradient")?;
        let dw = RowGemm::single(
            true, false, fout, fin, n, dy.offset, x.offset, dwb.offset, 0.0,
        );
        let dxg = RowGemm::single(
            false, false, n, fin, fout, dy.offset, wb.offset, dx.offset, 0.0,
        );
        if !dx.is_empty() {
            need(wb, fout * fin, "linear weight")?;
            need(dx, n * fin, "linear input gradient")?;
        }
        match self.precision {
            GemmPrecision::F32 => {
                self.gemm(dw)?;
                self.channel_sum(dy, n, fout, 1, dwb.sub(fin * fout, fout))?;
                if !dx.is_empty() {
                    self.gemm(dxg)?;
                }
            }
            GemmPrecision::Bf16 => {
                let [x16, w16, dy16] = self.linear_scratch([n, fin, fout], true, ws)?;
                let d = self.round_bf16(dy.prefix(n * fout), dy16)?;
                let a = self.round_bf16(x.prefix(n * fin), x16)?;
                self.gemm_bf16(dw, d, a)?;
                self.channel_sum(dy, n, fout, 1, dwb.sub(fin * fout, fout))?;
                if !dx.is_empty() {
                    let w = self.round_bf16(wb.prefix(fout * fin), w16)?;
                    self.gemm_bf16(dxg, d, w)?;
                }
            }
        }
        Ok(())
    }
}
