//! The kernels of the bf16 GEMM: the kernel choice `K` of each instruction set, the depth
//! padding and blocking each wants, and the register tiles of all but AMX's (whose tile is
//! [`crate::amx`]'s). The functions taking `K` are `unsafe fn`s under the bf16 kernel
//! contract of the parent module.
use super::pack::RUN;
#[cfg(target_arch = "x86_64")]
use super::x86;
use crate::bf16::Bf16;
use crate::gemm::pack::KC as KC_F32;
use crate::isa::Isa;

/// Depth of one packed block: twice the f32 GEMM's, so that blocks take the same bytes (and
/// even, so that every block but the last holds whole pairs). AMX's is the f32 GEMM's
/// (`depth_block`). Measured on one Zen 4 core,
/// 2048³ with `vdpbf16ps`: 199 GFLOP/s with the f32 GEMM's 1152, 208 with 2304 (fewer stores
/// of `C` per multiply-add; smaller blocks are slower still: 156 at 512).
pub(super) const KC: usize = 2 * KC_F32;

/// Kernel choice: `vdpbf16ps` (12×32).
pub(super) const DP: u8 = 0;
/// Kernel choice: AVX-512F, widening in registers (12×32).
pub(super) const CVT512: u8 = 1;
/// Kernel choice: AVX2 + FMA, widening in registers (4×16).
pub(super) const CVT2: u8 = 2;
/// Kernel choice: plain Rust (4×8).
pub(super) const PORTABLE: u8 = 3;
/// Kernel choice: AMX tiles (16×32).
pub(super) const AMX: u8 = 4;

/// The depth of kernel `K`'s steps, to which it pads every block: a tile row (32) for AMX,
/// a pair for every other kernel.
pub(super) const fn quantum(k: u8) -> usize {
    if k == AMX {
        RUN
    } else {
        2
    }
}

/// The depth of kernel `K`'s packed blocks, a multiple of [`quantum`]: [`KC`], and for AMX
/// the f32 GEMM's (1152), whose half-size blocks keep its 16-row `A` panels, deeper padded
/// than the f32 12-row ones, within the f32 packing buffers at every depth (and a panel of
/// `A`, 36 KiB, in the L1 cache).
pub(super) const fn block(k: u8) -> usize {
    if k == AMX {
        KC_F32
    } else {
        KC
    }
}

/// The kernel of `isa`'s bf16 GEMM.
pub(super) fn kernel(isa: Isa) -> u8 {
    match isa {
        Isa::Amx => AMX,
        Isa::Avx512Bf16 => DP,
        Isa::Avx512 => CVT512,
        Isa::Avx2 => CVT2,
        Isa::Portable => PORTABLE,
    }
}

/// The register tile for kernel `K`: `R` rows (`R ≤ MR`) of `Σ_p a-pair · b-pair`.
///
/// # Safety
/// The bf16 kernel contract (see the module documentation).
#[inline(always)]
pub(super) unsafe fn micro<const MR: usize, const NR: usize, const K: u8, const R: usize>(
    kp: usize,
    a: &[Bf16],
    b: &[Bf16],
) -> [[f32; NR]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        let mut out = [[0f32; NR]; R];
        if K != PORTABLE {
            // SAFETY: the CPU runs `K`'s instruction set (our caller's contract); the tile
            // widths match (`DP` and `CVT512` are only instantiated with `NR == 32`, `CVT2`
            // with 16; the asserts make a mismatch a panic).
            unsafe {
                match K {
                    DP if NR == 32 => copy_rows(&mut out, &x86::dp_16x2::<MR, R>(kp, a, b)),
                    CVT512 if NR == 32 => copy_rows(&mut out, &x86::cvt_16x2::<MR, R>(kp, a, b)),
                    CVT2 if NR == 16 => copy_rows(&mut out, &x86::cvt_8x2::<MR, R>(kp, a, b)),
                    _ => unreachable!("bf16 kernel {K} with {NR} columns"),
                }
            }
            return out;
        }
    }
    portable::<MR, NR, R>(kp, a, b)
}

/// `out[i][..] = src[i][..]` for tiles whose widths are equal at run time.
#[inline(always)]
fn copy_rows<const NR: usize, const W: usize, const R: usize>(
    out: &mut [[f32; NR]; R],
    src: &[[f32; W]; R],
) {
    for (o, s) in out.iter_mut().zip(src) {
        o.copy_from_slice(s);
    }
}

/// The portable tile: both halves of each pair widened with [`Bf16::to_f32`], the even depth
/// first (a multiply and an add each, no fused multiply-add).
#[inline(always)]
fn portable<const MR: usize, const NR: usize, const R: usize>(
    kp: usize,
    a: &[Bf16],
    b: &[Bf16],
) -> [[f32; NR]; R] {
    let mut acc = [[0f32; NR]; R];
    for (ap, bp) in a.chunks_exact(2 * MR).zip(b.chunks_exact(2 * NR)).take(kp) {
        let be: [f32; NR] = std::array::from_fn(|j| bp[2 * j].to_f32());
        let bo: [f32; NR] = std::array::from_fn(|j| bp[2 * j + 1].to_f32());
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let (ae, ao) = (ap[2 * i].to_f32(), ap[2 * i + 1].to_f32());
            for j in 0..NR {
                acc_i[j] += ae * be[j];
                acc_i[j] += ao * bo[j];
            }
        }
    }
    acc
}
