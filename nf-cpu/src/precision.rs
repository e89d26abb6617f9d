//! The operand precision of the convolution's and the linear layer's GEMMs ([`Precision`]), a
//! property of the backend ([`FastCpuBackend::with_precision`](crate::FastCpuBackend)).
//!
//! In [`Precision::Bf16`] both operands of those GEMMs are rounded to bf16 (nearest, ties to
//! even) as the GEMM packs them into its packing buffers, or as the weights are packed once per
//! call, and the kernel multiplies bf16 values with f32 accumulation ([`gemm::bf16`]:
//! `vdpbf16ps` on AVX512-BF16). Everything else stays f32: the matrices in the arena
//! (activations, weights, gradients), the GEMM's output and accumulation, and every other op. The
//! packing buffers and the packed weights are the f32 workspace's own, holding twice as many
//! bf16 values, so a bf16 run plans exactly the memory of an f32 run.
//!
//! A product whose bf16 buffers could outgrow the f32 ones stays f32 (`fits`, tested for
//! every instruction set): depth 1 (padded to a pair); on AVX2 (the bf16 tile's 4 rows pad
//! differently from the f32 tile's 6) a depth beyond 1728, which in the zoo is the input
//! gradient of 3x3 convolutions over more than 192 channels; on AMX (16 rows against 12, depth
//! padded to 32) depths 1 to 21 and 33 to 42, whose padding to 32 adds more than half (the
//! first convolution of a one-channel image, depth 9, for one).
use crate::gemm::{self, bf16 as g16, GemmScratch, Mat, MatMut, Operand};
use crate::isa::Isa;
use crate::store::{as_bf16, as_bf16_mut};
use std::sync::OnceLock;

/// The precision of the operands of the convolution's and the linear layer's GEMMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 operands (the default).
    #[default]
    F32,
    /// bf16 operands (rounded from f32 when packed), f32 accumulation and results.
    Bf16,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// The name on the command line and in reports: `f32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision named `name` ([`Precision::name`]).
    pub fn from_name(name: &str) -> Option<Precision> {
        Precision::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// An instruction set and a precision: how the convolution and the linear layer run their
/// GEMMs. Operands packed in advance ([`Kernels::pack_a`], [`Kernels::pack_b`]) and the
/// packing buffers are f32 slices whatever the precision; in bf16 they hold bf16 values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernels {
    /// The instruction set.
    pub isa: Isa,
    /// The operand precision.
    pub prec: Precision,
}

impl Kernels {
    /// Whether a product of depth `k` runs in bf16: in [`Precision::Bf16`], unless its
    /// bf16 operands could outgrow the f32 buffers that hold them (depth 1, padded to a pair,
    /// and the depths `fits` refuses).
    pub(crate) fn bf16(self, k: usize) -> bool {
        self.prec == Precision::Bf16 && k >= 2 && fits(self.isa, k)
    }

    /// f32 elements of a fully packed `B` (`k × n`), at most [`gemm::packed_b_len`].
    pub fn packed_b_len(self, k: usize, n: usize) -> usize {
        if self.bf16(k) {
            // Always even: whole pairs of depth.
            g16::packed_b_len(self.isa, k, n) / 2
        } else {
            gemm::packed_b_len(self.isa, k, n)
        }
    }

    /// Pack all of `a` (`m × k`) into `out` (at least [`gemm::packed_a_len`] elements).
    pub fn pack_a(self, a: Mat<'_>, out: &mut [f32]) {
        if self.bf16(a.cols) {
            g16::pack_a(self.isa, a, as_bf16_mut(out));
        } else {
            gemm::pack_a(self.isa, a, out);
        }
    }

    /// Pack all of `b` (`k × n`) into `out` (at least [`gemm::packed_b_len`] elements).
    pub fn pack_b(self, b: Mat<'_>, out: &mut [f32]) {
        if self.bf16(b.rows) {
            g16::pack_b(self.isa, b, as_bf16_mut(out));
        } else {
            gemm::pack_b(self.isa, b, out);
        }
    }

