//! The CPU emulation of the device: the same kernel sources compiled by the host C++ compiler
//! under `kernels/host_shim.h`, and cuBLAS replaced by [`crate::gemm::sgemm_colmajor_reference`]
//! (which also runs the bf16 GEMMs of `--precision bf16` as `cublasGemmStridedBatchedEx` would:
//! bf16 operands read from the memory's 16-bit halves, f32 output).
//!
//! [`EmuBackend`] is the CUDA backend's logic ([`Engine`]) over this device. Tests compare it
//! with nf-core's reference backend op by op and over whole training steps, which checks the
//! kernels, the host-side launch logic (chunking, workspace use, argument lists) and the cuBLAS
//! call parameters on machines without a GPU.
//!
//! The kernel library is built on first use: the shim, the kernel sources and one generated
//! wrapper per kernel (which runs the launch's blocks and threads one after another, forwards
//! or backwards) are written to a directory under the system temporary directory named after
//! a hash of the source, and compiled with `$CXX` (default `c++`) into a shared library that is
//! then loaded. A launch uses a deliberately small grid (so grid-stride loops run several
//! rounds) and can run its threads in reverse order (so a kernel that depends on the order of
//! its threads gives different results).
//!
//! The device records what it is asked to do ([`EmuDevice::profile`]: launches per kernel,
//! GEMM shapes, host synchronisations, transfers), as [`crate::profile::ProfileDevice`] does
//! without computing.
use std::ffi::c_void;
use std::process::Command;
use std::sync::OnceLock;

use crate::engine::{check_range, Device, Engine, REDUCE_FLOATS};
use crate::error::{failed, CudaError};
use crate::gemm::{sgemm_colmajor_reference, CublasGemm};
use crate::kernels::{pack_args, program_source, signature, Arg, Kernel, HOST_SHIM, MAX_ARGS};
use crate::profile::Profile;

/// The signature of a generated wrapper: `(kernelParams, grid, block, reverse)`.
type EmuFn = unsafe extern "C" fn(*mut *mut c_void, u32, u32, i32);

/// The loaded kernel library.
struct EmuLib {
    _lib: libloading::Library,
    fns: Vec<EmuFn>,
}

/// Flags of the host compiler (no contraction into FMA: the reference ops do not fuse).
const CXX_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-shared",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// The C++ translation unit: shim, kernels, launch coordinates and one wrapper per kernel.
pub fn emulation_source() -> String {
    let mut s = String::new();
    s.push_str("#line 1 \"host_shim.h\"\n");
    s.push_str(HOST_SHIM);
    s.push_str(&program_source());
    s.push_str("#line 1 \"nf_emu_wrappers.cpp\"\n");
    s.push_str("thread_local nf_dim3 blockIdx, blockDim, threadIdx, gridDim;\n");
    for k in Kernel::ALL {
        let sig = signature(*k);
        let args: Vec<String> = sig
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| format!("*({}*)a[{i}]", p.c_type))
            .collect();
        s.push_str(&format!(
            "extern \"C\" void nf_emu_{name}(void** a, unsigned grid, unsigned block, int reverse) {{\n\
             \x20   (void)a;\n\
             \x20   gridDim = nf_dim3{{grid, 1, 1}};\n\
             \x20   blockDim = nf_dim3{{block, 1, 1}};\n\
             \x20   for (unsigned bi = 0; bi < grid; ++bi) {{\n\
             \x20       unsigned b = reverse ? grid - 1 - bi : bi;\n\
             \x20       for (unsigned ti = 0; ti < block; ++ti) {{\n\
             \x20           unsigned t = reverse ? block - 1 - ti : ti;\n\
             \x20           blockIdx = nf_dim3{{b, 0, 0}};\n\
             \x20           threadIdx = nf_dim3{{t, 0, 0}};\n\
             \x20           {name}({args});\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n",
            name = sig.name,
            args = args.join(", ")
        ));
    }
    s
}

