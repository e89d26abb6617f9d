//! The exact memory model of the host kernels' workspace.
//!
//! The convolution and the linear layer take every byte they need beyond their inputs and
//! outputs from the one workspace slice their caller passes (the layout's kernel workspace
//! region): im2col columns, GEMM packing buffers, packed weights, transposition temporaries,
//! flipped weights, per-tap temporaries and weight-gradient partial sums. Nothing else is
//! allocated, and workers keep no memory of their own. [`floats`] says how many elements one
//! call uses; it is computed by the same code (`WsLayout`) that carves the slice in the
//! kernels, so the two cannot disagree.
//!
//! A call's workspace is a *shared* area (operands packed once before the parallel part and
//! read by every worker; the weight-gradient partial sums of workers `1..T`, which are added to
//! the gradient afterwards), followed by one area per worker (its columns, its GEMM packing
//! buffers for the products it runs, its temporaries). Flipped weights, needed only while the
//! shared operand is packed, overlay the start of the workers' areas. A kernel with two phases
//! (the linear layer's backward: weight gradient, then input gradient) reuses the workspace:
//! its size is the larger phase's.
//!
//! GEMM packing buffers and packed operands start on a 64-byte boundary. Because the slice may
//! start at any `f32` offset of the arena, each such part reserves 15 elements of slack, and the
//! slack around the aligned window is zeroed on every call, so that every element counted by
//! [`floats`] is written (`tests/host_workspace.rs` fills the workspace with a sentinel and
//! checks that none is left).
//!
//! Workers: a kernel uses `min(threads, useful workers)` workers (convolutions: one per sample at
//! most; the linear layer: one unless the product is large), each with its exact share. Given
//! more than [`floats`] elements it uses a prefix; given fewer, it uses fewer workers, down to
//! one; below one worker's need it panics (a memory-model bug: the planner sizes the region
//! with [`floats`]).
//!
//! Element-wise kernels (batch norm, ReLU, pooling, SGD, the loss) need no workspace.
use nf_core::ops::conv2d::ConvGeom;

use crate::conv2d::paths::Paths;
use crate::conv2d::taps::taps_used;
use crate::gemm::{self, packed_a_len, packed_b_len};
use crate::isa::{self, Isa};
use crate::par::{part_start, Cuts, MAX_THREADS};

pub use nf_core::probe::KernelCall;

/// The exact number of workspace elements (`f32`) that kernel call `k` uses on a
/// [`Pool::new`](crate::Pool::new) of `threads` workers (instruction set [`isa::active`]).
/// Pure arithmetic, cheap enough to call for every kernel call of a plan; never smaller for a
/// larger batch (`n`), so sizing a block at its batch size covers its smaller batches.
///
/// # Panics
/// As [`isa::active`] (an invalid `NF_GEMM_ISA`).
pub fn floats(k: &KernelCall, threads: usize) -> usize {
    floats_for(k, threads, isa::active())
}

/// [`floats`] for kernels running with instruction set `isa` (a
/// [`Pool::with_isa`](crate::Pool::with_isa)): packed sizes follow the register tile.
pub fn floats_for(k: &KernelCall, threads: usize, isa: Isa) -> usize {
    phases(k)
        .into_iter()
        .flatten()
        .map(|p| WsLayout::new(p, isa, p.useful(threads)).total())
        .max()
        .unwrap_or(0)
}

/// The phases of `k`: parts of the call that run one after another on the same workspace.
fn phases(k: &KernelCall) -> [Option<Phase>; 2] {
    match *k {
        KernelCall::ConvForward(g) => [Some(Phase::ConvForward(g)), None],
        KernelCall::ConvBackward { g, dx, .. } => [Some(Phase::ConvBackward { g, dx }), None],
        KernelCall::LinearForward { n, fin, fout } => {
            [Some(Phase::LinearForward(Lin { n, fin, fout })), None]
        }
        KernelCall::LinearBackward { n, fin, fout, dx } => {
            let l = Lin { n, fin, fout };
            [
                Some(Phase::LinearWeightGrad(l)),
                dx.then_some(Phase::LinearInputGrad(l)),
            ]
        }
    }
}

