//! The CUDA device: cudarc's driver API (one context, one stream, one allocation), the kernels
//! compiled by NVRTC at start-up for the device's compute capability ([`compile_kernels`]), and
//! cuBLAS for GEMMs.
//!
//! cudarc loads `libcuda`, `libnvrtc` and `libcublas` at run time and panics when one is
//! missing, so [`detect`] checks each library (and that a device exists) before anything calls
//! into cudarc, and turns a missing piece into a one-line [`CudaError::Unavailable`].
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::{
    result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaModule, CudaStream,
};
use cudarc::nvrtc::Ptx;

use crate::engine::{check_range, Device, Engine, REDUCE_FLOATS};
use crate::error::{failed, CudaError};
use crate::gemm::{check_gemm, CublasGemm};
use crate::kernels::{pack_args, Arg, Kernel, MAX_ARGS};

mod compile;
mod cublas;
mod detect;
mod release;

pub use compile::{compile_kernels, compile_kernels_with};
use cublas::BlasHandle;
pub use cublas::{cublas_workspace_bytes, recommended_cublas_workspace};
use detect::drv_err;
pub use detect::{
    check_major, cublas_version, detect, detect_cublas, detect_driver, detect_nvrtc,
    driver_version, mapped_cuda_libraries, nvrtc_version, preflight, DeviceInfo, CUDA_MAJOR,
    DRIVER_LIBRARY_NAMES,
};
use release::{release, Release};

/// Default size of the cuBLAS workspace (inside the backend's device allocation): 4 MiB, what
/// [`cublas_workspace_bytes`] gives any GPU under a 32 MiB budget. A run sizes it for its GPU
/// and budget with [`CudaOptions::for_device`].
pub const DEFAULT_CUBLAS_WORKSPACE: usize = 4 << 20;

/// Alignment of the cuBLAS workspace (cuBLAS requires 256 bytes).
const WORKSPACE_ALIGN: usize = 256;

/// Threads per block of every launch.
const BLOCK: u32 = 256;

/// Options of the CUDA backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// Device ordinal.
    pub ordinal: usize,
    /// Let cuBLAS use TF32 tensor cores for the GEMMs (faster, about 3 decimal digits).
    pub tf32: bool,
    /// Bytes of cuBLAS workspace.
    pub cublas_workspace_bytes: usize,
    /// Let NVRTC contract multiplies and adds into FMAs (`--fmad=true`, faster; results then
    /// differ from the reference kernels by a rounding in the last place).
    pub fmad: bool,
}

impl Default for CudaOptions {
    /// Device 0, full FP32 GEMMs, 4 MiB of cuBLAS workspace, FMA contraction on.
    fn default() -> Self {
        CudaOptions {
            ordinal: 0,
            tf32: false,
            cublas_workspace_bytes: DEFAULT_CUBLAS_WORKSPACE,
            fmad: true,
        }
    }
}

impl CudaOptions {
    /// The defaults with the cuBLAS workspace sized for `device` under a budget of `budget`
    /// bytes ([`cublas_workspace_bytes`]).
    pub fn for_device(device: &DeviceInfo, budget: u64) -> Self {
        CudaOptions {
            cublas_workspace_bytes: cublas_workspace_bytes(device.compute_capability, budget),
            ..CudaOptions::default()
        }
    }
}

/// Device bytes the backend allocates beyond the plan's arena: the reduction workspace
/// ([`REDUCE_FLOATS`] elements), alignment padding and the cuBLAS workspace. The planner should
/// plan with `budget − reserved_bytes(opts)` so that the whole allocation fits the budget.
pub const fn reserved_bytes(opts: &CudaOptions) -> u64 {
    (REDUCE_FLOATS * 4 + WORKSPACE_ALIGN + opts.cublas_workspace_bytes) as u64
}

/// Device memory as the driver reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes of the device.
    pub total_bytes: u64,
    /// Bytes in use right after the context was created (the context itself and other
    /// processes), before the backend loaded anything.
    pub used_before_bytes: u64,
    /// Largest use seen whenever the backend waited for the device (a read, the scores, a wait
    /// in sync-each mode), minus `used_before_bytes`: what the backend (kernels, cuBLAS, its
    /// allocation) took at the peak, beyond the CUDA context.
    pub peak_bytes: u64,
    /// Bytes of the backend's one allocation: the arena plus [`reserved_bytes`].
    pub allocation_bytes: u64,
    /// Bytes of the arena (the plan).
    pub arena_bytes: u64,
}

/// The CUDA device of the backend.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
    _module: Arc<CudaModule>,
    blas: BlasHandle,
    /// The one allocation (0 once freed).
    base: drv_sys::CUdeviceptr,
    /// `base` for those who queue work on the arena from outside the backend (NCCL), set to 0
    /// before the allocation is freed.
    live_base: Arc<AtomicU64>,
    len: usize,
    max_grid: u32,
    info: DeviceInfo,
    memory: DeviceMemory,
}

