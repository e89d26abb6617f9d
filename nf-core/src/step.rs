//! The block-local training step, written once against [`Backend`].
//!
//! For every segment of a block (a unit and its head in local learning; everything in
//! backpropagation), in order: forward with batch statistics, softmax cross-entropy, backward
//! (never computing the gradient of the segment's own input), then one SGD update of the
//! segment's parameters. The segment's input is detached: in local learning the next unit reads
//! the previous unit's output from a carry buffer and no gradient crosses units.
//!
//! Every buffer comes from the block's [`BlockLayout`]; a backend whose arena is smaller than
//! the layout is refused before any work is done.
use crate::backend::Backend;
use crate::infer::InferLayout;
use crate::layout::{block_geoms, op_geom, BlockLayout, OpSlot, SegLayout};
use crate::model::{Op, Shape};
use crate::ops::Nchw;
use crate::optim::Sgd;
use crate::region::Region;
use crate::rng::Rng;

/// Why a step did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError<E> {
    /// The arena holds fewer elements than the layout needs.
    ArenaTooSmall {
        /// Bytes the layout needs.
        needed: u64,
        /// Bytes the arena has.
        got: u64,
    },
    /// More samples than the layout's batch size.
    BatchTooLarge {
        /// Samples given.
        n: usize,
        /// The layout's batch size.
        batch: usize,
    },
    /// The backend reported an error.
    Backend(E),
    /// A collective operation across ranks failed ([`crate::collective`]).
    Collective(crate::collective::error::CollectiveError),
}

/// Loss and accuracy of one segment over one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SegStats {
    /// Sum of the per-sample losses.
    pub loss: f32,
    /// Number of correct predictions.
    pub correct: u32,
    /// Number of samples.
    pub samples: u32,
}

impl SegStats {
    /// Add another batch's statistics.
    pub fn add(&mut self, o: SegStats) {
        self.loss += o.loss;
        self.correct += o.correct;
        self.samples += o.samples;
    }
    /// Mean loss.
    pub fn mean_loss(&self) -> f32 {
        self.loss / self.samples.max(1) as f32
    }
    /// Accuracy in [0, 1].
    pub fn accuracy(&self) -> f32 {
        self.correct as f32 / self.samples.max(1) as f32
    }
}

/// The arena holds the layout and `n` is a batch it was planned for.
///
/// # Panics
/// On a layout planned with bf16 storage ([`crate::layout::Precision::Bf16`]) given to a
/// backend that does not store bf16 ([`Backend::stores`]): a caller that does so is wrong.
fn check<B: Backend>(be: &B, layout: &BlockLayout, n: usize) -> Result<(), StepError<B::Error>> {
    assert!(
        layout.kernels.precision == crate::layout::Precision::F32
            || be.stores(crate::region::Elem::Bf16),
        "a layout with bf16 storage on a backend that stores only f32"
    );
    check_fits(be, layout.floats, layout.batch, n)
}

/// The arena holds `floats` elements and `n` is a batch of at most `batch` samples.
fn check_fits<B: Backend>(
    be: &B,
    floats: usize,
    batch: usize,
    n: usize,
) -> Result<(), StepError<B::Error>> {
    if be.arena_len() < floats {
        return Err(StepError::ArenaTooSmall {
            needed: floats as u64 * crate::layout::ELEM_BYTES,
            got: be.arena_len() as u64 * crate::layout::ELEM_BYTES,
        });
    }
    if n > batch || n == 0 {
        return Err(StepError::BatchTooLarge { n, batch });
    }
    Ok(())
}

