//! Max and average pooling on the host, split over planes (each worker owns whole
//! `(sample, channel)` planes). Average pooling runs the reference kernels of
//! [`nf_core::ops::pool`] per plane; max pooling is rewritten with selects instead of branches
//! (random data makes every comparison a coin flip for the branch predictor), keeping the
//! reference's order of comparisons and its ties (the first maximum wins). Both are
//! bit-identical to the reference.
//!
//! Every tensor argument is generic over its element type ([`Store`]: `f32` or bf16): elements
//! are loaded as `f32`, every sum and comparison is the f32 kernel's, and each output is rounded
//! once when stored, so the result is the f32 kernel's on the widened inputs, rounded to the
//! output type.
use nf_core::ops::Nchw;

use crate::par::{Parts, Pool};
use crate::store::Store;
use crate::wide::wide;

/// Work below this many input elements runs on the calling thread alone.
const SERIAL_BELOW: usize = 1 << 14;

fn parts(pool: &Pool, d: &Nchw) -> usize {
    if d.len() < SERIAL_BELOW {
        1
    } else {
        pool.threads().min(d.n * d.c).max(1)
    }
}

/// [`nf_core::ops::pool::maxpool2_forward`].
pub fn maxpool_forward<X: Store, Y: Store>(p: &Pool, d: &Nchw, x: &[X], y: &mut [Y]) {
    let (hw, hwo, planes) = (d.h * d.w, (d.h / 2) * (d.w / 2), d.n * d.c);
    if hwo == 0 {
        return;
    }
    let t = parts(p, d);
    let ys = Parts::new(&mut y[..planes * hwo], hwo, planes, t);
    p.run(t, |w| {
        wide(
            p.isa(),
            #[inline(always)]
            || {
                let part = ys.take(w);
                let r = part.units();
                for (i, out) in part.into_slice().chunks_exact_mut(hwo).enumerate() {
                    let q = r.start + i;
                    max2_plane(d.w, &x[q * hw..(q + 1) * hw], out);
                }
            },
        )
    });
}

/// [`nf_core::ops::pool::maxpool2_backward`].
pub fn maxpool_backward<X: Store, DY: Store, DX: Store>(
    p: &Pool,
    d: &Nchw,
    x: &[X],
    dy: &[DY],
    dx: &mut [DX],
) {
    let (hw, hwo, planes) = (d.h * d.w, (d.h / 2) * (d.w / 2), d.n * d.c);
    if hw == 0 {
        return;
    }
    let t = parts(p, d);
    let dxs = Parts::new(&mut dx[..d.len()], hw, planes, t);
    p.run(t, |w| {
        wide(
            p.isa(),
            #[inline(always)]
            || {
                let part = dxs.take(w);
                let r = part.units();
                for (i, out) in part.into_slice().chunks_exact_mut(hw).enumerate() {
                    let q = r.start + i;
                    let g = &dy[q * hwo..(q + 1) * hwo];
                    max2_plane_backward(d.w, &x[q * hw..(q + 1) * hw], g, out);
                }
            },
        )
    });
}

/// Largest output side whose bins the adaptive average pool computes once per call (larger
/// ones compute each bin where it is used).
const BINS: usize = 16;

/// The bins of an adaptive pool to `s` per side (PyTorch's: `floor(i·len/s)` to
/// `ceil((i+1)·len/s)`), for rows and columns.
struct Bins {
    s: usize,
    h: usize,
    w: usize,
    rows: [(usize, usize); BINS],
    cols: [(usize, usize); BINS],
}

/// Bin `i` of `s` over `len` (the reference's).
#[inline(always)]
fn bin(i: usize, len: usize, s: usize) -> (usize, usize) {
    (i * len / s, ((i + 1) * len).div_ceil(s))
}

impl Bins {
    /// The bins of `d`'s planes (`s ≥ 1`), precomputed for `s ≤ BINS`.
    fn new(d: &Nchw, s: usize) -> Bins {
        let mut b = Bins {
            s,
            h: d.h,
            w: d.w,
            rows: [(0, 0); BINS],
            cols: [(0, 0); BINS],
        };
        for i in 0..s.min(BINS) {
            b.rows[i] = bin(i, d.h, s);
            b.cols[i] = bin(i, d.w, s);
        }
        b
    }

