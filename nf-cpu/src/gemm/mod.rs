//! Single-precision GEMM with packing (the BLIS loop order), general strides and no allocation.
//!
//! `C = alpha · A · B + beta · C` where every operand is a strided view ([`Mat`], [`MatMut`]:
//! element `(i, j)` at `i·rs + j·cs`), so transposed operands are just other strides. `A` or
//! `B` may also be given pre-packed ([`pack_a`], [`pack_b`]), which lets a convolution pack its
//! weights once and reuse them for every sample. The packing buffers are borrowed from the
//! caller ([`GemmScratch`], sized exactly by [`scratch_len`]): nothing here allocates.
//!
//! The micro-kernel computes an `MR × NR` tile of `C` in registers (`NR` along the contiguous
//! direction of the packed `B`, `MR` broadcast from the packed `A`): 12×32 with AVX-512 (24 zmm
//! accumulators), 6×16 with AVX2 + FMA, and a portable 4×8 in plain Rust. The whole driver is
//! compiled once per instruction set and chosen at run time. Tiles at the bottom edge run a
//! kernel instantiated for exactly the rows left, so `M` is never padded; the right edge is
//! padded with zeros in the packed `B`. The instruction set is the caller's ([`Isa`], from its
//! [`Pool`](crate::Pool)), checked by every public entry point before a `#[target_feature]` copy
//! runs.
//!
//! The internal functions take `const SIMD: bool`: with `SIMD`, they are inlined into a
//! `#[target_feature]` copy of the driver and may run x86 intrinsics of that copy's instruction
//! set. They are `unsafe fn`s with one shared safety contract, "the SIMD contract": `SIMD` may
//! be true only where the CPU runs AVX2 + FMA, and, for a tile with `NR == 32`, AVX-512
//! ([`Isa::available`]).
//!
//! [`bf16`] is the same product with bf16 operands and f32 accumulation (`vdpbf16ps` where
//! the CPU has AVX512-BF16).
//!
//! Submodules: `mat` (the operand views), `pack` (packing, and the block sizes), [`profile`]
//! (optional accounting of the GEMM's time, for the benchmarks), `transpose`
//! (the block transpose), `tiles` (the register tiles and their store into `C`), `x86` (the
//! intrinsic kernels).

use crate::isa::{avx2_fn, avx512_fn, Isa};

pub mod bf16;
mod mat;
mod pack;
pub mod profile;
mod tiles;
mod transpose;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use mat::{Mat, MatMut, Operand};
use pack::{pack_a_full, pack_a_panel, pack_b_full, pack_b_panel, KC, MC, NC};
use tiles::{edge, micro, store};
pub use transpose::transpose;

/// The register-tile shape of the kernel in use on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    /// Rows of `C` per micro-tile (the broadcast direction).
    pub mr: usize,
    /// Columns of `C` per micro-tile (the vector direction).
    pub nr: usize,
}

// Register tiles per instruction set: 12x32 on AVX-512 (24 zmm accumulators), 6x16 on AVX2
// (12 ymm), 4x8 portable.
#[cfg(target_arch = "x86_64")]
const AVX512: (usize, usize) = (12, 32);
#[cfg(target_arch = "x86_64")]
const AVX2: (usize, usize) = (6, 16);
const PORTABLE: (usize, usize) = (4, 8);

/// The register tile of the kernel for `isa`.
pub(crate) fn tile(isa: Isa) -> Tile {
    let (mr, nr) = match isa.f32_kernels() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => AVX512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => AVX2,
        _ => PORTABLE,
    };
    Tile { mr, nr }
}

/// Elements of a fully packed `A` (`m × k`) for `isa`: rows rounded up to whole tiles.
pub fn packed_a_len(isa: Isa, m: usize, k: usize) -> usize {
    let mr = tile(isa).mr;
    m.div_ceil(mr) * mr * k
}

/// Elements of a fully packed `B` (`k × n`) for `isa`: columns rounded up to whole tiles.
pub fn packed_b_len(isa: Isa, k: usize, n: usize) -> usize {
    let nr = tile(isa).nr;
    n.div_ceil(nr) * nr * k
}

/// The packing buffers of one [`gemm`] call: borrowed from the caller's workspace, sized by
/// [`scratch_len`]. Their contents on entry do not matter.
#[derive(Debug)]
pub struct GemmScratch<'a> {
    /// Room for one packed block of `A` (`MC × KC` at most).
    pub a: &'a mut [f32],
    /// Room for one packed block of `B` (`KC × NC` at most).
    pub b: &'a mut [f32],
}

impl<'a> GemmScratch<'a> {
    /// Buffers `a` and `b` (see [`scratch_len`] for how large they must be).
    pub fn new(a: &'a mut [f32], b: &'a mut [f32]) -> Self {
        GemmScratch { a, b }
    }
}