/// The shape of a linear layer call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lin {
    pub n: usize,
    pub fin: usize,
    pub fout: usize,
}

/// Multiply-adds below which a linear layer's product runs on the calling thread alone.
const LINEAR_SERIAL_BELOW: usize = 1 << 18;

/// A part of one kernel call that runs on its own share of workers and workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A convolution's forward pass (split over samples).
    ConvForward(ConvGeom),
    /// A convolution's weight, bias and (with `dx`) input gradients (split over samples).
    ConvBackward { g: ConvGeom, dx: bool },
    /// `y = x · Wᵀ + b` (split over samples).
    LinearForward(Lin),
    /// `dW = dyᵀ · x` (split over output features).
    LinearWeightGrad(Lin),
    /// `dx = dy · W` (split over samples).
    LinearInputGrad(Lin),
}

impl Phase {
    /// Whether the phase does nothing (and uses no workspace).
    fn is_empty(&self) -> bool {
        match *self {
            Phase::ConvForward(g) => g.n == 0 || g.c_out * g.h_out() * g.w_out() == 0,
            Phase::ConvBackward { g, .. } => g.n == 0 || g.h_out() * g.w_out() == 0,
            Phase::LinearForward(l) => l.n == 0 || l.fout == 0,
            Phase::LinearWeightGrad(l) | Phase::LinearInputGrad(l) => l.n == 0,
        }
    }

    /// What the phase splits among its workers (samples or output features).
    fn rows(&self) -> usize {
        match *self {
            Phase::ConvForward(g) | Phase::ConvBackward { g, .. } => g.n,
            Phase::LinearForward(l) | Phase::LinearInputGrad(l) => l.n,
            Phase::LinearWeightGrad(l) => l.fout,
        }
    }

    /// The workers the phase uses on a pool of `threads`: no more than it has rows for, and
    /// for the linear layer one unless the product is large.
    pub(crate) fn useful(&self, threads: usize) -> usize {
        let threads = threads.clamp(1, MAX_THREADS);
        if self.is_empty() {
            return 1;
        }
        let serial = match *self {
            Phase::LinearForward(l) | Phase::LinearWeightGrad(l) | Phase::LinearInputGrad(l) => {
                l.n * l.fin * l.fout < LINEAR_SERIAL_BELOW
            }
            _ => false,
        };
        if serial {
            1
        } else {
            threads.min(self.rows()).max(1)
        }
    }
}

/// Elements per 64-byte cache line.
const ALIGN: usize = 16;

/// A part of a workspace: `len` elements at `offset` (from the start of its area). An aligned
/// part reserves `ALIGN - 1` more elements, so that a 64-byte-aligned window of `len` fits
/// wherever the area starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Part {
    pub offset: usize,
    pub len: usize,
    pub aligned: bool,
}

impl Part {
    /// Elements reserved (the length plus alignment slack).
    fn reserved(&self) -> usize {
        if self.aligned && self.len > 0 {
            self.len + ALIGN - 1
        } else {
            self.len
        }
    }
    /// The end of the reservation.
    pub fn end(&self) -> usize {
        self.offset + self.reserved()
    }
}

/// Lays parts out one after another.
struct Bump(usize);

impl Bump {
    fn take(&mut self, len: usize, aligned: bool) -> Part {
        let p = Part {
            offset: self.0,
            len,
            aligned,
        };
        self.0 = p.end();
        p
    }
}

/// Parts `parts` of `area` (in increasing order, disjoint, inside `area`) as slices. An aligned
/// part becomes its 64-byte-aligned window of `len` elements, and the slack around that window
/// is zeroed (so that every reserved element is written).
///
/// # Panics
/// If the parts are out of order or do not fit.
pub(crate) fn carve<const N: usize>(area: &mut [f32], parts: [Part; N]) -> [&mut [f32]; N] {
    let mut rest = area;
    let mut at = 0;
    parts.map(|p| {
        let skip = p
            .offset
            .checked_sub(at)
            .expect("workspace parts out of order");
        let (_, r) = std::mem::take(&mut rest).split_at_mut(skip);
        let (mine, r) = r.split_at_mut(p.reserved());
        rest = r;
        at = p.end();
        if p.reserved() == p.len {
            return mine;
        }
        let off = mine.as_ptr().align_offset(64).min(ALIGN - 1);
        let (head, r) = mine.split_at_mut(off);
        let (window, tail) = r.split_at_mut(p.len);
        head.fill(0.0);
        tail.fill(0.0);
        window
    })
}

