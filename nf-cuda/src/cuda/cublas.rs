//! cuBLAS: its handle (created, given the backend's stream and workspace, and destroyed without
//! a panic), the size of its workspace, and the GEMM calls (f32: `cublasSgemm` and
//! `cublasSgemmStridedBatched`; bf16 operands: `cublasGemmStridedBatchedEx`).
//!
//! cudarc's own `CudaBlas` unwraps `cublasDestroy` when it is dropped; after a sticky device
//! fault that call fails, and the panic, raised while a failing test unwinds, aborts the whole
//! test binary. [`BlasHandle`] destroys the handle once, explicitly, and ignores the error.
use std::ffi::c_void;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::sys as drv_sys;

use crate::error::{failed, CudaError};
use crate::gemm::{CublasGemm, GemmPrecision, Trans};

/// cuBLAS workspace NVIDIA recommends for a device of compute capability `cc`
/// (`cublasSetWorkspace`): 32 MiB from 9.0 (Hopper) on, 4 MiB before (the size of cuBLAS's own
/// default pool).
pub const fn recommended_cublas_workspace(cc: (i32, i32)) -> usize {
    if cc.0 >= 9 {
        32 << 20
    } else {
        4 << 20
    }
}

/// The cuBLAS workspace of a run under a budget of `budget` bytes on a device of compute
/// capability `cc`: NVIDIA's recommended size ([`recommended_cublas_workspace`]), but never more
/// than an eighth of the budget: the largest power of two not above `budget / 8` when that is
/// smaller (0 below 256 bytes, cuBLAS's alignment). A small budget thus keeps a small workspace
/// and leaves the rest to the arena: 4 MiB from a 32 MiB budget on any GPU (today's default),
/// 32 MiB from 256 MiB on Hopper, 8 MiB from 64 MiB.
///
/// The workspace is part of the backend's reserve ([`super::reserved_bytes`]), which the
/// planner subtracts from the budget, so the plan depends on the GPU's generation: a run
/// resumed on another generation plans differently and is refused with one line.
pub const fn cublas_workspace_bytes(cc: (i32, i32), budget: u64) -> usize {
    let recommended = recommended_cublas_workspace(cc);
    let eighth = budget / 8;
    if eighth >= recommended as u64 {
        return recommended;
    }
    if eighth < 256 {
        return 0;
    }
    // The largest power of two <= eighth (< recommended, so it fits usize).
    1usize << (63 - eighth.leading_zeros())
}

/// A cuBLAS handle bound to one stream.
pub(crate) struct BlasHandle {
    handle: blas_sys::cublasHandle_t,
}

