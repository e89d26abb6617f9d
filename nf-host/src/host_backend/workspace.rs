//! Temporary shim: the host kernels' workspace model (replaced by the host-ws branch).
use nf_core::ops::conv2d::ConvGeom;

/// A kernel call whose workspace is sized.
#[derive(Clone, Copy, Debug)]
pub enum Kernel {
    /// Convolution forward.
    ConvForward(ConvGeom),
    /// Convolution backward.
    ConvBackward {
        /// Geometry.
        g: ConvGeom,
        /// With the input gradient.
        dx: bool,
        /// With the bias gradient.
        db: bool,
    },
    /// Linear forward.
    LinearForward {
        /// Samples.
        n: usize,
        /// Inputs.
        fin: usize,
        /// Outputs.
        fout: usize,
    },
    /// Linear backward.
    LinearBackward {
        /// Samples.
        n: usize,
        /// Inputs.
        fin: usize,
        /// Outputs.
        fout: usize,
        /// With the input gradient.
        dx: bool,
    },
}

/// Workspace elements of `k` with `threads` workers.
pub fn floats(k: &Kernel, threads: usize) -> usize {
    match k {
        Kernel::ConvForward(g) => threads * g.cols_len(),
        Kernel::ConvBackward { g, .. } => threads * g.cols_len() + (threads - 1) * g.weight_len(),
        _ => 0,
    }
}
