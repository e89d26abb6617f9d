//! Convolution on the host, with the semantics of [`nf_core::ops::conv2d`].
//!
//! Work is split over samples: worker `w` of `t` takes samples
//! `part_start(n, t, w)..part_start(n, t, w + 1)` and the `w`-th `cols_len` slice of the kernel
//! workspace (the layout sizes it `T·cols_len + (T − 1)·weight_len`, see
//! `nf_core::layout::SegLayout::cols`). The weight gradient of worker 0 goes straight into
//! `dw`; every other worker sums its samples into its own `weight_len` slice after the columns,
//! and the slices are added to `dw` at the end (in parallel over the weights). When the
//! workspace is smaller (a plan made for fewer workers) fewer workers take part.
//!
//! Two ways to compute, chosen per shape:
//! - **per sample**: im2col into the worker's columns, then one packed GEMM per sample (a 1×1,
//!   stride-1, unpadded convolution skips the unrolling). The GEMM's vector direction is
//!   chosen so that lanes are not wasted: along the output pixels when their count is a
//!   multiple of the register tile (28×28, 32×32, 16×16, ...), along the output channels
//!   otherwise (7×7, 14×14: the transposed product, with the weights packed once per call).
//! - **per tap** for small maps (at most [`TAP_MAX_PIXELS`] output pixels: the 4×4, 2×2 and
//!   1×1 stages of VGG-11/16/19 and ResNet-18): for every kernel tap and every output pixel it
//!   reaches, one GEMM over all the worker's samples (`[samples × c_in] · [c_in × c_out]`). The
//!   weights are packed once per tap instead of being streamed once per sample, taps that only
//!   see padding are skipped, and no columns are built. Measured on VGG-11's 512×4×4 layer
//!   (batch 128, one thread): backward 612 ms per sample-wise, 232 ms per tap; at 8×8 the
//!   per-sample way wins (282 against 505 ms), hence the threshold.
use nf_core::ops::conv2d::{self, ConvGeom};

use super::gemm::{self, Mat, MatMut, Operand};
use super::par::{part_start, Pool, Split};

/// Weight tensors up to this many values (a first layer on grey images: 1 → 32 channels, 3×3,
/// is 288) are computed without the packed GEMM, over long rows of pixels: the forward pass
/// 16 pixels at a time in registers, the weight gradient as dot products with 16 partial sums
/// (see [`small_forward`], [`small_weight_grad`]). Measured on the small VGG's first layer
/// (batch 128, one thread): forward 2.62 → 1.85 ms, backward 6.08 → 2.67 ms against the packed
/// GEMM and the reference's dot products.
pub const DOT_MAX_WEIGHTS: usize = 1024;

/// Whether `g` takes the small-weight paths: few weights over many output pixels.
fn small_weights(g: &ConvGeom) -> bool {
    g.c_out * g.c_in * g.k * g.k <= DOT_MAX_WEIGHTS && g.h_out() * g.w_out() >= 64
}

/// Vector lanes of the small-weight paths (one AVX-512 register of `f32`).
const LANES: usize = 16;

/// The `LANES` values of `v` from `at`.
#[inline(always)]
fn lanes(v: &[f32], at: usize) -> &[f32; LANES] {
    v[at..at + LANES].try_into().expect("LANES values")
}

/// `y[o] = Σ_t w[o·ckk + t] · cols[t]` for every output channel `o` (rows of `hwo` pixels),
/// `LANES` pixels at a time in registers.
fn small_forward(w: &[f32], cols: &[f32], ckk: usize, hwo: usize, y: &mut [f32]) {
    super::wide::wide(
        #[inline(always)]
        || {
            let whole = hwo / LANES * LANES;
            for p in (0..whole).step_by(LANES) {
                for (o, wo) in w.chunks_exact(ckk).enumerate() {
                    let mut acc = [0f32; LANES];
                    for (t, &wv) in wo.iter().enumerate() {
                        let c = lanes(cols, t * hwo + p);
                        for i in 0..LANES {
                            acc[i] += wv * c[i];
                        }
                    }
                    y[o * hwo + p..o * hwo + p + LANES].copy_from_slice(&acc);
                }
            }
            for p in whole..hwo {
                for (o, wo) in w.chunks_exact(ckk).enumerate() {
                    y[o * hwo + p] = wo
                        .iter()
                        .enumerate()
                        .map(|(t, &wv)| wv * cols[t * hwo + p])
                        .sum();
                }
            }
        },
    )
}

