//! The backend logic, written once over a [`Device`]: how every operation of nf-core's
//! [`Backend`] trait becomes kernel launches and GEMMs on one device memory.
//!
//! The device memory is the plan's arena (offsets `0..arena`, carved by the layout's regions
//! exactly as on the CPU) followed by a small device workspace this backend needs beyond the
//! plan ([`REDUCE_FLOATS`] elements: per-channel reductions, the loss rows, and the
//! accumulators of the deferred scores; see [`crate::reserved_bytes`]). [`Engine`] over
//! [`crate::cuda::CudaDevice`] is the CUDA backend; over [`crate::emu::EmuDevice`] the same
//! logic runs the same kernel sources on the CPU, which is how it is tested on machines without
//! a GPU, and over [`crate::profile::ProfileDevice`] it only counts what it would ask a GPU.
//!
//! One module per op, named as nf-core names its reference (`nf_core::ops::*`, `optim`) and as
//! the kernel file it launches (`kernels/*.cu`): [`conv2d`] (im2col + one GEMM per chunk of
//! samples, the chunk as large as the kernel workspace the plan gives), `batchnorm`, `pool`,
//! `linear`, `activation` (ReLU, residual addition), `loss` (softmax cross-entropy and the
//! deferred scores), `optim` (SGD); `reduce` holds the per-channel reductions that batch norm
//! and the bias gradients share; [`bf16`] the rounding of GEMM operands to bf16 under
//! [`GemmPrecision::Bf16`] ([`Engine::set_gemm_precision`]).
//!
//! A training step never waits for the host: the loss and correct counts stay in device
//! accumulators until [`Backend::take_scores`], and [`Backend::sync`] only checks for errors
//! ([`Device::poll`]). With `NF_CUDA_SYNC_EACH=1` in the environment (or
//! [`Engine::set_sync_each`]) every launch and GEMM is followed by a wait, so that a kernel
//! fault is reported under the name of the call that caused it instead of at the next wait.
//!
//! Errors: operations do not fail individually; the first error is recorded, later operations
//! are skipped, and [`Backend::sync`] returns it.
use nf_core::backend::{Backend, SCORE_SLOTS};
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::region::Region;

use crate::error::failed;
pub use crate::error::CudaError;
use crate::gemm::{gemm_call, GemmPrecision, RowGemm};
use crate::kernels::{check_args, Arg, Kernel};

mod activation;
mod batchnorm;
pub mod bf16;
pub mod conv2d;
mod linear;
mod loss;
mod optim;
mod pool;
mod reduce;

pub use conv2d::{
    conv_chunk, conv_chunk_aligned, conv_chunk_floats, conv_chunk_floats_in, conv_chunk_in,
    conv_sample_floats,
};

/// Elements of the device workspace after the arena (1 MiB): reductions, the loss rows and,
/// at its end, the [`SCORE_FLOATS`] accumulators of the deferred scores.
pub const REDUCE_FLOATS: usize = 1 << 18;

/// Elements of the deferred-score accumulators: 4 per slot (loss and correct count, each as a
/// hi + lo pair of floats).
pub const SCORE_FLOATS: usize = 4 * SCORE_SLOTS;

/// Default upper bound on the partial sums per channel of a reduction.
pub const MAX_PARTS: usize = 1024;

/// Environment variable that makes every launch and GEMM wait for the device
/// ([`Engine::set_sync_each`]) when set to `1`.
pub const SYNC_EACH_ENV: &str = "NF_CUDA_SYNC_EACH";

type Res = Result<(), CudaError>;

/// Whether the environment asks every call to wait ([`SYNC_EACH_ENV`] is `1`).
pub fn sync_each_env() -> bool {
    std::env::var(SYNC_EACH_ENV).is_ok_and(|v| v == "1")
}

