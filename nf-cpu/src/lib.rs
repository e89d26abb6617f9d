//! The fast CPU backend of NeuroFlux: nf-core's [`Backend`] over a caller-provided `&mut [f32]`
//! arena, with a team of worker threads ([`Pool`]) and a packed, vectorised GEMM ([`gemm`]).
//! The `nf` command line (nf-host) trains on it; this crate has no other dependency than
//! nf-core, so the kernels can be used without the command line.
//!
//! ```no_run
//! use nf_core::backend::Backend;
//! use nf_cpu::{threads, FastCpuBackend, Pool};
//!
//! let pool = Pool::new(threads()); // once per run; plan with `PlanOptions { workers: pool.threads(), .. }`
//! let mut arena = vec![0f32; 1 << 20]; // plan.peak_floats()
//! let mut be = FastCpuBackend::new(&mut arena, &pool);
//! assert_eq!(be.arena_len(), 1 << 20);
//! ```
//!
//! # What it guarantees
//!
//! **Semantics** are those of the reference kernels ([`nf_core::ops`], run by
//! [`nf_core::reference::ReferenceBackend`]), which stay the oracle: ReLU, pooling, the SGD
//! update and the loss give bit-identical results; batch norm differs by rounding only (its
//! statistics are summed in another order); convolution and the linear layer differ only by
//! float rounding (a different summation order, fused multiply-adds). Parameter gradients are
//! overwritten, and absent optional buffers (empty regions) are skipped, exactly as there.
//!
//! **Memory**: every buffer of the step comes from the arena, and nothing is allocated during
//! a step (not even on the first one: `tests/no_alloc.rs`). The convolution and the linear
//! layer take all their temporaries (im2col columns, GEMM packing buffers, the weights packed
//! once per call, partial sums of the weight gradient) from the kernel workspace region the
//! step passes; its exact size for a call on `T` workers is [`workspace::floats`] (or
//! [`workspace::floats_for`] for a given instruction set), which the planner uses to size the
//! region, and every element of it is written (`tests/host_workspace.rs`). Given a smaller
//! region, a kernel uses fewer workers.
//!
//! **Element types**: the backend [stores](Backend::stores) `f32` and bf16 regions (a layout
//! planned with [`nf_core::layout::Precision::Bf16`]). Element-wise kernels load each element
//! as `f32` and round once when they store ([`store`]); convolutions and linear layers on
//! bf16 tensors run the f32 kernels a part of the batch at a time through f32 staging taken
//! from the same workspace ([`staged`], sized by [`staged::floats_for`]): outputs and input
//! gradients are the f32 kernels' on the widened values rounded once (bit for bit), weight
//! gradients are summed over the parts in `f32` (`tests/bf16_storage.rs`).
//!
//! **Threads**: a [`Pool`] of `T` workers (the calling thread is one of them) runs every
//! kernel; convolutions split the batch, the linear layer its rows when the product is large.
//! A pool also fixes the instruction set of its kernels ([`isa`]: the best this CPU has, or the
//! one the `NF_GEMM_ISA` environment variable names), and refuses one the CPU cannot run.
//!
//! **Unsafe code** lives in five places, each block with a `// SAFETY:` comment: the pool's
//! job hand-off (`par.rs`: a borrowed closure shared with the workers, which `Pool::run` keeps
//! alive until every worker is done), the GEMM's intrinsic micro-kernels and their
//! `#[target_feature]` drivers (`gemm/`: x86 intrinsics behind [`Isa::available`] checks),
//! the `#[target_feature]` copies that let element-wise loops vectorise wider (`wide.rs`), and
//! the view of f32 arena words as twice as many bf16 values (`store.rs`: the bf16 GEMM's
//! packing buffers are the f32 ones, and bf16 tensors of the arena are such views), and the
//! AMX tile instructions and permission request (`amx.rs`: inline assembly, reached only
//! through a tile configuration that exists where [`amx::missing`] finds nothing lacking).
//! Every other module is safe code over slices.
//!
//! # Modules
//!
//! Public: [`gemm`] (the GEMM, for benchmarks and other kernels; [`gemm::bf16`] its bf16
//! variant, which the convolutions and linear layers use in [`Precision::Bf16`]),
//! [`precision`] (the operand precision of those GEMMs), [`bf16`] (the bf16 number type),
//! [`store`] (the element types of arena tensors), [`staged`] (convolutions and linear
//! layers on bf16 tensors), [`isa`] (instruction sets), [`amx`] (whether this process may
//! use Intel AMX tiles, and the tile kernel of the bf16 GEMM), [`workspace`] (the workspace sizes
//! the planner needs); `activation`, `batchnorm` and `pool` (for their tests). Inside the crate, one file per op,
//! named as its reference in nf-core ([`nf_core::ops`], [`nf_core::optim`]): `conv2d/`
//! (convolution), `batchnorm`, `pool`, `linear`, `activation` (ReLU, residual add), `optim`
//! (the SGD update); and `par` (the pool and the disjoint splitting of slices among its
//! workers), `wide` (wider vectors for element-wise loops). The loss runs the reference kernel.
pub mod activation;
pub mod amx;
pub mod batchnorm;
pub mod bf16;
mod conv2d;
pub mod gemm;
pub mod isa;
mod linear;
mod optim;
mod par;
pub mod pool;
pub mod precision;
pub mod staged;
pub mod store;
mod wide;
pub mod workspace;

