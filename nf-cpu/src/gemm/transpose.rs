//! The block transpose: `lines` contiguous source lines become the columns of the
//! destination, in 8×8 blocks held in registers (the AVX transpose of `x86` where the
//! CPU has it). GEMM packing and the tile store use [`transpose_into`]; the convolution's input
//! gradient calls [`transpose`].
#[cfg(target_arch = "x86_64")]
use super::x86;
use crate::isa::{avx2_fn, Isa};

/// `dst[k·d + l] = src[l·stride + k]` for `l < lines`, `k < kc` (`lines ≤ d`), with the AVX
/// 8×8 block transpose when `isa` has it.
///
/// # Panics
/// If a slice is too short or the CPU cannot run `isa`.
pub fn transpose(
    isa: Isa,
    src: &[f32],
    stride: usize,
    lines: usize,
    kc: usize,
    dst: &mut [f32],
    d: usize,
) {
    isa.check();
    #[cfg(target_arch = "x86_64")]
    {
        avx2_fn! {
            /// # Safety
            /// The CPU must run [`Isa::Avx2`].
            unsafe fn avx(
                src: &[f32],
                stride: usize,
                lines: usize,
                kc: usize,
                dst: &mut [f32],
                d: usize,
            ) {
                // SAFETY: the CPU runs AVX2 + FMA (this function's contract).
                unsafe { transpose_into::<true>(src, stride, lines, kc, dst, d) }
            }
        }
        if isa != Isa::Portable {
            // SAFETY: `check` verified `isa`, and both x86 instruction sets include AVX2 + FMA.
            return unsafe { avx(src, stride, lines, kc, dst, d) };
        }
    }
    // SAFETY: without `SIMD` no intrinsics run.
    unsafe { transpose_into::<false>(src, stride, lines, kc, dst, d) }
}

/// `dst[k·d + l] = src[l·stride + k]` for `l < lines`, `k < kc` (`lines ≤ d`): `lines`
/// contiguous source lines become the columns of `dst`. Done in 8×8 blocks held in registers
/// (with `SIMD`, the 24-shuffle AVX transpose); a plain loop would be vectorised into scatters,
/// which are slow. [`transpose`] chooses for the caller.
///
/// # Safety
/// The SIMD contract (see the module [`super`]).
#[inline(always)]
pub(super) unsafe fn transpose_into<const SIMD: bool>(
    src: &[f32],
    stride: usize,
    lines: usize,
    kc: usize,
    dst: &mut [f32],
    d: usize,
) {
    for l0 in (0..lines).step_by(8) {
        let nl = (lines - l0).min(8);
        for k0 in (0..kc).step_by(8) {
            let nk = (kc - k0).min(8);
            let mut blk = [[0f32; 8]; 8];
            #[cfg(target_arch = "x86_64")]
            if SIMD && nl == 8 && nk == 8 {
                // SAFETY: with `SIMD` the CPU runs AVX2 (our caller's SIMD contract).
                unsafe {
                    x86::transpose8(&src[l0 * stride + k0..], stride, &mut dst[k0 * d + l0..], d)
                };
                continue;
            }
            if nl == 8 && nk == 8 {
                for (l, b) in blk.iter_mut().enumerate() {
                    let at = (l0 + l) * stride + k0;
                    *b = src[at..at + 8].try_into().unwrap();
                }
                for (k, row) in dst[k0 * d + l0..].chunks_mut(d).take(8).enumerate() {
                    let t: [f32; 8] = std::array::from_fn(|l| blk[l][k]);
                    row[..8].copy_from_slice(&t);
                }
            } else {
                for (l, b) in blk.iter_mut().enumerate().take(nl) {
                    let at = (l0 + l) * stride + k0;
                    b[..nk].copy_from_slice(&src[at..at + nk]);
                }
                for (k, row) in dst[k0 * d + l0..].chunks_mut(d).take(nk).enumerate() {
                    let t: [f32; 8] = std::array::from_fn(|l| blk[l][k]);
                    row[..nl].copy_from_slice(&t[..nl]);
                }
            }
        }
    }
}