/// Initialise every parameter of the block (Kaiming-normal convolutions, PyTorch-default
/// linear layers, BN γ = 1, β = 0, running mean 0 and variance 1) and zero the momentum.
///
/// ```
/// use nf_core::plan::{plan, Mode, PlanOptions};
/// use nf_core::reference::ReferenceBackend;
/// use nf_core::rng::Rng;
/// use nf_core::{step, zoo};
///
/// let m = &zoo::VGG_SMALL;
/// let p = plan(m, m.input, 10, 4 << 20, Mode::NeuroFlux, &PlanOptions::DEFAULT)?;
/// let layout = p.layout(0);
/// let mut arena = vec![f32::NAN; layout.floats];
/// step::init_block(&mut ReferenceBackend::new(&mut arena), &layout, &mut Rng::new(42))?;
/// let seg = layout.segment(0);
/// let weights = &arena[seg.params.offset..seg.params.end()];
/// assert!(weights.iter().all(|w| w.is_finite()) && weights.iter().any(|&w| w != 0.0));
/// assert!(arena[seg.moms.offset..seg.moms.end()].iter().all(|&m| m == 0.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init_block<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    rng: &mut Rng,
) -> Result<(), StepError<B::Error>> {
    check(be, layout, layout.batch)?;
    for k in 0..layout.n_segments() {
        let seg = layout.segment(k);
        for slot in &seg.ops[..seg.n_ops] {
            init_op(be, slot, rng);
        }
        be.fill(seg.moms, 0.0);
    }
    be.sync().map_err(StepError::Backend)
}

/// Fill `r` with values drawn by `gen`, in small chunks (no allocation).
fn write_with<B: Backend>(be: &mut B, r: Region, mut gen: impl FnMut() -> f32) {
    let mut buf = [0.0f32; 256];
    let mut at = 0;
    while at < r.len() {
        let n = (r.len() - at).min(buf.len());
        for v in &mut buf[..n] {
            *v = gen();
        }
        be.write(r.sub(at, n), &buf[..n]);
        at += n;
    }
}

fn init_bn<B: Backend>(be: &mut B, gamma_beta: Region, running: Region) {
    let c = gamma_beta.len() / 2;
    be.fill(gamma_beta.prefix(c), 1.0);
    be.fill(gamma_beta.sub(c, c), 0.0);
    be.fill(running.prefix(c), 0.0);
    be.fill(running.sub(c, c), 1.0);
}

fn init_op<B: Backend>(be: &mut B, slot: &OpSlot, rng: &mut Rng) {
    let s = slot.input;
    match slot.op {
        Op::Conv { out, k, bias, .. } => {
            let fan_in = s.c * k * k;
            let wl = out * fan_in;
            write_with(be, slot.param.prefix(wl), || {
                rng.normal() * libm::sqrtf(2.0 / fan_in as f32)
            });
            if bias {
                let bound = 1.0 / libm::sqrtf(fan_in as f32);
                write_with(be, slot.param.sub(wl, out), || {
                    (rng.uniform() * 2.0 - 1.0) * bound
                });
            }
        }
        Op::BatchNorm => init_bn(be, slot.param, slot.state),
        Op::Linear(out) => {
            let bound = 1.0 / libm::sqrtf(s.len() as f32);
            write_with(be, slot.param.prefix(out * s.len() + out), || {
                (rng.uniform() * 2.0 - 1.0) * bound
            });
        }
        Op::BasicBlock { .. } => {
            let p = BlockParams::new(slot);
            for (w, fan_in) in [(p.w1, s.c * 9), (p.w2, p.out * 9), (p.ws, s.c)] {
                write_with(be, w, || rng.normal() * libm::sqrtf(2.0 / fan_in as f32));
            }
            init_bn(be, p.bn1, p.st1);
            init_bn(be, p.bn2, p.st2);
            if !p.ws.is_empty() {
                init_bn(be, p.bns, p.sts);
            }
        }
        Op::Relu | Op::MaxPool2 | Op::AvgPool(_) | Op::Flatten => {}
    }
}

/// The sub-tensors of a basic block's parameters, gradients and state.
struct BlockParams {
    out: usize,
    w1: Region,
    bn1: Region,
    w2: Region,
    bn2: Region,
    ws: Region,
    bns: Region,
    st1: Region,
    st2: Region,
    sts: Region,
}