/// The exact sizes `(a, b)` of the packing buffers that [`gemm`] with `isa` uses for an
/// `m × k` by `k × n` product (`alpha ≠ 0`), where `a_view` / `b_view` say whether that
/// operand is an [`Operand::View`] (packed block by block into the buffer) rather than
/// [`Operand::Packed`] (no buffer). Every element of a buffer of this size is written by such
/// a call: the first block is the largest.
pub fn scratch_len(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a_view: bool,
    b_view: bool,
) -> (usize, usize) {
    if m == 0 || n == 0 || k == 0 {
        return (0, 0);
    }
    let t = tile(isa);
    let a = if a_view {
        MC.min(m.div_ceil(t.mr) * t.mr) * KC.min(k)
    } else {
        0
    };
    let b = if b_view {
        NC.min(n.div_ceil(t.nr) * t.nr) * KC.min(k)
    } else {
        0
    };
    (a, b)
}

/// `C = alpha · A · B + beta · C` (`A`: `m × k`, `B`: `k × n`, `C`: `m × n`) with the kernel
/// for `isa`; operands given as [`Operand::View`] are packed into `scratch` (at least
/// [`scratch_len`] elements each). With `beta == 0` `C` is overwritten without being read.
///
/// # Panics
/// If the shapes disagree, a packed operand or a packing buffer is too short, or the CPU cannot
/// run `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut GemmScratch<'_>,
    k: usize,
) {
    isa.check();
    let t0 = profile::now();
    let flop = 2 * (c.rows * c.cols * k) as u64;
    match isa.f32_kernels() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` verified that the CPU runs `isa`, whose f32 kernels are the
        // `Isa::Avx512` ones only if it has every feature of `Isa::Avx512`.
        Isa::Avx512 => unsafe { gemm_avx512(alpha, a, b, beta, c, scratch, k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` verified that the CPU runs `Isa::Avx2`.
        Isa::Avx2 => unsafe { gemm_avx2(alpha, a, b, beta, c, scratch, k) },
        // SAFETY: without `SIMD` the driver uses no intrinsics.
        _ => unsafe {
            gemm_generic::<{ PORTABLE.0 }, { PORTABLE.1 }, false>(alpha, a, b, beta, c, scratch, k)
        },
    }
    profile::add(t0, Some(flop), |c| &mut c.gemm);
}

#[cfg(target_arch = "x86_64")]
avx512_fn! {
    /// [`gemm_generic`] with the AVX-512 tile.
    ///
    /// # Safety
    /// The CPU must run [`Isa::Avx512`].
    unsafe fn gemm_avx512(
        alpha: f32,
        a: Operand<'_>,
        b: Operand<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
        scratch: &mut GemmScratch<'_>,
        k: usize,
    ) {
        // SAFETY: the CPU runs AVX-512 (this function's contract), the tile's instruction set.
        unsafe { gemm_generic::<{ AVX512.0 }, { AVX512.1 }, true>(alpha, a, b, beta, c, scratch, k) }
    }
}

#[cfg(target_arch = "x86_64")]
avx2_fn! {
    /// [`gemm_generic`] with the AVX2 tile.
    ///
    /// # Safety
    /// The CPU must run [`Isa::Avx2`].
    unsafe fn gemm_avx2(
        alpha: f32,
        a: Operand<'_>,
        b: Operand<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
        scratch: &mut GemmScratch<'_>,
        k: usize,
    ) {
        // SAFETY: the CPU runs AVX2 + FMA (this function's contract), the tile's instruction set.
        unsafe { gemm_generic::<{ AVX2.0 }, { AVX2.1 }, true>(alpha, a, b, beta, c, scratch, k) }
    }
}

/// Pack all of `a` (`m × k`) for `isa` into `out` (at least [`packed_a_len`] elements).
pub fn pack_a(isa: Isa, a: Mat<'_>, out: &mut [f32]) {
    let t0 = profile::now();
    match isa.f32_kernels() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => pack_a_full::<{ AVX512.0 }>(a, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pack_a_full::<{ AVX2.0 }>(a, out),
        _ => pack_a_full::<{ PORTABLE.0 }>(a, out),
    }
    profile::add(t0, None, |c| &mut c.prepack);
}

/// Pack all of `b` (`k × n`) for `isa` into `out` (at least [`packed_b_len`] elements).
pub fn pack_b(isa: Isa, b: Mat<'_>, out: &mut [f32]) {
    let t0 = profile::now();
    match isa.f32_kernels() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => pack_b_full::<{ AVX512.1 }>(b, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pack_b_full::<{ AVX2.1 }>(b, out),
        _ => pack_b_full::<{ PORTABLE.1 }>(b, out),
    }
    profile::add(t0, None, |c| &mut c.prepack);
}