/// The parts of one worker's area (offsets from the area's start).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WorkerParts {
    /// GEMM packing buffer for `A` blocks.
    pub a: Part,
    /// GEMM packing buffer for `B` blocks.
    pub b: Part,
    /// One sample's im2col columns.
    pub cols: Part,
    /// A temporary: transposed columns, or one tap's weight gradient.
    pub tmp: Part,
    /// Elements of the area.
    pub len: usize,
}

impl WorkerParts {
    fn new(gemm: (usize, usize), cols: usize, tmp: usize) -> Self {
        let mut b = Bump(0);
        let (pa, pb) = (b.take(gemm.0, true), b.take(gemm.1, true));
        let (pc, pt) = (b.take(cols, false), b.take(tmp, false));
        WorkerParts {
            a: pa,
            b: pb,
            cols: pc,
            tmp: pt,
            len: b.0,
        }
    }
    /// The four parts of `area`: `[a, b, cols, tmp]`.
    pub fn carve<'a>(&self, area: &'a mut [f32]) -> [&'a mut [f32]; 4] {
        carve(area, [self.a, self.b, self.cols, self.tmp])
    }
}

/// The elementwise maximum of GEMM buffer sizes.
fn max2(x: (usize, usize), y: (usize, usize)) -> (usize, usize) {
    (x.0.max(y.0), x.1.max(y.1))
}

/// Where every part of one phase's workspace lies, for `workers` workers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WsLayout {
    phase: Phase,
    isa: Isa,
    /// Workers taking part.
    pub workers: usize,
    /// The convolution's choices of product (convolution phases only).
    pub paths: Option<Paths>,
    /// Shared: packed weights (all used taps, for a per-tap convolution).
    pub packed: Part,
    /// Shared: the weight-gradient partial sums of workers `1..workers`, one after another.
    pub partials: Part,
    /// Where the workers' areas start.
    pub workers_at: usize,
    /// Flipped weights, overlaying the start of the workers' areas (offset from `workers_at`).
    pub flip: Part,
    total: usize,
}

impl WsLayout {
    /// The layout of `phase` with `workers` workers and instruction set `isa`.
    pub fn new(phase: Phase, isa: Isa, workers: usize) -> Self {
        let mut l = WsLayout {
            phase,
            isa,
            workers: workers.max(1),
            paths: None,
            packed: Part::default(),
            partials: Part::default(),
            workers_at: 0,
            flip: Part::default(),
            total: 0,
        };
        if phase.is_empty() {
            return l;
        }
        let mut shared = Bump(0);
        let (mut packed, mut partials, mut flip) = (0, 0, 0);
        match phase {
            Phase::ConvForward(g) => {
                let p = Paths::new(&g, isa);
                let ckk = g.c_in * g.k * g.k;
                packed = if p.tapwise {
                    taps_used(&g) * packed_b_len(isa, g.c_in, g.c_out)
                } else if p.small {
                    0
                } else if p.transposed {
                    packed_b_len(isa, ckk, g.c_out)
                } else {
                    packed_a_len(isa, g.c_out, ckk)
                };
                l.paths = Some(p);
            }
            Phase::ConvBackward { g, dx } => {
                let p = Paths::new(&g, isa);
                let (ckk, ckk2) = (g.c_in * g.k * g.k, g.c_out * g.k * g.k);
                packed = if !dx {
                    0
                } else if p.tapwise {
                    taps_used(&g) * packed_b_len(isa, g.c_out, g.c_in)
                } else if p.flip {
                    flip = g.weight_len();
                    if p.flip_transposed {
                        packed_b_len(isa, ckk2, g.c_in)
                    } else {
                        packed_a_len(isa, g.c_in, ckk2)
                    }
                } else if p.dx_transposed {
                    packed_b_len(isa, g.c_out, ckk)
                } else {
                    packed_a_len(isa, ckk, g.c_out)
                };
                partials = (l.workers - 1) * g.weight_len();
                l.paths = Some(p);
            }
            Phase::LinearForward(_) | Phase::LinearWeightGrad(_) | Phase::LinearInputGrad(_) => {}
        }
        l.packed = shared.take(packed, true);
        l.partials = shared.take(partials, false);
        l.workers_at = shared.0;
        l.flip = Part {
            offset: 0,
            len: flip,
            aligned: false,
        };
        let areas: usize = (0..l.workers).map(|w| l.worker(w).len).sum();
        l.total = l.workers_at + areas.max(l.flip.end());
        l
    }

