//! The seam between the training step and the kernels.
//!
//! The step ([`crate::step`]) names every buffer by its [`Region`] of the arena and asks the
//! backend to run one operation at a time. A backend owns the arena (a host slice for the CPU, a
//! device allocation for CUDA) and supplies the kernels; the schedule, the memory layout and the
//! accounting exist once, in the core. Semantics of every operation are those of the reference
//! kernels in [`crate::ops`] (the same argument names, with regions in place of slices; an
//! empty region means "absent"). Operations do not fail individually: a backend that can fail
//! (a device) records its first error and reports it from [`Backend::sync`].
use crate::ops::conv2d::ConvGeom;
use crate::ops::Nchw;
use crate::optim::Sgd;
use crate::region::{Elem, Region};

/// Accumulators of deferred scores ([`Backend::take_scores`]): one per segment of a block.
pub const SCORE_SLOTS: usize = crate::model::MAX_UNITS;

/// Kernels over regions of one arena.
pub trait Backend {
    /// The error a backend may report from [`Backend::sync`] (a typed error: its message is
    /// what a user reads, e.g. after `training step failed: `).
    type Error: core::error::Error;

    /// Number of words (`f32` elements) in the arena.
    fn arena_len(&self) -> usize;
    /// Whether the backend's kernels read and write tensors stored as `elem` (every backend
    /// stores `f32`; a layout planned with bf16 storage, [`crate::layout::Precision::Bf16`],
    /// runs only on a backend that also stores [`Elem::Bf16`]). Regions of any element type
    /// may meet in one call (e.g. `copy` from an `f32` region to a `bf16` one converts).
    fn stores(&self, elem: Elem) -> bool {
        elem == Elem::F32
    }
    /// Copy host data into `dst` (`src.len() == dst.len`; rounded to `dst`'s element type).
    fn write(&mut self, dst: Region, src: &[f32]);
    /// Copy `src` out to host memory (`dst.len() == src.len`).
    fn read(&mut self, src: Region, dst: &mut [f32]);
    /// Set every element of `dst` to `value`.
    fn fill(&mut self, dst: Region, value: f32);
    /// Copy `src` into `dst` (same length in elements, disjoint; converted to `dst`'s element
    /// type).
    fn copy(&mut self, src: Region, dst: Region);
    /// Report the first error since the last call. A CPU backend has finished every operation
    /// when it returns; a device backend may leave work queued (it reports errors found so far
    /// without waiting, so that a training step never waits for the device; [`Backend::read`]
    /// and [`Backend::take_scores`] wait).
    fn sync(&mut self) -> Result<(), Self::Error>;

    /// [`crate::ops::conv2d::forward`].
    fn conv_forward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        bias: Region,
        y: Region,
        cols: Region,
    );
    /// [`crate::ops::conv2d::backward`]; `db` or `dx` empty to skip them.
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        dy: Region,
        dw: Region,
        db: Region,
        dx: Region,
        cols: Region,
    );
    /// [`crate::ops::batchnorm::forward_train`]: `x` becomes x̂; `gamma_beta` holds γ then β,
    /// `running` holds the running mean then the running variance.
    fn bn_forward_train(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        y: Region,
        invstd: Region,
        running: Region,
    );
    /// [`crate::ops::batchnorm::forward_eval`] (layouts as in `bn_forward_train`).
    fn bn_forward_eval(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        running: Region,
        y: Region,
    );
    /// [`crate::ops::batchnorm::backward`]: `dy` is turned into dL/dx in place; `dgamma_beta`
    /// receives dγ then dβ.
    fn bn_backward(
        &mut self,
        d: &Nchw,
        xhat: Region,
        gamma_beta: Region,
        invstd: Region,
        dy: Region,
        dgamma_beta: Region,
    );
    /// [`crate::ops::activation::relu_forward`], in place.
    fn relu_forward(&mut self, x: Region);
    /// [`crate::ops::activation::relu_backward`], in place on `dy`.
    fn relu_backward(&mut self, y: Region, dy: Region);
    /// [`crate::ops::activation::add_assign`]: `y += x`.
    fn add_assign(&mut self, y: Region, x: Region);
    /// [`crate::ops::pool::maxpool2_forward`].
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region);
    /// [`crate::ops::pool::maxpool2_backward`].
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region);
    /// [`crate::ops::pool::avgpool_forward`].
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region);
    /// [`crate::ops::pool::avgpool_backward`].
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region);
    /// [`crate::ops::linear::forward`]: `wb` holds the weight `[fout, fin]` then the bias;
    /// `ws` is the segment's kernel workspace (the reference kernel needs none).
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        y: Region,
        ws: Region,
    );
    /// [`crate::ops::linear::backward`]: `dwb` receives dW then db; `dx` empty to skip it;
    /// `ws` as in [`Backend::linear_forward`].
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        dy: Region,
        dwb: Region,
        dx: Region,
        ws: Region,
    );
    /// [`crate::ops::loss::softmax_xent`]: returns (sum of losses, correct predictions);
    /// `dlogits` empty to skip the gradient. A backend that [defers its
    /// scores](Backend::defers_scores) returns `(0.0, 0)` instead and adds them to its
    /// accumulator `slot` (`< SCORE_SLOTS`), which [`Backend::take_scores`] reads.
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
        slot: usize,
    ) -> (f32, u32);
    /// Whether [`Backend::softmax_xent`] keeps its statistics on the backend (a device, so
    /// that a step never waits for the host to read a loss) instead of returning them.
    fn defers_scores(&self) -> bool {
        false
    }
    /// Add the statistics deferred since the last call, slot `k` to `out[k]` (sum of losses,
    /// correct predictions), and clear them; waits for queued work. Nothing to add on a
    /// backend that does not defer them.
    fn take_scores(&mut self, out: &mut [(f32, u32)]) {
        let _ = out;
    }
    /// One SGD step ([`crate::optim::Sgd::update`]) over a contiguous parameter range.
    fn sgd(&mut self, opt: &Sgd, lr: f32, param: Region, grad: Region, mom: Region);
}