/// What the engine needs from a device: one memory of `f32` elements addressed by offset,
/// kernel launches, GEMMs and synchronisation. Work may be queued; `download` and `sync`
/// wait for it, `poll` does not.
pub trait Device {
    /// Elements of the device memory (arena and workspace).
    fn mem_len(&self) -> usize;
    /// Copy `src` to the memory at `offset` (queued after earlier work; `src` may be reused
    /// when the call returns). A device that holds memory refuses a range outside it.
    fn upload(&mut self, offset: usize, src: &[f32]) -> Res;
    /// Copy the memory at `offset` to `dst`, after all queued work (a host synchronisation).
    /// A device that holds memory refuses a range outside it.
    fn download(&mut self, offset: usize, dst: &mut [f32]) -> Res;
    /// Launch `k` over `threads` logical threads (grid-stride kernels: any grid is correct)
    /// with `args`.
    ///
    /// # Safety
    /// `args` must pass [`check_args`] for this device's [`Device::mem_len`], and the sizes
    /// among them must describe accesses inside the buffers they come with (a kernel trusts
    /// its size arguments: a buffer of 4 elements with a length of 8 is written past its
    /// end, in host memory on the emulated device).
    unsafe fn launch(&mut self, k: Kernel, threads: usize, args: &[Arg]) -> Res;
    /// Run one `cublasSgemmStridedBatched` call (with bf16 operands one
    /// `cublasGemmStridedBatchedEx` call). A device that computes refuses a call that
    /// fails [`crate::gemm::check_gemm`] for its memory (the counting device computes nothing
    /// and only records it).
    fn gemm(&mut self, g: &crate::gemm::CublasGemm) -> Res;
    /// Wait for all queued work; report a device error.
    fn sync(&mut self) -> Res;
    /// Report a device error of the work done so far, without waiting for queued work.
    fn poll(&mut self) -> Res;
}

/// nf-core's backend over a [`Device`].
pub struct Engine<D: Device> {
    dev: D,
    arena: usize,
    /// Reductions and loss rows.
    red: Region,
    /// Deferred-score accumulators ([`SCORE_FLOATS`]).
    scores: Region,
    max_parts: usize,
    sync_each: bool,
    /// `NF_CUDA_SYNC_EACH=1` was set: sync-each stays on whatever the caller asks.
    sync_each_forced: bool,
    /// Alignment, in elements, of the GEMM operands the engine places itself (inside a
    /// convolution's workspace); 1: packed ([`Engine::set_region_align`]).
    align: usize,
    /// The element type of the convolutions' and linear layers' GEMM operands.
    precision: GemmPrecision,
    err: Option<CudaError>,
}

pub(crate) fn i32_of(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| failed(format!("{what} = {v} is too large for a kernel")))
}

pub(crate) fn i64_of(v: usize) -> Arg {
    Arg::I64(v as i64)
}

/// Check that `len` elements at `offset` lie inside a device memory of `mem` elements.
pub(crate) fn check_range(offset: usize, len: usize, mem: usize) -> Res {
    match offset.checked_add(len) {
        Some(end) if end <= mem => Ok(()),
        _ => Err(failed(format!(
            "access of {len} elements at {offset} past the device memory ({mem})"
        ))),
    }
}

/// Check that `r` holds at least `len` elements.
pub(crate) fn need(r: Region, len: usize, what: &str) -> Res {
    if r.len() < len {
        return Err(failed(format!(
            "{what}: region of {} elements, {len} needed",
            r.len()
        )));
    }
    Ok(())
}

impl<D: Device> Engine<D> {
    /// The backend over `dev`, whose memory is the arena (`arena` elements) followed by the
    /// device workspace. Waits after every call when `NF_CUDA_SYNC_EACH=1`.
    ///
    /// # Errors
    /// The device memory is smaller than `arena + REDUCE_FLOATS`, or clearing the score
    /// accumulators failed.
    pub fn from_device(dev: D, arena: usize) -> Result<Self, CudaError> {
        if dev.mem_len() < arena + REDUCE_FLOATS {
            return Err(failed(format!(
                "device memory of {} elements is smaller than the arena ({arena}) and the \
                 reduction workspace ({REDUCE_FLOATS})",
                dev.mem_len()
            )));
        }
        let mut e = Engine {
            dev,
            arena,
            red: Region::new(arena, REDUCE_FLOATS - SCORE_FLOATS),
            scores: Region::new(arena + REDUCE_FLOATS - SCORE_FLOATS, SCORE_FLOATS),
            max_parts: MAX_PARTS,
            sync_each: sync_each_env(),
            sync_each_forced: sync_each_env(),
            align: 1,
            precision: GemmPrecision::F32,
            err: None,
        };
        e.fill_at(e.scores, 0.0)?;
        Ok(e)
    }

    /// Align the GEMM operands the engine places in a convolution's workspace (the
    /// channel-major block after the columns) to `bytes`, as the plan aligns its regions
    /// (`nf_core::plan::PlanOptions::region_align`; 4, the default, packs them). The plan must
    /// have sized the workspace for it ([`crate::workspace::workspace_floats_aligned`]).
    pub fn set_region_align(&mut self, bytes: usize) {
        self.align = (bytes / 4).max(1);
    }

