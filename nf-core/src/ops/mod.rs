//! Reference kernels: plain, obviously-correct forward and backward passes over slices.
//!
//! Tensors are NCHW, conv weights OIHW, linear weights `[out, in]` (PyTorch conventions). Every
//! function reads and writes only the slices it is given and never allocates; gradients of
//! parameters are overwritten, not accumulated. These kernels are the oracle that every faster
//! kernel (host threads, CUDA) is tested against.
pub mod activation;
pub mod batchnorm;
pub mod conv2d;
pub mod gemm;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod linear;
pub mod loss;
pub mod pool;

/// Dimensions of a batch of feature maps: `n` samples of `c` x `h` x `w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nchw {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Nchw {
    /// Total number of elements.
    pub const fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// True when there is no element.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