fn used_now() -> Result<u64, CudaError> {
    let (free, total) = drv::mem_get_info().map_err(|e| drv_err("cuMemGetInfo", e))?;
    Ok((total - free) as u64)
}

impl CudaDevice {
    /// Detect, create the context, compile and load the kernels, create cuBLAS, and allocate
    /// `arena` elements plus the backend's workspace in one allocation.
    ///
    /// # Errors
    /// One line naming what failed: [`CudaError::Unavailable`] from [`detect`], else
    /// [`CudaError::Failed`].
    pub fn new(arena: usize, opts: &CudaOptions) -> Result<Self, CudaError> {
        let info = detect(opts.ordinal)?;
        let ctx = CudaContext::new(opts.ordinal).map_err(|e| drv_err("cuCtx", e))?;
        let used_before = used_now()?;
        let stream = ctx.new_stream().map_err(|e| drv_err("cuStreamCreate", e))?;
        let (major, minor) = info.compute_capability;
        let cubin = compile_kernels_with(&format!("sm_{major}{minor}"), opts.fmad)?;
        let module = ctx
            .load_module(Ptx::from_binary(cubin))
            .map_err(|e| drv_err("cuModuleLoadData", e))?;
        let funcs = Kernel::ALL
            .iter()
            .map(|k| {
                module
                    .load_function(k.name())
                    .map_err(|e| drv_err(k.name(), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let blas = BlasHandle::new(stream.cu_stream(), opts.tf32)?;
        // One allocation: arena, reduction workspace, padding to 256 bytes, cuBLAS workspace.
        let red_end = (arena + REDUCE_FLOATS) * 4;
        let ws_at = red_end.div_ceil(WORKSPACE_ALIGN) * WORKSPACE_ALIGN;
        let bytes = ws_at + opts.cublas_workspace_bytes;
        // SAFETY: plain allocation; freed once, by `release` (Drop).
        let base = unsafe { drv::malloc_sync(bytes) }.map_err(|e| {
            drv_err(
                &format!("cannot allocate {bytes} bytes of device memory for the arena"),
                e,
            )
        })?;
        let mut dev = CudaDevice {
            ctx,
            stream,
            funcs,
            _module: module,
            blas,
            base,
            live_base: Arc::new(AtomicU64::new(base)),
            len: arena + REDUCE_FLOATS,
            max_grid: info.multiprocessors * 32,
            memory: DeviceMemory {
                total_bytes: info.total_bytes,
                used_before_bytes: used_before,
                peak_bytes: 0,
                allocation_bytes: bytes as u64,
                arena_bytes: (arena * 4) as u64,
            },
            info,
        };
        // Offsets aligned by the plan are aligned addresses only from an aligned base
        // (cudaMalloc's are on 256 bytes); `dev` frees the allocation on this error.
        if base % nf_core::layout::GEMM_ALIGN as u64 != 0 {
            return Err(failed(format!(
                "the device allocation at {base:#x} is not aligned to {} bytes",
                nf_core::layout::GEMM_ALIGN
            )));
        }
        if opts.cublas_workspace_bytes > 0 {
            // SAFETY: the handle is live; the workspace lies inside the allocation, is used by
            // nothing else, and is detached before the allocation is freed (`release`).
            unsafe {
                dev.blas
                    .set_workspace(base + ws_at as u64, opts.cublas_workspace_bytes)?
            };
        }
        dev.note_memory()?;
        Ok(dev)
    }

    /// What [`detect`] found.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Device memory as the driver reports it.
    pub fn memory(&self) -> DeviceMemory {
        self.memory
    }

    fn note_memory(&mut self) -> Result<(), CudaError> {
        let used = used_now()?;
        let mine = used.saturating_sub(self.memory.used_before_bytes);
        self.memory.peak_bytes = self.memory.peak_bytes.max(mine);
        Ok(())
    }

    /// The stream, the arena's base address (0 once freed) and its length in elements: what
    /// queues work on the arena from outside the backend (the NCCL collective).
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    pub(crate) fn arena_handle(&self) -> (Arc<CudaStream>, Arc<AtomicU64>, usize) {
        (self.stream.clone(), self.live_base.clone(), self.len)
    }

    fn bind(&self) -> Result<(), CudaError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv_err("cuCtxSetCurrent", e))
    }
}

impl Release for CudaDevice {
    fn wait(&mut self) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: a valid stream.
        unsafe { drv::stream::synchronize(self.stream.cu_stream()) }
            .map_err(|e| drv_err("cuStreamSynchronize", e))
    }

    fn detach_workspace(&mut self) -> Result<(), CudaError> {
        // SAFETY: null and 0: cuBLAS keeps no pointer into the allocation.
        unsafe { self.blas.set_workspace(0, 0) }
    }

    fn destroy_blas(&mut self) -> Result<(), CudaError> {
        self.blas.destroy()
    }

    fn free(&mut self) -> Result<(), CudaError> {
        let base = std::mem::replace(&mut self.base, 0);
        self.live_base.store(0, Ordering::SeqCst);
        if base == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: allocated by malloc_sync in `new`, freed once (`base` is 0 from now on);
        // nothing uses it any more (queued work finished, cuBLAS detached and destroyed).
        unsafe { drv::free_sync(base) }.map_err(|e| drv_err("cuMemFree", e))
    }
}

impl Drop for CudaDevice {
    /// Releases the device in the order of `release.rs`; errors (a sticky fault) are ignored:
    /// a drop, which may run while a failing test unwinds, never panics.
    fn drop(&mut self) {
        let _ = release(self);
    }
}

impl Device for CudaDevice {
    fn mem_len(&self) -> usize {
        self.len
    }

