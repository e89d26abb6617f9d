//! The CUDA backend's kernel workspace, as the planner sizes it.
//!
//! A convolution runs in chunks of samples, each unrolled side by side into the workspace
//! ([`crate::engine::conv2d`]): a chunk of `c` samples takes exactly
//! `c ·` [`conv_sample_floats`] elements, and the engine takes as many samples per chunk as
//! the workspace it is given holds ([`conv_chunk`]). Linear layers, batch norm, pooling and
//! the loss take none of it. [`workspace_floats`] is therefore exact for a call and a chunk,
//! and a plan that gives a block more workspace gets fewer, larger GEMMs.
//!
//! The planner (`nf_host::run_plan::cuda_plan`) sizes each block's workspace with a
//! [`ChunkPolicy`]: first every convolution of the block in at most [`ChunkPolicy::parts`]
//! chunks at the block's batch (which decides the batch size under the budget), then, where
//! the budget leaves room at that batch, fewer and larger chunks, down to one chunk per call.
use nf_core::probe::KernelCall;

pub use crate::engine::{conv_chunk, conv_chunk_aligned, conv_chunk_floats, conv_sample_floats};

/// Workspace elements call `k` takes when its convolution runs in chunks of `samples` samples
/// (at most its batch; at least one): exactly what the engine carves from a workspace of
/// that size. Linear layers take none.
pub fn workspace_floats(k: &KernelCall, samples: usize) -> usize {
    workspace_floats_aligned(k, samples, 1)
}

/// [`workspace_floats`] for an engine that aligns the channel-major block after the columns
/// to `align` elements (`Engine::set_region_align`): what [`conv_chunk_aligned`] carves.
pub fn workspace_floats_aligned(k: &KernelCall, samples: usize, align: usize) -> usize {
    match *k {
        KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => {
            conv_chunk_floats(&g, samples.clamp(1, g.n.max(1)), align)
        }
        KernelCall::LinearForward { .. } | KernelCall::LinearBackward { .. } => 0,
    }
}

/// How a plan sizes the CUDA backend's workspace: every convolution of a block in at most
/// `parts` chunks at the block's batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// Chunks per convolution call at the block's full batch (at least 1).
    pub parts: usize,
}

impl ChunkPolicy {
    /// 8 chunks: on VGG-11 under 256 MiB a budget-bound block loses about a tenth of its
    /// batch to the workspace, and every convolution takes at most 8 × 5 launches and GEMMs
    /// per step whatever the batch size.
    pub const DEFAULT: ChunkPolicy = ChunkPolicy { parts: 8 };

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
        workspace_floats(k, self.samples(n))
    }

    /// [`ChunkPolicy::need`] for an engine that aligns its workspace operands to `align`
    /// elements ([`workspace_floats_aligned`]).
    pub fn need_aligned(&self, k: &KernelCall, align: usize) -> usize {
        let n = match *k {
            KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => g.n,
            KernelCall::LinearForward { .. } | KernelCall::LinearBackward { .. } => 0,
        };
        workspace_floats_aligned(k, self.samples(n), align)
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
        let p = ChunkPolicy { parts: 4 };
        assert_eq!(p.samples(10), 3);
        assert_eq!(p.need(&k), 3 * per);
        assert_eq!(ChunkPolicy { parts: 1 }.need(&k), 10 * per);
        assert_eq!(ChunkPolicy { parts: 100 }.need(&k), per);
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
}