/// The blocked driver for tile `MR × NR`.
///
/// # Safety
/// The SIMD contract (see the module documentation).
#[inline(always)]
unsafe fn gemm_generic<const MR: usize, const NR: usize, const SIMD: bool>(
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut GemmScratch<'_>,
    k: usize,
) {
    let (m, n) = (c.rows, c.cols);
    if let Operand::View(a) = a {
        assert!(a.rows == m && a.cols == k, "gemm: A is not {m}x{k}");
    }
    if let Operand::View(b) = b {
        assert!(b.rows == k && b.cols == n, "gemm: B is not {k}x{n}");
    }
    let m_pad = m.div_ceil(MR) * MR;
    let n_pad = n.div_ceil(NR) * NR;
    if let Operand::Packed(p) = a {
        assert!(p.len() >= m_pad * k, "gemm: packed A too short");
    }
    if let Operand::Packed(p) = b {
        assert!(p.len() >= n_pad * k, "gemm: packed B too short");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale(c, beta);
        return;
    }
    let a_len = if matches!(a, Operand::View(_)) {
        MC.min(m_pad) * KC.min(k)
    } else {
        0
    };
    let b_len = if matches!(b, Operand::View(_)) {
        NC.min(n_pad) * KC.min(k)
    } else {
        0
    };
    assert!(
        scratch.a.len() >= a_len && scratch.b.len() >= b_len,
        "gemm: packing buffers of {} and {} elements, {a_len} and {b_len} needed (workspace too small)",
        scratch.a.len(),
        scratch.b.len()
    );
    let abuf = &mut scratch.a[..a_len];
    let bbuf = &mut scratch.b[..b_len];
    let mut jc = 0;
    while jc < n {
        let nc = NC.min(n - jc);
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            // The B block: kc × nc, as panels of NR columns.
            let bblock: &[f32] = match b {
                Operand::View(bv) => {
                    let t0 = profile::now();
                    let panels = nc.div_ceil(NR);
                    for (p, panel) in bbuf[..panels * kc * NR]
                        .chunks_exact_mut(kc * NR)
                        .enumerate()
                    {
                        let j0 = jc + p * NR;
                        // SAFETY: our caller's SIMD contract.
                        unsafe { pack_b_panel::<NR, SIMD>(&bv, pc, kc, j0, NR.min(n - j0), panel) };
                    }
                    profile::add(t0, None, |c| &mut c.pack);
                    &bbuf[..panels * kc * NR]
                }
                Operand::Packed(p) => {
                    let start = pc * n_pad + (jc / NR) * kc * NR;
                    &p[start..start + nc.div_ceil(NR) * kc * NR]
                }
            };
            let mut ic = 0;
            while ic < m {
                let mc = MC.min(m - ic);
                let ablock: &[f32] = match a {
                    Operand::View(av) => {
                        let t0 = profile::now();
                        let panels = mc.div_ceil(MR);
                        for (p, panel) in abuf[..panels * kc * MR]
                            .chunks_exact_mut(kc * MR)
                            .enumerate()
                        {
                            let i0 = ic + p * MR;
                            // SAFETY: our caller's SIMD contract.
                            unsafe {
                                pack_a_panel::<MR, SIMD>(&av, i0, MR.min(m - i0), pc, kc, panel)
                            };
                        }
                        profile::add(t0, None, |c| &mut c.pack);
                        &abuf[..panels * kc * MR]
                    }
                    Operand::Packed(p) => {
                        let start = pc * m_pad + (ic / MR) * kc * MR;
                        &p[start..start + mc.div_ceil(MR) * kc * MR]
                    }
                };
                for (jp, bpanel) in bblock.chunks_exact(kc * NR).enumerate() {
                    let j0 = jc + jp * NR;
                    let nr = NR.min(n - j0);
                    for (ip, apanel) in ablock.chunks_exact(kc * MR).enumerate() {
                        let i0 = ic + ip * MR;
                        let mr = MR.min(m - i0);
                        // SAFETY (both calls): our caller's SIMD contract.
                        if mr == MR {
                            let acc = unsafe { micro::<MR, NR, SIMD, MR>(kc, apanel, bpanel) };
                            unsafe {
                                store::<MR, NR, SIMD>(&acc, c, i0, j0, mr, nr, alpha, beta_eff)
                            };
                        } else {
                            unsafe {
                                edge::<MR, NR, SIMD>(
                                    kc, apanel, bpanel, c, i0, j0, mr, nr, alpha, beta_eff,
                                )
                            };
                        }
                    }
                }
                ic += mc;
            }
            pc += kc;
        }
        jc += nc;
    }
}

/// `C = beta · C` (`beta == 0` writes zeros without reading).
fn scale(c: &mut MatMut<'_>, beta: f32) {
    for i in 0..c.rows {
        for j in 0..c.cols {
            let d = &mut c.data[i * c.rs + j * c.cs];
            *d = if beta == 0.0 { 0.0 } else { beta * *d };
        }
    }
}