/// FNV-1a, to name the build directory after its inputs.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn build() -> Result<EmuLib, CudaError> {
    let src = emulation_source();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let mut key: Vec<&str> = vec![&src, &cxx];
    key.extend_from_slice(CXX_FLAGS);
    let dir = std::env::temp_dir().join(format!("nf-cuda-emu-{:016x}", fnv(&key)));
    let lib_path = dir.join("libnfemu.so");
    if !lib_path.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        // Unique names for this process: parallel test binaries may build at the same time;
        // the rename at the end is atomic.
        let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id())
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let src_path = dir.join(format!("nfemu-{tag}.cpp"));
        let tmp_lib = dir.join(format!("libnfemu-{tag}.so"));
        std::fs::write(&src_path, &src)
            .map_err(|e| failed(format!("{}: {e}", src_path.display())))?;
        let out = Command::new(&cxx)
            .args(CXX_FLAGS)
            .arg("-o")
            .arg(&tmp_lib)
            .arg(&src_path)
            .output()
            .map_err(|e| {
                CudaError::Unavailable(format!("cannot run the host C++ compiler `{cxx}`: {e}"))
            })?;
        if !out.status.success() {
            return Err(failed(format!(
                "the host C++ compiler `{cxx}` rejected the kernels ({}):\n{}",
                src_path.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::fs::rename(&tmp_lib, &lib_path)
            .map_err(|e| failed(format!("{}: {e}", lib_path.display())))?;
        let _ = std::fs::remove_file(&src_path);
    }
    // SAFETY: the library was just built from the kernel sources and generated wrappers; its
    // initialisers only set up thread-local storage.
    let lib = unsafe { libloading::Library::new(&lib_path) }
        .map_err(|e| failed(format!("{}: {e}", lib_path.display())))?;
    let mut fns = Vec::new();
    for k in Kernel::ALL {
        let sym = format!("nf_emu_{}\0", k.name());
        // SAFETY: every wrapper is generated above with exactly this signature.
        let f: EmuFn = unsafe { lib.get::<EmuFn>(sym.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| failed(format!("{}: {e}", k.name())))?;
        fns.push(f);
    }
    Ok(EmuLib { _lib: lib, fns })
}

fn library() -> Result<&'static EmuLib, CudaError> {
    static LIB: OnceLock<Result<EmuLib, CudaError>> = OnceLock::new();
    LIB.get_or_init(build).as_ref().map_err(Clone::clone)
}

/// How the emulated device launches kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuOptions {
    /// Threads per block.
    pub block: u32,
    /// Most blocks per launch (grid-stride loops cover the rest).
    pub max_grid: u32,
    /// Run blocks and threads in reverse order.
    pub reverse: bool,
}

impl Default for EmuOptions {
    /// 32 threads per block, at most 5 blocks, forward order.
    fn default() -> Self {
        EmuOptions {
            block: 32,
            max_grid: 5,
            reverse: false,
        }
    }
}

/// Bytes the emulated device's memory is aligned to: as `cudaMalloc`'s allocations (256).
pub const BASE_ALIGN: usize = 256;

/// Elements allocated beyond the memory to align its start.
const BASE_PAD: usize = BASE_ALIGN / 4 - 1;

/// The emulated device: host memory, kernels from the compiled library, the reference GEMM.
pub struct EmuDevice {
    lib: &'static EmuLib,
    /// The allocation; the device memory is `buf[base..base + len]`.
    buf: Vec<f32>,
    /// First element of the memory in `buf`: where the address is a multiple of
    /// [`BASE_ALIGN`] bytes, as `cudaMalloc`'s is (256).
    base: usize,
    /// Elements of the memory.
    len: usize,
    opts: EmuOptions,
    profile: Profile,
}

impl EmuDevice {
    /// A device of `len` elements (filled with NaN, like uninitialised device memory that a
    /// correct backend never reads before writing).
    ///
    /// # Errors
    /// The kernel library could not be built or loaded.
    pub fn new(len: usize, opts: EmuOptions) -> Result<Self, CudaError> {
        Self::with_memory(vec![f32::NAN; len + BASE_PAD], len, opts)
    }

    /// A device of `len` elements of zeros, which the operating system commits page by page
    /// as they are first written (a zeroed allocation is not written to): for tests that
    /// address more memory than they touch, such as offsets past 2^32 elements. Reading an
    /// untouched element gives 0, so such a test plants every value it reads.
    ///
    /// # Errors
    /// The kernel library could not be built or loaded.
    pub fn zeroed(len: usize, opts: EmuOptions) -> Result<Self, CudaError> {
        Self::with_memory(vec![0.0; len + BASE_PAD], len, opts)
    }

    /// A device over `buf` (`len` + [`BASE_PAD`] elements): its memory starts at the first
    /// element of `buf` whose address is a multiple of [`BASE_ALIGN`] bytes, so that aligned
    /// offsets are aligned addresses, as on a GPU.
    fn with_memory(buf: Vec<f32>, len: usize, opts: EmuOptions) -> Result<Self, CudaError> {
        let addr = buf.as_ptr() as usize;
        let base = (addr.next_multiple_of(BASE_ALIGN) - addr) / 4;
        debug_assert!(base + len <= buf.len());
        Ok(EmuDevice {
            lib: library()?,
            buf,
            base,
            len,
            opts,
            profile: Profile {
                allocations: 1,
                ..Profile::default()
            },
        })
    }

    /// The memory.
    pub fn mem(&self) -> &[f32] {
        &self.buf[self.base..self.base + self.len]
    }

    fn mem_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.base..self.base + self.len]
    }

    /// Kernel launches and GEMM calls so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.profile.total_launches(),
            self.profile.gemms.len() as u64,
        )
    }

    /// Everything it was asked to do so far.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
}

