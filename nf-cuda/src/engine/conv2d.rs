//! Convolutions as im2col + GEMM over chunks of samples.
//!
//! A chunk of `cs` samples is unrolled side by side (`kernels/conv2d.cu`): its columns are one
//! `c_in·k·k × cs·ho·wo` matrix, so each product of the chunk is a single GEMM whose
//! sample-dependent dimension is `cs·ho·wo` (a deep VGG layer at 2×2 gets `4·cs`, not 4), and
//! the weight gradient of the chunk is one GEMM with inner dimension `cs·ho·wo` accumulated into
//! dW (`beta = 1` after the first chunk). Outputs and output gradients pass through the
//! workspace in channel-major form (`c_out × cs·ho·wo`), permuted from and to the arena's NCHW.
//!
//! Per chunk: forward = im2col, GEMM, permute (+ bias) = 2 launches and 1 GEMM; backward =
//! permute of dy, im2col, dW GEMM, and with the input gradient a second GEMM and col2im =
//! 3 launches and 2 GEMMs. The bias gradient is a reduction over the whole batch (2 launches).
//!
//! The chunk is as many samples as the kernel workspace holds ([`conv_chunk`]), one sample
//! taking [`conv_sample_floats`] elements: the plan decides it by the workspace it gives
//! ([`crate::workspace`]).
//!
//! In a plan with aligned regions ([`Engine::set_region_align`]) the channel-major block
//! starts on the alignment after the columns, so that both GEMM operands in the workspace are
//! aligned: a chunk then takes [`conv_chunk_floats`] elements, up to `align − 1` more.
//!
//! With bf16 GEMM operands ([`Engine::set_gemm_precision`]) the weight (once per call), each
//! chunk's columns and (backward) its channel-major output gradient are rounded to bf16 into
//! scratch after that block ([`conv_chunk_floats_in`]): forward 1 launch per call and 1 per
//! chunk more, backward 1 per call (with the input gradient) and 2 per chunk more; the
//! products land in the same f32 buffers as in f32.
use nf_core::ops::conv2d::ConvGeom;
use nf_core::region::Region;

use super::bf16::{bf16_floats, pieces};
use super::{i32_of, need, Device, Engine, Res};
use crate::error::{failed, CudaError};
use crate::gemm::{GemmPrecision, RowGemm};
use crate::kernels::{Arg, Kernel};

/// Workspace elements one sample of convolution `g` takes in a chunk: its columns
/// (`c_in·k·k·ho·wo`) and its outputs or output gradients in channel-major form
/// (`c_out·ho·wo`). The same for the forward and the backward pass.
pub const fn conv_sample_floats(g: &ConvGeom) -> usize {
    g.h_out() * g.w_out() * (g.c_in * g.k * g.k + g.c_out)
}

/// Samples of `g` the engine unrolls at once with `ws` elements of workspace: as many as fit,
/// at most the batch (0: not even one sample fits).
pub const fn conv_chunk(g: &ConvGeom, ws: usize) -> usize {
    conv_chunk_aligned(g, ws, 1)
}

/// Workspace elements a chunk of `samples` samples of `g` takes when the channel-major block
/// after the columns starts on a multiple of `align` elements: the columns, padded to the
/// alignment, then the outputs or output gradients.
pub const fn conv_chunk_floats(g: &ConvGeom, samples: usize, align: usize) -> usize {
    let cols = samples * g.cols_len();
    let cols = if align > 1 {
        cols.next_multiple_of(align)
    } else {
        cols
    };
    cols + samples * g.c_out * g.h_out() * g.w_out()
}

/// [`conv_chunk`] with the channel-major block aligned to `align` elements: the most samples,
/// at most the batch, whose [`conv_chunk_floats`] fits `ws`.
pub const fn conv_chunk_aligned(g: &ConvGeom, ws: usize, align: usize) -> usize {
    let per = conv_sample_floats(g);
    if per == 0 {
        return g.n;
    }
    let mut fit = ws / per;
    if fit > g.n {
        fit = g.n;
    }
    // The padding is less than `align` elements: a few samples fewer at most.
    while fit > 0 && conv_chunk_floats(g, fit, align) > ws {
        fit -= 1;
    }
    fit
}