impl BlockParams {
    fn new(slot: &OpSlot) -> Self {
        Self::at(slot, slot.param)
    }
    /// Sub-tensors of `base` (the parameters or their gradients) and of the state.
    fn at(slot: &OpSlot, base: Region) -> Self {
        let Op::BasicBlock { out, .. } = slot.op else {
            unreachable!("not a basic block")
        };
        let c = slot.input.c;
        let proj = slot.op.has_projection(slot.input);
        let mut at = 0;
        let mut take = |len: usize| {
            let r = base.sub(at, len);
            at += len;
            r
        };
        let w1 = take(out * c * 9);
        let bn1 = take(2 * out);
        let w2 = take(out * out * 9);
        let bn2 = take(2 * out);
        let (ws, bns) = if proj {
            (take(out * c), take(2 * out))
        } else {
            (Region::NONE, Region::NONE)
        };
        let st = slot.state;
        BlockParams {
            out,
            w1,
            bn1,
            w2,
            bn2,
            ws,
            bns,
            st1: st.sub(0, 2 * out),
            st2: st.sub(2 * out, 2 * out),
            sts: if proj {
                st.sub(4 * out, 2 * out)
            } else {
                Region::NONE
            },
        }
    }
}

fn nchw(n: usize, s: Shape) -> Nchw {
    Nchw {
        n,
        c: s.c,
        h: s.h,
        w: s.w,
    }
}

/// The first `n` samples of a batch-sized region holding `per` elements per sample.
fn rows(r: Region, n: usize, per: usize) -> Region {
    if r.is_empty() {
        return r;
    }
    r.prefix(n * per)
}

/// Batch-norm forward in training or evaluation mode.
#[allow(clippy::too_many_arguments)]
fn bn_fwd<B: Backend>(
    be: &mut B,
    train: bool,
    d: &Nchw,
    x: Region,
    gb: Region,
    y: Region,
    inv: Region,
    st: Region,
) {
    if train {
        be.bn_forward_train(d, x, gb, y, inv, st);
    } else {
        be.bn_forward_eval(d, x, gb, st, y);
    }
}

/// Copy `x` to `y` unless they are the same region: an in-place op (ReLU, flatten) that
/// produces a unit's output in its own buffer (a unit of in-place ops only) starts from a copy.
fn copy_unless_same<B: Backend>(be: &mut B, x: Region, y: Region) {
    if x != y {
        be.copy(x, y);
    }
}

/// Forward of one op over the first `n` samples.
fn forward_op<B: Backend>(be: &mut B, slot: &OpSlot, n: usize, cols: Region, train: bool) {
    let s = slot.input;
    let o = slot.op.out_shape(s);
    let x = rows(slot.x, n, s.len());
    let y = rows(slot.y, n, o.len());
    match slot.op {
        Op::Conv { out, bias, .. } => {
            let g = op_geom(&slot.op, s, n);
            let wl = g.weight_len();
            let b = if bias {
                slot.param.sub(wl, out)
            } else {
                Region::NONE
            };
            be.conv_forward(&g, x, slot.param.prefix(wl), b, y, cols);
        }
        Op::BatchNorm => bn_fwd(
            be,
            train,
            &nchw(n, s),
            x,
            slot.param,
            y,
            slot.aux[0],
            slot.state,
        ),
        Op::Relu => {
            copy_unless_same(be, x, y);
            be.relu_forward(y);
        }
        Op::MaxPool2 => be.maxpool_forward(&nchw(n, s), x, y),
        Op::AvgPool(p) => be.avgpool_forward(&nchw(n, s), p, x, y),
        Op::Flatten => copy_unless_same(be, x, y),
        Op::Linear(out) => be.linear_forward(n, s.len(), out, x, slot.param, y, cols),
        Op::BasicBlock { .. } => {
            let p = BlockParams::new(slot);
            let d = nchw(n, o);
            let (g1, g2, gs) = block_geoms(&slot.op, s, n);
            let [a1, inv1, z1, a2, inv2, s1, invs, zs] = slot.aux;
            let (a1, z1, a2) = (
                rows(a1, n, o.len()),
                rows(z1, n, o.len()),
                rows(a2, n, o.len()),
            );
            be.conv_forward(&g1, x, p.w1, Region::NONE, a1, cols);
            bn_fwd(be, train, &d, a1, p.bn1, z1, inv1, p.st1);
            be.relu_forward(z1);
            be.conv_forward(&g2, z1, p.w2, Region::NONE, a2, cols);
            bn_fwd(be, train, &d, a2, p.bn2, y, inv2, p.st2);
            if p.ws.is_empty() {
                be.add_assign(y, x);
            } else {
                let (s1, zs) = (rows(s1, n, o.len()), rows(zs, n, o.len()));
                be.conv_forward(&gs, x, p.ws, Region::NONE, s1, cols);
                bn_fwd(be, train, &d, s1, p.bns, zs, invs, p.sts);
                be.add_assign(y, zs);
            }
            be.relu_forward(y);
        }
    }
}

