//! Packing bf16 operands in groups of depth. A panel of `W` lines (rows of `A`, columns of
//! `B`) over depth `k0..k0 + kc`, padded to a multiple `q` of depth, becomes steps of `W`
//! groups of `g` depths: `out[(p·W + l)·g + t] = x(l, k0 + g·p + t)`.
//!
//! - Pairs (`g = 2`), the layout of `vdpbf16ps`, for both operands, and for `B` of AMX.
//! - Runs of 32 (`g = 32`): `A` of AMX, whose tile rows are 32 consecutive depths of a row.
//!
//! Depth is padded to `q = 2` for `vdpbf16ps`, to `q = 32` (a tile's depth) for AMX. Lines
//! past the matrix and depths past `kc` are zero, so they add nothing. The source may be bf16
//! (copied) or f32 (rounded to the nearest bf16 as it is packed, [`Bf16::from_f32`]).
use crate::bf16::Bf16;
use crate::gemm::Mat;
use crate::isa::Isa;

/// An element type the bf16 GEMM packs from: bf16 itself, or f32 rounded to nearest even.
pub trait PackElem: Copy + private::Sealed {
    /// This value as a bf16.
    fn bf16(self) -> Bf16;
    /// The slice as f32 values, if this is f32 (the packing's fast transposes are f32 ones).
    fn f32s(s: &[Self]) -> Option<&[f32]>;
}

impl PackElem for Bf16 {
    #[inline(always)]
    fn bf16(self) -> Bf16 {
        self
    }
    fn f32s(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl PackElem for f32 {
    fn f32s(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }

    /// [`Bf16::from_f32`] without its branch (a select instead), so that packing loops
    /// vectorise: the same bits for every input.
    #[inline(always)]
    fn bf16(self) -> Bf16 {
        let b = self.to_bits();
        let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
        let quiet_nan = (b >> 16) | 0x0040;
        let nan = b & 0x7fff_ffff > 0x7f80_0000;
        Bf16::from_bits(if nan { quiet_nan } else { rounded } as u16)
    }
}

mod private {
    /// Only this crate's element types.
    pub trait Sealed {}
    impl Sealed for crate::bf16::Bf16 {}
    impl Sealed for f32 {}
}

/// Elements of a packed panel of `w` lines over depth `kc` padded to a multiple of `q`.
#[inline]
pub(super) fn panel_len(w: usize, kc: usize, q: usize) -> usize {
    kc.next_multiple_of(q) * w
}

/// Rows `i0..i0 + mr` of `a` (`mr ≤ MR`) over depth `k0..k0 + kc` into `out`, in groups of
/// `q` depths (pairs, or AMX's runs of 32), the depth padded to a multiple of `q`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_a_panel<const MR: usize, T: PackElem>(
    a: &Mat<'_, T>,
    i0: usize,
    mr: usize,
    k0: usize,
    kc: usize,
    q: usize,
    out: &mut [Bf16],
) {
    match q {
        2 => pack_pairs::<MR, T>(a.data, a.rs, a.cs, i0, mr, k0, kc, 2, out),
        RUN => pack_runs::<MR, T>(a, i0, mr, k0, kc, out),
        _ => unreachable!("packing A in groups of {q}"),
    }
}

/// Columns `j0..j0 + nr` of `b` (`nr ≤ NR`) over depth `k0..k0 + kc` into `out`, in pairs,
/// the depth padded to a multiple of `q`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b_panel<const NR: usize, T: PackElem>(
    b: &Mat<'_, T>,
    k0: usize,
    kc: usize,
    j0: usize,
    nr: usize,
    q: usize,
    out: &mut [Bf16],
) {
    pack_pairs::<NR, T>(b.data, b.cs, b.rs, j0, nr, k0, kc, q, out);
}

/// Depths per group of AMX's `A`: one tile row.
pub(super) const RUN: usize = 32;
/// Rows of the f32 staging of [`pack_runs`]' transposed operands: an AMX tile's.
const STAGE: usize = 16;

/// Rows `i0..i0 + mr` of `a` over depth `k0..k0 + kc` into the first
/// [`panel_len`]`(W, kc, RUN)` elements of `out`: step `p` holds `W` rows of the `RUN` depths
/// `k0 + RUN·p ..`, zero past the matrix.
#[inline(always)]
fn pack_runs<const W: usize, T: PackElem>(
    a: &Mat<'_, T>,
    i0: usize,
    mr: usize,
    k0: usize,
    kc: usize,
    out: &mut [Bf16],
) {
    assert!(mr <= W && W <= STAGE);
    let out = &mut out[..panel_len(W, kc, RUN)];
    if mr < W || !kc.is_multiple_of(RUN) {
        out.fill(Bf16::ZERO);
    }
    for (p, step) in out.chunks_exact_mut(W * RUN).enumerate() {
        let d0 = k0 + p * RUN;
        let run = RUN.min(k0 + kc - d0);
        if let (1, Some(data)) = (a.rs, T::f32s(a.data)) {
            // Rows contiguous, depth strided (a transposed operand): `run` contiguous source
            // lines of `mr` rows, transposed in registers (8×8 blocks) into f32 rows, then
            // rounded row by row. Element by element, this is most of a bf16 convolution's
            // time on AMX.
            let mut stage = [[0f32; RUN]; STAGE];
            let src = &data[i0 + d0 * a.cs..];
            crate::gemm::transpose(Isa::Amx, src, a.cs, run, mr, stage.as_flattened_mut(), RUN);
            for (dst, row) in step.chunks_exact_mut(RUN).zip(&stage[..mr]) {
                for (d, &x) in dst[..run].iter_mut().zip(&row[..run]) {
                    *d = x.bf16();
                }
            }
            continue;
        }
        for (l, dst) in step.chunks_exact_mut(RUN).take(mr).enumerate() {
            let at = (i0 + l) * a.rs + d0 * a.cs;
            if a.cs == 1 {
                for (d, &x) in dst.iter_mut().zip(&a.data[at..at + run]) {
                    *d = x.bf16();
                }
            } else {
                for (t, d) in dst.iter_mut().take(run).enumerate() {
                    *d = a.data[at + t * a.cs].bf16();
                }
            }
        }
    }
}