/// `gw[o·ckk + t] = beta·gw[o·ckk + t] + Σ_p dy[o·hwo + p] · cols[t·hwo + p]`, each sum over
/// `LANES` partial sums so that it vectorises.
fn small_weight_grad(dy: &[f32], cols: &[f32], ckk: usize, hwo: usize, beta: f32, gw: &mut [f32]) {
    super::wide::wide(
        #[inline(always)]
        || {
            let whole = hwo / LANES * LANES;
            for (go, dyo) in gw.chunks_exact_mut(ckk).zip(dy.chunks_exact(hwo)) {
                for (gv, row) in go.iter_mut().zip(cols.chunks_exact(hwo)) {
                    let mut acc = [0f32; LANES];
                    for p in (0..whole).step_by(LANES) {
                        let (a, b) = (lanes(dyo, p), lanes(row, p));
                        for i in 0..LANES {
                            acc[i] += a[i] * b[i];
                        }
                    }
                    let mut width = LANES;
                    while width > 1 {
                        width /= 2;
                        for i in 0..width {
                            acc[i] += acc[i + width];
                        }
                    }
                    let tail: f32 = dyo[whole..]
                        .iter()
                        .zip(&row[whole..])
                        .map(|(&u, &v)| u * v)
                        .sum();
                    *gv = if beta == 0.0 { 0.0 } else { beta * *gv } + acc[0] + tail;
                }
            }
        },
    )
}

/// Largest output map (in pixels) computed per tap rather than per sample (measured: 4×4 is
/// faster per tap, 7×7 and 8×8 per sample).
pub const TAP_MAX_PIXELS: usize = 16;

/// How many more lanes (as a fraction) a transposed product must fill to be chosen: it writes
/// its result column by column (a register transpose per tile), which costs about that much.
/// Measured on one core: at 14×14 (196 pixels, 87.5% of the lanes, against 100% along 64
/// channels) the plain product is ~5% faster forward and ~4% backward; at 7×7 (77%) the
/// transposed one is ~8% faster.
const LANE_MARGIN: f64 = 0.15;

/// Fraction of useful lanes when `len` values are laid along the vector direction.
fn lane_use(len: usize) -> f64 {
    let nr = gemm::tile().nr;
    len as f64 / (len.div_ceil(nr) * nr) as f64
}

/// Workers for `g` given a workspace of `ws` elements: at most one per sample, and no more
/// than the workspace has columns (and, for `partials`, weight-gradient slices) for.
fn workers(pool: &Pool, g: &ConvGeom, ws: usize, partials: bool, tapwise: bool) -> usize {
    let cl = if tapwise { 0 } else { g.cols_len() };
    let wl = if partials { g.weight_len() } else { 0 };
    let mut t = pool.threads().min(g.n).max(1);
    while t > 1 && t * cl + (t - 1) * wl > ws {
        t -= 1;
    }
    t
}

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

/// Whether `g` keeps the map size with stride 1 (`2·pad = k − 1`): then row `(c, ky, kx)` of the
/// column matrix is plane `c` shifted by `(ky − pad, kx − pad)`, with zeros where the shift
/// leaves the plane, and [`im2col`] and [`col2im`] work on whole planes.
fn is_same(g: &ConvGeom) -> bool {
    g.stride == 1 && 2 * g.pad + 1 == g.k
}

/// The shift of row `(ky, kx)` of the columns of a same-size convolution, and the output rows
/// and columns whose source lies inside the plane.
struct Shift {
    /// Source offset in the plane minus destination offset (`dy·w + dx`).
    delta: isize,
    rows: (usize, usize),
    cols: (usize, usize),
}

fn shift(g: &ConvGeom, ky: usize, kx: usize) -> Shift {
    let (dy, dx) = (ky as isize - g.pad as isize, kx as isize - g.pad as isize);
    let range = |d: isize, len: usize| {
        let lo = (-d).max(0) as usize;
        let hi = (len as isize - d.max(0)).max(lo as isize) as usize;
        (lo.min(len), hi.min(len))
    };
    Shift {
        delta: dy * g.w as isize + dx,
        rows: range(dy, g.h),
        cols: range(dx, g.w),
    }
}