impl Device for EmuDevice {
    fn mem_len(&self) -> usize {
        self.len
    }

    fn upload(&mut self, offset: usize, src: &[f32]) -> Result<(), CudaError> {
        check_range(offset, src.len(), self.len)?;
        self.mem_mut()[offset..offset + src.len()].copy_from_slice(src);
        self.profile.upload(src.len());
        Ok(())
    }

    fn download(&mut self, offset: usize, dst: &mut [f32]) -> Result<(), CudaError> {
        check_range(offset, dst.len(), self.len)?;
        dst.copy_from_slice(&self.mem()[offset..offset + dst.len()]);
        self.profile.download(dst.len());
        Ok(())
    }

    unsafe fn launch(&mut self, k: Kernel, threads: usize, args: &[Arg]) -> Result<(), CudaError> {
        let block = self.opts.block.max(1);
        let grid = threads
            .div_ceil(block as usize)
            .min(self.opts.max_grid.max(1) as usize) as u32;
        let mut slots = [0u64; MAX_ARGS];
        pack_args(args, self.mem_mut().as_mut_ptr() as u64, &mut slots);
        let mut ptrs: [*mut c_void; MAX_ARGS] = [std::ptr::null_mut(); MAX_ARGS];
        for (p, s) in ptrs.iter_mut().zip(slots.iter_mut()) {
            *p = s as *mut u64 as *mut c_void;
        }
        let f = self.lib.fns[k as usize];
        // SAFETY: by this function's contract the arguments match the kernel's signature (the
        // wrapper reads `args.len()` parameters of those kinds), every pointer is the memory's
        // base plus the offset of a buffer inside the memory, and the size arguments keep the
        // kernel's accesses inside those buffers.
        unsafe { f(ptrs.as_mut_ptr(), grid, block, i32::from(self.opts.reverse)) };
        self.profile.launch(k);
        Ok(())
    }

    fn gemm(&mut self, g: &CublasGemm) -> Result<(), CudaError> {
        self.profile.gemm(g);
        sgemm_colmajor_reference(self.mem_mut(), g)
    }

    fn sync(&mut self) -> Result<(), CudaError> {
        self.profile.waits += 1;
        Ok(())
    }

    fn poll(&mut self) -> Result<(), CudaError> {
        self.profile.polls += 1;
        Ok(())
    }
}

/// The CUDA backend's logic over the emulated device.
pub type EmuBackend = Engine<EmuDevice>;

impl Engine<EmuDevice> {
    /// An emulated backend with an arena of `arena` elements (plus the device workspace).
    ///
    /// # Errors
    /// The kernel library could not be built or loaded.
    pub fn emulated(arena: usize, opts: EmuOptions) -> Result<Self, CudaError> {
        let dev = EmuDevice::new(arena + REDUCE_FLOATS, opts)?;
        Engine::from_device(dev, arena)
    }
}