    /// [`gemm::gemm`] in this precision: packed operands must come from [`Kernels::pack_a`]
    /// / [`Kernels::pack_b`] with the same `self`; `scratch` is sized by
    /// [`gemm::scratch_len`] (the f32 sizes, which hold the bf16 blocks).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        self,
        alpha: f32,
        a: Operand<'_>,
        b: Operand<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
        scratch: &mut GemmScratch<'_>,
        k: usize,
    ) {
        if !self.bf16(k) {
            gemm::gemm(self.isa, alpha, a, b, beta, c, scratch, k);
            return;
        }
        let mut s = g16::Scratch {
            a: as_bf16_mut(scratch.a),
            b: as_bf16_mut(scratch.b),
        };
        let (a, b) = (input(a), input(b));
        g16::gemm_mixed(self.isa, alpha, a, b, beta, c, &mut s, k);
    }
}

/// Whether the bf16 GEMM's buffers for depth `k` (packing buffers and fully packed operands)
/// hold in the f32 GEMM's, for every number of rows and columns: always where both tiles and
/// the depth padding agree; elsewhere (AVX2's 4 rows against 6, AMX's 16 against 12 and its
/// depth padded to 32) where the depth per row, times the largest ratio of padded rows (or
/// columns), is at most twice the f32 one (`tests.rs` checks this against every shape).
fn fits(isa: Isa, k: usize) -> bool {
    let ((mr16, nr16), t) = (g16::tile(isa), gemm::tile(isa));
    if (mr16, nr16) == (t.mr, t.nr) && g16::depth_quantum(isa) == 2 {
        return true;
    }
    let [(ra, rb), (ca, cb)] = worst_padding(isa);
    // Depth per row (per column) of each buffer: one whole tile of rows (columns) divides out.
    let (sa16, sb16) = g16::scratch_len(isa, mr16, nr16, k, true, true);
    let (sa32, sb32) = gemm::scratch_len(isa, t.mr, t.nr, k, true, true);
    let (pa16, pb16) = (
        g16::packed_a_len(isa, mr16, k),
        g16::packed_b_len(isa, k, nr16),
    );
    let (pa32, pb32) = (
        gemm::packed_a_len(isa, t.mr, k),
        gemm::packed_b_len(isa, k, t.nr),
    );
    ra * (sa16 / mr16) <= 2 * rb * (sa32 / t.mr)
        && ra * (pa16 / mr16) <= 2 * rb * (pa32 / t.mr)
        && ca * (sb16 / nr16) <= 2 * cb * (sb32 / t.nr)
        && ca * (pb16 / nr16) <= 2 * cb * (pb32 / t.nr)
}

/// The largest ratio, as `(numerator, denominator)`, of rows padded to the bf16 tile over rows
/// padded to the f32 tile, and the same for columns, over every count: reached below a common
/// multiple of the two tiles (beyond it the padding repeats and the ratio only falls; the
/// packing blocks, `MC` and `NC` rows and columns, are multiples of every tile). Once per
/// instruction set.
fn worst_padding(isa: Isa) -> [(usize, usize); 2] {
    static WORST: OnceLock<[[(usize, usize); 2]; Isa::ALL.len()]> = OnceLock::new();
    let all = WORST.get_or_init(|| {
        Isa::ALL.map(|isa| {
            let ((mr16, nr16), t) = (g16::tile(isa), gemm::tile(isa));
            [(mr16, t.mr), (nr16, t.nr)].map(|(w16, w32)| {
                (1..=w16 * w32 / gcd(w16, w32))
                    .map(|m| (m.div_ceil(w16) * w16, m.div_ceil(w32) * w32))
                    .fold(
                        (1, 1),
                        |(a, b), (x, y)| if x * b > a * y { (x, y) } else { (a, b) },
                    )
            })
        })
    });
    all[Isa::ALL.iter().position(|&i| i == isa).unwrap_or(0)]
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// An f32 operand of [`Kernels::gemm`] in bf16: a view rounded as it is packed, or packed
/// (as bf16) by [`Kernels::pack_a`] / [`Kernels::pack_b`].
fn input(o: Operand<'_>) -> g16::Input<'_> {
    match o {
        Operand::View(m) => g16::Input::F32(m),
        Operand::Packed(p) => g16::Input::Packed(as_bf16(p)),
    }
}

#[cfg(test)]
mod tests;
