//! Convolution on the host, with the semantics of [`nf_core::ops::conv2d`].
//!
//! Work is split over samples: worker `w` of `t` takes samples
//! `part_start(n, t, w)..part_start(n, t, w + 1)`. All memory beyond the inputs and outputs
//! comes from the workspace slice the caller passes, carved as [`crate::workspace`] lays it
//! out: the weights packed once for all workers (before the parallel part), then per worker its
//! im2col columns, GEMM packing buffers and temporaries. The weight gradient of worker 0 goes
//! straight into `dw`; every other worker sums its samples into its own partial sum in the
//! workspace, and the partial sums are added to `dw` at the end (in parallel over the weights).
//! When the workspace is smaller than [`floats`](crate::workspace::floats) says, fewer workers
//! take part.
//!
//! Three ways to compute, chosen per shape and instruction set (module `paths`):
//! - **per sample**: im2col into the worker's columns, then one packed GEMM per sample (a 1×1,
//!   stride-1, unpadded convolution skips the unrolling). The GEMM's vector direction is
//!   chosen so that lanes are not wasted: along the output pixels when their count is a
//!   multiple of the register tile (28×28, 32×32, 16×16, ...), along the output channels
//!   otherwise (7×7: the transposed product).
//! - **per tap** for small maps (at most [`TAP_MAX_PIXELS`](taps::TAP_MAX_PIXELS) output pixels: the 4×4, 2×2 and
//!   1×1 stages of VGG-11/16/19 and ResNet-18; module `taps`): for every kernel tap and every
//!   output pixel it reaches, one GEMM over all the worker's samples
//!   (`[samples × c_in] · [c_in × c_out]`). The weights are packed once per tap instead of being
//!   streamed once per sample, taps that only see padding are skipped, and no columns are
//!   built. Measured on VGG-11's 512×4×4 layer (batch 128, one thread): backward 612 ms per
//!   sample-wise, 232 ms per tap; at 8×8 the per-sample way wins (282 against 505 ms), hence
//!   the threshold.
//! - **small weights** (at most [`DOT_MAX_WEIGHTS`](small::DOT_MAX_WEIGHTS), module `small`): no GEMM at all.
use nf_core::ops::conv2d::ConvGeom;

use crate::gemm::{GemmScratch, Mat, MatMut, Operand};
use crate::par::{Part, Parts, Pool};
use crate::precision::{Kernels, Precision};
use crate::workspace::{Phase, WsLayout};
use paths::Paths;

pub(crate) mod paths;
mod small;
pub(crate) mod taps;
mod unroll;

pub use unroll::{col2im, im2col};

/// The weights `w` (`[c_out × ckk]`) packed into `out` for [`product`]: as the `A` operand, or
/// `Wᵀ` as the `B` operand of the transposed product.
fn pack_weights(
    kn: Kernels,
    w: &[f32],
    c_out: usize,
    ckk: usize,
    transposed: bool,
    out: &mut [f32],
) {
    if transposed {
        kn.pack_b(Mat::new(w, ckk, c_out, 1, ckk), out);
    } else {
        kn.pack_a(Mat::rows(w, c_out, ckk), out);
    }
}

/// One sample's `Y[c_out × hwo] = W · cols` (`cols`: `[ckk × hwo]`) with the weights from
/// [`pack_weights`]; `transposed` computes `Yᵀ = colsᵀ · Wᵀ` (vector along the channels).
#[allow(clippy::too_many_arguments)]
fn product(
    kn: Kernels,
    cols: &[f32],
    packed: &[f32],
    c_out: usize,
    ckk: usize,
    hwo: usize,
    transposed: bool,
    y: &mut [f32],
    gs: &mut GemmScratch<'_>,
) {
    let (a, b, mut c) = if transposed {
        (
            Operand::View(Mat::new(cols, hwo, ckk, 1, hwo)),
            Operand::Packed(packed),
            MatMut::new(y, hwo, c_out, 1, hwo),
        )
    } else {
        (
            Operand::Packed(packed),
            Operand::View(Mat::rows(cols, ckk, hwo)),
            MatMut::rows(y, c_out, hwo),
        )
    };
    kn.gemm(1.0, a, b, 0.0, &mut c, gs, ckk);
}

/// `W'[c][o·kk + t] = W[o][c][kk − 1 − t]`: the kernel rotated by 180° with input and output
/// channels swapped, the weights of `dX = conv(dY, W')` for a same-size stride-1 convolution.
fn flipped_weights(g: &ConvGeom, w: &[f32], out: &mut [f32]) {
    let kk = g.k * g.k;
    let ckk = g.c_in * kk;
    for (c, row) in out[..g.weight_len()]
        .chunks_exact_mut(g.c_out * kk)
        .enumerate()
    {
        for (o, taps) in row.chunks_exact_mut(kk).enumerate() {
            let src = &w[o * ckk + c * kk..o * ckk + (c + 1) * kk];
            for (t, v) in taps.iter_mut().enumerate() {
                *v = src[kk - 1 - t];
            }
        }
    }
}

