//! The bf16 GEMM: `C = alpha · A · B + beta · C` with `A` and `B` in bf16 ([`Bf16`]), `C`
//! and every accumulation in f32, with the conventions of the f32 [`gemm`](super::gemm): strided
//! views (`Mat<'_, Bf16>`: a transposed operand is other strides) or operands packed in advance
//! ([`pack_a`], [`pack_b`], [`Operand::Packed`]), the same blocking in bytes (twice the depth per
//! block), and packing buffers borrowed from the caller ([`Scratch`], sized by
//! [`scratch_len`]): nothing here allocates.
//!
//! Both operands are packed in pairs of depth (`pack`), the layout of `vdpbf16ps` (AMX packs
//! `A` in runs of 32 depths, a tile row, and pads the depth to 32), and the instruction set
//! picks the tile:
//!
//! | [`Isa`] | tile | inner step |
//! |---|---|---|
//! | `Amx` | 16×32 | `tdpbf16ps` on two 16×16 f32 tiles (16 rows × 32 depths of `A`), [`crate::amx`] |
//! | `Avx512Bf16` | 12×32 | `vdpbf16ps`: two bf16 products per f32 lane, accumulated in f32 |
//! | `Avx512` | 12×32 | bf16 widened to f32 in registers (shift / mask), two FMAs |
//! | `Avx2` | 4×16 | the same with 8-lane vectors (a 6-row tile would spill registers) |
//! | `Portable` | 4×8 | plain Rust, widening with [`Bf16::to_f32`] |
//!
//! Every path computes exactly the products of the bf16 inputs (a product of two bf16 values
//! is exact in f32) and differs from an f64 reference only by the rounding of f32 sums, except
//! that `vdpbf16ps` and `tdpbf16ps` treat subnormal inputs as zero and flush subnormal results
//! (they run with DAZ / FTZ whatever `MXCSR` says). The tests bound the difference by `1e-5 ·
//! Σ|a||b|` per element.
//!
//! Safety: the internal functions take a kernel choice `K` (`AMX`, `DP`, `CVT512`, `CVT2` or
//! `PORTABLE`); with any but `PORTABLE` they run x86 intrinsics, so they are `unsafe fn`s with
//! one contract, "the bf16 kernel contract": the CPU runs the instruction set of `K`
//! (`Isa::Amx`, `Isa::Avx512Bf16`, `Isa::Avx512`, `Isa::Avx2`; each includes AVX2 + FMA,
//! which the store of a tile may use). The AMX tiles themselves are reached through a safe
//! [`crate::amx`] configuration, which checks for itself.

use super::pack::{MC, NC};
use super::tiles::store;
use super::{profile, Mat, MatMut, Operand};
pub use crate::bf16::Bf16;
use crate::isa::{avx2_fn, avx512_fn, avx512bf16_fn, Isa};
#[cfg(test)]
use kernel::KC;
use kernel::{block, kernel, micro, quantum, AMX, CVT2, CVT512, DP, PORTABLE};
pub use pack::PackElem;
use pack::{pack_a_panel, pack_b_panel, panel_len, RUN};

mod kernel;
mod pack;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

/// The depth of one packed block of the bf16 GEMM for `isa` (its packed operands hold the
/// blocks one after the other).
pub fn depth_block(isa: Isa) -> usize {
    block(kernel(isa))
}

/// The depth multiple to which the bf16 kernel for `isa` pads its packed operands: 32 on
/// [`Isa::Amx`], 2 on every other.
pub fn depth_quantum(isa: Isa) -> usize {
    quantum(kernel(isa))
}

/// The tile `(MR, NR)` of the bf16 kernel for `isa`.
pub fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Amx => (crate::amx::ROWS, crate::amx::COLS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 | Isa::Avx512 => (12, 32),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (4, 16),
        _ => (4, 8),
    }
}