/// Backward of one op over the first `n` samples. `g` holds the gradient buffers and `cur`
/// the index of the one holding dL/dy; returns the index of the one holding dL/dx (which is
/// not computed when `need_dx` is false).
fn backward_op<B: Backend>(
    be: &mut B,
    slot: &OpSlot,
    n: usize,
    g: &[Region; 3],
    cur: usize,
    need_dx: bool,
    cols: Region,
) -> usize {
    let s = slot.input;
    let o = slot.op.out_shape(s);
    let nbuf = if g[2].is_empty() { 2 } else { 3 };
    let next = (cur + 1) % nbuf;
    let x = rows(slot.x, n, s.len());
    let y = rows(slot.y, n, o.len());
    let dy = rows(g[cur], n, o.len());
    // dL/dx lands in the next buffer (sized for it only where some op writes it there).
    let dx = || {
        if need_dx {
            rows(g[next], n, s.len())
        } else {
            Region::NONE
        }
    };
    match slot.op {
        Op::Conv { out, bias, .. } => {
            let cg = op_geom(&slot.op, s, n);
            let wl = cg.weight_len();
            let db = if bias {
                slot.grad.sub(wl, out)
            } else {
                Region::NONE
            };
            be.conv_backward(
                &cg,
                x,
                slot.param.prefix(wl),
                dy,
                slot.grad.prefix(wl),
                db,
                dx(),
                cols,
            );
            next
        }
        Op::BatchNorm => {
            be.bn_backward(&nchw(n, s), x, slot.param, slot.aux[0], dy, slot.grad);
            cur
        }
        Op::Relu => {
            be.relu_backward(y, dy);
            cur
        }
        Op::MaxPool2 => {
            if need_dx {
                be.maxpool_backward(&nchw(n, s), x, dy, dx());
            }
            next
        }
        Op::AvgPool(p) => {
            if need_dx {
                be.avgpool_backward(&nchw(n, s), p, dy, dx());
            }
            next
        }
        Op::Flatten => cur,
        Op::Linear(out) => {
            be.linear_backward(n, s.len(), out, x, slot.param, dy, slot.grad, dx(), cols);
            next
        }
        Op::BasicBlock { .. } => {
            let p = BlockParams::new(slot);
            let dp = BlockParams::at(slot, slot.grad);
            let (cg1, cg2, cgs) = block_geoms(&slot.op, s, n);
            let d = nchw(n, o);
            let [a1, inv1, z1, a2, inv2, s1, invs, _] = slot.aux;
            let (a1, z1, a2, s1) = (
                rows(a1, n, o.len()),
                rows(z1, n, o.len()),
                rows(a2, n, o.len()),
                rows(s1, n, o.len()),
            );
            let g1 = rows(g[(cur + 1) % 3], n, o.len());
            let g2 = if need_dx {
                rows(g[(cur + 2) % 3], n, s.len())
            } else {
                Region::NONE
            };
            be.relu_backward(y, dy);
            // Shortcut first: its gradient lands in g2 (dL/dx through the shortcut).
            if !p.ws.is_empty() {
                be.copy(dy, g1);
                be.bn_backward(&d, s1, p.bns, invs, g1, dp.bns);
                let dxs = g2;
                be.conv_backward(&cgs, x, p.ws, g1, dp.ws, Region::NONE, dxs, cols);
            } else if need_dx {
                be.copy(dy, g2);
            }
            be.bn_backward(&d, a2, p.bn2, inv2, dy, dp.bn2);
            be.conv_backward(&cg2, z1, p.w2, dy, dp.w2, Region::NONE, g1, cols);
            be.relu_backward(z1, g1);
            be.bn_backward(&d, a1, p.bn1, inv1, g1, dp.bn1);
            let dxm = if need_dx {
                rows(g[cur], n, s.len())
            } else {
                Region::NONE
            };
            be.conv_backward(&cg1, x, p.w1, g1, dp.w1, Region::NONE, dxm, cols);
            if need_dx {
                be.add_assign(dxm, g2);
            }
            cur
        }
    }
}