/// [`conv_chunk_floats`] for GEMM operands of `p`: in bf16, followed by the bf16 scratch
/// ([`super::bf16`]): the weight, the chunk's columns and its channel-major block rounded to
/// bf16, each on the alignment.
pub const fn conv_chunk_floats_in(
    g: &ConvGeom,
    samples: usize,
    align: usize,
    p: GemmPrecision,
) -> usize {
    let f32_part = conv_chunk_floats(g, samples, align);
    match p {
        GemmPrecision::F32 => f32_part,
        GemmPrecision::Bf16 => bf16_pieces(g, samples, align, f32_part).1,
    }
}

/// The bf16 pieces of a chunk of `samples` samples after `start` elements: the weight, the
/// columns, the channel-major block.
const fn bf16_pieces(
    g: &ConvGeom,
    samples: usize,
    align: usize,
    start: usize,
) -> ([usize; 3], usize) {
    let out_s = g.c_out * g.h_out() * g.w_out();
    pieces(
        start,
        [g.weight_len(), samples * g.cols_len(), samples * out_s],
        align,
    )
}

/// [`conv_chunk_aligned`] for GEMM operands of `p`: the most samples, at most the batch,
/// whose [`conv_chunk_floats_in`] fits `ws`.
pub const fn conv_chunk_in(g: &ConvGeom, ws: usize, align: usize, p: GemmPrecision) -> usize {
    match p {
        GemmPrecision::F32 => conv_chunk_aligned(g, ws, align),
        GemmPrecision::Bf16 => {
            let per = conv_sample_floats(g);
            if per == 0 {
                return g.n;
            }
            // A chunk of s samples takes at least 1.5·s·per + weight/2 elements: an upper
            // bound, then down past the padding and the halves' rounding.
            let mut fit = (2 * ws).saturating_sub(g.weight_len()) / (3 * per);
            if fit > g.n {
                fit = g.n;
            }
            while fit > 0 && conv_chunk_floats_in(g, fit, align, p) > ws {
                fit -= 1;
            }
            fit
        }
    }
}

/// Geometry arguments of the im2col / col2im kernels for a chunk of `ns` samples.
fn geom_args(g: &ConvGeom, ns: usize) -> Result<[Arg; 9], CudaError> {
    Ok([
        Arg::I32(i32_of(ns, "samples")?),
        Arg::I32(i32_of(g.c_in, "input channels")?),
        Arg::I32(i32_of(g.h, "height")?),
        Arg::I32(i32_of(g.w, "width")?),
        Arg::I32(i32_of(g.k, "kernel")?),
        Arg::I32(i32_of(g.stride, "stride")?),
        Arg::I32(i32_of(g.pad, "padding")?),
        Arg::I32(i32_of(g.h_out(), "output height")?),
        Arg::I32(i32_of(g.w_out(), "output width")?),
    ])
}

/// The chunk size for `g` with workspace `ws` whose channel-major block is aligned to
/// `align` elements, or the error saying one sample does not fit.
fn chunk_of(g: &ConvGeom, ws: Region, align: usize, p: GemmPrecision) -> Result<usize, CudaError> {
    match conv_chunk_in(g, ws.len(), align, p) {
        0 => Err(failed(format!(
            "conv workspace of {} elements cannot hold one sample's columns and outputs ({}, \
             {} GEMM operands)",
            ws.len(),
            conv_chunk_floats_in(g, 1, align, p),
            p.name()
        ))),
        c => Ok(c),
    }
}

/// The bf16 scratch of a convolution in `ws` for chunks of at most `chunk` samples (the same
/// place for every chunk): the weight, the columns, the channel-major block.
fn bf16_scratch(g: &ConvGeom, ws: Region, chunk: usize, align: usize) -> [Region; 3] {
    let (at, _) = bf16_pieces(g, chunk, align, conv_chunk_floats(g, chunk, align));
    let out_s = g.c_out * g.h_out() * g.w_out();
    let lens = [g.weight_len(), chunk * g.cols_len(), chunk * out_s];
    [0, 1, 2].map(|i| ws.sub(at[i], bf16_floats(lens[i])))
}