/// The packing buffers of one [`gemm`] call, borrowed from the caller and sized by
/// [`scratch_len`]. Their contents on entry do not matter.
#[derive(Debug)]
pub struct Scratch<'a> {
    /// Room for one packed block of `A`.
    pub a: &'a mut [Bf16],
    /// Room for one packed block of `B`.
    pub b: &'a mut [Bf16],
}

/// Elements of a fully packed `A` (`m × k`) for `isa` ([`pack_a`]): rows rounded up to whole
/// tiles, depth to a multiple of [`depth_quantum`].
pub fn packed_a_len(isa: Isa, m: usize, k: usize) -> usize {
    let mr = tile(isa).0;
    m.div_ceil(mr) * mr * k.next_multiple_of(depth_quantum(isa))
}

/// Elements of a fully packed `B` (`k × n`) for `isa` ([`pack_b`]): columns rounded up to
/// whole tiles, depth to a multiple of [`depth_quantum`].
pub fn packed_b_len(isa: Isa, k: usize, n: usize) -> usize {
    let nr = tile(isa).1;
    n.div_ceil(nr) * nr * k.next_multiple_of(depth_quantum(isa))
}

/// Pack all of `a` (`m × k`) for `isa` into `out` (at least [`packed_a_len`] elements): for
/// each depth block, for each panel of `MR` rows, the groups of that block. Block `k0` starts
/// at `k0 · m_pad`.
///
/// # Panics
/// If `out` is too short.
pub fn pack_a<T: PackElem>(isa: Isa, a: Mat<'_, T>, out: &mut [Bf16]) {
    let t0 = profile::now();
    let (q, kb) = (depth_quantum(isa), depth_block(isa));
    match tile(isa).0 {
        16 => pack_full::<16>(a.rows, a.cols, q, kb, out, |i0, mr, k0, kc, p| {
            pack_a_panel::<16, T>(&a, i0, mr, k0, kc, q, p)
        }),
        12 => pack_full::<12>(a.rows, a.cols, q, kb, out, |i0, mr, k0, kc, p| {
            pack_a_panel::<12, T>(&a, i0, mr, k0, kc, q, p)
        }),
        _ => pack_full::<4>(a.rows, a.cols, q, kb, out, |i0, mr, k0, kc, p| {
            pack_a_panel::<4, T>(&a, i0, mr, k0, kc, q, p)
        }),
    }
    profile::add(t0, None, |c| &mut c.prepack);
}

/// Pack all of `b` (`k × n`) for `isa` into `out` (at least [`packed_b_len`] elements), as
/// [`pack_a`] with panels of `NR` columns.
///
/// # Panics
/// If `out` is too short.
pub fn pack_b<T: PackElem>(isa: Isa, b: Mat<'_, T>, out: &mut [Bf16]) {
    let t0 = profile::now();
    let (q, kb) = (depth_quantum(isa), depth_block(isa));
    match tile(isa).1 {
        32 => pack_full::<32>(b.cols, b.rows, q, kb, out, |j0, nr, k0, kc, p| {
            pack_b_panel::<32, T>(&b, k0, kc, j0, nr, q, p)
        }),
        16 => pack_full::<16>(b.cols, b.rows, q, kb, out, |j0, nr, k0, kc, p| {
            pack_b_panel::<16, T>(&b, k0, kc, j0, nr, q, p)
        }),
        _ => pack_full::<8>(b.cols, b.rows, q, kb, out, |j0, nr, k0, kc, p| {
            pack_b_panel::<8, T>(&b, k0, kc, j0, nr, q, p)
        }),
    }
    profile::add(t0, None, |c| &mut c.prepack);
}