use nf_core::backend::Backend;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::{loss, Nchw};
use nf_core::optim::Sgd;
use nf_core::region::{carve, optional, optional_mut, Elem, Region};
use store::{Store, Tensor};

/// Run `$body` with `$t` bound to the elements of a [`Tensor`], whatever their type.
macro_rules! each {
    ($tensor:expr, |$t:ident| $body:expr) => {
        match $tensor {
            Tensor::F32($t) => $body,
            Tensor::Bf16($t) => $body,
        }
    };
}

/// Whether every region is `f32` (the kernels then run on the arena directly).
fn all_f32(rs: &[Region]) -> bool {
    rs.iter().all(|r| r.elem() == Elem::F32)
}

pub use isa::{available_isas, isa_from_env, Isa};
pub use par::{threads, Pool, MAX_THREADS};
pub use precision::Precision;

/// The fast CPU backend over one arena, running its kernels on a [`Pool`].
pub struct FastCpuBackend<'a> {
    arena: &'a mut [f32],
    pool: &'a Pool,
    precision: Precision,
}

impl std::fmt::Debug for FastCpuBackend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastCpuBackend")
            .field("arena_len", &self.arena.len())
            .field("threads", &self.pool.threads())
            .field("precision", &self.precision)
            .finish()
    }
}

impl<'a> FastCpuBackend<'a> {
    /// A backend over `arena` whose kernels run on `pool` (plan with
    /// `PlanOptions::workers = pool.threads()` and the kernel workspace sized by
    /// [`workspace::floats`], so that every worker gets its share).
    pub fn new(arena: &'a mut [f32], pool: &'a Pool) -> Self {
        Self::with_precision(arena, pool, Precision::F32)
    }
    /// [`FastCpuBackend::new`] whose convolutions and linear layers run their GEMMs on
    /// operands of `precision` ([`precision`]: in bf16 the operands are rounded as they are
    /// packed; the arena, the results and every other op stay f32, and the plan is the same).
    pub fn with_precision(arena: &'a mut [f32], pool: &'a Pool, precision: Precision) -> Self {
        FastCpuBackend {
            arena,
            pool,
            precision,
        }
    }
    /// The operand precision of the convolution's and the linear layer's GEMMs.
    pub fn precision(&self) -> Precision {
        self.precision
    }
    /// The arena.
    pub fn arena(&mut self) -> &mut [f32] {
        self.arena
    }
    /// The pool.
    pub fn pool(&self) -> &'a Pool {
        self.pool
    }
}

