//! NeuroFlux: memory-budgeted CNN training with adaptive local learning.
//!
//! This facade re-exports the four crates so that the cross-crate tests in `tests/` and the
//! benchmarks in `benches/` can name them in one place.
pub use nf_core as core;
pub use nf_cpu as cpu;
pub use nf_cuda as cuda;
pub use nf_host as host;