/// The full packed layout of `lines` lines over depth `k` (padded to a multiple of `q`), in
/// blocks of depth `kb` and panels of `W` lines: `panel(l0, nl, k0, kc, out)` packs one.
fn pack_full<const W: usize>(
    lines: usize,
    k: usize,
    q: usize,
    kb: usize,
    out: &mut [Bf16],
    mut panel: impl FnMut(usize, usize, usize, usize, &mut [Bf16]),
) {
    let pad = lines.div_ceil(W) * W;
    assert!(
        out.len() >= pad * k.next_multiple_of(q),
        "packed bf16 buffer too short"
    );
    let mut k0 = 0;
    while k0 < k {
        let kc = kb.min(k - k0);
        let len = panel_len(W, kc, q);
        let block = &mut out[k0 * pad..k0 * pad + pad / W * len];
        for (p, out) in block.chunks_exact_mut(len).enumerate() {
            let l0 = p * W;
            panel(l0, W.min(lines - l0), k0, kc, out);
        }
        k0 += kc;
    }
}

/// The exact sizes `(a, b)` of the packing buffers that [`gemm`] with `isa` uses for an
/// `m × k` by `k × n` product (`alpha ≠ 0`), where `a_view` / `b_view` say whether that
/// operand is an [`Operand::View`] (packed block by block into the buffer) rather than
/// [`Operand::Packed`] (no buffer). Every element of buffers of this size is written by such a
/// call: the first block is the largest.
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
    let (mr, nr) = tile(isa);
    let (kc, q) = (depth_block(isa).min(k), depth_quantum(isa));
    (
        if a_view {
            panel_len(MC.min(m.div_ceil(mr) * mr), kc, q)
        } else {
            0
        },
        if b_view {
            panel_len(NC.min(n.div_ceil(nr) * nr), kc, q)
        } else {
            0
        },
    )
}

/// An operand of [`gemm_mixed`]: a strided bf16 view, a strided f32 view (each element
/// rounded to the nearest bf16 as it is packed, so the kernel still multiplies bf16 values),
/// or a bf16 operand packed in advance ([`pack_a`] / [`pack_b`], from either element type).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A bf16 view, packed block by block.
    Bf16(Mat<'a, Bf16>),
    /// An f32 view, rounded to bf16 as it is packed block by block.
    F32(Mat<'a>),
    /// Packed in advance.
    Packed(&'a [Bf16]),
}

impl<'a> From<Operand<'a, Bf16>> for Input<'a> {
    fn from(o: Operand<'a, Bf16>) -> Self {
        match o {
            Operand::View(m) => Input::Bf16(m),
            Operand::Packed(p) => Input::Packed(p),
        }
    }
}

impl Input<'_> {
    /// `(rows, cols)` of a view; `None` when packed.
    fn shape(&self) -> Option<(usize, usize)> {
        match self {
            Input::Bf16(m) => Some((m.rows, m.cols)),
            Input::F32(m) => Some((m.rows, m.cols)),
            Input::Packed(_) => None,
        }
    }
    /// Rows `i0..i0 + mr` over depth `k0..k0 + kc` of a view (as `A`) into `out`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn pack_a_panel<const MR: usize>(
        &self,
        i0: usize,
        mr: usize,
        k0: usize,
        kc: usize,
        q: usize,
        out: &mut [Bf16],
    ) {
        match self {
            Input::Bf16(m) => pack_a_panel::<MR, Bf16>(m, i0, mr, k0, kc, q, out),
            Input::F32(m) => pack_a_panel::<MR, f32>(m, i0, mr, k0, kc, q, out),
            Input::Packed(_) => unreachable!("packing a packed operand"),
        }
    }
    /// Columns `j0..j0 + nr` over depth `k0..k0 + kc` of a view (as `B`) into `out`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn pack_b_panel<const NR: usize>(
        &self,
        k0: usize,
        kc: usize,
        j0: usize,
        nr: usize,
        q: usize,
        out: &mut [Bf16],
    ) {
        match self {
            Input::Bf16(m) => pack_b_panel::<NR, Bf16>(m, k0, kc, j0, nr, q, out),
            Input::F32(m) => pack_b_panel::<NR, f32>(m, k0, kc, j0, nr, q, out),
            Input::Packed(_) => unreachable!("packing a packed operand"),
        }
    }
}