/// [`nf_core::ops::conv2d::forward`] over `pool`, its GEMMs in `prec`; `ws` is the kernel
/// workspace (at least one worker's share of [`floats`](crate::workspace::floats)).
///
/// # Panics
/// If `ws` is too small for one worker.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    pool: &Pool,
    prec: Precision,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    ws: &mut [f32],
) {
    let isa = pool.isa();
    let kn = Kernels { isa, prec };
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
    if g.n == 0 || out_s == 0 {
        return;
    }
    let l = WsLayout::fit(Phase::ConvForward(*g), isa, pool.threads(), ws.len());
    let p = l.paths.expect("convolution paths");
    let t = l.workers;
    let parts = l.split(ws);
    // The weights, packed once for every worker.
    if p.tapwise {
        taps::pack_taps(kn, g, w, true, parts.packed);
    } else if !p.small {
        pack_weights(kn, w, g.c_out, ckk, p.transposed, parts.packed);
    }
    let packed: &[f32] = parts.packed;
    let areas = l.cuts(parts.workers);
    let ys = Parts::new(&mut y[..g.n * out_s], out_s, g.n, t);
    pool.run(t, |wk| {
        let [a, b, cols, _] = l.worker(wk).carve(areas.take(wk));
        let gs = &mut GemmScratch::new(a, b);
        let part = ys.take(wk);
        let (s0, ns) = (part.units().start, part.units().len());
        let yw = part.into_slice();
        if p.tapwise {
            taps::forward(kn, g, x, packed, yw, s0, ns, gs);
        } else {
            for i in 0..ns {
                let s = s0 + i;
                let xs = &x[s * in_s..(s + 1) * in_s];
                let src: &[f32] = if g.is_pointwise() {
                    xs
                } else {
                    im2col(isa, g, xs, cols);
                    cols
                };
                let ysl = &mut yw[i * out_s..(i + 1) * out_s];
                if p.small {
                    small::small_forward(isa, w, src, ckk, hwo, ysl);
                } else {
                    product(kn, src, packed, g.c_out, ckk, hwo, p.transposed, ysl, gs);
                }
            }
        }
        if let Some(b) = bias {
            for plane_set in yw.chunks_exact_mut(out_s) {
                for (plane, &bv) in plane_set.chunks_exact_mut(hwo).zip(&b[..g.c_out]) {
                    plane.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    });
}

/// [`nf_core::ops::conv2d::backward`] over `pool`, its GEMMs in `prec`: `dw` and, when given,
/// `db` overwritten, or added to when `add` (so that a batch can be taken in parts); `dx`, when
/// given, overwritten; `ws` is the kernel workspace (at least one worker's share of
/// [`floats`](crate::workspace::floats)).
///
/// The weights of the input gradient are packed once for every worker; each worker then sums
/// the weight gradient of its samples (into `dw` for worker 0, into its partial sum for the
/// others), writes their input gradients and the bias gradient of its channels; the partial sums
/// are added to `dw` last.
///
/// # Panics
/// If `ws` is too small for one worker.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    pool: &Pool,
    prec: Precision,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
    ws: &mut [f32],
    add: bool,
) {
    let isa = pool.isa();
    let kn = Kernels { isa, prec };
    let in_s = g.c_in * g.h * g.w;
    let wl = g.weight_len();
    let dw = &mut dw[..wl];
    let dx = dx.map(|d| &mut d[..g.n * in_s]);
    if g.n == 0 || g.h_out() * g.w_out() == 0 {
        if add {
            if let Some(d) = dx {
                d.fill(0.0);
            }
        } else {
            zero_gradients(g, dw, db, dx);
        }
        return;
    }
    let phase = Phase::ConvBackward {
        g: *g,
        dx: dx.is_some(),
    };
    let l = WsLayout::fit(phase, isa, pool.threads(), ws.len());
    let p = l.paths.expect("convolution paths");
    let t = l.workers;
    let parts = l.split(ws);
    if dx.is_some() {
        // The flipped weights overlay the workers' areas, which are not in use yet.
        let [flip] = crate::workspace::carve(parts.workers, [l.flip]);
        pack_input_grad_weights(kn, g, &p, w, flip, parts.packed);
    }
    let wt: &[f32] = parts.packed;
    let areas = l.cuts(parts.workers);
    // Weight-gradient destination of each worker: dw for worker 0, a partial sum for the rest.
    let dw0 = Parts::new(dw, wl, 1, 1);
    let partials = Parts::new(parts.partials, wl, t - 1, (t - 1).max(1));
    let dxs = dx.map(|d| Parts::new(d, in_s, g.n, t));
    let dbs = db.map(|d| Parts::new(&mut d[..g.c_out], 1, g.c_out, t));
    pool.run(t, |wk| {
        let [a, b, cols, tmp] = l.worker(wk).carve(areas.take(wk));
        let gs = &mut GemmScratch::new(a, b);
        let gw = if wk == 0 {
            dw0.take(0).into_slice()
        } else {
            partials.take(wk - 1).into_slice()
        };
        let rows = l.rows(wk);
        let dxw = dxs.as_ref().map(|d| d.take(wk).into_slice());
        // Worker 0 adds to dw when asked; the partial sums always start from zero.
        let add_w = add && wk == 0;
        if p.tapwise {
            let (s0, ns) = (rows.start, rows.len());
            taps::backward(kn, g, x, wt, dy, gw, add_w, dxw, s0, ns, tmp, gs);
        } else {
            let scratch = SampleScratch { cols, tmp, gs };
            backward_samples(kn, g, &p, x, dy, wt, rows, gw, add_w, dxw, scratch);
        }
        if let Some(dbs) = dbs.as_ref() {
            bias_grad(g, dy, dbs.take(wk), add);
        }
    });
    if t > 1 {
        add_partials(pool, t, dw, parts.partials);
    }
}

/// The gradients of a convolution with no samples or no output pixels: zeros.
fn zero_gradients(g: &ConvGeom, dw: &mut [f32], db: Option<&mut [f32]>, dx: Option<&mut [f32]>) {
    dw.fill(0.0);
    if let Some(db) = db {
        db[..g.c_out].fill(0.0);
    }
    if let Some(dx) = dx {
        dx.fill(0.0);
    }
}

/// The weights of the input gradient, packed once for every worker into `packed`: per tap;
/// flipped (into `flip` first); `Wᵀ [ckk × c_out]` as the `A` operand; or `W [c_out × ckk]` as
/// the `B` operand of the transposed product.
fn pack_input_grad_weights(
    kn: Kernels,
    g: &ConvGeom,
    p: &Paths,
    w: &[f32],
    flip: &mut [f32],
    packed: &mut [f32],
) {
    let ckk = g.c_in * g.k * g.k;
    if p.tapwise {
        taps::pack_taps(kn, g, w, false, packed);
    } else if p.flip {
        flipped_weights(g, w, flip);
        let ckk2 = g.c_out * g.k * g.k;
        pack_weights(kn, flip, g.c_in, ckk2, p.flip_transposed, packed);
    } else if p.dx_transposed {
        kn.pack_b(Mat::rows(w, g.c_out, ckk), packed);
    } else {
        kn.pack_a(Mat::new(w, ckk, g.c_out, 1, ckk), packed);
    }
}

/// A worker's scratch for the per-sample paths: one sample's columns, a temporary, and its GEMM
/// packing buffers.
struct SampleScratch<'s, 'g> {
    cols: &'s mut [f32],
    tmp: &'s mut [f32],
    gs: &'s mut GemmScratch<'g>,
}

/// One worker's samples `rows` on the per-sample paths: their weight gradient summed into `gw`
/// (overwritten by the first unless `add`), and with `dxw` (the worker's part of `dx`) their
/// input gradients.
#[allow(clippy::too_many_arguments)]
fn backward_samples(
    kn: Kernels,
    g: &ConvGeom,
    p: &Paths,
    x: &[f32],
    dy: &[f32],
    wt: &[f32],
    rows: std::ops::Range<usize>,
    gw: &mut [f32],
    add: bool,
    mut dxw: Option<&mut [f32]>,
    s: SampleScratch<'_, '_>,
) {
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * g.h_out() * g.w_out());
    for i in rows.clone() {
        let xs = &x[i * in_s..(i + 1) * in_s];
        let dys = &dy[i * out_s..(i + 1) * out_s];
        let beta = if i == rows.start && !add { 0.0 } else { 1.0 };
        weight_grad(kn, g, p, xs, dys, beta, gw, s.cols, s.gs);
        if let Some(dxw) = dxw.as_deref_mut() {
            let j = i - rows.start;
            let dxs = &mut dxw[j * in_s..(j + 1) * in_s];
            input_grad(kn, g, p, dys, wt, dxs, s.cols, s.tmp, s.gs);
        }
    }
}

/// One sample's weight gradient `dW = dY · colsᵀ`, added to `gw` scaled by `beta` (0:
/// overwritten); `xs` is unrolled into `cols` first (unless the convolution is pointwise).
#[allow(clippy::too_many_arguments)]
fn weight_grad(
    kn: Kernels,
    g: &ConvGeom,
    p: &Paths,
    xs: &[f32],
    dys: &[f32],
    beta: f32,
    gw: &mut [f32],
    cols: &mut [f32],
    gs: &mut GemmScratch<'_>,
) {
    let isa = kn.isa;
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let src: &[f32] = if g.is_pointwise() {
        xs
    } else {
        im2col(isa, g, xs, cols);
        cols
    };
    if p.small {
        small::small_weight_grad(isa, dys, src, ckk, hwo, beta, gw);
        return;
    }
    let (a, b, mut c) = if p.dw_transposed {
        // dWᵀ[ckk × c_out] += cols · dYᵀ.
        (
            Mat::rows(src, ckk, hwo),
            Mat::new(dys, hwo, g.c_out, 1, hwo),
            MatMut::new(gw, ckk, g.c_out, 1, ckk),
        )
    } else {
        // dW[c_out × ckk] += dY · colsᵀ.
        (
            Mat::rows(dys, g.c_out, hwo),
            Mat::new(src, hwo, ckk, 1, hwo),
            MatMut::rows(gw, g.c_out, ckk),
        )
    };
    let (a, b) = (Operand::View(a), Operand::View(b));
    kn.gemm(1.0, a, b, beta, &mut c, gs, hwo);
}

/// One sample's input gradient `dxs` (overwritten) from its output gradient `dys` and the
/// weights packed by [`pack_input_grad_weights`] (`wt`); `cols` and `tmp` are scratch.
#[allow(clippy::too_many_arguments)]
fn input_grad(
    kn: Kernels,
    g: &ConvGeom,
    p: &Paths,
    dys: &[f32],
    wt: &[f32],
    dxs: &mut [f32],
    cols: &mut [f32],
    tmp: &mut [f32],
    gs: &mut GemmScratch<'_>,
) {
    let isa = kn.isa;
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let dyv = Operand::View(Mat::rows(dys, g.c_out, hwo));
    if p.flip {
        // dX = conv(dY, W') straight into dx: dY's columns are the smaller. dY is the input of
        // that convolution, with c_out channels in and c_in out.
        let g2 = ConvGeom {
            c_in: g.c_out,
            c_out: g.c_in,
            ..*g
        };
        let ckk2 = g.c_out * g.k * g.k;
        im2col(isa, &g2, dys, cols);
        product(kn, cols, wt, g.c_in, ckk2, hwo, p.flip_transposed, dxs, gs);
    } else if g.is_pointwise() {
        // dx[c_in × hwo] = Wᵀ · dY.
        let mut c = MatMut::rows(dxs, ckk, hwo);
        kn.gemm(1.0, Operand::Packed(wt), dyv, 0.0, &mut c, gs, g.c_out);
    } else if p.dx_transposed {
        // dcolsᵀ [hwo × ckk] = dYᵀ · W (vector along ckk), back to [ckk × hwo] (in 8×8
        // register blocks), then the whole-plane col2im.
        let a = Operand::View(Mat::new(dys, hwo, g.c_out, 1, hwo));
        let mut c = MatMut::rows(cols, hwo, ckk);
        kn.gemm(1.0, a, Operand::Packed(wt), 0.0, &mut c, gs, g.c_out);
        crate::gemm::transpose(isa, cols, ckk, hwo, ckk, tmp, hwo);
        col2im(isa, g, tmp, dxs);
    } else {
        // dcols[ckk × hwo] = Wᵀ · dY, then scattered back.
        let mut c = MatMut::rows(cols, ckk, hwo);
        kn.gemm(1.0, Operand::Packed(wt), dyv, 0.0, &mut c, gs, g.c_out);
        col2im(isa, g, cols, dxs);
    }
}

/// The bias gradient of the channels of `part` (a worker's share of `db`), in the reference's
/// order: an `f64` sum per plane, accumulated in `f32` over the samples (added to `part` when
/// `add`).
fn bias_grad(g: &ConvGeom, dy: &[f32], mut part: Part<'_>, add: bool) {
    let hwo = g.h_out() * g.w_out();
    let out_s = g.c_out * hwo;
    let o0 = part.units().start;
    for (j, acc) in part.row(0).iter_mut().enumerate() {
        let o = o0 + j;
        if !add {
            *acc = 0.0;
        }
        for s in 0..g.n {
            let plane = &dy[s * out_s + o * hwo..s * out_s + (o + 1) * hwo];
            *acc += plane.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
        }
    }
}

/// `dw += Σ partials` (`partials`: the weight gradients of workers `1..t`, one after another),
/// split over the weights among `t` workers.
fn add_partials(pool: &Pool, t: usize, dw: &mut [f32], partials: &[f32]) {
    let wl = dw.len();
    let dws = Parts::new(dw, 1, wl, t);
    pool.run(t, |wk| {
        let part = dws.take(wk);
        let r = part.units();
        let d = part.into_slice();
        for p in partials.chunks_exact(wl) {
            for (a, &b) in d.iter_mut().zip(&p[r.clone()]) {
                *a += b;
            }
        }
    });
}