/// Run the forward pass of segment `seg` over `n` samples and score its logits; with `train`,
/// also the backward pass (into the segment's gradient area) — the caller applies the update.
fn run_segment<B: Backend>(
    be: &mut B,
    seg: &SegLayout,
    labels: Region,
    n: usize,
    train: bool,
    slot: usize,
) -> SegStats {
    let ops = &seg.ops[..seg.n_ops];
    for slot in ops {
        forward_op(be, slot, n, seg.cols, train);
    }
    let classes = seg.classes;
    let dlogits = if train {
        rows(seg.grads[0], n, classes)
    } else {
        Region::NONE
    };
    let (loss, correct) = be.softmax_xent(
        n,
        classes,
        rows(seg.logits(), n, classes),
        labels.prefix(n),
        dlogits,
        slot,
    );
    if train {
        let mut cur = 0;
        for (i, slot) in ops.iter().enumerate().rev() {
            cur = backward_op(be, slot, n, &seg.grads, cur, i > 0, seg.cols);
        }
    }
    SegStats {
        loss,
        correct,
        samples: n as u32,
    }
}

/// Add the scores a backend deferred since the last call to `stats` (slot `k` to `stats[k]`:
/// loss and correct count; the sample counts are already there). Waits for the backend's
/// queued work when it defers them; nothing to do otherwise.
pub fn collect_scores<B: Backend>(be: &mut B, stats: &mut [SegStats]) {
    if !be.defers_scores() {
        return;
    }
    let mut scores = [(0f32, 0u32); crate::backend::SCORE_SLOTS];
    let n = stats.len().min(scores.len());
    be.take_scores(&mut scores[..n]);
    for (s, (loss, correct)) in stats.iter_mut().zip(scores) {
        s.loss += loss;
        s.correct += correct;
    }
}

/// Gradients of segment `k` for the batch already in the layout's input and labels, without
/// updating anything (for gradient checks). Returns the batch statistics.
pub fn gradients<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    k: usize,
    n: usize,
) -> Result<SegStats, StepError<B::Error>> {
    check(be, layout, n)?;
    let seg = layout.segment(k);
    let mut stats = run_segment(be, &seg, layout.labels, n, true, 0);
    be.sync().map_err(StepError::Backend)?;
    collect_scores(be, core::slice::from_mut(&mut stats));
    Ok(stats)
}

/// One training step over the `n` samples already written to `layout.input` and
/// `layout.labels`: every segment in order, each followed by its SGD update with learning
/// rate `lr`. `stats[k]` receives segment `k`'s loss and accuracy on this batch; on a backend
/// that [defers its scores](Backend::defers_scores) only the sample count, the rest being
/// kept in its slot `k` until [`collect_scores`].
///
/// ```
/// use nf_core::optim::Sgd;
/// use nf_core::plan::{plan, Mode, PlanOptions};
/// use nf_core::reference::ReferenceBackend;
/// use nf_core::rng::Rng;
/// use nf_core::step::{self, SegStats};
/// use nf_core::backend::Backend;
/// use nf_core::zoo;
///
/// let m = &zoo::VGG_SMALL;
/// let p = plan(m, m.input, 10, 4 << 20, Mode::NeuroFlux, &PlanOptions::DEFAULT)?;
/// let layout = p.layout(0);
/// let mut arena = vec![0.0; layout.floats];
/// let mut be = ReferenceBackend::new(&mut arena);
/// step::init_block(&mut be, &layout, &mut Rng::new(42))?;
///
/// // A batch of 4 images (at most `layout.batch`), normalised, and their classes.
/// let n = 4;
/// let image = m.input.len();
/// let images: Vec<f32> = (0..n * image).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
/// be.write(layout.input.prefix(n * image), &images);
/// be.write(layout.labels.prefix(n), &[0.0, 3.0, 3.0, 9.0]);
///
/// let mut stats = [SegStats::default(); 8];
/// let stats = &mut stats[..layout.n_segments()];
/// step::train_step(&mut be, &layout, n, &Sgd::default(), 0.05, stats)?;
/// assert!(stats.iter().all(|s| s.samples == 4 && s.mean_loss() > 0.0));
///
/// // More samples than the layout was planned for are refused, before any work.
/// assert!(step::train_step(&mut be, &layout, layout.batch + 1, &Sgd::default(), 0.05, &mut [])
///     .is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn train_step<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    n: usize,
    opt: &Sgd,
    lr: f32,
    stats: &mut [SegStats],
) -> Result<(), StepError<B::Error>> {
    train_step_hooked(be, layout, n, opt, lr, stats, |_, _| Ok(()))
}

