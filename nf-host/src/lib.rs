//! Host runner for NeuroFlux: the library behind the `nf` binary.
//!
//! - [`cli`]: the command line (clap): the subcommands and `nf plan`.
//! - [`plan_args`]: the argument groups every planning command shares, their limits and parsers.
//! - [`error`]: a command's one-line error and its exit code.
//! - [`capacity`]: what memory the process may get; allocations that fail instead of aborting.
//! - [`run_plan`]: the plan of a run: its memory contract and the plan that keeps it.
//! - [`model_meta`]: the validated metadata of a model file.
//! - [`size`]: memory sizes on the command line (`64MiB`, `1.5GiB`) and in reports.
//! - [`plan_report`]: a plan as a table for people and as JSON for programs.
//! - [`precision_plan`]: `nf plan --precision`: element sizes per region and smallest budgets.
//! - [`precision`]: `--precision f32|bf16` of `nf train` and `nf eval` (the GEMMs' operands).
//! - [`data`]: data sets (IDX, CIFAR binary, synthetic) with validated loading.
//! - [`architecture`]: what `--model` accepts (zoo names, compact descriptions, JSON files).
//! - [`feed`]: block inputs from the data, the activation cache or recomputation.
//! - [`parallel`]: the ranks of a data-parallel run (MPI with the `mpi` feature, threads).
//! - [`train`]: `nf train`, the block-sequential training run with checkpoints and reports.
//! - [`eval`]: `nf eval`, accuracy and throughput of model files.
//! - [`export`]: `nf export`, a model file as an ONNX file.
//! - [`report`]: `nf report`, the HTML report with charts of runs (and `nf plan --svg`).
//! - [`output`]: output targets checked against the inputs, the run lock of `--out`.
//! - [`store`]: named tensors, safetensors model files and atomic checkpoint writes.
//! - [`strict_json`]: JSON inputs read with duplicate keys refused.
//! - [`progress`]: progress bars and log lines.
//!
//! The kernels come from [`nf_cpu`] (the fast CPU backend) and [`nf_cuda`]; this crate holds no
//! `unsafe` code.
#![forbid(unsafe_code)]
pub mod architecture;
pub mod capacity;
pub mod cli;
pub mod data;
pub mod device_model;
pub mod error;
pub mod eval;
pub mod export;
pub mod feed;
pub mod limits;
pub mod model_meta;
pub mod output;
pub mod parallel;
pub mod plan_args;
pub mod plan_report;
pub mod precision;
pub mod precision_plan;
pub mod progress;
pub mod report;
pub mod run_plan;
pub mod size;
pub mod store;
pub mod strict_json;
pub mod train;
