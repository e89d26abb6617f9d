//! NeuroFlux core: everything that defines the algorithm, with no allocator and no `std`.
//!
//! - [`model`]: the description of a CNN as a chain of units, and the auxiliary-head template.
//! - [`zoo`]: the built-in models (small VGG for 28x28x1, VGG-11/16/19, ResNet-18 for 32x32x3).
//! - [`ops`]: plain reference kernels (forward and backward) over slices; the oracle for every
//!   faster kernel.
//! - [`region`] and [`layout`]: the memory model. A layout places every buffer a training step
//!   touches in one arena; its size *is* the planned memory.
//! - [`infer`]: forward-only chains (recomputing a block's inputs, evaluating a model).
//! - [`probe`]: a backend's kernel workspace, sized by the calls a step makes.
//! - [`plan`]: the planner (blocks, head widths, batch sizes) for NeuroFlux, LL and BP.
//! - [`backend`]: the seam between the step and the kernels; [`reference`](mod@reference) is the reference backend.
//! - [`step`]: the block-local training step, written once against the backend trait.
//! - [`optim`], [`rng`]: SGD with momentum, learning-rate schedules, seeded PRNG and init.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod dryrun;
pub mod error;
pub mod infer;
pub mod layout;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod probe;
pub mod reference;
pub mod region;
pub mod rng;
pub mod schedule;
pub mod step;
pub mod tensors;
pub mod zoo;
