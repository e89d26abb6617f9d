//! The x86-64 intrinsic kernels: the AVX-512 and AVX2 register tiles and the AVX 8×8 block
//! transpose. Each is an `unsafe fn` whose `# Safety` section names the instruction set the CPU
//! must run; callers check it once per call (`Isa::check`) and reach these through
//! `#[target_feature]` copies of the driver.
use std::arch::x86_64::*;

/// `R` rows (`R ≤ MR`) of an `MR × 32` tile with AVX-512: two zmm accumulators per row.
///
/// # Safety
/// The CPU must run AVX-512F (`Isa::Avx512`). (Slice lengths are checked.) For speed, call
/// it from a function compiled with those features, where it is inlined.
#[inline(always)]
pub(super) unsafe fn kernel_16x2<const MR: usize, const R: usize>(
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
pub(super) unsafe fn transpose8(src: &[f32], stride: usize, dst: &mut [f32], d: usize) {
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
pub(super) unsafe fn kernel_8x2<const MR: usize, const R: usize>(
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