/// Lines `l0..l0 + nl` (line `l`, depth `d` at `data[l·ls + d·ds]`) over depth `k0..k0 + kc`
/// into the first [`panel_len`]`(W, kc, q)` elements of `out` (`q` even), in pairs,
/// zero-padded to `W` lines and a depth of a multiple of `q`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_pairs<const W: usize, T: PackElem>(
    data: &[T],
    ls: usize,
    ds: usize,
    l0: usize,
    nl: usize,
    k0: usize,
    kc: usize,
    q: usize,
    out: &mut [Bf16],
) {
    assert!(nl <= W && q.is_multiple_of(2));
    let kp = kc.div_ceil(2);
    let (out, pad) = out[..panel_len(W, kc, q)].split_at_mut(kp * W * 2);
    pad.fill(Bf16::ZERO);
    if nl < W || kc % 2 == 1 {
        out.fill(Bf16::ZERO);
    }
    if nl == 0 || kc == 0 {
        return;
    }
    if ds == 1 {
        // Depth is contiguous: each line's pairs are adjacent in the source. Whole pairs as
        // one step of `W` pairs at a time (sequential writes), then the odd last depth.
        let full = kc / 2;
        let lines: [&[T]; W] = std::array::from_fn(|l| {
            if l < nl {
                &data[(l0 + l) * ls + k0..][..kc]
            } else {
                &[]
            }
        });
        // A whole panel, `CH` pairs of every line at a time: each line's values rounded into a
        // contiguous array (vectorises), then moved into their steps.
        const CH: usize = 16;
        let chunked = if nl == W { full / CH * CH } else { 0 };
        for (c, block) in out[..chunked * W * 2]
            .chunks_exact_mut(CH * W * 2)
            .enumerate()
        {
            let d0 = 2 * CH * c;
            // Plain loops: nested `array::from_fn` closures were not inlined (5% of a bf16
            // run's samples).
            let mut conv = [[Bf16::ZERO; 2 * CH]; W];
            for (row, line) in conv.iter_mut().zip(&lines) {
                for (d, &x) in row.iter_mut().zip(&line[d0..d0 + 2 * CH]) {
                    *d = x.bf16();
                }
            }
            for (q, step) in block.chunks_exact_mut(W * 2).enumerate() {
                for (dst, line) in step.chunks_exact_mut(2).zip(&conv) {
                    dst[0] = line[2 * q];
                    dst[1] = line[2 * q + 1];
                }
            }
        }
        for (p, step) in out
            .chunks_exact_mut(W * 2)
            .enumerate()
            .take(full)
            .skip(chunked)
        {
            for (dst, line) in step.chunks_exact_mut(2).zip(&lines[..nl]) {
                dst[0] = line[2 * p].bf16();
                dst[1] = line[2 * p + 1].bf16();
            }
        }
        if kc % 2 == 1 {
            let step = &mut out[full * W * 2..];
            for (dst, line) in step.chunks_exact_mut(2).zip(&lines[..nl]) {
                dst[0] = line[kc - 1].bf16();
            }
        }
    } else if ls == 1 {
        // Lines are contiguous: interleave two depth rows.
        for (p, step) in out.chunks_exact_mut(W * 2).enumerate() {
            let d = k0 + 2 * p;
            let even = &data[d * ds + l0..][..nl];
            if 2 * p + 1 < kc {
                let odd = &data[(d + 1) * ds + l0..][..nl];
                if nl == W {
                    // A whole panel: round each row into a contiguous array (vectorises), then
                    // interleave the two.
                    let (mut e, mut o) = ([Bf16::ZERO; W], [Bf16::ZERO; W]);
                    for (d, &x) in e.iter_mut().zip(even) {
                        *d = x.bf16();
                    }
                    for (d, &x) in o.iter_mut().zip(odd) {
                        *d = x.bf16();
                    }
                    for (l, dst) in step.chunks_exact_mut(2).enumerate() {
                        dst[0] = e[l];
                        dst[1] = o[l];
                    }
                } else {
                    for ((dst, &e), &o) in step.chunks_exact_mut(2).zip(even).zip(odd) {
                        dst[0] = e.bf16();
                        dst[1] = o.bf16();
                    }
                }
            } else {
                for (dst, &e) in step.chunks_exact_mut(2).zip(even) {
                    dst[0] = e.bf16();
                }
            }
        }
    } else {
        for (p, step) in out.chunks_exact_mut(W * 2).enumerate() {
            for (l, dst) in step.chunks_exact_mut(2).take(nl).enumerate() {
                for (t, d) in dst.iter_mut().enumerate().take(kc - 2 * p) {
                    *d = data[(l0 + l) * ls + (k0 + 2 * p + t) * ds].bf16();
                }
            }
        }
    }
}
