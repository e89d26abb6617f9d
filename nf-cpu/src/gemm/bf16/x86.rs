//! The x86-64 register tiles of the bf16 GEMM. Both operands arrive packed in pairs of depth
//! (see [`super::pack`]): a packed `A` step is `MR` 32-bit words `(a[i][2p], a[i][2p+1])`, a
//! packed `B` step `NR` words `(b[2p][j], b[2p+1][j])`, the low half holding the even depth.
//! Each kernel is an `unsafe fn` whose `# Safety` section names the instruction set the CPU
//! must run; the driver checks it once per call and reaches these through
//! `#[target_feature]` copies.
use crate::bf16::Bf16;
use std::arch::x86_64::*;
use std::mem::transmute;

/// `R` rows (`R ≤ MR`) of an `MR × 32` tile with `vdpbf16ps`: per depth pair, one 32-bit
/// broadcast of `A`'s pair per row, and two dot-product accumulates (16 lanes each, two
/// products per lane) per row.
///
/// # Safety
/// The CPU must run AVX-512F and AVX512-BF16 (`Isa::Avx512Bf16`). (Slice lengths are
/// checked.)
#[inline(always)]
pub(super) unsafe fn dp_16x2<const MR: usize, const R: usize>(
    kp: usize,
    a: &[Bf16],
    b: &[Bf16],
) -> [[f32; 32]; R] {
    assert!(R <= MR && a.len() >= kp * MR * 2 && b.len() >= kp * 64);
    let mut out = [[0f32; 32]; R];
    // SAFETY: the CPU runs AVX-512F + BF16 (this function's contract). Every load reads
    // `a[(p·MR + i)·2 ..][..2]` (i < R ≤ MR) or `b[p·64 ..][..64]` for p < kp, in bounds by
    // the assert (unaligned reads: `Bf16` is 2-byte aligned, and any 32-bit pattern is a valid
    // `i32`); the stores write `out`, 32 floats per row. The transmutes reinterpret 512-bit
    // vectors as 512-bit vectors of another lane type (all bit patterns are valid).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let (mut pa, mut pb) = (a.as_ptr() as *const i32, b.as_ptr() as *const f32);
        for _ in 0..kp {
            let b0: __m512bh = transmute(_mm512_loadu_ps(pb));
            let b1: __m512bh = transmute(_mm512_loadu_ps(pb.add(16)));
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let ai: __m512bh = transmute(_mm512_set1_epi32(pa.add(i).read_unaligned()));
                acc_i[0] = _mm512_dpbf16_ps(acc_i[0], ai, b0);
                acc_i[1] = _mm512_dpbf16_ps(acc_i[1], ai, b1);
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

/// `R` rows of an `MR × 32` tile with AVX-512F and no BF16: each packed word is widened to two
/// f32 vectors in registers (the even depth shifted up 16 bits, the odd one masked), then two
/// fused multiply-adds per half row.
///
/// # Safety
/// The CPU must run AVX-512F (`Isa::Avx512`). (Slice lengths are checked.)
#[inline(always)]
pub(super) unsafe fn cvt_16x2<const MR: usize, const R: usize>(
    kp: usize,
    a: &[Bf16],
    b: &[Bf16],
) -> [[f32; 32]; R] {
    assert!(R <= MR && a.len() >= kp * MR * 2 && b.len() >= kp * 64);
    let mut out = [[0f32; 32]; R];
    // SAFETY: as in `dp_16x2`, for AVX-512F; the casts only retype registers.
    unsafe {
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let (mut pa, mut pb) = (a.as_ptr() as *const i32, b.as_ptr() as *const f32);
        for _ in 0..kp {
            let v0 = _mm512_castps_si512(_mm512_loadu_ps(pb));
            let v1 = _mm512_castps_si512(_mm512_loadu_ps(pb.add(16)));
            let b0e = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v0));
            let b0o = _mm512_castsi512_ps(_mm512_and_si512(v0, hi));
            let b1e = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v1));
            let b1o = _mm512_castsi512_ps(_mm512_and_si512(v1, hi));
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_epi32(pa.add(i).read_unaligned());
                let ae = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w));
                let ao = _mm512_castsi512_ps(_mm512_and_si512(w, hi));
                acc_i[0] = _mm512_fmadd_ps(ae, b0e, acc_i[0]);
                acc_i[1] = _mm512_fmadd_ps(ae, b1e, acc_i[1]);
                acc_i[0] = _mm512_fmadd_ps(ao, b0o, acc_i[0]);
                acc_i[1] = _mm512_fmadd_ps(ao, b1o, acc_i[1]);
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

/// `R` rows of an `MR × 16` tile with AVX2 + FMA, widening in registers as [`cvt_16x2`].
///
/// # Safety
/// The CPU must run AVX2 + FMA (`Isa::Avx2`). (Slice lengths are checked.)
#[inline(always)]
pub(super) unsafe fn cvt_8x2<const MR: usize, const R: usize>(
    kp: usize,
    a: &[Bf16],
    b: &[Bf16],
) -> [[f32; 16]; R] {
    assert!(R <= MR && a.len() >= kp * MR * 2 && b.len() >= kp * 32);
    let mut out = [[0f32; 16]; R];
    // SAFETY: as in `dp_16x2`, for AVX2 + FMA and 16-wide panels (`b[p·32 ..][..32]`).
    unsafe {
        let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let (mut pa, mut pb) = (a.as_ptr() as *const i32, b.as_ptr() as *const f32);
        for _ in 0..kp {
            let v0 = _mm256_castps_si256(_mm256_loadu_ps(pb));
            let v1 = _mm256_castps_si256(_mm256_loadu_ps(pb.add(8)));
            let b0e = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v0));
            let b0o = _mm256_castsi256_ps(_mm256_and_si256(v0, hi));
            let b1e = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v1));
            let b1o = _mm256_castsi256_ps(_mm256_and_si256(v1, hi));
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let w = _mm256_set1_epi32(pa.add(i).read_unaligned());
                let ae = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w));
                let ao = _mm256_castsi256_ps(_mm256_and_si256(w, hi));
                acc_i[0] = _mm256_fmadd_ps(ae, b0e, acc_i[0]);
                acc_i[1] = _mm256_fmadd_ps(ae, b1e, acc_i[1]);
                acc_i[0] = _mm256_fmadd_ps(ao, b0o, acc_i[0]);
                acc_i[1] = _mm256_fmadd_ps(ao, b1o, acc_i[1]);
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