/// Zero column `c` of the `w`-wide rows of `rows` (a strided loop, not a call to `memset`).
#[inline]
fn zero_column(rows: &mut [f32], w: usize, c: usize) {
    for v in rows.iter_mut().skip(c).step_by(w) {
        *v = 0.0;
    }
}

/// Zero the columns of `rows` (`w` wide) outside `cols`.
#[inline]
fn zero_outside(rows: &mut [f32], w: usize, cols: (usize, usize)) {
    for c in (0..cols.0).chain(cols.1..w) {
        zero_column(rows, w, c);
    }
}

/// [`conv2d::im2col`] of one sample; same-size stride-1 convolutions copy whole shifted planes
/// and then zero the columns that fell outside (instead of one short copy per output row).
pub fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    super::wide::wide(
        #[inline(always)]
        || im2col_body(g, x, cols),
    )
}

#[inline(always)]
fn im2col_body(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    if !is_same(g) {
        return conv2d::im2col(g, x, cols);
    }
    let (hw, w) = (g.h * g.w, g.w);
    let mut rows = cols[..g.cols_len()].chunks_exact_mut(hw);
    for plane in x[..g.c_in * hw].chunks_exact(hw) {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = rows.next().expect("cols_len rows");
                let sh = shift(g, ky, kx);
                let (lo, hi) = (sh.rows.0 * w, sh.rows.1 * w);
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                if lo >= hi {
                    continue;
                }
                // row[i] = plane[i + delta] for i in lo..hi, where the source is in the plane.
                let s_lo = (lo as isize + sh.delta).max(0) as usize;
                let s_hi = ((hi as isize + sh.delta) as usize).min(hw);
                let d_lo = (s_lo as isize - sh.delta) as usize;
                let d_hi = d_lo + (s_hi - s_lo);
                for v in &mut row[lo..d_lo] {
                    *v = 0.0;
                }
                row[d_lo..d_hi].copy_from_slice(&plane[s_lo..s_hi]);
                for v in &mut row[d_hi..hi] {
                    *v = 0.0;
                }
                zero_outside(&mut row[lo..hi], w, sh.cols);
            }
        }
    }
}

/// [`conv2d::col2im`] of one sample (overwrites `dx`). For same-size stride-1 convolutions the
/// entries of `cols` whose source fell outside the plane are zeroed first (`cols` is scratch),
/// so that every row becomes one shifted whole-plane addition.
pub fn col2im(g: &ConvGeom, cols: &mut [f32], dx: &mut [f32]) {
    super::wide::wide(
        #[inline(always)]
        || col2im_body(g, cols, dx),
    )
}

#[inline(always)]
fn col2im_body(g: &ConvGeom, cols: &mut [f32], dx: &mut [f32]) {
    if !is_same(g) {
        return conv2d::col2im(g, cols, dx);
    }
    let (hw, w) = (g.h * g.w, g.w);
    dx[..g.c_in * hw].fill(0.0);
    let mut rows = cols[..g.cols_len()].chunks_exact_mut(hw);
    for plane in dx[..g.c_in * hw].chunks_exact_mut(hw) {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = rows.next().expect("cols_len rows");
                let sh = shift(g, ky, kx);
                let (lo, hi) = (sh.rows.0 * w, sh.rows.1 * w);
                if lo >= hi {
                    continue;
                }
                zero_outside(&mut row[lo..hi], w, sh.cols);
                let s_lo = (lo as isize + sh.delta).max(0) as usize;
                let s_hi = ((hi as isize + sh.delta) as usize).min(hw);
                let d_lo = (s_lo as isize - sh.delta) as usize;
                for (d, &v) in plane[s_lo..s_hi].iter_mut().zip(&row[d_lo..]) {
                    *d += v;
                }
            }
        }
    }
}

