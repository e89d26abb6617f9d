//! The per-tap paths for small output maps (at most [`TAP_MAX_PIXELS`] pixels): for every
//! kernel tap and every output pixel it reaches, one GEMM over all of a worker's samples
//! (`[samples × c_in] · [c_in × c_out]`), with the tap's weights packed once per call (for all
//! workers) and no columns.
use nf_core::ops::conv2d::{self, ConvGeom};

use crate::gemm::{GemmScratch, Mat, MatMut, Operand};
use crate::precision::Kernels;

/// Largest output map (in pixels) computed per tap rather than per sample (measured: 4×4 is
/// faster per tap, 7×7 and 8×8 per sample).
pub const TAP_MAX_PIXELS: usize = 16;

/// Every (output pixel, input pixel) pair that kernel tap `(ky, kx)` connects.
fn tap_pairs(g: &ConvGeom, ky: usize, kx: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let (ho, wo) = (g.h_out(), g.w_out());
    let (oy0, oy1) = conv2d::valid_range(ky, g.pad, g.stride, g.h, ho);
    let (ox0, ox1) = conv2d::valid_range(kx, g.pad, g.stride, g.w, wo);
    (oy0..oy1).flat_map(move |oy| {
        (ox0..ox1).map(move |ox| {
            let (iy, ix) = (oy * g.stride + ky - g.pad, ox * g.stride + kx - g.pad);
            (oy * wo + ox, iy * g.w + ix)
        })
    })
}

/// The taps `(ky, kx)` that connect at least one pair of pixels, in order.
fn used_taps(g: &ConvGeom) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..g.k)
        .flat_map(move |ky| (0..g.k).map(move |kx| (ky, kx)))
        .filter(move |&(ky, kx)| tap_pairs(g, ky, kx).next().is_some())
}

/// How many taps of `g` connect at least one pair of pixels (the others are skipped).
pub(crate) fn taps_used(g: &ConvGeom) -> usize {
    used_taps(g).count()
}

/// Pack every used tap's weights one after another into `packed` (`taps_used` blocks of
/// `per_tap` elements): for the forward pass `W_tapᵀ [c_in × c_out]`, for the input gradient
/// `W_tap [c_out × c_in]`.
pub(super) fn pack_taps(
    kn: Kernels,
    g: &ConvGeom,
    w: &[f32],
    transposed: bool,
    packed: &mut [f32],
) {
    let (kk, ckk) = (g.k * g.k, g.c_in * g.k * g.k);
    let per_tap = if transposed {
        kn.packed_b_len(g.c_in, g.c_out)
    } else {
        kn.packed_b_len(g.c_out, g.c_in)
    };
    if per_tap == 0 {
        return;
    }
    for ((ky, kx), p) in used_taps(g).zip(packed.chunks_exact_mut(per_tap)) {
        let tap = ky * g.k + kx;
        let m = if transposed {
            // Element (c, o) at w[o·ckk + c·kk + tap].
            Mat::new(&w[tap..], g.c_in, g.c_out, kk, ckk)
        } else {
            Mat::new(&w[tap..], g.c_out, g.c_in, ckk, kk)
        };
        kn.pack_b(m, p);
    }
}

/// Forward of samples `s0..s0 + ns` per kernel tap into `yw` (their outputs), with the taps'
/// weights from [`pack_taps`] (transposed).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    kn: Kernels,
    g: &ConvGeom,
    x: &[f32],
    packed: &[f32],
    yw: &mut [f32],
    s0: usize,
    ns: usize,
    gs: &mut GemmScratch<'_>,
) {
    let hwo = g.h_out() * g.w_out();
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
    let per_tap = kn.packed_b_len(g.c_in, g.c_out);
    yw.fill(0.0);
    for (i, (ky, kx)) in used_taps(g).enumerate() {
        let p = &packed[i * per_tap..(i + 1) * per_tap];
        for (op, ip) in tap_pairs(g, ky, kx) {
            // Y_op[s, o] += X_ip[s, c] · W_tapᵀ[c, o] over the worker's samples.
            let a = Mat::new(&x[s0 * in_s + ip..], ns, g.c_in, in_s, g.h * g.w);
            let mut c = MatMut::new(&mut yw[op..], ns, g.c_out, out_s, hwo);
            kn.gemm(
                1.0,
                Operand::View(a),
                Operand::Packed(p),
                1.0,
                &mut c,
                gs,
                g.c_in,
            );
        }
    }
}

/// Backward of samples `s0..s0 + ns` per kernel tap: their weight gradient into `gw`
/// (overwritten, or added to it with `add`) and, when given, their input gradient into `dxw` (overwritten), with the taps'
/// weights from [`pack_taps`] (not transposed) and `tmp` (`c_out · c_in` elements) for one
/// tap's weight gradient.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    kn: Kernels,
    g: &ConvGeom,
    x: &[f32],
    packed: &[f32],
    dy: &[f32],
    gw: &mut [f32],
    add: bool,
    mut dxw: Option<&mut [f32]>,
    s0: usize,
    ns: usize,
    tmp: &mut [f32],
    gs: &mut GemmScratch<'_>,
) {
    let (kk, ckk, hwo, hw) = (
        g.k * g.k,
        g.c_in * g.k * g.k,
        g.h_out() * g.w_out(),
        g.h * g.w,
    );
    let (in_s, out_s) = (g.c_in * hw, g.c_out * hwo);
    let per_tap = kn.packed_b_len(g.c_out, g.c_in);
    if let Some(d) = dxw.as_deref_mut() {
        d.fill(0.0);
    }
    // Taps that see only padding have a zero gradient (nothing to add when `add`).
    if !add {
        gw.fill(0.0);
    }
    for (i, (ky, kx)) in used_taps(g).enumerate() {
        let tap = ky * g.k + kx;
        let tmp = &mut tmp[..g.c_out * g.c_in];
        // dW_tap[o, c] = Σ over pixels and samples of dY_op[o, s] · X_ip[s, c].
        let mut beta = 0.0;
        for (op, ip) in tap_pairs(g, ky, kx) {
            let a = Mat::new(&dy[s0 * out_s + op..], g.c_out, ns, hwo, out_s);
            let b = Mat::new(&x[s0 * in_s + ip..], ns, g.c_in, in_s, hw);
            let mut c = MatMut::rows(tmp, g.c_out, g.c_in);
            kn.gemm(
                1.0,
                Operand::View(a),
                Operand::View(b),
                beta,
                &mut c,
                gs,
                ns,
            );
            beta = 1.0;
        }
        for (o, row) in tmp.chunks_exact(g.c_in).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let d = &mut gw[o * ckk + c * kk + tap];
                *d = if add { *d + v } else { v };
            }
        }
        if let Some(dxw) = dxw.as_deref_mut() {
            // dX_ip[s, c] += dY_op[s, o] · W_tap[o, c].
            let p = &packed[i * per_tap..(i + 1) * per_tap];
            for (op, ip) in tap_pairs(g, ky, kx) {
                let a = Mat::new(&dy[s0 * out_s + op..], ns, g.c_out, out_s, hwo);
                let mut c = MatMut::new(&mut dxw[ip..], ns, g.c_in, in_s, hw);
                kn.gemm(
                    1.0,
                    Operand::View(a),
                    Operand::Packed(p),
                    1.0,
                    &mut c,
                    gs,
                    g.c_out,
                );
            }
        }
    }
}