/// Where the channel-major block of a chunk of `cs` samples starts in the workspace.
const fn cn_at(g: &ConvGeom, cs: usize, align: usize) -> usize {
    conv_chunk_floats(g, cs, align) - cs * g.c_out * g.h_out() * g.w_out()
}

impl<D: Device> Engine<D> {
    fn im2col(&mut self, g: &ConvGeom, x: Region, cols: Region, ns: usize) -> Res {
        let [a, b, c, d, e, f, h, i, j] = geom_args(g, ns)?;
        let args = [Arg::Buf(x), Arg::Buf(cols), a, b, c, d, e, f, h, i, j];
        self.launch(Kernel::Im2col, ns * g.cols_len(), &args)
    }

    fn col2im(&mut self, g: &ConvGeom, cols: Region, dx: Region, ns: usize) -> Res {
        let [a, b, c, d, e, f, h, i, j] = geom_args(g, ns)?;
        let args = [Arg::Buf(cols), Arg::Buf(dx), a, b, c, d, e, f, h, i, j];
        self.launch(Kernel::Col2im, ns * g.c_in * g.h * g.w, &args)
    }

    /// `ns` samples of `c` channels of `hw` pixels, NCHW at `x`, to channel-major at `cn`.
    fn nchw_to_cn(&mut self, x: Region, cn: Region, ns: usize, c: usize, hw: usize) -> Res {
        self.launch(
            Kernel::NchwToCn,
            ns * c * hw,
            &[
                Arg::Buf(x),
                Arg::Buf(cn),
                Arg::I32(i32_of(ns, "samples")?),
                Arg::I32(i32_of(c, "channels")?),
                Arg::I32(i32_of(hw, "plane")?),
            ],
        )
    }

    /// The inverse of [`Engine::nchw_to_cn`], adding `bias` (per channel) unless it is empty.
    fn cn_to_nchw(&mut self, cn: Region, bias: Region, y: Region, sizes: [usize; 3]) -> Res {
        let [ns, c, hw] = sizes;
        self.launch(
            Kernel::CnToNchw,
            ns * c * hw,
            &[
                Arg::Buf(cn),
                Arg::Buf(bias),
                Arg::Buf(y),
                Arg::I32(i32_of(ns, "samples")?),
                Arg::I32(i32_of(c, "channels")?),
                Arg::I32(i32_of(hw, "plane")?),
            ],
        )
    }