    /// Row bin `i`.
    #[inline(always)]
    fn row(&self, i: usize) -> (usize, usize) {
        if self.s <= BINS {
            self.rows[i]
        } else {
            bin(i, self.h, self.s)
        }
    }

    /// Column bin `i`.
    #[inline(always)]
    fn col(&self, i: usize) -> (usize, usize) {
        if self.s <= BINS {
            self.cols[i]
        } else {
            bin(i, self.w, self.s)
        }
    }

    /// Whether no two bins share a row or a column (each input element is in one bin).
    fn disjoint(&self) -> bool {
        (1..self.s)
            .all(|i| self.row(i - 1).1 <= self.row(i).0 && self.col(i - 1).1 <= self.col(i).0)
    }

    /// Every bin: `(out index, rows, cols, element count)` in the reference's order.
    #[inline(always)]
    fn each(&self, mut f: impl FnMut(usize, (usize, usize), (usize, usize), f32)) {
        for oy in 0..self.s {
            let r = self.row(oy);
            for ox in 0..self.s {
                let c = self.col(ox);
                f(oy * self.s + ox, r, c, ((r.1 - r.0) * (c.1 - c.0)) as f32);
            }
        }
    }

    /// The bins containing index `i` of a side whose bins are `bin(0..s)`: a range, as both
    /// ends of the bins increase with their index.
    #[inline(always)]
    fn containing(&self, i: usize, bin: impl Fn(usize) -> (usize, usize)) -> (usize, usize) {
        let first = (0..self.s).find(|&k| bin(k).1 > i).unwrap_or(self.s);
        let end = (first..self.s).find(|&k| bin(k).0 > i).unwrap_or(self.s);
        (first, end)
    }
}

/// [`nf_core::ops::pool::avgpool_forward`] (adaptive, `s × s` output), bit-identical: the
/// same sums in the same order, with the bins computed once per call instead of once per plane
/// and bin.
pub fn avgpool_forward<X: Store, Y: Store>(p: &Pool, d: &Nchw, s: usize, x: &[X], y: &mut [Y]) {
    let (hw, planes) = (d.h * d.w, d.n * d.c);
    if hw == 0 || s == 0 {
        return;
    }
    let t = parts(p, d);
    let ys = Parts::new(&mut y[..planes * s * s], s * s, planes, t);
    let bins = Bins::new(d, s);
    p.run(t, |w| {
        wide(
            p.isa(),
            #[inline(always)]
            || {
                let part = ys.take(w);
                let r = part.units();
                for (i, out) in part.into_slice().chunks_exact_mut(s * s).enumerate() {
                    let q = r.start + i;
                    let xp = &x[q * hw..(q + 1) * hw];
                    bins.each(|o, (y0, y1), (x0, x1), count| {
                        let mut acc = 0f32;
                        for row in y0..y1 {
                            acc += xp[row * d.w + x0..row * d.w + x1]
                                .iter()
                                .map(|v| v.load())
                                .sum::<f32>();
                        }
                        out[o] = Y::store(acc / count);
                    });
                }
            },
        )
    });
}

/// [`nf_core::ops::pool::avgpool_backward`], bit-identical (see [`avgpool_forward`]).
///
/// Where bins overlap (a side not a multiple of `s`) an input element sums the gradients of
/// several bins; if `DX` rounds (bf16), that sum is made in `f32` per element, in the f32
/// kernel's order, and rounded once.
pub fn avgpool_backward<DY: Store, DX: Store>(
    p: &Pool,
    d: &Nchw,
    s: usize,
    dy: &[DY],
    dx: &mut [DX],
) {
    let (hw, planes) = (d.h * d.w, d.n * d.c);
    if hw == 0 {
        return;
    }
    if s == 0 {
        dx[..d.len()].fill(DX::store(0.0));
        return;
    }
    let t = parts(p, d);
    let dxs = Parts::new(&mut dx[..d.len()], hw, planes, t);
    let bins = Bins::new(d, s);
    // Whether `DX` holds every f32 (then sums may accumulate in `dx` itself; constant-folded).
    let exact = DX::store(1.0 + f32::EPSILON).load() == 1.0 + f32::EPSILON;
    let scatter = exact || bins.disjoint();
    p.run(t, |w| {
        wide(
            p.isa(),
            #[inline(always)]
            || {
                let part = dxs.take(w);
                let r = part.units();
                for (i, out) in part.into_slice().chunks_exact_mut(hw).enumerate() {
                    let q = r.start + i;
                    let g = &dy[q * s * s..(q + 1) * s * s];
                    if scatter {
                        avg_plane_backward(d.w, &bins, g, out);
                    } else {
                        avg_plane_backward_gather(d.w, &bins, g, out);
                    }
                }
            },
        )
    });
}

