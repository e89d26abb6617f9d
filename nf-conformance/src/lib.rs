//! The conformance suite every NeuroFlux backend runs: each op forward and backward against
//! nf-core's [`ReferenceBackend`](nf_core::reference::ReferenceBackend) on one list of shapes,
//! whole training steps in every mode (NeuroFlux, LL, BP), the planned arena used in full, and
//! nothing written outside the regions a call is given.
//!
//! A backend's test file describes the backend under test as a [`Subject`] and invokes
//! [`conformance_suite!`], which expands into one `#[test]` per property:
//!
//! ```ignore
//! nf_conformance::conformance_suite!(my_subjects());
//! ```
//!
//! How a comparison works ([`Case`]): the op's buffers are laid out one after another in an
//! arena, each followed by a gap of random canary values. Inputs hold random values, outputs
//! start as NaN (an element the backend forgets to write shows up) and kernel workspaces as a
//! sentinel NaN. The same calls run on the reference and on the subject; afterwards outputs
//! must agree within the subject's [`Tol`], and inputs and every canary bit for bit, so a
//! write one element outside a region fails the case ([`Case::check`] returns the error).
//!
//! Tolerances (relative to the largest |reference| value of the buffer): GEMM-based ops
//! (convolution, linear) sum the same products in another order; for a K-term f32 dot product
//! that moves the result by about `sqrt(K) · 2^-24 · Σ|terms|`, under `1e-5` of the scale for the
//! K ≤ 5000 used here, so 1e-4 leaves a 10x margin while an indexing or synchronisation bug gives
//! errors of the order of the values. Backends state their own (see each test file).
//!
//! The op tests also measure every output's error ([`scaled_error`]); a subject whose
//! [`Subject::error_table`] is on (the CUDA ones) prints the worst per output as a table
//! ([`Worst`]) to stderr, where CI logs keep it.
#![forbid(unsafe_code)]

mod case;
mod ops;
mod steps;
mod worst;

pub use case::{scaled_error, Call, Case, Errors, Side, SENTINEL};
pub use ops::{conv_shapes, geom};
pub use steps::{settled_plan, TINY, TINY_RES, TRAINING};
pub use worst::Worst;

use nf_core::backend::Backend;
use nf_core::probe::KernelCall;

/// Largest error allowed per kind of buffer, relative to the buffer's largest |reference|
/// value; `0.0` means bit for bit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    /// Convolution and linear outputs (GEMM sums in another order).
    pub gemm: f32,
    /// Batch-norm outputs and statistics.
    pub bn: f32,
    /// ReLU, pooling, add, SGD, fill, copy and the loss.
    pub exact: f32,
    /// Parameters, momentum and BN state after whole training steps, and the step losses.
    pub steps: f32,
}

/// A backend under test.
pub trait Subject {
    /// The backend, borrowing the subject and (where it computes in host memory) an arena.
    type B<'a>: Backend
    where
        Self: 'a;
    /// What the failure messages call it (e.g. `fast CPU T=2 avx2`).
    fn name(&self) -> String;
    /// Its tolerances.
    fn tol(&self) -> Tol;
    /// Worker threads its plans are made for (`PlanOptions::workers`).
    fn workers(&self) -> usize {
        1
    }
    /// Whether the training and arena tests run at real model sizes (Small VGG, ResNet-18,
    /// VGG-11); an emulated backend too slow for them runs the tiny models only.
    fn full_size(&self) -> bool {
        true
    }
    /// Whether the op tests print the worst error per output over their cases ([`Worst`], to
    /// stderr, one table per test and subject): the CUDA subjects do, as the evidence in CI
    /// logs of how far their kernels are from the reference.
    fn error_table(&self) -> bool {
        false
    }
    /// Floats of kernel workspace it needs for `k`.
    fn workspace(&self, k: &KernelCall) -> usize;
    /// A backend of `arena.len()` elements; one that keeps host memory computes in `arena`,
    /// one with its own memory (a device) only takes the length. The suite reaches the arena
    /// only through `Backend::write` and `Backend::read`.
    fn backend<'a>(&'a self, arena: &'a mut [f32]) -> Self::B<'a>;
}

/// The whole suite as `#[test]` functions over the subjects `$subjects` (an expression
/// giving an iterator of [`Subject`]s, evaluated once per test). The form
/// `conformance_suite!(ops = A, steps = B)` runs the op tests over `A` and the training and
/// arena tests over `B` (e.g. every instruction set for the ops, the active one for steps).
#[macro_export]
macro_rules! conformance_suite {
    ($subjects:expr) => {
        $crate::conformance_suite!(ops = $subjects, steps = $subjects);
    };
    (ops = $subjects:expr, steps = $steps:expr) => {
        #[test]
        fn conformance_conv_matches_reference_on_chosen_shapes() {
            for s in $subjects {
                let worst = $crate::ops_conv_chosen(&s);
                $crate::print_errors(&s, "convolution, chosen shapes", &worst);
            }
        }
        #[test]
        fn conformance_conv_matches_reference_on_random_shapes() {
            for s in $subjects {
                let worst = $crate::ops_conv_random(&s);
                $crate::print_errors(&s, "convolution, 40 random shapes", &worst);
            }
        }
        #[test]
        fn conformance_batchnorm_matches_reference() {
            for s in $subjects {
                let worst = $crate::ops_batchnorm(&s);
                $crate::print_errors(&s, "batch norm", &worst);
            }
        }
        #[test]
        fn conformance_pool_relu_add_fill_copy_match_reference() {
            for s in $subjects {
                let worst = $crate::ops_elementwise(&s);
                $crate::print_errors(&s, "pooling, ReLU, add, fill, copy", &worst);
            }
        }
        #[test]
        fn conformance_linear_loss_sgd_match_reference() {
            for s in $subjects {
                let worst = $crate::ops_linear(&s);
                $crate::print_errors(&s, "linear, softmax cross-entropy, SGD", &worst);
            }
        }
        #[test]
        fn conformance_training_steps_match_reference_in_every_mode() {
            for s in $steps {
                $crate::training_steps(&s);
            }
        }
        #[test]
        fn conformance_planned_arena_is_used_in_full() {
            for s in $steps {
                $crate::arena_used_in_full(&s);
            }
        }
    };
}

pub use ops::{ops_batchnorm, ops_conv_chosen, ops_conv_random, ops_elementwise, ops_linear};
pub use steps::{arena_used_in_full, training_steps};

/// Print `worst`, the errors of the op test `test` on `s`, when `s` asks for the table
/// ([`Subject::error_table`]).
pub fn print_errors<S: Subject>(s: &S, test: &str, worst: &Worst) {
    if s.error_table() {
        worst.print(&format!("{} vs nf-core reference, {test}", s.name()));
    }
}
