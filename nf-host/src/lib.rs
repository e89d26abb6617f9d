//! Host runner for NeuroFlux: the library behind the `nf` binary.
//!
//! - [`cli`]: the command line (clap) and the commands behind it.
//! - [`size`]: memory sizes on the command line (`64MiB`, `1.5GiB`) and in reports.
//! - [`plan_report`]: a plan as a table for people and as JSON for programs.
//! - [`data`]: data sets (IDX, CIFAR binary, synthetic) with validated loading.
//! - [`feed`]: block inputs from the data, the activation cache or recomputation.
//! - [`train`]: `nf train`, the block-sequential training run with checkpoints and reports.
//! - [`eval`]: `nf eval`, accuracy and throughput of model files.
//! - [`store`]: named tensors, safetensors model files and atomic checkpoint writes.
//! - [`progress`]: progress bars and log lines.
pub mod cli;
pub mod data;
pub mod eval;
pub mod fast_cpu;
pub mod feed;
pub mod memory;
pub mod model_meta;
pub mod plan_report;
pub mod progress;
pub mod size;
pub mod store;
pub mod train;