    fn upload(&mut self, offset: usize, src: &[f32]) -> Result<(), CudaError> {
        check_range(offset, src.len(), self.len)?;
        self.bind()?;
        // SAFETY: the destination lies inside the allocation (checked above). From
        // pageable memory the copy has consumed `src` when the call returns.
        unsafe {
            drv::memcpy_htod_async(self.base + 4 * offset as u64, src, self.stream.cu_stream())
        }
        .map_err(|e| drv_err("cuMemcpyHtoDAsync", e))
    }

    fn download(&mut self, offset: usize, dst: &mut [f32]) -> Result<(), CudaError> {
        check_range(offset, dst.len(), self.len)?;
        self.bind()?;
        // SAFETY: the source lies inside the allocation (checked above); the stream
        // is synchronised before `dst` is used.
        unsafe {
            drv::memcpy_dtoh_async(dst, self.base + 4 * offset as u64, self.stream.cu_stream())
                .and_then(|()| drv::stream::synchronize(self.stream.cu_stream()))
        }
        .map_err(|e| drv_err("cuMemcpyDtoHAsync", e))?;
        self.note_memory()
    }

    unsafe fn launch(&mut self, k: Kernel, threads: usize, args: &[Arg]) -> Result<(), CudaError> {
        self.bind()?;
        let grid = threads.div_ceil(BLOCK as usize).min(self.max_grid as usize) as u32;
        let mut slots = [0u64; MAX_ARGS];
        pack_args(args, self.base, &mut slots);
        let mut params: [*mut c_void; MAX_ARGS] = [std::ptr::null_mut(); MAX_ARGS];
        for (p, s) in params.iter_mut().zip(slots.iter_mut()) {
            *p = s as *mut u64 as *mut c_void;
        }
        // SAFETY: by this function's contract the arguments match the kernel's parameters
        // (arity and kinds), every pointer is inside the allocation and the sizes keep the
        // kernel inside its buffers; `slots` outlives the call, which copies the values.
        unsafe {
            drv::launch_kernel(
                self.funcs[k as usize].cu_function(),
                (grid.max(1), 1, 1),
                (BLOCK, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params[..args.len()],
            )
        }
        .map_err(|e| drv_err(k.name(), e))
    }

    fn gemm(&mut self, g: &CublasGemm) -> Result<(), CudaError> {
        check_gemm(g, self.len)?;
        self.bind()?;
        // SAFETY: `check_gemm` verified the call as cuBLAS does and that every operand of
        // every batch lies inside the allocation at `base`, which is live while `self` is.
        unsafe { self.blas.sgemm(g, self.base) }
    }

    fn sync(&mut self) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: a valid stream.
        unsafe { drv::stream::synchronize(self.stream.cu_stream()) }
            .map_err(|e| drv_err("cuStreamSynchronize", e))?;
        self.note_memory()
    }

    fn poll(&mut self) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: a valid stream; cuStreamQuery does not wait, and reports errors of earlier
        // asynchronous work.
        let r = unsafe { drv_sys::cuStreamQuery(self.stream.cu_stream()) };
        match r {
            drv_sys::CUresult::CUDA_SUCCESS | drv_sys::CUresult::CUDA_ERROR_NOT_READY => Ok(()),
            e => Err(drv_err("cuStreamQuery", drv::DriverError(e))),
        }
    }
}

/// nf-core's backend on a CUDA device.
pub type CudaBackend = Engine<CudaDevice>;

impl Engine<CudaDevice> {
    /// The CUDA backend with an arena of `arena` elements (`Plan::peak_floats()`), in one
    /// device allocation together with [`reserved_bytes`] of workspace.
    ///
    /// # Errors
    /// One line: [`CudaError::Unavailable`] for no driver, no device, no NVRTC or cuBLAS (or
    /// not CUDA 13's); [`CudaError::Failed`] for a kernel that does not compile, not enough
    /// device memory or another failed call.
    pub fn new(arena: usize, opts: &CudaOptions) -> Result<Self, CudaError> {
        let dev = CudaDevice::new(arena, opts)?;
        Engine::from_device(dev, arena)
    }

    /// Device memory as the driver reports it (peak over the waits so far).
    pub fn memory(&self) -> DeviceMemory {
        self.device().memory()
    }
}