/// Grow `v` to at least `len` elements (only the first call with a new largest shape
/// allocates) and return that prefix.
fn grown(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// The weights `w` (`[c_out × ckk]`) packed for [`product`]: as the `A` operand, or `Wᵀ` as
/// the `B` operand of the transposed product.
fn pack_weights<'p>(
    w: &[f32],
    c_out: usize,
    ckk: usize,
    transposed: bool,
    packed: &'p mut Vec<f32>,
) -> &'p [f32] {
    if transposed {
        let p = grown(packed, gemm::packed_b_len(ckk, c_out));
        gemm::pack_b(Mat::new(w, ckk, c_out, 1, ckk), p);
        p
    } else {
        let p = grown(packed, gemm::packed_a_len(c_out, ckk));
        gemm::pack_a(Mat::rows(w, c_out, ckk), p);
        p
    }
}

/// One sample's `Y[c_out × hwo] = W · cols` (`cols`: `[ckk × hwo]`) with the weights from
/// [`pack_weights`]; `transposed` computes `Yᵀ = colsᵀ · Wᵀ` (vector along the channels).
#[allow(clippy::too_many_arguments)]
fn product(
    cols: &[f32],
    packed: &[f32],
    c_out: usize,
    ckk: usize,
    hwo: usize,
    transposed: bool,
    y: &mut [f32],
    gs: &mut gemm::GemmScratch,
) {
    if transposed {
        let a = Mat::new(cols, hwo, ckk, 1, hwo);
        let mut c = MatMut::new(y, hwo, c_out, 1, hwo);
        gemm::gemm(
            1.0,
            Operand::View(a),
            Operand::Packed(packed),
            0.0,
            &mut c,
            gs,
            ckk,
        );
    } else {
        let b = Mat::rows(cols, ckk, hwo);
        let mut c = MatMut::rows(y, c_out, hwo);
        gemm::gemm(
            1.0,
            Operand::Packed(packed),
            Operand::View(b),
            0.0,
            &mut c,
            gs,
            ckk,
        );
    }
}

