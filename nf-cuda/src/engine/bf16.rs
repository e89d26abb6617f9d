//! bf16 GEMM operands ([`GemmPrecision::Bf16`]): the f32 operands of a convolution's or a
//! linear layer's GEMMs are rounded to bf16 (nearest even, `nf_round_bf16` in
//! `kernels/buffer.cu`) into scratch after the f32 workspace, then multiplied by cuBLAS with
//! bf16 inputs and f32 accumulation and output. The scratch is part of the kernel workspace
//! the plan gives each block ([`crate::workspace`]), so it is planned memory, and only a bf16
//! run plans it: f32 plans do not change.
//!
//! Layout: pieces one after another, each starting on a multiple of the engine's alignment
//! ([`super::Engine::set_region_align`]) from the workspace's start, so that a plan with
//! aligned regions gives cuBLAS aligned bf16 operands too. A piece of `len` f32 values takes
//! `⌈len/2⌉` elements (two bf16 to an element).
use nf_core::region::Region;

use super::{i64_of, Device, Engine, Res};
use crate::gemm::{GemmPrecision, RowGemm};
use crate::kernels::{Arg, Kernel};

/// Elements `len` values take once rounded to bf16 (two to an element).
pub const fn bf16_floats(len: usize) -> usize {
    len.div_ceil(2)
}

const fn up(x: usize, align: usize) -> usize {
    if align > 1 {
        x.next_multiple_of(align)
    } else {
        x
    }
}

/// The starts of `N` bf16 pieces of `lens` values laid out from element `start` of a
/// workspace (each on a multiple of `align` elements), and where the last one ends.
pub const fn pieces<const N: usize>(
    start: usize,
    lens: [usize; N],
    align: usize,
) -> ([usize; N], usize) {
    let mut at = [0; N];
    let mut end = start;
    let mut i = 0;
    while i < N {
        at[i] = up(end, align);
        end = at[i] + bf16_floats(lens[i]);
        i += 1;
    }
    (at, end)
}

/// Workspace elements a linear layer over `n` samples takes under `p`: none in f32; in bf16
/// the input, the weight and (backward) the output gradient rounded to bf16.
pub const fn linear_floats(
    n: usize,
    fin: usize,
    fout: usize,
    backward: bool,
    align: usize,
    p: GemmPrecision,
) -> usize {
    match p {
        GemmPrecision::F32 => 0,
        GemmPrecision::Bf16 => {
            let (_, fwd) = pieces(0, [n * fin, fout * fin], align);
            let (_, bwd) = pieces(0, [n * fin, fout * fin, n * fout], align);
            if backward {
                bwd
            } else {
                fwd
            }
        }
    }
}

impl<D: Device> Engine<D> {
    /// Round the `src.len` values of `src` to bf16 into `dst` (at least
    /// [`bf16_floats`]`(src.len)` elements); the bf16 offset of the copy.
    pub(super) fn round_bf16(
        &mut self,
        src: Region,
        dst: Region,
    ) -> Result<usize, super::CudaError> {
        super::need(dst, bf16_floats(src.len()), "bf16 scratch")?;
        self.launch(
            Kernel::RoundBf16,
            bf16_floats(src.len()),
            &[
                Arg::Buf(src),
                Arg::Buf(dst.prefix(bf16_floats(src.len()))),
                i64_of(src.len()),
            ],
        )?;
        Ok(2 * dst.offset)
    }

    /// `g` with bf16 operands at the bf16 offsets `a16` and `b16`.
    pub(super) fn gemm_bf16(&mut self, g: RowGemm, a16: usize, b16: usize) -> Res {
        self.gemm(RowGemm {
            operands: GemmPrecision::Bf16,
            a: a16,
            b: b16,
            ..g
        })
    }
}
