//! The CUDA device: cudarc's driver API (one context, one stream, one allocation), the kernels
//! compiled by NVRTC at start-up for the device's compute capability, and cuBLAS for GEMMs.
//!
//! cudarc loads `libcuda`, `libnvrtc` and `libcublas` at run time and panics when one is
//! missing, so [`probe`] checks each library (and that a device exists) before anything calls
//! into cudarc, and turns a missing piece into a one-line error.
use std::ffi::{c_void, CStr};
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaModule, CudaStream,
};
use cudarc::nvrtc::{result as rtc, sys as rtc_sys, Ptx};

use crate::engine::{check_range, Device, DeviceError, Engine, REDUCE_FLOATS};

mod probe;
use crate::gemm::{check_gemm, CublasGemm, Trans};
use crate::kernels::{pack_args, program_source, Arg, Kernel, MAX_ARGS};
use probe::drv_err;
pub use probe::{
    cublas_version, driver_version, mapped_cuda_libraries, nvrtc_version, preflight, probe,
    probe_cublas, probe_nvrtc, DeviceInfo,
};

/// Default size of the cuBLAS workspace (inside the backend's device allocation).
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

/// Device bytes the backend allocates beyond the plan's arena: the reduction workspace
/// ([`REDUCE_FLOATS`] elements), alignment padding and the cuBLAS workspace. The planner should
/// plan with `budget − reserved_bytes(opts)` so that the whole allocation fits the budget.
pub const fn reserved_bytes(opts: &CudaOptions) -> u64 {
    (REDUCE_FLOATS * 4 + WORKSPACE_ALIGN + opts.cublas_workspace_bytes) as u64
}

/// Compile every kernel with NVRTC for `arch` (e.g. `sm_90`) and return the CUBIN, with FMA
/// contraction (the backend's default, [`CudaOptions::fmad`]).
///
/// Needs only NVRTC (no driver, no device); call [`probe_nvrtc`] first, since cudarc panics
/// when the library is missing.
///
/// # Errors
/// The compiler's log when a kernel does not compile.
pub fn compile_kernels(arch: &str) -> Result<Vec<u8>, String> {
    compile_kernels_with(arch, true)
}

/// [`compile_kernels`], with FMA contraction (`--fmad=true`) or without (the kernels then round
/// exactly like the reference ops and the emulation, which is compiled with
/// `-ffp-contract=off`).
///
/// # Errors
/// The compiler's log when a kernel does not compile.
pub fn compile_kernels_with(arch: &str, fmad: bool) -> Result<Vec<u8>, String> {
    let src = std::ffi::CString::new(program_source()).map_err(|e| e.to_string())?;
    let prog = rtc::create_program(&src, Some(c"nf_kernels.cu"))
        .map_err(|e| format!("nvrtcCreateProgram: {e:?}"))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        format!("--fmad={fmad}"),
    ];
    // SAFETY: `prog` was created above and is destroyed once, at the end.
    let result = unsafe {
        match rtc::compile_program(prog, &opts) {
            Ok(()) => {
                let mut size = 0usize;
                let r = rtc_sys::nvrtcGetCUBINSize(prog, &mut size).result();
                let mut bin = vec![0u8; size];
                r.and_then(|()| rtc_sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast()).result())
                    .map(|()| bin)
                    .map_err(|e| format!("nvrtcGetCUBIN: {e:?}"))
            }
            Err(e) => {
                let log = rtc::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(format!(
                    "NVRTC could not compile the kernels for {arch} ({e:?}):\n{log}"
                ))
            }
        }
    };
    // SAFETY: as above.
    let _ = unsafe { rtc::destroy_program(prog) };
    result
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
    blas: CudaBlas,
    base: drv_sys::CUdeviceptr,
    len: usize,
    max_grid: u32,
    info: DeviceInfo,
    memory: DeviceMemory,
}

fn used_now() -> Result<u64, String> {
    let (free, total) = drv::mem_get_info().map_err(|e| drv_err("cuMemGetInfo", e))?;
    Ok((total - free) as u64)
}

impl CudaDevice {
    /// Probe, create the context, compile and load the kernels, create cuBLAS, and allocate
    /// `arena` elements plus the backend's workspace in one allocation.
    ///
    /// # Errors
    /// One line naming what failed (see [`probe`]).
    pub fn new(arena: usize, opts: &CudaOptions) -> Result<Self, String> {
        let info = probe(opts.ordinal)?;
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
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cublasCreate: {e:?}"))?;
        let math = if opts.tf32 {
            blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a valid handle.
        unsafe { blas_sys::cublasSetMathMode(*blas.handle(), math) }
            .result()
            .map_err(|e| format!("cublasSetMathMode: {e:?}"))?;
        // One allocation: arena, reduction workspace, padding to 256 bytes, cuBLAS workspace.
        let red_end = (arena + REDUCE_FLOATS) * 4;
        let ws_at = red_end.div_ceil(WORKSPACE_ALIGN) * WORKSPACE_ALIGN;
        let bytes = ws_at + opts.cublas_workspace_bytes;
        // SAFETY: plain allocation; freed in Drop.
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
            len: arena + REDUCE_FLOATS,
            max_grid: info.multiprocessors * 32,
            info,
            memory: DeviceMemory {
                total_bytes: 0,
                used_before_bytes: used_before,
                peak_bytes: 0,
                allocation_bytes: bytes as u64,
                arena_bytes: (arena * 4) as u64,
            },
        };
        dev.memory.total_bytes = dev.info.total_bytes;
        if opts.cublas_workspace_bytes > 0 {
            // SAFETY: the workspace lies inside the allocation and is used by nothing else.
            unsafe {
                blas_sys::cublasSetWorkspace_v2(
                    *dev.blas.handle(),
                    (base + ws_at as u64) as *mut c_void,
                    opts.cublas_workspace_bytes,
                )
            }
            .result()
            .map_err(|e| format!("cublasSetWorkspace: {e:?}"))?;
        }
        dev.note_memory()?;
        Ok(dev)
    }