    pub(super) fn conv_forward_impl(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        bias: Region,
        y: Region,
        ws: Region,
    ) -> Res {
        let (hwo, ckk) = (g.h_out() * g.w_out(), g.c_in * g.k * g.k);
        let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
        if g.n == 0 || out_s == 0 {
            return Ok(());
        }
        need(x, g.in_len(), "conv input")?;
        need(w, g.weight_len(), "conv weight")?;
        need(y, g.out_len(), "conv output")?;
        let bias = if bias.is_empty() {
            Region::NONE
        } else {
            need(bias, g.c_out, "conv bias")?;
            bias.prefix(g.c_out)
        };
        let chunk = chunk_of(g, ws, self.align, self.precision)?;
        let bf16 = self.precision == GemmPrecision::Bf16;
        let [w16, cols16, _] = if bf16 {
            bf16_scratch(g, ws, chunk, self.align)
        } else {
            [Region::NONE; 3]
        };
        let w16 = if bf16 {
            self.round_bf16(w.prefix(g.weight_len()), w16)?
        } else {
            0
        };
        let cl = g.cols_len();
        let mut s0 = 0;
        while s0 < g.n {
            let cs = chunk.min(g.n - s0);
            let cols = ws.prefix(cs * cl);
            let yt = ws.sub(cn_at(g, cs, self.align), cs * out_s);
            self.im2col(g, x.sub(s0 * in_s, cs * in_s), cols, cs)?;
            // Yᵀ of the chunk (c_out × cs·hwo) = W (c_out × ckk) · cols (ckk × cs·hwo).
            let prod = RowGemm::single(
                false,
                false,
                g.c_out,
                cs * hwo,
                ckk,
                w.offset,
                cols.offset,
                yt.offset,
                0.0,
            );
            if bf16 {
                let c16 = self.round_bf16(cols, cols16)?;
                self.gemm_bf16(prod, w16, c16)?;
            } else {
                self.gemm(prod)?;
            }
            self.cn_to_nchw(yt, bias, y.sub(s0 * out_s, cs * out_s), [cs, g.c_out, hwo])?;
            s0 += cs;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_backward_impl(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        dy: Region,
        dw: Region,
        db: Region,
        dx: Region,
        ws: Region,
    ) -> Res {
        let (hwo, ckk) = (g.h_out() * g.w_out(), g.c_in * g.k * g.k);
        let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
        let wl = g.weight_len();
        need(dw, wl, "conv weight gradient")?;
        if !db.is_empty() {
            need(db, g.c_out, "conv bias gradient")?;
            self.channel_sum(dy, g.n, g.c_out, hwo, db)?;
        }
        if !dx.is_empty() {
            need(dx, g.in_len(), "conv input gradient")?;
        }
        if g.n == 0 || out_s == 0 || ckk == 0 {
            // No product contributes: the reference leaves dW = 0 and dx = 0.
            self.fill_at(dw.prefix(wl), 0.0)?;
            if !dx.is_empty() {
                self.fill_at(dx.prefix(g.in_len()), 0.0)?;
            }
            return Ok(());
        }
        need(x, g.in_len(), "conv input")?;
        need(w, wl, "conv weight")?;
        need(dy, g.out_len(), "conv output gradient")?;
        let chunk = chunk_of(g, ws, self.align, self.precision)?;
        let bf16 = self.precision == GemmPrecision::Bf16;
        let [w16, cols16, dyt16] = if bf16 {
            bf16_scratch(g, ws, chunk, self.align)
        } else {
            [Region::NONE; 3]
        };
        let w16 = if bf16 && !dx.is_empty() {
            self.round_bf16(w.prefix(wl), w16)?
        } else {
            0
        };
        let cl = g.cols_len();
        let mut s0 = 0;
        while s0 < g.n {
            let cs = chunk.min(g.n - s0);
            let cols = ws.prefix(cs * cl);
            let dyt = ws.sub(cn_at(g, cs, self.align), cs * out_s);
            self.nchw_to_cn(dy.sub(s0 * out_s, cs * out_s), dyt, cs, g.c_out, hwo)?;
            self.im2col(g, x.sub(s0 * in_s, cs * in_s), cols, cs)?;
            // dW (+)= dYᵀ (c_out × cs·hwo) · colsᵀ (cs·hwo × ckk): one GEMM, K = cs·hwo.
            let dw_prod = RowGemm::single(
                false,
                true,
                g.c_out,
                ckk,
                cs * hwo,
                dyt.offset,
                cols.offset,
                dw.offset,
                if s0 == 0 { 0.0 } else { 1.0 },
            );
            // dcols (ckk × cs·hwo) = Wᵀ · dYᵀ, over the columns (no longer needed), then
            // gathered back to the input's pixels.
            let dx_prod = RowGemm::single(
                true,
                false,
                ckk,
                cs * hwo,
                g.c_out,
                w.offset,
                dyt.offset,
                cols.offset,
                0.0,
            );
            let d16 = if bf16 {
                let d16 = self.round_bf16(dyt, dyt16)?;
                let c16 = self.round_bf16(cols, cols16)?;
                self.gemm_bf16(dw_prod, d16, c16)?;
                d16
            } else {
                self.gemm(dw_prod)?;
                0
            };
            if !dx.is_empty() {
                if bf16 {
                    self.gemm_bf16(dx_prod, w16, d16)?;
                } else {
                    self.gemm(dx_prod)?;
                }
                self.col2im(g, cols, dx.sub(s0 * in_s, cs * in_s), cs)?;
            }
            s0 += cs;
        }
        Ok(())
    }
}