/// Whether the input gradient of `g` is computed as a forward convolution of `dY` with the
/// flipped kernel (see [`backward`]): a same-size stride-1 convolution whose output has at most
/// as many channels as its input (so `dY`'s columns fit in the columns of `x`).
fn dx_by_flipped_conv(g: &ConvGeom) -> bool {
    is_same(g) && !g.is_pointwise() && g.c_out <= g.c_in
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

/// [`nf_core::ops::conv2d::forward`] over `pool`; `ws` is the whole kernel workspace.
pub fn forward(
    pool: &Pool,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    ws: &mut [f32],
) {
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
    if g.n == 0 || out_s == 0 {
        return;
    }
    let tapwise = hwo <= TAP_MAX_PIXELS && !g.is_pointwise();
    let t = workers(pool, g, ws.len(), false, tapwise);
    let cl = if tapwise || g.is_pointwise() {
        0
    } else {
        g.cols_len()
    };
    assert!(ws.len() >= t * cl, "conv workspace too small");
    let cols = Split::new(&mut ws[..t * cl], cl, t, t);
    let ys = Split::new(&mut y[..g.n * out_s], out_s, g.n, t);
    // Transposed product (vector along the output channels) when that wastes fewer lanes.
    let transposed = lane_use(g.c_out) > lane_use(hwo) + LANE_MARGIN;
    let small = small_weights(g);
    pool.run(t, |wk, sc| {
        let cols = cols.take(wk).into_slice();
        let part = ys.take(wk);
        let (s0, ns) = (part.units().start, part.units().len());
        let yw = part.into_slice();
        if tapwise {
            forward_taps(g, x, w, yw, s0, ns, sc);
        } else {
            let super::par::Scratch {
                gemm: gs, packed, ..
            } = sc;
            let packed: &[f32] = if small {
                &[]
            } else {
                pack_weights(w, g.c_out, ckk, transposed, packed)
            };
            for i in 0..ns {
                let s = s0 + i;
                let xs = &x[s * in_s..(s + 1) * in_s];
                let src: &[f32] = if g.is_pointwise() {
                    xs
                } else {
                    im2col(g, xs, cols);
                    cols
                };
                let ysl = &mut yw[i * out_s..(i + 1) * out_s];
                if small {
                    small_forward(w, src, ckk, hwo, ysl);
                } else {
                    product(src, packed, g.c_out, ckk, hwo, transposed, ysl, gs);
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

/// Forward of samples `s0..s0 + ns` per kernel tap into `yw` (their outputs).
fn forward_taps(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    yw: &mut [f32],
    s0: usize,
    ns: usize,
    sc: &mut super::par::Scratch,
) {
    let (kk, ckk, hwo) = (g.k * g.k, g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
    yw.fill(0.0);
    let super::par::Scratch {
        gemm: gs, packed, ..
    } = sc;
    for ky in 0..g.k {
        for kx in 0..g.k {
            let tap = ky * g.k + kx;
            if tap_pairs(g, ky, kx).next().is_none() {
                continue;
            }
            // W_tapᵀ [c_in × c_out]: element (c, o) at w[o·ckk + c·kk + tap].
            let p = grown(packed, gemm::packed_b_len(g.c_in, g.c_out));
            gemm::pack_b(Mat::new(&w[tap..], g.c_in, g.c_out, kk, ckk), p);
            for (op, ip) in tap_pairs(g, ky, kx) {
                // Y_op[s, o] += X_ip[s, c] · W_tapᵀ[c, o] over the worker's samples.
                let a = Mat::new(&x[s0 * in_s + ip..], ns, g.c_in, in_s, g.h * g.w);
                let mut c = MatMut::new(&mut yw[op..], ns, g.c_out, out_s, hwo);
                gemm::gemm(
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
}

/// [`nf_core::ops::conv2d::backward`] over `pool`: `dw` overwritten, `db` and `dx` when given
/// (overwritten); `ws` is the whole kernel workspace.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    pool: &Pool,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
    ws: &mut [f32],
) {
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
    let wl = g.weight_len();
    let dw = &mut dw[..wl];
    let dx = dx.map(|d| &mut d[..g.n * in_s]);
    if g.n == 0 || hwo == 0 {
        dw.fill(0.0);
        if let Some(db) = db {
            db[..g.c_out].fill(0.0);
        }
        if let Some(dx) = dx {
            dx.fill(0.0);
        }
        return;
    }
    let tapwise = hwo <= TAP_MAX_PIXELS && !g.is_pointwise();
    let t = workers(pool, g, ws.len(), true, tapwise);
    let cl = if tapwise || g.is_pointwise() {
        0
    } else {
        g.cols_len()
    };
    let (cols, rest) = ws.split_at_mut(t * cl);
    let partials_len = (t - 1) * wl;
    assert!(rest.len() >= partials_len, "conv workspace too small");
    let cols = Split::new(cols, cl, t, t);
    // Weight-gradient destination of each worker: dw for worker 0, a partial sum for the rest.
    let dw0 = Split::new(dw, wl, 1, 1);
    let partials = Split::new(&mut rest[..partials_len], wl, t - 1, (t - 1).max(1));
    let dxs = dx.map(|d| Split::new(d, in_s, g.n, t));
    let dbs = db.map(|d| Split::new(&mut d[..g.c_out], 1, g.c_out, t));
    // dW = dY · colsᵀ with the vector along ckk, or its transpose with the vector along c_out.
    let dw_transposed = lane_use(g.c_out) > lane_use(ckk) + LANE_MARGIN;
    // A weight gradient of a few hundred values summed over long rows (the first layer of a
    // network on grey images) is a set of dot products: the reference kernel's way.
    let dw_dot = small_weights(g);
    // dcols = Wᵀ · dY with the vector along the pixels, or its transpose along ckk.
    let dx_transposed = !g.is_pointwise() && lane_use(ckk) > lane_use(hwo) + LANE_MARGIN;
    // Or, for a same-size convolution that narrows the channels (an auxiliary head: 32 → 16,
    // 128 → 16), dX as a forward convolution of dY with the flipped kernel: columns of c_out·k²
    // rows instead of c_in·k², and no transpose or col2im.
    let flip = dx_by_flipped_conv(g);
    // dY as the input of that convolution, and its columns' rows.
    let g2 = ConvGeom {
        c_in: g.c_out,
        c_out: g.c_in,
        ..*g
    };
    let ckk2 = g.c_out * g.k * g.k;
    let flip_transposed = lane_use(g.c_in) > lane_use(hwo) + LANE_MARGIN;
    pool.run(t, |wk, sc| {
        let cols = cols.take(wk).into_slice();
        let gw = if wk == 0 {
            dw0.take(0).into_slice()
        } else {
            partials.take(wk - 1).into_slice()
        };
        let (s0, s1) = (part_start(g.n, t, wk), part_start(g.n, t, wk + 1));
        let mut dxw = dxs.as_ref().map(|d| d.take(wk).into_slice());
        if tapwise {
            backward_taps(g, x, w, dy, gw, dxw.as_deref_mut(), s0, s1 - s0, sc);
        } else {
            let super::par::Scratch {
                gemm: gs,
                packed,
                tmp,
                ..
            } = sc;
            // The weights packed once for the input gradient: Wᵀ [ckk × c_out] as the A
            // operand, or W [c_out × ckk] as the B operand of the transposed product.
            let wt: &[f32] = match (dxw.is_some(), dx_transposed) {
                (false, _) => &[],
                (true, _) if flip => {
                    let wf = grown(tmp, wl);
                    flipped_weights(g, w, wf);
                    pack_weights(wf, g.c_in, ckk2, flip_transposed, packed)
                }
                (true, false) => {
                    let p = grown(packed, gemm::packed_a_len(ckk, g.c_out));
                    gemm::pack_a(Mat::new(w, ckk, g.c_out, 1, ckk), p);
                    p
                }
                (true, true) => {
                    let p = grown(packed, gemm::packed_b_len(g.c_out, ckk));
                    gemm::pack_b(Mat::rows(w, g.c_out, ckk), p);
                    p
                }
            };
            for s in s0..s1 {
                let xs = &x[s * in_s..(s + 1) * in_s];
                let dys = &dy[s * out_s..(s + 1) * out_s];
                let beta = if s == s0 { 0.0 } else { 1.0 };
                let src: &[f32] = if g.is_pointwise() {
                    xs
                } else {
                    im2col(g, xs, cols);
                    cols
                };
                if dw_dot {
                    small_weight_grad(dys, src, ckk, hwo, beta, gw);
                } else if dw_transposed {
                    // dWᵀ[ckk × c_out] += cols · dYᵀ.
                    let a = Mat::rows(src, ckk, hwo);
                    let b = Mat::new(dys, hwo, g.c_out, 1, hwo);
                    let mut c = MatMut::new(gw, ckk, g.c_out, 1, ckk);
                    gemm::gemm(
                        1.0,
                        Operand::View(a),
                        Operand::View(b),
                        beta,
                        &mut c,
                        gs,
                        hwo,
                    );
                } else {
                    // dW[c_out × ckk] += dY · colsᵀ.
                    let a = Mat::rows(dys, g.c_out, hwo);
                    let b = Mat::new(src, hwo, ckk, 1, hwo);
                    let mut c = MatMut::rows(gw, g.c_out, ckk);
                    gemm::gemm(
                        1.0,
                        Operand::View(a),
                        Operand::View(b),
                        beta,
                        &mut c,
                        gs,
                        hwo,
                    );
                }
                if let Some(dxw) = dxw.as_deref_mut() {
                    let dxs = &mut dxw[(s - s0) * in_s..(s - s0 + 1) * in_s];
                    // dcols[ckk × hwo] = Wᵀ · dY, then scattered back (or dx itself for 1×1).
                    let b = Mat::rows(dys, g.c_out, hwo);
                    if flip {
                        // dX = conv(dY, W') straight into dx: dY's columns are the smaller.
                        im2col(&g2, dys, cols);
                        product(cols, wt, g.c_in, ckk2, hwo, flip_transposed, dxs, gs);
                    } else if g.is_pointwise() {
                        let mut c = MatMut::rows(dxs, ckk, hwo);
                        gemm::gemm(
                            1.0,
                            Operand::Packed(wt),
                            Operand::View(b),
                            0.0,
                            &mut c,
                            gs,
                            g.c_out,
                        );
                    } else if dx_transposed {
                        // dcolsᵀ [hwo × ckk] = dYᵀ · W (vector along ckk), then scattered back.
                        let a = Mat::new(dys, hwo, g.c_out, 1, hwo);
                        let mut c = MatMut::rows(cols, hwo, ckk);
                        gemm::gemm(
                            1.0,
                            Operand::View(a),
                            Operand::Packed(wt),
                            0.0,
                            &mut c,
                            gs,
                            g.c_out,
                        );
                        // Back to [ckk × hwo] (in 8×8 register blocks), then the
                        // whole-plane col2im.
                        let ct = grown(tmp, g.cols_len());
                        gemm::transpose(cols, ckk, hwo, ckk, ct, hwo);
                        col2im(g, ct, dxs);
                    } else {
                        let mut c = MatMut::rows(cols, ckk, hwo);
                        gemm::gemm(
                            1.0,
                            Operand::Packed(wt),
                            Operand::View(b),
                            0.0,
                            &mut c,
                            gs,
                            g.c_out,
                        );
                        col2im(g, cols, dxs);
                    }
                }
            }
        }
        if let Some(dbs) = dbs.as_ref() {
            let mut part = dbs.take(wk);
            let o0 = part.units().start;
            // The reference's order: an f64 sum per plane, accumulated in f32 over samples.
            for (j, acc) in part.row(0).iter_mut().enumerate() {
                let o = o0 + j;
                *acc = 0.0;
                for s in 0..g.n {
                    let plane = &dy[s * out_s + o * hwo..s * out_s + (o + 1) * hwo];
                    *acc += plane.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
                }
            }
        }
    });
    if t > 1 {
        // dw += Σ partials, split over the weights.
        let parts: &[f32] = &rest[..partials_len];
        let dws = Split::new(dw, 1, wl, t);
        pool.run(t, |wk, _| {
            let part = dws.take(wk);
            let r = part.units();
            let d = part.into_slice();
            for p in parts.chunks_exact(wl) {
                for (a, &b) in d.iter_mut().zip(&p[r.clone()]) {
                    *a += b;
                }
            }
        });
    }
}

/// Backward of samples `s0..s0 + ns` per kernel tap: their weight gradient into `gw`
/// (overwritten) and, when given, their input gradient into `dxw` (overwritten).
#[allow(clippy::too_many_arguments)]
fn backward_taps(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    gw: &mut [f32],
    mut dxw: Option<&mut [f32]>,
    s0: usize,
    ns: usize,
    sc: &mut super::par::Scratch,
) {
    let (kk, ckk, hwo, hw) = (
        g.k * g.k,
        g.c_in * g.k * g.k,
        g.h_out() * g.w_out(),
        g.h * g.w,
    );
    let (in_s, out_s) = (g.c_in * hw, g.c_out * hwo);
    if let Some(d) = dxw.as_deref_mut() {
        d.fill(0.0);
    }
    let super::par::Scratch {
        gemm: gs,
        packed,
        tmp,
        ..
    } = sc;
    let tmp = grown(tmp, g.c_out * g.c_in);
    for ky in 0..g.k {
        for kx in 0..g.k {
            let tap = ky * g.k + kx;
            // dW_tap[o, c] = Σ over pixels and samples of dY_op[o, s] · X_ip[s, c].
            let mut beta = 0.0;
            for (op, ip) in tap_pairs(g, ky, kx) {
                let a = Mat::new(&dy[s0 * out_s + op..], g.c_out, ns, hwo, out_s);
                let b = Mat::new(&x[s0 * in_s + ip..], ns, g.c_in, in_s, hw);
                let mut c = MatMut::rows(tmp, g.c_out, g.c_in);
                gemm::gemm(
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
            if beta == 0.0 {
                tmp.fill(0.0);
            }
            for (o, row) in tmp.chunks_exact(g.c_in).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    gw[o * ckk + c * kk + tap] = v;
                }
            }
            if let Some(dxw) = dxw.as_deref_mut() {
                if beta == 0.0 {
                    continue;
                }
                // dX_ip[s, c] += dY_op[s, o] · W_tap[o, c].
                let p = grown(packed, gemm::packed_b_len(g.c_out, g.c_in));
                gemm::pack_b(Mat::new(&w[tap..], g.c_out, g.c_in, ckk, kk), p);
                for (op, ip) in tap_pairs(g, ky, kx) {
                    let a = Mat::new(&dy[s0 * out_s + op..], ns, g.c_out, out_s, hwo);
                    let mut c = MatMut::new(&mut dxw[ip..], ns, g.c_in, in_s, hw);
                    gemm::gemm(
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
}