/// [`train_step`] with `before_update(be, segment)` called between each segment's backward
/// pass and its SGD update (where data-parallel training sums the segment's gradients).
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_step_hooked<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    n: usize,
    opt: &Sgd,
    lr: f32,
    stats: &mut [SegStats],
    mut before_update: impl FnMut(&mut B, &SegLayout) -> Result<(), StepError<B::Error>>,
) -> Result<(), StepError<B::Error>> {
    check(be, layout, n)?;
    for k in 0..layout.n_segments() {
        let seg = layout.segment(k);
        let st = run_segment(be, &seg, layout.labels, n, true, k);
        before_update(be, &seg)?;
        be.sgd(opt, lr, seg.params, seg.param_grads, seg.moms);
        if let Some(s) = stats.get_mut(k) {
            *s = st;
        }
    }
    be.sync().map_err(StepError::Backend)
}

/// Evaluate every segment of the block (BN in evaluation mode) on the `n` samples in
/// `layout.input`/`layout.labels`: `stats[k]` receives the accuracy of segment `k`'s head (or
/// of the classifier; deferred as in [`train_step`]). In local mode the block's output is left in [`BlockLayout::output`].
pub fn eval_step<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    n: usize,
    stats: &mut [SegStats],
) -> Result<(), StepError<B::Error>> {
    check(be, layout, n)?;
    for k in 0..layout.n_segments() {
        let seg = layout.segment(k);
        let st = run_segment(be, &seg, layout.labels, n, false, k);
        if let Some(s) = stats.get_mut(k) {
            *s = st;
        }
    }
    be.sync().map_err(StepError::Backend)
}

/// Run only the units of the block (BN in evaluation mode, no head, no loss) on the `n`
/// samples in `layout.input`, leaving the block's output in [`BlockLayout::output`]: how the
/// activation cache is filled for samples whose head accuracy is not needed.
pub fn infer_step<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    n: usize,
) -> Result<(), StepError<B::Error>> {
    check(be, layout, n)?;
    for k in 0..layout.n_segments() {
        let seg = layout.segment(k);
        for slot in &seg.ops[..=seg.last_unit_op] {
            forward_op(be, slot, n, seg.cols, false);
        }
    }
    be.sync().map_err(StepError::Backend)
}

/// Run the forward-only chain `l` (BN in evaluation mode) over the `n` samples in `l.input`:
/// unit `l.last`'s output is left in [`InferLayout::output`], and a scored chain also returns
/// its loss and accuracy against `l.labels` (zero statistics otherwise).
pub fn infer<B: Backend>(
    be: &mut B,
    l: &InferLayout,
    n: usize,
) -> Result<SegStats, StepError<B::Error>> {
    check_fits(be, l.floats, l.batch, n)?;
    let seg = &l.seg;
    for slot in &seg.ops[..seg.n_ops] {
        forward_op(be, slot, n, seg.cols, false);
    }
    let mut stats = if l.scored {
        let (loss, correct) = be.softmax_xent(
            n,
            seg.classes,
            rows(seg.logits(), n, seg.classes),
            l.labels.prefix(n),
            Region::NONE,
            0,
        );
        SegStats {
            loss,
            correct,
            samples: n as u32,
        }
    } else {
        SegStats::default()
    };
    be.sync().map_err(StepError::Backend)?;
    if l.scored {
        collect_scores(be, core::slice::from_mut(&mut stats));
    }
    Ok(stats)
}