/// Gradient of one plane of the average pool (width `w`), added into `out` bin by bin as the
/// reference does: exact when `DX` holds every f32 or no element is in two bins.
#[inline(always)]
fn avg_plane_backward<DY: Store, DX: Store>(w: usize, bins: &Bins, g: &[DY], out: &mut [DX]) {
    out.fill(DX::store(0.0));
    bins.each(|o, (y0, y1), (x0, x1), count| {
        let v = g[o].load() / count;
        for row in y0..y1 {
            out[row * w + x0..row * w + x1]
                .iter_mut()
                .for_each(|t| *t = DX::store(t.load() + v));
        }
    });
}

/// [`avg_plane_backward`] element by element: each element sums, in `f32` and in the
/// reference's order (rows of bins, then columns), the gradients of the bins containing it,
/// and is rounded once.
fn avg_plane_backward_gather<DY: Store, DX: Store>(
    w: usize,
    bins: &Bins,
    g: &[DY],
    out: &mut [DX],
) {
    let s = bins.s;
    for (row, orow) in out.chunks_exact_mut(w).enumerate() {
        let (oy0, oy1) = bins.containing(row, |k| bins.row(k));
        for (col, o) in orow.iter_mut().enumerate() {
            let (ox0, ox1) = bins.containing(col, |k| bins.col(k));
            let mut acc = 0f32;
            for oy in oy0..oy1 {
                let r = bins.row(oy);
                for ox in ox0..ox1 {
                    let c = bins.col(ox);
                    acc += g[oy * s + ox].load() / ((r.1 - r.0) * (c.1 - c.0)) as f32;
                }
            }
            *o = DX::store(acc);
        }
    }
}

/// The maximum of one 2×2 window `(a, b / c, d)` and its position (0..4), comparing in the
/// reference's order with strict `>` (so the first maximum wins and a NaN in `a` sticks).
#[inline(always)]
fn max4(a: f32, b: f32, c: f32, d: f32) -> (f32, usize) {
    let (mut m, mut i) = (a, 0);
    if b > m {
        (m, i) = (b, 1);
    }
    if c > m {
        (m, i) = (c, 2);
    }
    if d > m {
        (m, i) = (d, 3);
    }
    (m, i)
}

/// 2×2 max-pool of one plane of width `w` into `out` (`(h/2)·(w/2)` values).
fn max2_plane<X: Store, Y: Store>(w: usize, x: &[X], out: &mut [Y]) {
    let wo = w / 2;
    if wo == 0 {
        return;
    }
    for (oy, orow) in out.chunks_exact_mut(wo).enumerate() {
        let r0 = &x[2 * oy * w..2 * oy * w + 2 * wo];
        let r1 = &x[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * wo];
        for ((o, p0), p1) in orow
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            *o = Y::store(max4(p0[0].load(), p0[1].load(), p1[0].load(), p1[1].load()).0);
        }
    }
}

/// Gradient of [`max2_plane`]: `dx` (the whole plane) gets each `g` at its window's maximum
/// and 0 elsewhere.
fn max2_plane_backward<X: Store, DY: Store, DX: Store>(w: usize, x: &[X], g: &[DY], dx: &mut [DX]) {
    dx.fill(DX::store(0.0));
    let wo = w / 2;
    if wo == 0 {
        return;
    }
    for (oy, grow) in g.chunks_exact(wo).enumerate() {
        let (b0, b1) = (2 * oy * w, (2 * oy + 1) * w);
        for (ox, &gv) in grow.iter().enumerate() {
            let (i0, i1) = (b0 + 2 * ox, b1 + 2 * ox);
            let (_, k) = max4(
                x[i0].load(),
                x[i0 + 1].load(),
                x[i1].load(),
                x[i1 + 1].load(),
            );
            let at = [i0, i0 + 1, i1, i1 + 1][k];
            dx[at] = DX::store(gv.load());
        }
    }
}
