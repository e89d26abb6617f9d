//! Packing operands into the micro-kernels' panel layout, block by block (the block sizes of
//! the driver's loops are here).
use super::mat::Mat;
use super::transpose::transpose_into;

/// Depth of one packed block: every convolution of the small VGG (K ≤ 1152) in one block, so
/// `C` is written once per tile. Measured on one core (batch 128): 128×7×7 → 128 forward 75 →
/// 83 GFLOP/s, a 1024³ product 88 → 104 GFLOP/s, against 384.
pub(super) const KC: usize = 1152;
/// Rows of `A` packed per block (a multiple of every tile's `MR`).
pub(super) const MC: usize = 96;
/// Columns of `B` packed per block (a multiple of every tile's `NR`).
pub(super) const NC: usize = 1024;

/// Full packed layout of `A`: for each depth block `[k0, k0 + kc)` (of `KC`), for each panel of
/// `MR` rows, `kc × MR` values (`[kk][ii]`). Block `k0` starts at `k0 · m_pad`.
pub(super) fn pack_a_full<const MR: usize>(a: Mat<'_>, out: &mut [f32]) {
    let (m, k) = (a.rows, a.cols);
    let m_pad = m.div_ceil(MR) * MR;
    assert!(out.len() >= m_pad * k, "packed A buffer too short");
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let block = &mut out[k0 * m_pad..k0 * m_pad + m_pad * kc];
        for (p, panel) in block.chunks_exact_mut(kc * MR).enumerate() {
            let i0 = p * MR;
            // SAFETY: without `SIMD` no intrinsics run.
            unsafe { pack_a_panel::<MR, false>(&a, i0, MR.min(m - i0), k0, kc, panel) };
        }
        k0 += kc;
    }
}

/// Full packed layout of `B`: for each depth block, for each panel of `NR` columns, `kc × NR`
/// values (`[kk][jj]`). Block `k0` starts at `k0 · n_pad`.
pub(super) fn pack_b_full<const NR: usize>(b: Mat<'_>, out: &mut [f32]) {
    let (k, n) = (b.rows, b.cols);
    let n_pad = n.div_ceil(NR) * NR;
    assert!(out.len() >= n_pad * k, "packed B buffer too short");
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let block = &mut out[k0 * n_pad..k0 * n_pad + n_pad * kc];
        for (p, panel) in block.chunks_exact_mut(kc * NR).enumerate() {
            let j0 = p * NR;
            // SAFETY: without `SIMD` no intrinsics run.
            unsafe { pack_b_panel::<NR, false>(&b, k0, kc, j0, NR.min(n - j0), panel) };
        }
        k0 += kc;
    }
}

/// `dst[..len] = src[..len]` for one line of a panel (`len ≤ N`): a whole line is a copy of
/// a compile-time length, moved in registers, where `copy_from_slice` of a run-time length
/// calls `memmove` (measured: ~5% of a vgg-small BP step in `memmove`, most of it lines of 12
/// or 32 values).
#[inline(always)]
fn copy_line<const N: usize>(dst: &mut [f32], src: &[f32], len: usize) {
    if len == N {
        let d: &mut [f32; N] = (&mut dst[..N]).try_into().unwrap();
        *d = src[..N].try_into().unwrap();
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// Rows `i0..i0 + mr` and depth `k0..k0 + kc` of `a` into `out[kk·MR + ii]`, zero-padded to
/// `MR` rows.
///
/// # Safety
/// The SIMD contract (see the module [`super`]).
#[inline(always)]
pub(super) unsafe fn pack_a_panel<const MR: usize, const SIMD: bool>(
    a: &Mat<'_>,
    i0: usize,
    mr: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) {
    let out = &mut out[..kc * MR];
    if mr < MR {
        out.fill(0.0);
    }
    if a.rs == 1 {
        // Columns are contiguous: one copy of `mr` values per depth step.
        for (kk, dst) in out.chunks_exact_mut(MR).enumerate() {
            let at = (k0 + kk) * a.cs + i0;
            copy_line::<MR>(dst, &a.data[at..], mr);
        }
    } else if a.cs == 1 {
        // Rows are contiguous: a transposition.
        // SAFETY: our caller's SIMD contract.
        unsafe { transpose_into::<SIMD>(&a.data[i0 * a.rs + k0..], a.rs, mr, kc, out, MR) };
    } else {
        for (kk, dst) in out.chunks_exact_mut(MR).enumerate() {
            for (ii, d) in dst[..mr].iter_mut().enumerate() {
                *d = a.data[(i0 + ii) * a.rs + (k0 + kk) * a.cs];
            }
        }
    }
}

/// Depth `k0..k0 + kc` and columns `j0..j0 + nr` of `b` into `out[kk·NR + jj]`, zero-padded to
/// `NR` columns.
///
/// # Safety
/// The SIMD contract (see the module [`super`]).
#[inline(always)]
pub(super) unsafe fn pack_b_panel<const NR: usize, const SIMD: bool>(
    b: &Mat<'_>,
    k0: usize,
    kc: usize,
    j0: usize,
    nr: usize,
    out: &mut [f32],
) {
    let out = &mut out[..kc * NR];
    if nr < NR {
        out.fill(0.0);
    }
    if b.cs == 1 {
        for (kk, dst) in out.chunks_exact_mut(NR).enumerate() {
            let at = (k0 + kk) * b.rs + j0;
            copy_line::<NR>(dst, &b.data[at..], nr);
        }
    } else if b.rs == 1 {
        // Columns are contiguous: a transposition.
        // SAFETY: our caller's SIMD contract.
        unsafe { transpose_into::<SIMD>(&b.data[j0 * b.cs + k0..], b.cs, nr, kc, out, NR) };
    } else {
        for (kk, dst) in out.chunks_exact_mut(NR).enumerate() {
            for (jj, d) in dst[..nr].iter_mut().enumerate() {
                *d = b.data[(k0 + kk) * b.rs + (j0 + jj) * b.cs];
            }
        }
    }
}
