//! CUDA backend of NeuroFlux: nf-core's [`Backend`](nf_core::backend::Backend) trait on an
//! NVIDIA GPU.
//!
//! - One device allocation of the plan's bytes, carved into the plan's buffers exactly as the
//!   CPU backend carves its `&mut [f32]` arena (regions are element offsets into it), followed
//!   by a small fixed workspace ([`reserved_bytes`]: per-channel reductions, the loss and its
//!   accumulators, cuBLAS). Nothing is allocated during training.
//! - The kernels of every op are `.cu` files in `nf-cuda/kernels/` ([`kernels`]), compiled by
//!   NVRTC once at start-up for the device's compute capability; GEMMs go to cuBLAS through a
//!   row-major → column-major mapping ([`gemm`]), with TF32 behind an option.
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
//! when it cannot load a CUDA library, [`CudaBackend::new`] first calls [`probe`] (driver,
//! device, NVRTC, cuBLAS), and GPU tests skip with a visible message where no device is present.

#![warn(missing_docs)]

pub mod cuda;
pub mod emu;
pub mod engine;
pub mod gemm;
pub mod kernels;
pub mod profile;
pub mod workspace;

pub use cuda::{
    compile_kernels, preflight, probe, probe_cublas, probe_nvrtc, reserved_bytes, CudaBackend,
    CudaOptions, DeviceInfo, DeviceMemory,
};
pub use emu::{EmuBackend, EmuOptions};
pub use engine::DeviceError;
pub use profile::{Profile, ProfileBackend, ProfileDevice};
pub use workspace::{workspace_floats, ChunkPolicy};

/// Environment variable that turns a skipped GPU test (no driver, device, NVRTC or cuBLAS)
/// into a failure when set to `1` (the GPU check sets it).
pub const REQUIRE_GPU_ENV: &str = "NF_REQUIRE_GPU";

/// Whether the environment demands that the GPU tests really run ([`REQUIRE_GPU_ENV`]).
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1")
}

/// Library file names tried, in order, for the CUDA driver API (`libcuda`).
///
/// `libcuda.so.1` is the name the NVIDIA driver installs (the unversioned `libcuda.so` usually
/// exists only where the CUDA toolkit's development files are installed).
pub const DRIVER_LIBRARY_NAMES: &[&str] = &["libcuda.so.1", "libcuda.so"];

/// Checks, without panicking, whether the CUDA driver library can be loaded.
///
/// Tries each name of [`DRIVER_LIBRARY_NAMES`] and checks that the library it opens exports
/// `cuInit`, the driver API's entry point. It does not initialise the driver or look for a
/// device; it only tells whether calling into cudarc's driver API is safe from panics caused by
/// a missing library.
///
/// # Errors
/// `Err("no CUDA driver found (libcuda.so): ...")`, followed by the loader's message for each
/// name tried, when no name yields a library exporting `cuInit`.
pub fn probe_driver() -> Result<(), String> {
    let mut reasons: Vec<String> = Vec::new();
    for &name in DRIVER_LIBRARY_NAMES {
        // SAFETY: loading a shared library runs its initialisers. The only libraries loaded here
        // are the CUDA driver's, which cudarc itself loads the same way in order to work at all;
        // their initialisers have no preconditions on this process.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(lib) => lib,
            Err(e) => {
                reasons.push(format!("{name}: {}", error_chain(&e)));
                continue;
            }
        };
        // SAFETY: the symbol is only looked up, never called, so its type does not matter.
        let has_entry = unsafe { lib.get::<unsafe extern "C" fn()>(b"cuInit\0") }.is_ok();
        if has_entry {
            // Keep the driver loaded for the life of the process, as cudarc does: unloading and
            // reloading libcuda gains nothing and some driver versions dislike `dlclose`.
            std::mem::forget(lib);
            return Ok(());
        }
        reasons.push(format!("{name}: loaded, but it does not export cuInit"));
    }
    Err(format!(
        "no CUDA driver found (libcuda.so): {}",
        reasons.join("; ")
    ))
}

/// `e` followed by its sources (libloading puts the loader's own message in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_driver_reports_instead_of_panicking() {
        match probe_driver() {
            Ok(()) => println!("CUDA driver found ({})", DRIVER_LIBRARY_NAMES.join(" or ")),
            Err(e) => {
                assert!(
                    e.starts_with("no CUDA driver found (libcuda.so): "),
                    "unexpected message: {e}"
                );
                // Written straight to the stderr handle: the test harness captures `println!`
                // and `eprintln!` of passing tests, and a skip must be visible in CI logs.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: no CUDA driver ({e})");
            }
        }
    }
}
