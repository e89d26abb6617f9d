//! Max and average pooling on the host, split over planes (each worker owns whole
//! `(sample, channel)` planes). Average pooling runs the reference kernels of
//! [`nf_core::ops::pool`] per plane; max pooling is rewritten with selects instead of branches
//! (random data makes every comparison a coin flip for the branch predictor), keeping the
//! reference's order of comparisons and its ties (the first maximum wins). Both are
//! bit-identical to the reference.
use nf_core::ops::pool;
use nf_core::ops::Nchw;

use crate::par::{Parts, Pool};
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

/// One plane as an `Nchw` of one sample and one channel.
fn plane(d: &Nchw) -> Nchw {
    Nchw { n: 1, c: 1, ..*d }
}

/// [`pool::maxpool2_forward`].
pub fn maxpool_forward(p: &Pool, d: &Nchw, x: &[f32], y: &mut [f32]) {
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

/// [`pool::maxpool2_backward`].
pub fn maxpool_backward(p: &Pool, d: &Nchw, x: &[f32], dy: &[f32], dx: &mut [f32]) {
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

/// Largest output side the adaptive average pool computes from precomputed bins (larger ones
/// run the reference kernel plane by plane).
const BINS: usize = 16;

/// The bins of an adaptive pool to `s` per side (PyTorch's: `floor(i·len/s)` to
/// `ceil((i+1)·len/s)`), for rows and columns, computed once per call.
struct Bins {
    s: usize,
    rows: [(usize, usize); BINS],
    cols: [(usize, usize); BINS],
}

impl Bins {
    /// The bins of `d`'s planes for `s ≤ BINS`.
    fn new(d: &Nchw, s: usize) -> Bins {
        let bin = |i: usize, len: usize| (i * len / s, ((i + 1) * len).div_ceil(s));
        let mut b = Bins {
            s,
            rows: [(0, 0); BINS],
            cols: [(0, 0); BINS],
        };
        for i in 0..s {
            b.rows[i] = bin(i, d.h);
            b.cols[i] = bin(i, d.w);
        }
        b
    }

    /// Every bin of a plane of width `w`: `(out index, rows, cols, 1 / …)` in the reference's
    /// order, with the bin's element count.
    #[inline(always)]
    fn each(&self, mut f: impl FnMut(usize, (usize, usize), (usize, usize), f32)) {
        for (oy, &r) in self.rows[..self.s].iter().enumerate() {
            for (ox, &c) in self.cols[..self.s].iter().enumerate() {
                f(oy * self.s + ox, r, c, ((r.1 - r.0) * (c.1 - c.0)) as f32);
            }
        }
    }
}

/// [`pool::avgpool_forward`] (adaptive, `s × s` output), bit-identical: the same sums in the
/// same order, with the bins computed once per call instead of once per plane and bin.
pub fn avgpool_forward(p: &Pool, d: &Nchw, s: usize, x: &[f32], y: &mut [f32]) {
    let (hw, planes) = (d.h * d.w, d.n * d.c);
    if hw == 0 || s == 0 {
        return;
    }
    let t = parts(p, d);
    let ys = Parts::new(&mut y[..planes * s * s], s * s, planes, t);
    let bins = (s <= BINS).then(|| Bins::new(d, s));
    p.run(t, |w| {
        wide(
            p.isa(),
            #[inline(always)]
            || {
                let part = ys.take(w);
                let r = part.units();
                let one = plane(d);
                for (i, out) in part.into_slice().chunks_exact_mut(s * s).enumerate() {
                    let q = r.start + i;
                    let xp = &x[q * hw..(q + 1) * hw];
                    let Some(bins) = &bins else {
                        pool::avgpool_forward(&one, s, xp, out);
                        continue;
                    };
                    bins.each(|o, (y0, y1), (x0, x1), count| {
                        let mut acc = 0f32;
                        for row in y0..y1 {
                            acc += xp[row * d.w + x0..row * d.w + x1].iter().sum::<f32>();
                        }
                        out[o] = acc / count;
                    });
                }
            },
        )
    });
}

/// [`pool::avgpool_backward`], bit-identical (see [`avgpool_forward`]).
pub fn avgpool_backward(p: &Pool, d: &Nchw, s: usize, dy: &[f32], dx: &mut [f32]) {
    let (hw, planes) = (d.h * d.w, d.n * d.c);
    if hw == 0 {
        return;
    }
    if s == 0 {
        dx[..d.len()].fill(0.0);
        return;
    }
    let t = parts(p, d);
    let dxs = Parts::new(&mut dx[..d.len()], hw, planes, t);
    let bins = (s <= BINS).then(|| Bins::new(d, s));
    p.run(t, |w| {
        wide(
            p.isa(),
            #[inline(always)]
            || {
                let part = dxs.take(w);
                let r = part.units();
                let one = plane(d);
                for (i, out) in part.into_slice().chunks_exact_mut(hw).enumerate() {
                    let q = r.start + i;
                    let g = &dy[q * s * s..(q + 1) * s * s];
                    let Some(bins) = &bins else {
                        pool::avgpool_backward(&one, s, g, out);
                        continue;
                    };
                    out.fill(0.0);
                    bins.each(|o, (y0, y1), (x0, x1), count| {
                        let v = g[o] / count;
                        for row in y0..y1 {
                            out[row * d.w + x0..row * d.w + x1]
                                .iter_mut()
                                .for_each(|t| *t += v);
                        }
                    });
                }
            },
        )
    });
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
fn max2_plane(w: usize, x: &[f32], out: &mut [f32]) {
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
            *o = max4(p0[0], p0[1], p1[0], p1[1]).0;
        }
    }
}

/// Gradient of [`max2_plane`]: `dx` (the whole plane) gets each `g` at its window's maximum
/// and 0 elsewhere.
fn max2_plane_backward(w: usize, x: &[f32], g: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let wo = w / 2;
    if wo == 0 {
        return;
    }
    for (oy, grow) in g.chunks_exact(wo).enumerate() {
        let (b0, b1) = (2 * oy * w, (2 * oy + 1) * w);
        for (ox, &gv) in grow.iter().enumerate() {
            let (i0, i1) = (b0 + 2 * ox, b1 + 2 * ox);
            let (_, k) = max4(x[i0], x[i0 + 1], x[i1], x[i1 + 1]);
            let at = [i0, i0 + 1, i1, i1 + 1][k];
            dx[at] = gv;
        }
    }
}
