//! NeuroFlux core: everything that defines the algorithm, with no allocator and no `std`.
//!
//! - [`model`]: the description of a CNN as a chain of units, and the auxiliary-head template.
//! - [`zoo`]: the built-in models (small VGG for 28x28x1, VGG-11/16/19, ResNet-18 for 32x32x3).
//! - [`ops`]: plain reference kernels (forward and backward) over slices; the oracle for every
//!   faster kernel.
//! - [`region`] and [`layout`]: the memory model. A layout places every buffer a training step
//!   touches in one arena; its size *is* the planned memory.
//! - [`infer`]: forward-only chains (recomputing a block's inputs, evaluating a model);
//!   [`predict`]: one sample classified with the trained model, in the arena that trained it.
//! - [`probe`]: a backend's kernel workspace, sized by the calls a step makes.
//! - [`plan`]: the planner (blocks, head widths, batch sizes) for NeuroFlux, LL and BP.
//! - [`backend`]: the seam between the step and the kernels; [`reference`](mod@reference) is the
//!   reference backend and [`dryrun`] a backend that only checks where a step reads and writes.
//! - [`step`]: the block-local training step, written once against the backend trait;
//!   [`schedule`]: epochs, evaluation passes and the early exit over a data source.
//! - [`collective`]: data-parallel training across ranks (the seam to MPI or NCCL; [`Solo`](collective::Solo)
//!   is the world of one).
//! - [`optim`], [`rng`]: SGD with momentum, learning-rate schedules, seeded PRNG and init.
//! - [`error`]: how the planner's and the step's errors read.
//!
//! # Proving a memory bound in a unit test
//!
//! The planner is an ordinary function, so a test can plan a model for a budget and assert
//! that it fits; running the step over [`dryrun::DryRun`] (which computes nothing, checks every
//! region a kernel is handed and records the highest element touched) shows that the step
//! stays inside an arena of exactly the planned size, uses all of it, and is refused by one
//! element less:
//!
//! ```
//! use nf_core::dryrun::DryRun;
//! use nf_core::layout::ELEM_BYTES;
//! use nf_core::optim::Sgd;
//! use nf_core::plan::{plan, Mode, PlanOptions};
//! use nf_core::rng::Rng;
//! use nf_core::{step, zoo};
//!
//! # /*
//! #[test]
//! # */
//! fn the_small_vgg_trains_in_4_mib() {
//!     const BUDGET: u64 = 4 << 20;
//!     let m = &zoo::VGG_SMALL;
//!     let p = plan(m, m.input, 10, BUDGET, Mode::NeuroFlux, &PlanOptions::DEFAULT)
//!         .expect("the small VGG plans in 4 MiB");
//!     assert!(p.peak_bytes() <= BUDGET);
//!     for i in 0..p.n_blocks {
//!         let l = p.layout(i);
//!         let floats = (l.bytes() / ELEM_BYTES) as usize;
//!         let mut be = DryRun::new(floats);
//!         step::init_block(&mut be, &l, &mut Rng::new(1)).unwrap();
//!         step::train_step(&mut be, &l, l.batch, &Sgd::default(), 0.1, &mut []).unwrap();
//!         assert_eq!(be.high_water, floats, "block {i}: every planned element is used");
//!         let mut short = DryRun::new(floats - 1);
//!         assert!(step::init_block(&mut short, &l, &mut Rng::new(1)).is_err());
//!     }
//! }
//! # the_small_vgg_trains_in_4_mib();
//! ```
//!
//! (`nf-core/tests/planner.rs` does this for every model of the [`zoo`], every mode and budgets
//! from the smallest feasible one to 8 GiB; `nf-core/tests/exact.rs` shows element by element,
//! on the reference kernels, that no kernel reads or writes outside its regions.)
//!
//! # A static arena sized at compile time (firmware)
//!
//! [`plan::plan`] and the layouts are `const fn`: a firmware plans at compile time, sizes its
//! arena from the plan, and fails to build when the budget is too small (the evaluation of
//! `PLAN` panics). The layouts can be computed by the compiler too, so that they live in flash
//! instead of on the stack:
//!
//! ```
//! use nf_core::layout::{BlockLayout, ELEM_BYTES};
//! use nf_core::optim::Sgd;
//! use nf_core::plan::{plan, Mode, Plan, PlanOptions};
//! use nf_core::reference::ReferenceBackend;
//! use nf_core::rng::Rng;
//! use nf_core::{step, zoo};
//!
//! /// What the training arena may take of the RAM.
//! const BUDGET: u64 = 3 << 20;
//! const OPTIONS: PlanOptions = PlanOptions { b_min: 2, b_max: 16, ..PlanOptions::DEFAULT };
//! /// The plan, made by the compiler.
//! const PLAN: Plan =
//!     match plan(&zoo::VGG_SMALL, zoo::VGG_SMALL.input, 10, BUDGET, Mode::NeuroFlux, &OPTIONS) {
//!         Ok(p) => p,
//!         Err(_) => panic!("the model does not train in BUDGET"),
//!     };
//! const ARENA_FLOATS: usize = PLAN.peak_floats();
//! const _: () = assert!(ARENA_FLOATS as u64 * ELEM_BYTES <= BUDGET);
//! /// The first block's layout, computed by the compiler (a `static` in flash).
//! static FIRST: BlockLayout = PLAN.layout(0);
//!
//! /// The arena: exactly the planned size, no heap. Any way of lending a `static` out once
//! /// will do; on a microcontroller, `cortex_m::singleton!` or a `static mut` borrowed once in
//! /// `main` (as `tests/firmware` does) instead of a lock.
//! static ARENA: std::sync::Mutex<[f32; ARENA_FLOATS]> =
//!     std::sync::Mutex::new([0.0; ARENA_FLOATS]);
//!
//! let mut arena = ARENA.lock().unwrap();
//! let mut be = ReferenceBackend::new(&mut arena[..]);
//! step::init_block(&mut be, &FIRST, &mut Rng::new(7)).unwrap();
//! step::train_step(&mut be, &FIRST, 2, &Sgd::default(), 0.01, &mut []).unwrap();
//! ```
//!
//! One mebibyte is too little for this model, so this does not build:
//!
//! ```compile_fail,E0080
//! use nf_core::plan::{plan, Mode, Plan, PlanOptions};
//! use nf_core::zoo;
//!
//! const BUDGET: u64 = 1 << 20;
//! const OPTIONS: PlanOptions = PlanOptions { b_min: 2, b_max: 16, ..PlanOptions::DEFAULT };
//! const PLAN: Plan =
//!     match plan(&zoo::VGG_SMALL, zoo::VGG_SMALL.input, 10, BUDGET, Mode::NeuroFlux, &OPTIONS) {
//!         Ok(p) => p,
//!         Err(_) => panic!("the model does not train in BUDGET"),
//!     };
//! static ARENA: [f32; PLAN.peak_floats()] = [0.0; PLAN.peak_floats()];
//! ```
//!
//! The firmware in `tests/firmware` (an emulated Cortex-M4 with 128 KiB of RAM) builds on this:
//! its `config.rs` subtracts its other statics and the stack from the RAM before planning, and
//! its `main.rs` hands the `static` arena to the training loop.
//!
//! # Features
//!
//! - `small`: capacities for a microcontroller (at most 8 units per model and 16 ops per
//!   training segment), so that a segment's layout takes about 2 KB of stack instead of 12 KB.
//!   It lowers limits, so only a firmware turns it on.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod collective;
pub mod dryrun;
pub mod error;
pub mod infer;
pub mod layout;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod predict;
pub mod probe;
pub mod reference;
pub mod region;
pub mod rng;
pub mod schedule;
pub mod step;
pub mod tensors;
pub mod zoo;
