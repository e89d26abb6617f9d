//! The CUDA backend's kernel workspace, as the planner sizes it.
//!
//! A convolution runs in chunks of samples, each unrolled side by side into the workspace
//! ([`crate::engine::conv2d`]): a chunk of `c` samples takes exactly
//! `c ·` [`conv_sample_floats`] elements, and the engine takes as many samples per chunk as
//! the workspace it is given holds ([`conv_chunk`]). Linear layers, batch norm, pooling and
//! the loss take none of it. [`workspace_floats`] is therefore exact for a call and a chunk,
//! and a plan that gives a block more workspace gets fewer, larger GEMMs.
//!
//! With bf16 GEMM operands ([`GemmPrecision::Bf16`]) each call also takes the scratch its
//! operands are rounded into ([`crate::engine::bf16`]): a convolution's chunk its weight,
//! columns and channel-major block in bf16 after the f32 ones ([`conv_chunk_floats_in`]), a
//! linear layer its input, weight and output gradient ([`linear_floats`]).
//! [`workspace_floats_in`] is exact for those too; in f32 nothing changes, so f32 plans stay
//! byte-identical.
//!
//! The planner (`nf_host::run_plan::cuda_plan`) sizes each block's workspace with a
//! [`ChunkPolicy`]: first every convolution of the block in at most [`ChunkPolicy::parts`]
//! chunks at the block's batch (which decides the batch size under the budget), then, where
//! the budget leaves room at that batch, fewer and larger chunks, down to one chunk per call.
use nf_core::probe::KernelCall;

pub use crate::engine::bf16::linear_floats;
pub use crate::engine::{
    conv_chunk, conv_chunk_aligned, conv_chunk_floats, conv_chunk_floats_in, conv_chunk_in,
    conv_sample_floats,
};
pub use crate::gemm::GemmPrecision;

/// Workspace elements call `k` takes when its convolution runs in chunks of `samples` samples
/// (at most its batch; at least one): exactly what the engine carves from a workspace of
/// that size. Linear layers take none.
pub fn workspace_floats(k: &KernelCall, samples: usize) -> usize {
    workspace_floats_aligned(k, samples, 1)
}

/// [`workspace_floats`] for an engine that aligns the channel-major block after the columns
/// to `align` elements (`Engine::set_region_align`): what [`conv_chunk_aligned`] carves.
pub fn workspace_floats_aligned(k: &KernelCall, samples: usize, align: usize) -> usize {
    workspace_floats_in(k, samples, align, GemmPrecision::F32)
}

/// [`workspace_floats_aligned`] for GEMM operands of `p`: what the engine carves under
/// `Engine::set_gemm_precision(p)`. A linear layer takes its bf16 scratch for all of its
/// samples (it is not chunked); in f32 it takes none.
pub fn workspace_floats_in(
    k: &KernelCall,
    samples: usize,
    align: usize,
    p: GemmPrecision,
) -> usize {
    match *k {
        KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => {
            conv_chunk_floats_in(&g, samples.clamp(1, g.n.max(1)), align, p)
        }
        KernelCall::LinearForward { n, fin, fout } => linear_floats(n, fin, fout, false, align, p),
        KernelCall::LinearBackward { n, fin, fout, .. } => {
            linear_floats(n, fin, fout, true, align, p)
        }
    }
}

/// How a plan sizes the CUDA backend's workspace: every convolution of a block in at most
/// `parts` chunks at the block's batch size, for GEMM operands of `precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// Chunks per convolution call at the block's full batch (at least 1).
    pub parts: usize,
    /// The element type of the GEMM operands (bf16 adds their scratch to the workspace).
    pub precision: GemmPrecision,
}

impl ChunkPolicy {
    /// 8 chunks: on VGG-11 under 256 MiB a budget-bound block loses about a tenth of its
    /// batch to the workspace, and every convolution takes at most 8 × 5 launches and GEMMs
    /// per step whatever the batch size. f32 operands.
    pub const DEFAULT: ChunkPolicy = ChunkPolicy {
        parts: 8,
        precision: GemmPrecision::F32,
    };

    /// This policy with GEMM operands of `precision`.
    pub const fn with_precision(self, precision: GemmPrecision) -> ChunkPolicy {
        ChunkPolicy { precision, ..self }
    }

    /// Samples per chunk for a call over `n` samples.
    pub const fn samples(&self, n: usize) -> usize {
        let p = if self.parts == 0 { 1 } else { self.parts };
        let s = n.div_ceil(p);
        if s == 0 {
            1
        } else {
            s
        }
    }

    /// The workspace call `k` takes under this policy.
    pub fn need(&self, k: &KernelCall) -> usize {
        let n = match *k {
            KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => g.n,
            KernelCall::LinearForward { n, .. } | KernelCall::LinearBackward { n, .. } => n,
        };
        workspace_floats_in(k, self.samples(n), 1, self.precision)
    }