/// `C = alpha · A · B + beta · C` (`A`: `m × k`, `B`: `k × n`, `C`: `m × n`) with the bf16
/// kernel for `isa` (see the module documentation); operands given as [`Operand::View`] are
/// packed into `scratch` (at least [`scratch_len`] elements each), [`Operand::Packed`] ones
/// must come from [`pack_a`] / [`pack_b`] with the same `isa`. With `beta == 0` `C` is
/// overwritten without being read.
///
/// # Panics
/// If the shapes disagree, a packed operand or a packing buffer is too short, or the CPU
/// cannot run `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    alpha: f32,
    a: Operand<'_, Bf16>,
    b: Operand<'_, Bf16>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut Scratch<'_>,
    k: usize,
) {
    gemm_mixed(isa, alpha, a.into(), b.into(), beta, c, scratch, k);
}

/// [`gemm`] with operands of either element type ([`Input`]): f32 views are rounded to bf16
/// as they are packed into `scratch` (the same sizes, [`scratch_len`]), so the kernel runs on
/// bf16 operands without a bf16 copy of the matrices.
///
/// # Panics
/// As [`gemm`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_mixed(
    isa: Isa,
    alpha: f32,
    a: Input<'_>,
    b: Input<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut Scratch<'_>,
    k: usize,
) {
    isa.check();
    let t0 = profile::now();
    let flop = 2 * (c.rows * c.cols * k) as u64;
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` verified that the CPU runs `Isa::Amx`.
        Isa::Amx => unsafe { gemm_bf16::<16, 32, AMX>(alpha, a, b, beta, c, scratch, k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` verified that the CPU runs `Isa::Avx512Bf16`.
        Isa::Avx512Bf16 => unsafe { gemm_bf16::<12, 32, DP>(alpha, a, b, beta, c, scratch, k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` verified that the CPU runs `Isa::Avx512`.
        Isa::Avx512 => unsafe { gemm_cvt512(alpha, a, b, beta, c, scratch, k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` verified that the CPU runs `Isa::Avx2`.
        Isa::Avx2 => unsafe { gemm_cvt2(alpha, a, b, beta, c, scratch, k) },
        // SAFETY: the portable kernel runs no intrinsics.
        _ => unsafe { driver::<4, 8, PORTABLE>(alpha, a, b, beta, c, scratch, k) },
    }
    profile::add(t0, Some(flop), |c| &mut c.gemm);
}

#[cfg(target_arch = "x86_64")]
avx512bf16_fn! {
    /// [`driver`] compiled for AVX512-BF16: the AMX tile (`K = AMX`, which also needs the
    /// tiles) or the `vdpbf16ps` one (`K = DP`).
    ///
    /// # Safety
    /// The CPU must run the instruction set of `K`: [`Isa::Amx`] or [`Isa::Avx512Bf16`].
    unsafe fn gemm_bf16<const MR: usize, const NR: usize, const K: u8>(
        alpha: f32,
        a: Input<'_>,
        b: Input<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
        scratch: &mut Scratch<'_>,
        k: usize,
    ) {
        // SAFETY: the CPU runs `K`'s instruction set (this function's contract).
        unsafe { driver::<MR, NR, K>(alpha, a, b, beta, c, scratch, k) }
    }
}

#[cfg(target_arch = "x86_64")]
avx512_fn! {
    /// [`driver`] with the AVX-512 widening tile.
    ///
    /// # Safety
    /// The CPU must run [`Isa::Avx512`].
    unsafe fn gemm_cvt512(
        alpha: f32,
        a: Input<'_>,
        b: Input<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
        scratch: &mut Scratch<'_>,
        k: usize,
    ) {
        // SAFETY: the CPU runs `Isa::Avx512` (this function's contract), `CVT512`'s.
        unsafe { driver::<12, 32, CVT512>(alpha, a, b, beta, c, scratch, k) }
    }
}

#[cfg(target_arch = "x86_64")]
avx2_fn! {
    /// [`driver`] with the AVX2 widening tile.
    ///
    /// # Safety
    /// The CPU must run [`Isa::Avx2`].
    unsafe fn gemm_cvt2(
        alpha: f32,
        a: Input<'_>,
        b: Input<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
        scratch: &mut Scratch<'_>,
        k: usize,
    ) {
        // SAFETY: the CPU runs `Isa::Avx2` (this function's contract), `CVT2`'s.
        unsafe { driver::<4, 16, CVT2>(alpha, a, b, beta, c, scratch, k) }
    }
}

/// The blocked driver (the loop order of the f32 GEMM) for tile `MR × NR` and kernel `K`.
///
/// # Safety
/// The bf16 kernel contract (see the module documentation).
#[inline(always)]
unsafe fn driver<const MR: usize, const NR: usize, const K: u8>(
    alpha: f32,
    a: Input<'_>,
    b: Input<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut Scratch<'_>,
    k: usize,
) {
    let (m, n) = (c.rows, c.cols);
    if let Some(s) = a.shape() {
        assert!(s == (m, k), "bf16 gemm: A is not {m}x{k}");
    }
    if let Some(s) = b.shape() {
        assert!(s == (k, n), "bf16 gemm: B is not {k}x{n}");
    }
    let (m_pad, n_pad) = (m.div_ceil(MR) * MR, n.div_ceil(NR) * NR);
    let (q, kb) = (quantum(K), block(K));
    if let Input::Packed(p) = a {
        assert!(
            p.len() >= m_pad * k.next_multiple_of(q),
            "bf16 gemm: packed A too short"
        );
    }
    if let Input::Packed(p) = b {
        assert!(
            p.len() >= n_pad * k.next_multiple_of(q),
            "bf16 gemm: packed B too short"
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale(c, beta);
        return;
    }
    let a_len = match a {
        Input::Packed(_) => 0,
        _ => panel_len(MC.min(m_pad), kb.min(k), q),
    };
    let b_len = match b {
        Input::Packed(_) => 0,
        _ => panel_len(NC.min(n_pad), kb.min(k), q),
    };
    assert!(
        scratch.a.len() >= a_len && scratch.b.len() >= b_len,
        "bf16 gemm: packing buffers of {} and {} elements, {a_len} and {b_len} needed",
        scratch.a.len(),
        scratch.b.len()
    );
    // The store of a tile may use AVX (its transpose) with any kernel but the portable one.
    let simd = K != PORTABLE;
    // AMX: the tile configuration, loaded on this thread for this call.
    let tiles = if K == AMX {
        Some(crate::amx::Tiles::load().expect("AMX kernel on a process that cannot use AMX"))
    } else {
        None
    };
    let mut jc = 0;
    while jc < n {
        let nc = NC.min(n - jc);
        let mut pc = 0;
        while pc < k {
            // `kb` is a multiple of `q`: every block but the last starts and ends on a whole
            // group.
            let kc = kb.min(k - pc);
            let kp = kc.div_ceil(2);
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            let bpanel_len = panel_len(NR, kc, q);
            let bblock: &[Bf16] = match b {
                Input::Packed(p) => {
                    let start = pc * n_pad + (jc / NR) * bpanel_len;
                    &p[start..start + nc.div_ceil(NR) * bpanel_len]
                }
                bv => {
                    let t0 = profile::now();
                    let bblock = &mut scratch.b[..nc.div_ceil(NR) * bpanel_len];
                    for (p, panel) in bblock.chunks_exact_mut(bpanel_len).enumerate() {
                        let j0 = jc + p * NR;
                        bv.pack_b_panel::<NR>(pc, kc, j0, NR.min(n - j0), q, panel);
                    }
                    profile::add(t0, None, |c| &mut c.pack);
                    bblock
                }
            };
            let mut ic = 0;
            while ic < m {
                let mc = MC.min(m - ic);
                let apanel_len = panel_len(MR, kc, q);
                let ablock: &[Bf16] = match a {
                    Input::Packed(p) => {
                        let start = pc * m_pad + (ic / MR) * apanel_len;
                        &p[start..start + mc.div_ceil(MR) * apanel_len]
                    }
                    av => {
                        let t0 = profile::now();
                        let ablock = &mut scratch.a[..mc.div_ceil(MR) * apanel_len];
                        for (p, panel) in ablock.chunks_exact_mut(apanel_len).enumerate() {
                            let i0 = ic + p * MR;
                            av.pack_a_panel::<MR>(i0, MR.min(m - i0), pc, kc, q, panel);
                        }
                        profile::add(t0, None, |c| &mut c.pack);
                        ablock
                    }
                };
                for (jp, bpanel) in bblock.chunks_exact(bpanel_len).enumerate() {
                    let j0 = jc + jp * NR;
                    let nr = NR.min(n - j0);
                    for (ip, apanel) in ablock.chunks_exact(apanel_len).enumerate() {
                        let i0 = ic + ip * MR;
                        let mr = MR.min(m - i0);
                        if let Some(t) = &tiles {
                            let steps = kc.div_ceil(RUN);
                            if c.cs == 1
                                && (mr, nr) == (MR, NR)
                                && alpha == 1.0
                                && (beta_eff == 0.0 || beta_eff == 1.0)
                            {
                                // A whole tile of a row-major `C` with nothing to scale: the
                                // tiles load and store `C` themselves.
                                let (at, ldc) = (i0 * c.rs + j0, c.rs);
                                let (cd, acc) = (&mut c.data[at..], beta_eff == 1.0);
                                t.product_into(steps, apanel, bpanel, cd, ldc, acc);
                                continue;
                            }
                            // The whole tile (rows past `m` are zero in the packed `A`).
                            let acc = t.product(steps, apanel, bpanel);
                            // SAFETY: the CPU runs AVX-512 (`Isa::Amx` includes it), the
                            // store's SIMD contract.
                            unsafe {
                                store::<16, 32, true>(&acc, c, i0, j0, mr, nr, alpha, beta_eff)
                            };
                            continue;
                        }
                        // SAFETY (every call): our caller's bf16 kernel contract; `simd` only
                        // with an x86 kernel, whose instruction set includes AVX2 + FMA (and
                        // AVX-512 for `NR == 32`), the store's SIMD contract.
                        macro_rules! tile_rows {
                            ($r:expr) => {{
                                let acc = unsafe { micro::<MR, NR, K, { $r }>(kp, apanel, bpanel) };
                                if simd {
                                    unsafe {
                                        store::<{ $r }, NR, true>(
                                            &acc, c, i0, j0, mr, nr, alpha, beta_eff,
                                        )
                                    }
                                } else {
                                    unsafe {
                                        store::<{ $r }, NR, false>(
                                            &acc, c, i0, j0, mr, nr, alpha, beta_eff,
                                        )
                                    }
                                }
                            }};
                        }
                        match mr {
                            r if r == MR => tile_rows!(MR),
                            1 => tile_rows!(1),
                            2 => tile_rows!(2),
                            3 => tile_rows!(3),
                            4 if MR > 4 => tile_rows!(4),
                            5 if MR > 5 => tile_rows!(5),
                            6 if MR > 6 => tile_rows!(6),
                            7 if MR > 7 => tile_rows!(7),
                            8 if MR > 8 => tile_rows!(8),
                            9 if MR > 9 => tile_rows!(9),
                            10 if MR > 10 => tile_rows!(10),
                            11 if MR > 11 => tile_rows!(11),
                            _ => unreachable!("bf16 edge tile of {mr} rows"),
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
