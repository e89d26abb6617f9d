//! The register tiles: the portable kernel, the AVX-512 and AVX2 intrinsic kernels, and the
//! store of a tile into `C`.
use super::pack::transpose_into;
use super::MatMut;

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

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    /// `R` rows (`R ≤ MR`) of an `MR × 32` tile with AVX-512: two zmm accumulators per row.
    ///
    /// # Safety
    /// The CPU must run AVX-512F (`Isa::Avx512`). (Slice lengths are checked.) For speed, call
    /// it from a function compiled with those features, where it is inlined.
    #[inline(always)]
    pub unsafe fn kernel_16x2<const MR: usize, const R: usize>(
        kc: usize,
        a: &[f32],
        b: &[f32],
    ) -> [[f32; 32]; R] {
        assert!(R <= MR && a.len() >= kc * MR && b.len() >= kc * 32);
        let mut out = [[0f32; 32]; R];
        // SAFETY: the CPU runs AVX-512F (this function's contract); every load reads
        // `a[kk*MR + i]` (i < R ≤ MR) and `b[kk*32 .. kk*32 + 32]` for kk < kc, in bounds by the
        // assert; the stores write `out`, which has 32 floats per row.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
            for _ in 0..kc {
                let b0 = _mm512_loadu_ps(pb);
                let b1 = _mm512_loadu_ps(pb.add(16));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*pa.add(i));
                    acc_i[0] = _mm512_fmadd_ps(ai, b0, acc_i[0]);
                    acc_i[1] = _mm512_fmadd_ps(ai, b1, acc_i[1]);
                }
                pa = pa.add(MR);
                pb = pb.add(32);
            }
            for (o, acc_i) in out.iter_mut().zip(acc.iter()) {
                _mm512_storeu_ps(o.as_mut_ptr(), acc_i[0]);
                _mm512_storeu_ps(o.as_mut_ptr().add(16), acc_i[1]);
            }
        }
        out
    }

    /// `dst[k·d + l] = src[l·stride + k]` for `l, k < 8`: an 8×8 transpose in registers
    /// (unpack, shuffle, 128-bit permute).
    ///
    /// # Safety
    /// The CPU must run AVX (any of the x86 instruction sets here). (Slice lengths are
    /// checked.)
    #[inline(always)]
    pub unsafe fn transpose8(src: &[f32], stride: usize, dst: &mut [f32], d: usize) {
        assert!(src.len() >= 7 * stride + 8 && dst.len() >= 7 * d + 8);
        // SAFETY: the CPU runs AVX (this function's contract); the loads read
        // `src[l·stride .. l·stride + 8]` and the stores write `dst[k·d .. k·d + 8]` for
        // l, k < 8, in bounds by the assert.
        unsafe {
            let ps = src.as_ptr();
            let r: [__m256; 8] = std::array::from_fn(|l| _mm256_loadu_ps(ps.add(l * stride)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let c = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            let pd = dst.as_mut_ptr();
            for (k, ck) in c.iter().enumerate() {
                _mm256_storeu_ps(pd.add(k * d), *ck);
            }
        }
    }

    /// `R` rows (`R ≤ MR`) of an `MR × 16` tile with AVX2: two ymm accumulators per row.
    ///
    /// # Safety
    /// The CPU must run AVX2 + FMA (`Isa::Avx2`). (Slice lengths are checked.)
    #[inline(always)]
    pub unsafe fn kernel_8x2<const MR: usize, const R: usize>(
        kc: usize,
        a: &[f32],
        b: &[f32],
    ) -> [[f32; 16]; R] {
        assert!(R <= MR && a.len() >= kc * MR && b.len() >= kc * 16);
        let mut out = [[0f32; 16]; R];
        // SAFETY: as in `kernel_16x2`, for AVX2 + FMA and 16-wide panels.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
            for _ in 0..kc {
                let b0 = _mm256_loadu_ps(pb);
                let b1 = _mm256_loadu_ps(pb.add(8));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ai = _mm256_set1_ps(*pa.add(i));
                    acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
                    acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
                }
                pa = pa.add(MR);
                pb = pb.add(16);
            }
            for (o, acc_i) in out.iter_mut().zip(acc.iter()) {
                _mm256_storeu_ps(o.as_mut_ptr(), acc_i[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), acc_i[1]);
            }
        }
        out
    }
}
