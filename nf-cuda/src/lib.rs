//! CUDA backend of NeuroFlux: nf-core's [`Backend`](nf_core::backend::Backend) trait on an
//! NVIDIA GPU.
//!
//! - One device allocation of the plan's bytes, carved into the plan's buffers exactly as the
//!   CPU backend carves its `&mut [f32]` arena (regions are element offsets into it), followed
//!   by a small workspace ([`reserved_bytes`]: per-channel reductions, the loss and its
//!   accumulators, and cuBLAS's, sized by the GPU's generation and the budget:
//!   [`cublas_workspace_bytes`]). Nothing is allocated during training.
//! - The kernels of every op are `.cu` files in `nf-cuda/kernels/` ([`kernels`]), compiled by
//!   NVRTC once at start-up for the device's compute capability; GEMMs go to cuBLAS through a
//!   row-major → column-major mapping ([`gemm`]), with TF32 behind an option, or with bf16
//!   operands on tensor cores ([`GemmPrecision::Bf16`], `nf train --precision bf16`: the
//!   operands rounded to bf16 by a kernel into scratch the plan gives, f32 accumulation).
//! - Convolutions run in chunks of samples unrolled side by side, one GEMM per product per
//!   chunk, the chunk as large as the kernel workspace the plan gives ([`workspace`]); a
//!   training step never waits for the host (the loss is accumulated on the device).
//! - The backend logic is written once ([`engine`]) over a [`Device`](engine::Device): the
//!   CUDA device ([`cuda`]), the CPU emulation ([`emu`]), which compiles the same kernel
//!   sources with the host C++ compiler and runs them thread by thread, or a device that only
//!   counts what it is asked ([`profile`]). The emulation is how the kernels, the launch logic
//!   and the cuBLAS parameters are tested without a GPU; the counts are the launch profile of
//!   a step (`benches/gpu_profile.rs`).
//!
//! It uses [cudarc] with CUDA 13 bindings loaded at run time (`dynamic-loading`), so the crate
//! builds, and its host-side logic is tested, on machines without CUDA. Because cudarc panics
//! when it cannot load a CUDA library, [`CudaBackend::new`] first calls [`detect`] (driver,
//! device, NVRTC, cuBLAS, each of CUDA 13).
//!
//! Every fallible function returns a [`CudaError`], which says whether no usable GPU is here
//! ([`CudaError::Unavailable`]: GPU tests skip with a visible message, `nf train --device auto`
//! takes the CPU) or one is and something failed ([`CudaError::Failed`]).

#![warn(missing_docs)]

pub mod cuda;
pub mod emu;
pub mod engine;
mod error;
pub mod gemm;
pub mod kernels;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod profile;
pub mod workspace;

pub use cuda::{
    compile_kernels, cublas_workspace_bytes, detect, detect_cublas, detect_driver, detect_nvrtc,
    preflight, reserved_bytes, CudaBackend, CudaOptions, DeviceInfo, DeviceMemory,
    DRIVER_LIBRARY_NAMES,
};
pub use emu::{EmuBackend, EmuOptions};
pub use error::CudaError;
pub use gemm::GemmPrecision;
pub use profile::{Profile, ProfileBackend, ProfileDevice};
pub use workspace::{workspace_floats, workspace_floats_aligned, workspace_floats_in, ChunkPolicy};

/// Environment variable that turns a skipped GPU test (no driver, device, NVRTC or cuBLAS)
/// into a failure when set to `1` (the GPU check sets it).
pub const REQUIRE_GPU_ENV: &str = "NF_REQUIRE_GPU";

/// Whether the environment demands that the GPU tests really run ([`REQUIRE_GPU_ENV`]).
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1")
}