    /// What [`probe`] found.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Device memory as the driver reports it.
    pub fn memory(&self) -> DeviceMemory {
        self.memory
    }

    fn note_memory(&mut self) -> Result<(), String> {
        let used = used_now()?;
        let mine = used.saturating_sub(self.memory.used_before_bytes);
        self.memory.peak_bytes = self.memory.peak_bytes.max(mine);
        Ok(())
    }

    fn bind(&self) -> Result<(), DeviceError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| DeviceError(drv_err("cuCtxSetCurrent", e)))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        if self.bind().is_ok() {
            // SAFETY: queued work is finished first; `base` was allocated by malloc_sync and
            // is freed once.
            unsafe {
                let _ = drv::stream::synchronize(self.stream.cu_stream());
                let _ = drv::free_sync(self.base);
            }
        }
    }
}

fn op(t: Trans) -> blas_sys::cublasOperation_t {
    match t {
        Trans::N => blas_sys::cublasOperation_t::CUBLAS_OP_N,
        Trans::T => blas_sys::cublasOperation_t::CUBLAS_OP_T,
    }
}

impl Device for CudaDevice {
    fn mem_len(&self) -> usize {
        self.len
    }

    fn upload(&mut self, offset: usize, src: &[f32]) -> Result<(), DeviceError> {
        check_range(offset, src.len(), self.len)?;
        self.bind()?;
        // SAFETY: the destination lies inside the allocation (checked above). From
        // pageable memory the copy has consumed `src` when the call returns.
        unsafe {
            drv::memcpy_htod_async(self.base + 4 * offset as u64, src, self.stream.cu_stream())
        }
        .map_err(|e| DeviceError(drv_err("cuMemcpyHtoDAsync", e)))
    }

    fn download(&mut self, offset: usize, dst: &mut [f32]) -> Result<(), DeviceError> {
        check_range(offset, dst.len(), self.len)?;
        self.bind()?;
        // SAFETY: the source lies inside the allocation (checked above); the stream
        // is synchronised before `dst` is used.
        unsafe {
            drv::memcpy_dtoh_async(dst, self.base + 4 * offset as u64, self.stream.cu_stream())
                .and_then(|()| drv::stream::synchronize(self.stream.cu_stream()))
        }
        .map_err(|e| DeviceError(drv_err("cuMemcpyDtoHAsync", e)))?;
        self.note_memory().map_err(DeviceError)
    }

    unsafe fn launch(
        &mut self,
        k: Kernel,
        threads: usize,
        args: &[Arg],
    ) -> Result<(), DeviceError> {
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
        .map_err(|e| DeviceError(drv_err(k.name(), e)))
    }

    fn gemm(&mut self, g: &CublasGemm) -> Result<(), DeviceError> {
        check_gemm(g, self.len).map_err(DeviceError)?;
        self.bind()?;
        let ptr = |off: usize| (self.base + 4 * off as u64) as *const f32;
        // SAFETY: `check_gemm` verified the call as cuBLAS does and that every operand of
        // every batch lies inside the allocation; alpha and beta are host values (the default
        // pointer mode).
        let r = unsafe {
            if g.batch == 1 {
                blas::sgemm(
                    *self.blas.handle(),
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
                    *self.blas.handle(),
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
        r.map_err(|e| DeviceError(format!("cuBLAS GEMM {g:?}: {e:?}")))
    }

    fn sync(&mut self) -> Result<(), DeviceError> {
        self.bind()?;
        // SAFETY: a valid stream.
        unsafe { drv::stream::synchronize(self.stream.cu_stream()) }
            .map_err(|e| DeviceError(drv_err("cuStreamSynchronize", e)))?;
        self.note_memory().map_err(DeviceError)
    }

    fn poll(&mut self) -> Result<(), DeviceError> {
        self.bind()?;
        // SAFETY: a valid stream; cuStreamQuery does not wait, and reports errors of earlier
        // asynchronous work.
        let r = unsafe { drv_sys::cuStreamQuery(self.stream.cu_stream()) };
        match r {
            drv_sys::CUresult::CUDA_SUCCESS | drv_sys::CUresult::CUDA_ERROR_NOT_READY => Ok(()),
            e => Err(DeviceError(drv_err("cuStreamQuery", drv::DriverError(e)))),
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
    /// One line: no driver, no device, no NVRTC or cuBLAS, a kernel that does not compile,
    /// or not enough device memory.
    pub fn new(arena: usize, opts: &CudaOptions) -> Result<Self, String> {
        let dev = CudaDevice::new(arena, opts)?;
        Engine::from_device(dev, arena).map_err(|e| e.0)
    }

    /// Device memory as the driver reports it (peak over the waits so far).
    pub fn memory(&self) -> DeviceMemory {
        self.device().memory()
    }
}
