//! Element types in the memory model: which kind of region stores `f32` and which `bf16`.
//!
//! Every region of a layout has a [`RegionKind`]; the plan's [`Precision`] maps each kind to
//! an [`Elem`], and the region is [`Elem::words`] of its element count long (regions are
//! counted in 4-byte arena words, so a `bf16` region takes half the words of an `f32` one, its
//! odd last half word included). [`Precision::F32`], the default, makes every kind `f32`:
//! the layouts, the plans and every byte count are what they were before element types.
//!
//! Under [`Precision::Bf16`] (issue 28) the tensors a training step streams through its GEMMs
//! are `bf16`: the input batch, the buffers that carry a unit's output to the next, the
//! activations kept for backward, the activation gradients and the im2col columns. What
//! accumulates or is reduced stays `f32`: the master weights, their momentum and gradients,
//! the BN running statistics and per-channel `invstd`, the labels, the logits the loss reads,
//! and the per-worker weight-gradient partial sums. A backend's own fixed workspace
//! ([`super::Workspace::Fixed`]) is sized by the backend and stays as it said.
//!
//! The forward-only chain that recomputes a block's inputs without a cache
//! ([`crate::infer::InferLayout`]) keeps its activations in f32 under either precision (only
//! its im2col columns follow the table), so a bf16 plan with recomputation overstates it.
//!
//! A bf16 layout runs on a backend that [stores](crate::backend::Backend::stores) bf16 (the
//! fast CPU backend); the step refuses it on one that stores only f32 (the reference kernels,
//! CUDA). Its regions carry their element type ([`crate::region::Region::elem`]) and count
//! elements, not words.
use crate::region::Elem;

/// What a region of a layout holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Trainable parameters (master weights).
    Params,
    /// Their SGD momentum.
    Momentum,
    /// Their gradients (one segment's, accumulated over the batch).
    Grads,
    /// BN running mean and variance.
    BnState,
    /// Labels (class index per sample).
    Labels,
    /// The block's input batch.
    Input,
    /// The buffers carrying a unit's output to the next unit.
    Carry,
    /// Activations kept for backward (op outputs of a segment, a basic block's inner tensors).
    Activations,
    /// BN's per-channel `invstd` kept for backward.
    BnStats,
    /// The logits the loss reads (the output of a segment's last op).
    Logits,
    /// Gradient buffers of activations (dL/dlogits, then each op's dL/dx).
    ActGrads,
    /// The im2col columns of the reference kernels' workspace (GEMM operands).
    Columns,
    /// Per-worker weight-gradient partial sums of the reference kernels' workspace.
    Partials,
}

impl RegionKind {
    /// Every kind, in the order `nf plan` lists them.
    pub const ALL: [RegionKind; 13] = [
        RegionKind::Params,
        RegionKind::Momentum,
        RegionKind::Grads,
        RegionKind::BnState,
        RegionKind::Labels,
        RegionKind::Input,
        RegionKind::Carry,
        RegionKind::Activations,
        RegionKind::BnStats,
        RegionKind::Logits,
        RegionKind::ActGrads,
        RegionKind::Columns,
        RegionKind::Partials,
    ];

    /// A short name.
    pub const fn name(self) -> &'static str {
        match self {
            RegionKind::Params => "params",
            RegionKind::Momentum => "momentum",
            RegionKind::Grads => "grads",
            RegionKind::BnState => "bn_state",
            RegionKind::Labels => "labels",
            RegionKind::Input => "input",
            RegionKind::Carry => "carry",
            RegionKind::Activations => "activations",
            RegionKind::BnStats => "bn_invstd",
            RegionKind::Logits => "logits",
            RegionKind::ActGrads => "act_grads",
            RegionKind::Columns => "im2col",
            RegionKind::Partials => "wgrad_partials",
        }
    }
}

/// The element type of each kind of region: an option of the plan
/// ([`crate::plan::PlanOptions::precision`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Every region `f32` (the default; today's layouts, byte for byte).
    #[default]
    F32,
    /// The streamed tensors `bf16`, what accumulates `f32` (see the module documentation).
    Bf16,
}

impl Precision {
    /// The element type of regions of kind `k`.
    pub const fn elem(self, k: RegionKind) -> Elem {
        match self {
            Precision::F32 => Elem::F32,
            Precision::Bf16 => match k {
                RegionKind::Input
                | RegionKind::Carry
                | RegionKind::Activations
                | RegionKind::ActGrads
                | RegionKind::Columns => Elem::Bf16,
                RegionKind::Params
                | RegionKind::Momentum
                | RegionKind::Grads
                | RegionKind::BnState
                | RegionKind::Labels
                | RegionKind::BnStats
                | RegionKind::Logits
                | RegionKind::Partials => Elem::F32,
            },
        }
    }

    /// Arena words of a region of kind `k` holding `n` elements.
    pub const fn words(self, k: RegionKind, n: usize) -> usize {
        self.elem(k).words(n)
    }

    /// The command-line name (`f32`, `bf16`).
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision called `s` on the command line.
    pub fn parse(s: &str) -> Option<Precision> {
        [Precision::F32, Precision::Bf16]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_is_one_word_per_element_and_bf16_halves_the_streamed_kinds() {
        for k in RegionKind::ALL {
            for n in [0, 1, 2, 7, 1000] {
                assert_eq!(Precision::F32.words(k, n), n);
            }
        }
        assert_eq!(Precision::Bf16.words(RegionKind::Carry, 7), 4);
        assert_eq!(Precision::Bf16.words(RegionKind::Activations, 1000), 500);
        assert_eq!(Precision::Bf16.words(RegionKind::Params, 1000), 1000);
        assert_eq!(Precision::Bf16.words(RegionKind::Logits, 10), 10);
        assert_eq!(Precision::parse("bf16"), Some(Precision::Bf16));
        assert_eq!(Precision::parse("f16"), None);
    }
}