    /// The largest layout of `phase` on a pool of `threads` that fits in `len` elements:
    /// `min(threads, useful)` workers when the workspace allows, fewer otherwise.
    ///
    /// # Panics
    /// If even one worker's layout does not fit (the workspace was not sized by [`floats`]).
    pub fn fit(phase: Phase, isa: Isa, threads: usize, len: usize) -> Self {
        let mut t = phase.useful(threads);
        loop {
            let l = WsLayout::new(phase, isa, t);
            if l.total <= len {
                return l;
            }
            assert!(
                t > 1,
                "host kernel {phase:?}: a workspace of {len} floats, one worker needs {} \
                 (size the kernel workspace with nf_cpu::workspace::floats)",
                l.total
            );
            t -= 1;
        }
    }

    /// Elements of the whole workspace.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The rows (samples or output features) of worker `w`.
    pub fn rows(&self, w: usize) -> std::ops::Range<usize> {
        let r = self.phase.rows();
        part_start(r, self.workers, w)..part_start(r, self.workers, w + 1)
    }

    /// The parts of worker `w`'s area.
    pub fn worker(&self, w: usize) -> WorkerParts {
        let isa = self.isa;
        let sl = |m, n, k, a_view, b_view| gemm::scratch_len(isa, m, n, k, a_view, b_view);
        let rows = self.rows(w).len();
        match self.phase {
            _ if self.phase.is_empty() => WorkerParts::default(),
            Phase::ConvForward(g) => {
                let p = self.paths.expect("convolution paths");
                let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
                if p.tapwise {
                    if taps_used(&g) == 0 {
                        return WorkerParts::default();
                    }
                    return WorkerParts::new(sl(rows, g.c_out, g.c_in, true, false), 0, 0);
                }
                let cols = if g.is_pointwise() { 0 } else { g.cols_len() };
                let gemm = if p.small {
                    (0, 0)
                } else if p.transposed {
                    sl(hwo, g.c_out, ckk, true, false)
                } else {
                    sl(g.c_out, hwo, ckk, false, true)
                };
                WorkerParts::new(gemm, cols, 0)
            }
            Phase::ConvBackward { g, dx } => {
                let p = self.paths.expect("convolution paths");
                let (ckk, ckk2) = (g.c_in * g.k * g.k, g.c_out * g.k * g.k);
                let hwo = g.h_out() * g.w_out();
                if p.tapwise {
                    if taps_used(&g) == 0 {
                        return WorkerParts::default();
                    }
                    // dW_tap = dY_opᵀ · X_ip over the worker's samples; dX_ip += dY_op · W_tap.
                    let mut gemm = sl(g.c_out, g.c_in, rows, true, true);
                    if dx {
                        gemm = max2(gemm, sl(rows, g.c_in, g.c_out, true, false));
                    }
                    return WorkerParts::new(gemm, 0, g.c_out * g.c_in);
                }
                let cols = if g.is_pointwise() { 0 } else { g.cols_len() };
                let mut gemm = if p.small {
                    (0, 0)
                } else if p.dw_transposed {
                    sl(ckk, g.c_out, hwo, true, true)
                } else {
                    sl(g.c_out, ckk, hwo, true, true)
                };
                let mut tmp = 0;
                if dx {
                    let dxg = if p.flip {
                        if p.flip_transposed {
                            sl(hwo, g.c_in, ckk2, true, false)
                        } else {
                            sl(g.c_in, hwo, ckk2, false, true)
                        }
                    } else if g.is_pointwise() || !p.dx_transposed {
                        sl(ckk, hwo, g.c_out, false, true)
                    } else {
                        tmp = g.cols_len();
                        sl(hwo, ckk, g.c_out, true, false)
                    };
                    gemm = max2(gemm, dxg);
                }
                WorkerParts::new(gemm, cols, tmp)
            }
            Phase::LinearForward(l) => WorkerParts::new(sl(rows, l.fout, l.fin, true, true), 0, 0),
            Phase::LinearWeightGrad(l) => WorkerParts::new(sl(rows, l.fin, l.n, true, true), 0, 0),
            Phase::LinearInputGrad(l) => {
                WorkerParts::new(sl(rows, l.fin, l.fout, true, true), 0, 0)
            }
        }
    }