    /// [`ChunkPolicy::need`] for an engine that aligns its workspace operands to `align`
    /// elements ([`workspace_floats_aligned`]).
    pub fn need_aligned(&self, k: &KernelCall, align: usize) -> usize {
        let n = match *k {
            KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => g.n,
            KernelCall::LinearForward { .. } | KernelCall::LinearBackward { .. } => 0,
        };
        workspace_floats_in(k, self.samples(n), align, self.precision)
    }
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_core::ops::conv2d::ConvGeom;

    #[test]
    fn sizes_and_chunks_agree() {
        let g = ConvGeom {
            n: 10,
            c_in: 3,
            h: 6,
            w: 5,
            c_out: 4,
            k: 3,
            stride: 1,
            pad: 1,
        };
        let per = conv_sample_floats(&g);
        assert_eq!(per, 30 * (27 + 4));
        let k = KernelCall::ConvBackward {
            g,
            dx: true,
            db: false,
        };
        for samples in 1..=12 {
            let ws = workspace_floats(&k, samples);
            assert_eq!(ws, samples.min(10) * per);
            // The engine takes exactly that many samples from that workspace, and one fewer
            // element holds one sample fewer.
            assert_eq!(conv_chunk(&g, ws), samples.min(10));
            assert_eq!(conv_chunk(&g, ws - 1), samples.min(10) - 1);
        }
        let p = ChunkPolicy {
            parts: 4,
            ..ChunkPolicy::DEFAULT
        };
        assert_eq!(p.samples(10), 3);
        assert_eq!(p.need(&k), 3 * per);
        let parts = |parts| ChunkPolicy {
            parts,
            ..ChunkPolicy::DEFAULT
        };
        assert_eq!(parts(1).need(&k), 10 * per);
        assert_eq!(parts(100).need(&k), per);
        let lin = KernelCall::LinearBackward {
            n: 10,
            fin: 5,
            fout: 3,
            dx: true,
        };
        assert_eq!(p.need(&lin), 0);
        // Aligned: the channel-major block starts on a multiple of 32 after the columns, and
        // the engine carves exactly that.
        for samples in 1..=10 {
            let ws = workspace_floats_aligned(&k, samples, 32);
            let cols = samples * g.cols_len();
            assert_eq!(ws, cols.next_multiple_of(32) + samples * 30 * 4);
            assert_eq!(conv_chunk_aligned(&g, ws, 32), samples);
            assert_eq!(conv_chunk_aligned(&g, ws - 1, 32), samples - 1);
        }
        assert_eq!(p.need_aligned(&k, 32), workspace_floats_aligned(&k, 3, 32));
        assert_eq!(p.need_aligned(&lin, 32), 0);
    }

    /// bf16 operands: the scratch comes after the f32 workspace, the engine's chunk is exact
    /// for it, f32 is unchanged, and linear layers take their operands' scratch.
    #[test]
    fn bf16_scratch_sizes_and_chunks_agree() {
        let bf = GemmPrecision::Bf16;
        for g in [
            ConvGeom {
                n: 10,
                c_in: 3,
                h: 6,
                w: 5,
                c_out: 4,
                k: 3,
                stride: 1,
                pad: 1,
            },
            ConvGeom {
                n: 7,
                c_in: 64,
                h: 2,
                w: 2,
                c_out: 128,
                k: 3,
                stride: 1,
                pad: 1,
            },
        ] {
            let k = KernelCall::ConvForward(g);
            for align in [1, 32] {
                for samples in 1..=g.n {
                    let f32_ws = workspace_floats_aligned(&k, samples, align);
                    assert_eq!(
                        workspace_floats_in(&k, samples, align, GemmPrecision::F32),
                        f32_ws
                    );
                    let ws = workspace_floats_in(&k, samples, align, bf);
                    // The weight, columns and outputs in bf16: half of each, after the f32 part.
                    let halves = (g.weight_len() + samples * conv_sample_floats(&g)) / 2;
                    assert!(ws >= f32_ws + halves && ws <= f32_ws + halves + 3 * align + 3);
                    assert_eq!(conv_chunk_in(&g, ws, align, bf), samples, "{g:?}");
                    assert_eq!(conv_chunk_in(&g, ws - 1, align, bf), samples - 1);
                }
            }
        }
        let lin = |dx| KernelCall::LinearBackward {
            n: 6,
            fin: 37,
            fout: 5,
            dx,
        };
        let fwd = KernelCall::LinearForward {
            n: 6,
            fin: 37,
            fout: 5,
        };
        assert_eq!(workspace_floats_in(&lin(true), 1, 1, GemmPrecision::F32), 0);
        assert_eq!(workspace_floats_in(&fwd, 1, 1, bf), 111 + 93);
        assert_eq!(workspace_floats_in(&lin(true), 1, 1, bf), 111 + 93 + 15);
        assert_eq!(workspace_floats_in(&lin(false), 1, 32, bf), 128 + 96 + 15);
        // A policy in bf16 sizes linear layers for their whole batch.
        let p = ChunkPolicy::DEFAULT.with_precision(bf);
        assert_eq!(p.need_aligned(&fwd, 1), 204);
        assert_eq!(ChunkPolicy::DEFAULT.need_aligned(&fwd, 1), 0);
    }
}
