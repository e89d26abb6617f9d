//! Unrolling a sample into its column matrix ([`im2col`]) and back ([`col2im`]).
use nf_core::ops::conv2d::{self, ConvGeom};

use crate::isa::Isa;
use crate::wide::wide;

/// Whether `g` keeps the map size with stride 1 (`2·pad = k − 1`): then row `(c, ky, kx)` of the
/// column matrix is plane `c` shifted by `(ky − pad, kx − pad)`, with zeros where the shift
/// leaves the plane, and [`im2col`] and [`col2im`] work on whole planes.
pub(crate) fn is_same(g: &ConvGeom) -> bool {
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

/// [`conv2d::im2col`] of one sample, compiled for `isa`; same-size stride-1 convolutions copy
/// whole shifted planes and then zero the columns that fell outside (instead of one short copy
/// per output row).
pub fn im2col(isa: Isa, g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    wide(
        isa,
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

/// [`conv2d::col2im`] of one sample, compiled for `isa` (overwrites `dx`). For same-size stride-1 convolutions the
/// entries of `cols` whose source fell outside the plane are zeroed first (`cols` is scratch),
/// so that every row becomes one shifted whole-plane addition.
pub fn col2im(isa: Isa, g: &ConvGeom, cols: &mut [f32], dx: &mut [f32]) {
    wide(
        isa,
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