    /// Run the convolutions' and linear layers' GEMMs with operands of `p` (f32, the default;
    /// or bf16: rounded from f32 into scratch in the kernel workspace, f32 accumulation and
    /// output, see [`bf16`]). The plan must have sized the workspace for it
    /// ([`crate::ChunkPolicy::precision`]); a workspace sized for f32 gives bf16 convolutions
    /// smaller chunks, and linear layers an error.
    pub fn set_gemm_precision(&mut self, p: GemmPrecision) {
        self.precision = p;
    }

    /// The precision of [`Engine::set_gemm_precision`].
    pub fn gemm_precision(&self) -> GemmPrecision {
        self.precision
    }

    /// The alignment of [`Engine::set_region_align`], in elements.
    pub fn region_align_elems(&self) -> usize {
        self.align
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Use at most `parts` partial sums per channel in reductions (tests use small values to
    /// make every partial walk over several planes).
    pub fn set_max_parts(&mut self, parts: usize) {
        self.max_parts = parts.max(1);
    }

    /// Wait for the device after every launch and GEMM and report a failure under that call's
    /// name (`NF_CUDA_SYNC_EACH=1` sets it at construction): slow, for finding a faulting
    /// kernel.
    ///
    /// With `NF_CUDA_SYNC_EACH=1` in the environment it stays on: whoever runs a program (the
    /// GPU check's rerun of a failing test or run) decides, not the code it runs.
    pub fn set_sync_each(&mut self, on: bool) {
        self.sync_each = on || self.sync_each_forced;
    }

    /// Whether every call waits for the device ([`Engine::set_sync_each`]).
    pub fn sync_each(&self) -> bool {
        self.sync_each
    }

    /// Run `f` unless an error is already recorded; record its error.
    fn run(&mut self, f: impl FnOnce(&mut Self) -> Res) {
        if self.err.is_some() {
            return;
        }
        if let Err(e) = f(self) {
            self.err = Some(e);
        }
    }

    /// Wait after a call in sync-each mode, naming the call in the error.
    fn after(&mut self, what: impl FnOnce() -> String) -> Res {
        if self.sync_each {
            self.dev
                .sync()
                .map_err(|e| failed(format!("{} failed ({SYNC_EACH_ENV}=1): {e}", what())))?;
        }
        Ok(())
    }

    pub(crate) fn launch(&mut self, k: Kernel, threads: usize, args: &[Arg]) -> Res {
        if threads == 0 {
            return Ok(());
        }
        // The kernels index in 32 bits (kernels/prelude.cuh).
        if threads > i32::MAX as usize {
            return Err(failed(format!(
                "{}: {threads} threads; a launch must have fewer than 2^31",
                k.name()
            )));
        }
        check_args(k, args, self.dev.mem_len())?;
        // SAFETY: the arguments passed `check_args`; the engine's operations (this module's
        // submodules, crate-private) build every size argument from the regions they pass,
        // which they check against the shapes with `need` where a region comes from the
        // caller. The emulated tests run each operation on the CPU against the reference
        // backend and check that no element outside its outputs changes.
        unsafe { self.dev.launch(k, threads, args)? };
        self.after(|| format!("kernel {} ({threads} threads)", k.name()))
    }

    pub(crate) fn fill_at(&mut self, r: Region, v: f32) -> Res {
        self.launch(
            Kernel::Fill,
            r.len(),
            &[Arg::Buf(r), i64_of(r.len()), Arg::F32(v)],
        )
    }

    /// Issue `g` (degenerate shapes handled here: nothing for an empty C, zeros for `k = 0`).
    pub(crate) fn gemm(&mut self, g: RowGemm) -> Res {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        if g.k == 0 {
            // C = beta·C: the backend only uses beta 0 (overwrite) and 1 (accumulate).
            if g.beta == 0.0 {
                for p in 0..g.batch {
                    self.fill_at(Region::new(g.c + p * g.stride_c, g.m * g.n), 0.0)?;
                }
            }
            return Ok(());
        }
        let call = gemm_call(&g)?;
        self.dev.gemm(&call)?;
        self.after(|| {
            format!(
                "cuBLAS GEMM m={} n={} k={} batch={}",
                g.m, g.n, g.k, g.batch
            )
        })
    }
}

impl<D: Device> Backend for Engine<D> {
    type Error = CudaError;

    fn arena_len(&self) -> usize {
        self.arena
    }

    fn write(&mut self, dst: Region, src: &[f32]) {
        self.run(|e| {
            if dst.len() != src.len() || dst.end() > e.arena {
                return Err(failed(format!(
                    "write of {} elements to {dst:?} (arena {})",
                    src.len(),
                    e.arena
                )));
            }
            e.dev.upload(dst.offset, src)?;
            e.after(|| format!("upload of {} elements", src.len()))
        });
    }

    fn read(&mut self, src: Region, dst: &mut [f32]) {
        if self.err.is_none() {
            let r = if src.len() != dst.len() || src.end() > self.arena {
                Err(failed(format!(
                    "read of {} elements from {src:?} (arena {})",
                    dst.len(),
                    self.arena
                )))
            } else {
                self.dev.download(src.offset, dst)
            };
            if let Err(e) = r {
                self.err = Some(e);
            }
        }
        if self.err.is_some() {
            dst.fill(f32::NAN);
        }
    }

    fn fill(&mut self, dst: Region, value: f32) {
        self.run(|e| e.fill_at(dst, value));
    }

    fn copy(&mut self, src: Region, dst: Region) {
        self.run(|e| {
            if src.len() != dst.len() || src.overlaps(&dst) {
                return Err(failed(format!("copy {src:?} -> {dst:?}")));
            }
            e.launch(
                Kernel::Copy,
                src.len(),
                &[Arg::Buf(src), Arg::Buf(dst), i64_of(src.len())],
            )
        });
    }

    /// Reports the first recorded error, or a device error found without waiting
    /// ([`Device::poll`]; [`Device::sync`] in sync-each mode).
    fn sync(&mut self) -> Result<(), Self::Error> {
        let r = if self.sync_each {
            self.dev.sync()
        } else {
            self.dev.poll()
        };
        match self.err.take() {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn conv_forward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        bias: Region,
        y: Region,
        cols: Region,
    ) {
        self.run(|e| e.conv_forward_impl(g, x, w, bias, y, cols));
    }

    fn conv_backward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        dy: Region,
        dw: Region,
        db: Region,
        dx: Region,
        cols: Region,
    ) {
        self.run(|e| e.conv_backward_impl(g, x, w, dy, dw, db, dx, cols));
    }

    fn bn_forward_train(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        y: Region,
        invstd: Region,
        running: Region,
    ) {
        self.run(|e| e.bn_forward_train_impl(d, x, gamma_beta, y, invstd, running));
    }

    fn bn_forward_eval(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        running: Region,
        y: Region,
    ) {
        self.run(|e| e.bn_forward_eval_impl(d, x, gamma_beta, running, y));
    }

    fn bn_backward(
        &mut self,
        d: &Nchw,
        xhat: Region,
        gamma_beta: Region,
        invstd: Region,
        dy: Region,
        dgamma_beta: Region,
    ) {
        self.run(|e| e.bn_backward_impl(d, xhat, gamma_beta, invstd, dy, dgamma_beta));
    }

    fn relu_forward(&mut self, x: Region) {
        self.run(|e| e.relu_forward_impl(x));
    }

    fn relu_backward(&mut self, y: Region, dy: Region) {
        self.run(|e| e.relu_backward_impl(y, dy));
    }

    fn add_assign(&mut self, y: Region, x: Region) {
        self.run(|e| e.add_assign_impl(y, x));
    }

    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) {
        self.run(|e| e.maxpool_forward_impl(d, x, y));
    }

    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {
        self.run(|e| e.maxpool_backward_impl(d, x, dy, dx));
    }

    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {
        self.run(|e| e.avgpool_forward_impl(d, s, x, y));
    }

    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {
        self.run(|e| e.avgpool_backward_impl(d, s, dy, dx));
    }

    fn linear_forward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        y: Region,
        ws: Region,
    ) {
        self.run(|e| e.linear_forward_impl(n, fin, fout, x, wb, y, ws));
    }

    fn linear_backward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        dy: Region,
        dwb: Region,
        dx: Region,
        ws: Region,
    ) {
        self.run(|e| e.linear_backward_impl(n, fin, fout, x, wb, dy, dwb, dx, ws));
    }

    /// Deferred: returns `(0.0, 0)` and adds the batch's scores to accumulator `slot` on the
    /// device (`(NaN, 0)` once an error is recorded).
    fn softmax_xent(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
        slot: usize,
    ) -> (f32, u32) {
        self.run(|e| e.softmax_xent_impl(n, classes, logits, labels, dlogits, slot));
        if self.err.is_some() {
            (f32::NAN, 0)
        } else {
            (0.0, 0)
        }
    }

    fn defers_scores(&self) -> bool {
        true
    }

    fn take_scores(&mut self, out: &mut [(f32, u32)]) {
        self.run(|e| e.take_scores_impl(out));
    }

    fn sgd(&mut self, opt: &Sgd, lr: f32, param: Region, grad: Region, mom: Region) {
        self.run(|e| e.sgd_impl(opt, lr, param, grad, mom));
    }
}