impl BlasHandle {
    /// A handle whose work goes to `stream` (the context must be current), in FP32 or, with
    /// `tf32`, allowed TF32 tensor cores.
    pub(crate) fn new(stream: drv_sys::CUstream, tf32: bool) -> Result<Self, CudaError> {
        let handle = blas::create_handle().map_err(|e| failed(format!("cublasCreate: {e:?}")))?;
        let h = BlasHandle { handle };
        // SAFETY: a valid handle and stream.
        unsafe { blas::set_stream(h.handle, stream as _) }
            .map_err(|e| failed(format!("cublasSetStream: {e:?}")))?;
        let math = if tf32 {
            blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a valid handle.
        unsafe { blas_sys::cublasSetMathMode(h.handle, math) }
            .result()
            .map_err(|e| failed(format!("cublasSetMathMode: {e:?}")))?;
        Ok(h)
    }

    /// Give cuBLAS `bytes` of device memory at `ptr` as its workspace (null and 0: none, so
    /// that it touches no memory of ours).
    ///
    /// # Safety
    /// The handle must be live (not destroyed); the memory must stay allocated, and be used by
    /// nothing else, until another workspace is set or the handle is destroyed.
    pub(crate) unsafe fn set_workspace(&self, ptr: u64, bytes: usize) -> Result<(), CudaError> {
        // SAFETY: by this function's contract.
        unsafe { blas_sys::cublasSetWorkspace_v2(self.handle, ptr as *mut c_void, bytes) }
            .result()
            .map_err(|e| failed(format!("cublasSetWorkspace: {e:?}")))
    }

    /// Destroy the handle (once; later calls do nothing).
    pub(crate) fn destroy(&mut self) -> Result<(), CudaError> {
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        if handle.is_null() {
            return Ok(());
        }
        // SAFETY: a handle created by `new`, destroyed once (it is null from now on).
        unsafe { blas::destroy_handle(handle) }.map_err(|e| failed(format!("cublasDestroy: {e:?}")))
    }

    /// Run `g` (already checked by [`crate::gemm::check_gemm`] against the allocation at
    /// `base`).
    ///
    /// # Safety
    /// The handle must be live and every operand of `g` must lie inside a live device
    /// allocation that starts at `base`.
    pub(crate) unsafe fn sgemm(&self, g: &CublasGemm, base: u64) -> Result<(), CudaError> {
        if self.handle.is_null() {
            return Err(failed("cuBLAS GEMM after the handle was destroyed"));
        }
        if g.operands == GemmPrecision::Bf16 {
            // SAFETY: by this function's contract.
            return unsafe { self.gemm_bf16(g, base) };
        }
        let ptr = |off: usize| (base + 4 * off as u64) as *const f32;
        // SAFETY: by this function's contract; alpha and beta are host values (the default
        // pointer mode).
        let r = unsafe {
            if g.batch == 1 {
                blas::sgemm(
                    self.handle,
                    op(g.transa),
                    op(g.transb),
                    g.m,
                    g.n,
                    g.k,
                    &g.alpha,
                    ptr(g.a),
                    g.lda,
                    ptr(g.b),
                    g.ldb,
                    &g.beta,
                    ptr(g.c) as *mut f32,
                    g.ldc,
                )
            } else {
                blas::sgemm_strided_batched(
                    self.handle,
                    op(g.transa),
                    op(g.transb),
                    g.m,
                    g.n,
                    g.k,
                    &g.alpha,
                    ptr(g.a),
                    g.lda,
                    g.stride_a,
                    ptr(g.b),
                    g.ldb,
                    g.stride_b,
                    &g.beta,
                    ptr(g.c) as *mut f32,
                    g.ldc,
                    g.stride_c,
                    g.batch,
                )
            }
        };
        r.map_err(|e| failed(format!("cuBLAS GEMM {g:?}: {e:?}")))
    }
}

fn op(t: Trans) -> blas_sys::cublasOperation_t {
    match t {
        Trans::N => blas_sys::cublasOperation_t::CUBLAS_OP_N,
        Trans::T => blas_sys::cublasOperation_t::CUBLAS_OP_T,
    }
}

impl BlasHandle {
    /// `g` with bf16 operands: `cublasGemmStridedBatchedEx` with A and B `CUDA_R_16BF`, C
    /// `CUDA_R_32F`, `CUBLAS_COMPUTE_32F` (tensor cores; the handle's math mode does not
    /// matter for a 16-bit input), `CUBLAS_GEMM_DEFAULT`. A's and B's offsets count bf16
    /// elements from `base`.
    ///
    /// # Safety
    /// As [`BlasHandle::sgemm`].
    unsafe fn gemm_bf16(&self, g: &CublasGemm, base: u64) -> Result<(), CudaError> {
        use blas_sys::cudaDataType_t::{CUDA_R_16BF, CUDA_R_32F};
        let half = |off: usize| (base + 2 * off as u64) as *const c_void;
        let c = (base + 4 * g.c as u64) as *mut c_void;
        // SAFETY: by this function's contract; alpha and beta are host f32 values, as
        // CUBLAS_COMPUTE_32F requires in the default pointer mode.
        unsafe {
            blas::gemm_strided_batched_ex(
                self.handle,
                op(g.transa),
                op(g.transb),
                g.m,
                g.n,
                g.k,
                (&g.alpha as *const f32).cast(),
                half(g.a),
                CUDA_R_16BF,
                g.lda,
                g.stride_a,
                half(g.b),
                CUDA_R_16BF,
                g.ldb,
                g.stride_b,
                (&g.beta as *const f32).cast(),
                c,
                CUDA_R_32F,
                g.ldc,
                g.stride_c,
                g.batch,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| failed(format!("cuBLAS bf16 GEMM {g:?}: {e:?}")))
    }
}

impl Drop for BlasHandle {
    /// Destroys the handle if [`BlasHandle::destroy`] has not; an error (a sticky fault) is
    /// ignored, never a panic.
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_by_generation_and_budget() {
        const MIB: u64 = 1 << 20;
        let (hopper, ampere) = ((9, 0), (8, 0));
        assert_eq!(recommended_cublas_workspace(hopper), 32 << 20);
        assert_eq!(recommended_cublas_workspace((10, 0)), 32 << 20);
        assert_eq!(recommended_cublas_workspace(ampere), 4 << 20);
        assert_eq!(recommended_cublas_workspace((8, 9)), 4 << 20);
        // Large budgets: the recommendation.
        assert_eq!(cublas_workspace_bytes(hopper, 1024 * MIB), 32 << 20);
        assert_eq!(cublas_workspace_bytes(hopper, 256 * MIB), 32 << 20);
        assert_eq!(cublas_workspace_bytes(ampere, 1024 * MIB), 4 << 20);
        // Small budgets keep a small workspace: at most an eighth, a power of two.
        assert_eq!(cublas_workspace_bytes(hopper, 255 * MIB), 16 << 20);
        assert_eq!(cublas_workspace_bytes(hopper, 64 * MIB), 8 << 20);
        assert_eq!(cublas_workspace_bytes(hopper, 32 * MIB), 4 << 20);
        assert_eq!(cublas_workspace_bytes(ampere, 32 * MIB), 4 << 20);
        assert_eq!(cublas_workspace_bytes(ampere, 16 * MIB), 2 << 20);
        assert_eq!(cublas_workspace_bytes(ampere, 3000), 256);
        assert_eq!(cublas_workspace_bytes(ampere, 2047), 0);
        for budget in [0, 1, 4096, 5 * MIB, 100 * MIB, 300 * MIB, 1 << 40] {
            for cc in [hopper, ampere] {
                let ws = cublas_workspace_bytes(cc, budget) as u64;
                assert!(ws <= budget / 8 && ws <= recommended_cublas_workspace(cc) as u64);
                assert!(ws == 0 || (ws.is_power_of_two() && ws >= 256), "{ws}");
            }
        }
    }
}
