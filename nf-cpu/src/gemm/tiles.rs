//! The register tiles: the portable kernel, the choice of the intrinsic kernels of
//! `x86` (AVX-512, AVX2), and the store of a tile into `C`.
use super::mat::MatMut;
use super::transpose::transpose_into;
#[cfg(target_arch = "x86_64")]
use super::x86;

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The `MR × NR` register tile in plain Rust: `Σ_kk a[kk][i] · b[kk][j]`.
#[inline(always)]
fn kernel<const MR: usize, const NR: usize, const FMA: bool, const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
) -> [[f32; NR]; R] {
    let mut acc = [[0f32; NR]; R];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        let ap: &[f32; MR] = ap.try_into().unwrap();
        let bp: &[f32; NR] = bp.try_into().unwrap();
        for i in 0..R {
            let ai = ap[i];
            for j in 0..NR {
                acc[i][j] = madd::<FMA>(ai, bp[j], acc[i][j]);
            }
        }
    }
    acc
}

/// Write `alpha · acc + beta · C` into the `mr × nr` corner of the tile at `(i0, j0)`.
///
/// # Safety
/// The SIMD contract (see the module [`super`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store<const MR: usize, const NR: usize, const SIMD: bool>(
    acc: &[[f32; NR]; MR],
    c: &mut MatMut<'_>,
    i0: usize,
    j0: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    if c.cs == 1 {
        for (i, row_acc) in acc.iter().enumerate().take(mr) {
            let at = (i0 + i) * c.rs + j0;
            let row = &mut c.data[at..at + nr];
            if beta == 0.0 {
                for (d, &v) in row.iter_mut().zip(row_acc) {
                    *d = alpha * v;
                }
            } else {
                for (d, &v) in row.iter_mut().zip(row_acc) {
                    *d = alpha * v + beta * *d;
                }
            }
        }
    } else if c.rs == 1 {
        // Column-major C: transpose the tile first, then store column by column.
        let mut t = [[0f32; MR]; NR];
        // SAFETY: our caller's SIMD contract.
        unsafe { transpose_into::<SIMD>(acc.as_flattened(), NR, mr, nr, t.as_flattened_mut(), MR) };
        for (j, tj) in t.iter().enumerate().take(nr) {
            let at = (j0 + j) * c.cs + i0;
            let col = &mut c.data[at..at + mr];
            if beta == 0.0 {
                for (d, &v) in col.iter_mut().zip(tj) {
                    *d = alpha * v;
                }
            } else {
                for (d, &v) in col.iter_mut().zip(tj) {
                    *d = alpha * v + beta * *d;
                }
            }
        }
    } else {
        for (i, row_acc) in acc.iter().enumerate().take(mr) {
            for (j, &v) in row_acc.iter().enumerate().take(nr) {
                let d = &mut c.data[(i0 + i) * c.rs + (j0 + j) * c.cs];
                *d = if beta == 0.0 {
                    alpha * v
                } else {
                    alpha * v + beta * *d
                };
            }
        }
    }
}

/// The micro-kernel for this tile: hand-written AVX-512 / AVX2 with `SIMD`, the portable one
/// otherwise.
///
/// # Safety
/// The SIMD contract (see the module [`super`]).
#[inline(always)]
pub(super) unsafe fn micro<const MR: usize, const NR: usize, const SIMD: bool, const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
) -> [[f32; NR]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        if SIMD && NR == 32 {
            let mut out = [[0f32; NR]; R];
            // SAFETY: a 32-wide tile with `SIMD` runs only where the CPU runs AVX-512 (our
            // caller's SIMD contract).
            let r = unsafe { x86::kernel_16x2::<MR, R>(kc, a, b) };
            for (o, v) in out.iter_mut().zip(r.iter()) {
                o.copy_from_slice(v);
            }
            return out;
        }
        if SIMD && NR == 16 {
            let mut out = [[0f32; NR]; R];
            // SAFETY: with `SIMD` the CPU runs AVX2 + FMA (our caller's SIMD contract).
            let r = unsafe { x86::kernel_8x2::<MR, R>(kc, a, b) };
            for (o, v) in out.iter_mut().zip(r.iter()) {
                o.copy_from_slice(v);
            }
            return out;
        }
    }
    kernel::<MR, NR, SIMD, R>(kc, a, b)
}

/// A tile with `mr < MR` valid rows: the kernel instantiated for exactly `mr` rows.
///
/// # Safety
/// The SIMD contract (see the module [`super`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn edge<const MR: usize, const NR: usize, const SIMD: bool>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut MatMut<'_>,
    i0: usize,
    j0: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    macro_rules! rows {
        ($($r:literal)*) => {
            match mr {
                $($r if $r < MR => {
                    // SAFETY (both calls): our caller's SIMD contract.
                    let acc = unsafe { micro::<MR, NR, SIMD, $r>(kc, a, b) };
                    unsafe { store::<$r, NR, SIMD>(&acc, c, i0, j0, mr, nr, alpha, beta) };
                })*
                _ => unreachable!("edge tile of {mr} rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
}