impl Backend for FastCpuBackend<'_> {
    type Error = core::convert::Infallible;

    fn arena_len(&self) -> usize {
        self.arena.len()
    }
    fn stores(&self, _elem: Elem) -> bool {
        true
    }
    fn write(&mut self, dst: Region, src: &[f32]) {
        let [d] = carve(self.arena, [dst]);
        each!(Tensor::of(d, dst), |d| store::convert_par(
            self.pool, src, d
        ));
    }
    fn read(&mut self, src: Region, dst: &mut [f32]) {
        let [s] = carve(self.arena, [src]);
        each!(Tensor::of(s, src), |s| store::convert_par(
            self.pool, s, dst
        ));
    }
    fn fill(&mut self, dst: Region, value: f32) {
        let [d] = carve(self.arena, [dst]);
        each!(Tensor::of(d, dst), |d| d.fill(Store::store(value)));
    }
    fn copy(&mut self, src: Region, dst: Region) {
        let [s, d] = carve(self.arena, [src, dst]);
        each!(Tensor::of(s, src), |s| each!(Tensor::of(d, dst), |d| {
            store::convert_par(self.pool, s, d)
        }));
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
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
        let (xr, yr) = (x, y);
        let [x, w, b, y, cols] = carve(self.arena, [x, w, bias, y, cols]);
        if all_f32(&[xr, yr]) {
            conv2d::forward(self.pool, self.precision, g, x, w, optional(b), y, cols);
        } else {
            let (x, y) = (Tensor::of(x, xr), Tensor::of(y, yr));
            staged::conv_forward(self.pool, self.precision, g, x, w, optional(b), y, cols);
        }
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
        let (xr, dyr, dxr) = (x, dy, dx);
        let [x, w, dy, dw, db, dx, cols] = carve(self.arena, [x, w, dy, dw, db, dx, cols]);
        if all_f32(&[xr, dyr, dxr]) {
            conv2d::backward(
                self.pool,
                self.precision,
                g,
                x,
                w,
                dy,
                dw,
                optional_mut(db),
                optional_mut(dx),
                cols,
                false,
            );
        } else {
            staged::conv_backward(
                self.pool,
                self.precision,
                g,
                Tensor::of(x, xr),
                w,
                Tensor::of(dy, dyr),
                dw,
                optional_mut(db),
                (!dxr.is_empty()).then(|| Tensor::of(dx, dxr)),
                cols,
            );
        }
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
        let (xr, yr) = (x, y);
        let [x, gb, y, inv, run] = carve(self.arena, [x, gamma_beta, y, invstd, running]);
        let (g, b) = gb.split_at(d.c);
        let (rm, rv) = run.split_at_mut(d.c);
        each!(Tensor::of(x, xr), |x| each!(Tensor::of(y, yr), |y| {
            batchnorm::forward_train(self.pool, d, x, g, b, y, inv, rm, rv)
        }));
    }
    fn bn_forward_eval(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        running: Region,
        y: Region,
    ) {
        let (xr, yr) = (x, y);
        let [x, gb, run, y] = carve(self.arena, [x, gamma_beta, running, y]);
        let (g, b) = gb.split_at(d.c);
        let (rm, rv) = run.split_at(d.c);
        each!(Tensor::of(x, xr), |x| each!(Tensor::of(y, yr), |y| {
            batchnorm::forward_eval(self.pool, d, x, g, b, rm, rv, y)
        }));
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
        let (xr, dyr) = (xhat, dy);
        let [xh, gb, inv, dy, dgb] = carve(self.arena, [xhat, gamma_beta, invstd, dy, dgamma_beta]);
        let (dg, db) = dgb.split_at_mut(d.c);
        each!(Tensor::of(xh, xr), |xh| each!(Tensor::of(dy, dyr), |dy| {
            batchnorm::backward(self.pool, d, xh, &gb[..d.c], inv, dy, dg, db)
        }));
    }
    fn relu_forward(&mut self, x: Region) {
        let xr = x;
        let [x] = carve(self.arena, [x]);
        each!(Tensor::of(x, xr), |x| activation::relu_forward(
            self.pool, x
        ));
    }
    fn relu_backward(&mut self, y: Region, dy: Region) {
        let (yr, dyr) = (y, dy);
        let [y, dy] = carve(self.arena, [y, dy]);
        each!(Tensor::of(y, yr), |y| each!(Tensor::of(dy, dyr), |dy| {
            activation::relu_backward(self.pool, y, dy)
        }));
    }
    fn add_assign(&mut self, y: Region, x: Region) {
        let (yr, xr) = (y, x);
        let [y, x] = carve(self.arena, [y, x]);
        each!(Tensor::of(y, yr), |y| each!(Tensor::of(x, xr), |x| {
            activation::add_assign(self.pool, y, x)
        }));
    }
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) {
        let (xr, yr) = (x, y);
        let [x, y] = carve(self.arena, [x, y]);
        each!(Tensor::of(x, xr), |x| each!(Tensor::of(y, yr), |y| {
            pool::maxpool_forward(self.pool, d, x, y)
        }));
    }
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {
        let (xr, dyr, dxr) = (x, dy, dx);
        let [x, dy, dx] = carve(self.arena, [x, dy, dx]);
        each!(Tensor::of(x, xr), |x| each!(Tensor::of(dy, dyr), |dy| {
            each!(Tensor::of(dx, dxr), |dx| pool::maxpool_backward(
                self.pool, d, x, dy, dx
            ))
        }));
    }
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {
        let (xr, yr) = (x, y);
        let [x, y] = carve(self.arena, [x, y]);
        each!(Tensor::of(x, xr), |x| each!(Tensor::of(y, yr), |y| {
            pool::avgpool_forward(self.pool, d, s, x, y)
        }));
    }
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {
        let (dyr, dxr) = (dy, dx);
        let [dy, dx] = carve(self.arena, [dy, dx]);
        each!(Tensor::of(dy, dyr), |dy| each!(Tensor::of(dx, dxr), |dx| {
            pool::avgpool_backward(self.pool, d, s, dy, dx)
        }));
    }
    #[allow(clippy::too_many_arguments)]
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
        let (xr, yr) = (x, y);
        let [x, wb, y, ws] = carve(self.arena, [x, wb, y, ws]);
        let (w, b) = wb.split_at(fin * fout);
        if all_f32(&[xr, yr]) {
            linear::forward(self.pool, self.precision, n, fin, fout, x, w, b, y, ws);
        } else {
            let (x, y) = (Tensor::of(x, xr), Tensor::of(y, yr));
            staged::linear_forward(self.pool, self.precision, fin, fout, x, w, b, y, n, ws);
        }
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
        let (xr, dyr, dxr) = (x, dy, dx);
        let [x, wb, dy, dwb, dx, ws] = carve(self.arena, [x, wb, dy, dwb, dx, ws]);
        let (dw, db) = dwb.split_at_mut(fin * fout);
        let w = &wb[..fin * fout];
        if all_f32(&[xr, dyr, dxr]) {
            let dx = optional_mut(dx);
            linear::backward(
                self.pool,
                self.precision,
                n,
                fin,
                fout,
                x,
                w,
                dy,
                dw,
                db,
                dx,
                ws,
                false,
            );
        } else {
            staged::linear_backward(
                self.pool,
                self.precision,
                n,
                fin,
                fout,
                Tensor::of(x, xr),
                w,
                Tensor::of(dy, dyr),
                dw,
                db,
                (!dxr.is_empty()).then(|| Tensor::of(dx, dxr)),
                ws,
            );
        }
    }
    fn softmax_xent(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
        _slot: usize,
    ) -> (f32, u32) {
        // n × classes is tiny (a few thousand values): the reference kernel, on this thread.
        assert_eq!(
            logits.elem(),
            Elem::F32,
            "the logits are f32 in every layout"
        );
        let dr = dlogits;
        let [lg, lb, dl] = carve(self.arena, [logits, labels, dlogits]);
        if dr.is_empty() {
            return loss::softmax_xent(n, classes, lg, lb, None);
        }
        each!(Tensor::of(dl, dr), |dl| {
            let put = |i: usize, v: f32| dl[i] = Store::store(v);
            loss::softmax_xent_into(n, classes, lg, lb, Some(put))
        })
    }
    fn sgd(&mut self, opt: &Sgd, lr: f32, param: Region, grad: Region, mom: Region) {
        let [p, g, m] = carve(self.arena, [param, grad, mom]);
        optim::sgd(self.pool, opt, lr, p, g, m);
    }
}