    /// The workers' areas of `workers` (the workspace from [`WsLayout::workers_at`]).
    pub fn cuts<'a>(&self, workers: &'a mut [f32]) -> Cuts<'a> {
        Cuts::new(workers, self.workers, |w| self.worker(w).len)
    }

    /// `ws` (at least [`WsLayout::total`] elements) split into the shared parts
    /// `[packed, partials]`, the flipped-weights overlay and the workers' areas (as one slice,
    /// for [`WsLayout::cuts`]). The overlay and the workers' areas are the same memory: use the
    /// overlay before the workers run.
    pub fn split<'a>(&self, ws: &'a mut [f32]) -> WsAreas<'a> {
        let (shared, workers) = ws[..self.total].split_at_mut(self.workers_at);
        let [packed, partials] = carve(shared, [self.packed, self.partials]);
        WsAreas {
            packed,
            partials,
            workers,
        }
    }
}

/// A workspace split by [`WsLayout::split`].
pub(crate) struct WsAreas<'a> {
    /// Packed weights.
    pub packed: &'a mut [f32],
    /// Weight-gradient partial sums of workers `1..`.
    pub partials: &'a mut [f32],
    /// The workers' areas (the flipped-weights overlay at their start).
    pub workers: &'a mut [f32],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_parts_are_aligned_wherever_the_area_starts() {
        let mut v = vec![1f32; 200];
        let parts = {
            let mut b = Bump(0);
            [
                b.take(10, false),
                b.take(33, true),
                b.take(5, true),
                b.take(7, false),
            ]
        };
        let end = parts[3].end();
        assert_eq!(end, 10 + 48 + 20 + 7);
        for start in 0..16 {
            v.fill(1.0);
            let [p0, p1, p2, p3] = carve(&mut v[start..start + end], parts);
            assert_eq!((p0.len(), p1.len(), p2.len(), p3.len()), (10, 33, 5, 7));
            assert_eq!(p1.as_ptr() as usize % 64, 0);
            assert_eq!(p2.as_ptr() as usize % 64, 0);
            p1.fill(2.0);
            p2.fill(2.0);
            // Slack is zeroed, the rest untouched.
            let slack = v[start..start + end].iter().filter(|&&x| x == 0.0).count();
            assert_eq!(slack, 2 * (ALIGN - 1));
        }
    }

    #[test]
    fn fewer_workers_when_the_workspace_is_short() {
        let g = ConvGeom {
            n: 6,
            c_in: 8,
            h: 7,
            w: 7,
            c_out: 16,
            k: 3,
            stride: 1,
            pad: 1,
        };
        let phase = Phase::ConvBackward { g, dx: true };
        for isa in isa::available_isas() {
            let full = WsLayout::new(phase, isa, 3).total();
            assert_eq!(WsLayout::fit(phase, isa, 3, full).workers, 3);
            assert_eq!(WsLayout::fit(phase, isa, 3, full - 1).workers, 2);
            assert_eq!(WsLayout::fit(phase, isa, 8, usize::MAX).workers, 6);
        }
    }
}
