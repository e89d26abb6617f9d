//! The memory model: where every buffer of a block's training step lives in the arena.
//!
//! A [`BlockLayout`] places, for one block of consecutive units at batch size `b`:
//!
//! | area | contents | lifetime |
//! |---|---|---|
//! | params, momentum, BN state | trainable weights of every unit and head of the block, their SGD momentum, BN running statistics | whole block |
//! | grads | parameter gradients of *one* segment (segments update right after their backward, so they share it) | one segment |
//! | io | the input batch and its labels, two ping-pong buffers carrying a unit's output to the next unit | one step |
//! | scratch | the activations a segment keeps for its backward, the gradient buffers, the im2col workspace | one segment |
//!
//! A *segment* is what runs forward then backward as one chain: in local learning a unit and its
//! head (or, for the model's last unit, the model's classifier); in backpropagation all units and
//! the classifier. Segments run one after another, so the scratch is the maximum over segments,
//! not the sum. [`BlockLayout::floats`] is therefore the exact size of the CPU arena, and the
//! step ([`crate::step`]) touches no byte outside it. Every function here is `const`.
use crate::model::{classifier_ops, head_ops, ModelSpec, Op, Shape, MAX_UNITS};
use crate::ops::conv2d::ConvGeom;
use crate::region::{Bump, Region};

/// Most ops in one segment (VGG-19 under backpropagation needs 56).
pub const MAX_SEG_OPS: usize = 80;

/// Bytes per arena element (`f32`).
pub const ELEM_BYTES: u64 = 4;

/// How units are grouped into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegMode {
    /// Each unit is a segment with its own head (local learning; input detached).
    Local,
    /// All units of the block and the classifier form one segment (backpropagation).
    Global,
}

/// Where one op of a segment reads, writes and keeps its buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpSlot {
    /// The op.
    pub op: Op,
    /// Its input shape (per sample).
    pub input: Shape,
    /// Input activation (batch).
    pub x: Region,
    /// Output activation (batch); equal to `x` for in-place ops (ReLU, flatten).
    pub y: Region,
    /// Extra buffers kept for backward: BN keeps `invstd` in `aux[0]`; a basic block keeps
    /// `[a1, invstd1, z1, a2, invstd2, s1, invstd_s, zs]` (shortcut entries empty without a
    /// projection).
    pub aux: [Region; 8],
    /// Trainable parameters (in the order of [`crate::model::Op::params`]).
    pub param: Region,
    /// Their gradients.
    pub grad: Region,
    /// Their momentum.
    pub mom: Region,
    /// BN running statistics (mean then variance, per BN).
    pub state: Region,
}

impl OpSlot {
    const EMPTY: OpSlot = OpSlot {
        op: Op::Relu,
        input: Shape::new(0, 0, 0),
        x: Region::NONE,
        y: Region::NONE,
        aux: [Region::NONE; 8],
        param: Region::NONE,
        grad: Region::NONE,
        mom: Region::NONE,
        state: Region::NONE,
    };
}

/// The placement of one segment's buffers.
#[derive(Clone, Copy, Debug)]
pub struct SegLayout {
    /// Batch size.
    pub batch: usize,
    /// Number of ops.
    pub n_ops: usize,
    /// The ops and their buffers, in forward order.
    pub ops: [OpSlot; MAX_SEG_OPS],
    /// Index of the last op that belongs to a unit (the rest is the head or classifier).
    pub last_unit_op: usize,
    /// Gradient buffers (two, three when the segment has a basic block).
    pub grads: [Region; 3],
    /// Kernel workspace: one sample's im2col columns per worker, then a weight-gradient
    /// partial sum per worker after the first (one worker: just the columns).
    pub cols: Region,
    /// All trainable parameters of the segment, contiguous.
    pub params: Region,
    /// Their gradients (contiguous, same order).
    pub param_grads: Region,
    /// Their momentum (contiguous, same order).
    pub moms: Region,
    /// Number of classes (width of the logits).
    pub classes: usize,
    /// One past the last element this segment touches.
    pub end: usize,
    /// Elements of activations kept for backward (scratch, excluding gradient buffers).
    pub activations: usize,
}

impl SegLayout {
    /// The logits (output of the last op).
    pub const fn logits(&self) -> Region {
        self.ops[self.n_ops - 1].y
    }
    /// The segment's input.
    pub const fn input(&self) -> Region {
        self.ops[0].x
    }
}

/// Memory of one block by kind, in `f32` elements (multiply by [`ELEM_BYTES`] for bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Trainable parameters of every unit and head of the block.
    pub params: usize,
    /// Parameter gradients (one segment at a time).
    pub grads: usize,
    /// SGD momentum.
    pub optimizer: usize,
    /// BN running statistics.
    pub bn_state: usize,
    /// Input batch, labels, the unit-output carry buffers and the per-sample loss buffer.
    pub io: usize,
    /// Activations kept for backward (largest segment).
    pub activations: usize,
    /// Gradient buffers for activations (largest segment).
    pub act_grads: usize,
    /// Kernel workspace (im2col columns).
    pub workspace: usize,
}

impl Breakdown {
    /// Sum of all parts, in elements.
    pub const fn total(&self) -> usize {
        self.params
            + self.grads
            + self.optimizer
            + self.bn_state
            + self.io
            + self.activations
            + self.act_grads
            + self.workspace
    }
}

/// The arena layout of one block at one batch size.
#[derive(Clone, Copy, Debug)]
pub struct BlockLayout {
    /// The model.
    pub model: ModelSpec,
    /// The model's input shape.
    pub input_shape: Shape,
    /// Number of classes.
    pub classes: usize,
    /// How units form segments.
    pub mode: SegMode,
    /// First unit of the block.
    pub first: usize,
    /// Last unit of the block (inclusive).
    pub last: usize,
    /// Auxiliary head filters per unit of the model (0 where the unit has no head here).
    pub heads: [usize; MAX_UNITS],
    /// Batch size.
    pub batch: usize,
    /// Worker threads the kernel workspace is sized for (1 for the reference backend).
    pub workers: usize,
    /// Input batch.
    pub input: Region,
    /// Labels (class index as `f32`).
    pub labels: Region,
    /// Ping-pong buffers carrying a unit's output to the next unit (local mode).
    pub carry: [Region; 2],
    /// Per-sample scratch for the loss (used by device backends to reduce the loss).
    pub stats: Region,
    /// Parameters, momentum and BN state of each segment (index: segment number).
    pub seg_params: [Region; MAX_UNITS],
    /// Momentum of each segment.
    pub seg_moms: [Region; MAX_UNITS],
    /// BN state of each segment.
    pub seg_state: [Region; MAX_UNITS],
    /// Gradient area shared by all segments.
    pub grads: Region,
    /// First element of the scratch area.
    pub scratch: usize,
    /// Total elements of the arena.
    pub floats: usize,
    /// The total by kind.
    pub breakdown: Breakdown,
}

/// State elements (BN running mean and variance) of an op with input `s`.
pub const fn op_state(op: &Op, s: Shape) -> usize {
    match *op {
        Op::BatchNorm => 2 * s.c,
        Op::BasicBlock { out, .. } => {
            if op.has_projection(s) {
                6 * out
            } else {
                4 * out
            }
        }
        _ => 0,
    }
}

/// Whether an op writes its output over its input (no new buffer).
pub const fn in_place(op: &Op) -> bool {
    matches!(op, Op::Relu | Op::Flatten)
}

/// The ops of segment `seg` of a block, flattened: returns the ops, their count and the index
/// of the last unit op.
const fn segment_ops(
    model: &ModelSpec,
    classes: usize,
    mode: SegMode,
    first: usize,
    last: usize,
    heads: &[usize; MAX_UNITS],
    seg: usize,
) -> ([Op; MAX_SEG_OPS], usize, usize) {
    let mut ops = [Op::Relu; MAX_SEG_OPS];
    let mut n = 0;
    let (u0, u1) = match mode {
        SegMode::Local => (first + seg, first + seg),
        SegMode::Global => (first, last),
    };
    let mut u = u0;
    while u <= u1 {
        let unit = model.units[u];
        let mut i = 0;
        while i < unit.len() {
            assert!(n < MAX_SEG_OPS, "segment has too many ops");
            ops[n] = unit[i];
            n += 1;
            i += 1;
        }
        u += 1;
    }
    let last_unit_op = n - 1;
    let tail_head = head_ops(heads[u1], classes);
    let tail_cls = classifier_ops(classes);
    let tail: &[Op] = if u1 + 1 == model.units.len() {
        &tail_cls
    } else {
        &tail_head
    };
    let mut i = 0;
    while i < tail.len() {
        assert!(n < MAX_SEG_OPS, "segment has too many ops");
        ops[n] = tail[i];
        n += 1;
        i += 1;
    }
    (ops, n, last_unit_op)
}

/// Number of segments of a block.
pub const fn n_segments(mode: SegMode, first: usize, last: usize) -> usize {
    match mode {
        SegMode::Local => last - first + 1,
        SegMode::Global => 1,
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Lay out the scratch of one segment starting at `scratch`; `input` holds the segment's input
/// and `out` (if non-empty) receives the output of its last unit op.
#[allow(clippy::too_many_arguments)]
const fn lay_segment(
    ops: &[Op; MAX_SEG_OPS],
    n_ops: usize,
    last_unit_op: usize,
    in_shape: Shape,
    batch: usize,
    classes: usize,
    input: Region,
    out: Region,
    params: Region,
    grads: Region,
    moms: Region,
    state: Region,
    scratch: usize,
    workers: usize,
) -> SegLayout {
    let b = batch;
    let mut slots = [OpSlot::EMPTY; MAX_SEG_OPS];
    let mut bump = Bump::at(scratch);
    // The op that allocates the unit's output is the last non-in-place op of the unit.
    let mut out_op = last_unit_op;
    while in_place(&ops[out_op]) && out_op > 0 {
        out_op -= 1;
    }
    let mut s = in_shape;
    let mut x = input;
    let mut p = 0;
    let mut st = 0;
    let mut max_act = 0;
    let mut cols = 0;
    let mut wlen = 0;
    let mut has_block = false;
    let mut i = 0;
    while i < n_ops {
        let op = ops[i];
        let o = op.out_shape(s);
        let np = op.params(s);
        let ns = op_state(&op, s);
        let mut aux = [Region::NONE; 8];
        let fresh = !out.is_empty() && i == out_op;
        let y = if in_place(&op) {
            x
        } else {
            match op {
                Op::BatchNorm => aux[0] = bump.take(s.c),
                Op::Conv {
                    out,
                    k,
                    stride,
                    pad,
                    ..
                } => {
                    let g = ConvGeom {
                        n: b,
                        c_in: s.c,
                        h: s.h,
                        w: s.w,
                        c_out: out,
                        k,
                        stride,
                        pad,
                    };
                    cols = max(cols, g.cols_len());
                    wlen = max(wlen, g.weight_len());
                }
                Op::BasicBlock { out, stride } => {
                    has_block = true;
                    let g1 = ConvGeom {
                        n: b,
                        c_in: s.c,
                        h: s.h,
                        w: s.w,
                        c_out: out,
                        k: 3,
                        stride,
                        pad: 1,
                    };
                    let g2 = ConvGeom {
                        n: b,
                        c_in: out,
                        h: o.h,
                        w: o.w,
                        c_out: out,
                        k: 3,
                        stride: 1,
                        pad: 1,
                    };
                    cols = max(cols, max(g1.cols_len(), g2.cols_len()));
                    wlen = max(wlen, max(g1.weight_len(), g2.weight_len()));
                    let ol = b * o.len();
                    aux[0] = bump.take(ol);
                    aux[1] = bump.take(out);
                    aux[2] = bump.take(ol);
                    aux[3] = bump.take(ol);
                    aux[4] = bump.take(out);
                    if op.has_projection(s) {
                        aux[5] = bump.take(ol);
                        aux[6] = bump.take(out);
                        aux[7] = bump.take(ol);
                    }
                }
                _ => {}
            }
            if fresh {
                out
            } else {
                bump.take(b * o.len())
            }
        };
        max_act = max(max_act, max(x.len, y.len));
        slots[i] = OpSlot {
            op,
            input: s,
            x,
            y,
            aux,
            param: params.sub(p, np),
            grad: grads.sub(p, np),
            mom: moms.sub(p, np),
            state: state.sub(st, ns),
        };
        p += np;
        st += ns;
        x = y;
        s = o;
        i += 1;
    }
    assert!(
        p == params.len && st == state.len,
        "parameter layout mismatch"
    );
    let activations = bump.next - scratch;
    let g0 = bump.take(max_act);
    let g1 = bump.take(max_act);
    let g2 = if has_block {
        bump.take(max_act)
    } else {
        Region::NONE
    };
    // Each worker thread of a host backend gets its own im2col columns; all but the first also
    // get a weight-gradient partial sum (the first accumulates into the gradient itself).
    let cols = bump.take(workers * cols + (workers - 1) * wlen);
    SegLayout {
        batch,
        n_ops,
        ops: slots,
        last_unit_op,
        grads: [g0, g1, g2],
        cols,
        params,
        param_grads: grads.prefix(params.len),
        moms,
        classes,
        end: bump.next,
        activations,
    }
}

impl BlockLayout {
    /// Lay out the block of units `first..=last` at batch size `batch` for one worker.
    /// `heads[u]` is the head width of unit `u` (ignored for the model's last unit, which uses
    /// the classifier).
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        model: &ModelSpec,
        input_shape: Shape,
        classes: usize,
        mode: SegMode,
        first: usize,
        last: usize,
        heads: &[usize; MAX_UNITS],
        batch: usize,
    ) -> BlockLayout {
        Self::with_workers(
            model,
            input_shape,
            classes,
            mode,
            first,
            last,
            heads,
            batch,
            1,
        )
    }

    /// [`BlockLayout::new`] with kernel workspace for `workers` threads.
    #[allow(clippy::too_many_arguments)]
    pub const fn with_workers(
        model: &ModelSpec,
        input_shape: Shape,
        classes: usize,
        mode: SegMode,
        first: usize,
        last: usize,
        heads: &[usize; MAX_UNITS],
        batch: usize,
        workers: usize,
    ) -> BlockLayout {
        assert!(first <= last && last < model.units.len(), "bad block range");
        assert!(workers >= 1, "at least one worker");
        let nseg = n_segments(mode, first, last);
        let mut bump = Bump::at(0);
        // Persistent areas: params of each segment contiguous, then momentum, then state.
        let mut seg_p = [0usize; MAX_UNITS];
        let mut seg_s = [0usize; MAX_UNITS];
        let mut seg_in = [Shape::new(0, 0, 0); MAX_UNITS];
        let mut max_out = 0;
        let mut k = 0;
        while k < nseg {
            let (ops, n, lu) = segment_ops(model, classes, mode, first, last, heads, k);
            let s0 = model.unit_input(
                input_shape,
                first + if let SegMode::Local = mode { k } else { 0 },
            );
            seg_in[k] = s0;
            let mut s = s0;
            let mut i = 0;
            while i < n {
                seg_p[k] += ops[i].params(s);
                seg_s[k] += op_state(&ops[i], s);
                s = ops[i].out_shape(s);
                if i == lu {
                    max_out = max(max_out, s.len());
                }
                i += 1;
            }
            k += 1;
        }
        let mut seg_params = [Region::NONE; MAX_UNITS];
        let mut seg_moms = [Region::NONE; MAX_UNITS];
        let mut seg_state = [Region::NONE; MAX_UNITS];
        let mut max_p = 0;
        k = 0;
        while k < nseg {
            seg_params[k] = bump.take(seg_p[k]);
            max_p = max(max_p, seg_p[k]);
            k += 1;
        }
        let params_end = bump.next;
        k = 0;
        while k < nseg {
            seg_moms[k] = bump.take(seg_p[k]);
            k += 1;
        }
        let mom_end = bump.next;
        k = 0;
        while k < nseg {
            seg_state[k] = bump.take(seg_s[k]);
            k += 1;
        }
        let state_end = bump.next;
        let grads = bump.take(max_p);
        let io_start = bump.next;
        let input = bump.take(batch * seg_in[0].len());
        let labels = bump.take(batch);
        let carry = match mode {
            // A one-unit block needs no second carry buffer.
            SegMode::Local if last > first => {
                [bump.take(batch * max_out), bump.take(batch * max_out)]
            }
            SegMode::Local => [bump.take(batch * max_out), Region::NONE],
            SegMode::Global => [Region::NONE, Region::NONE],
        };
        let stats = bump.take(batch);
        let scratch = bump.next;
        let io = scratch - io_start;
        let mut layout = BlockLayout {
            model: *model,
            input_shape,
            classes,
            mode,
            first,
            last,
            heads: *heads,
            batch,
            workers,
            input,
            labels,
            carry,
            stats,
            seg_params,
            seg_moms,
            seg_state,
            grads,
            scratch,
            floats: scratch,
            breakdown: Breakdown {
                params: params_end,
                grads: max_p,
                optimizer: mom_end - params_end,
                bn_state: state_end - mom_end,
                io,
                activations: 0,
                act_grads: 0,
                workspace: 0,
            },
        };
        // Scratch: the largest segment decides.
        k = 0;
        while k < nseg {
            let seg = layout.segment(k);
            let acts = seg.activations;
            let ag = seg.grads[0].len + seg.grads[1].len + seg.grads[2].len;
            if seg.end > layout.floats {
                layout.floats = seg.end;
                layout.breakdown.activations = acts;
                layout.breakdown.act_grads = ag;
                layout.breakdown.workspace = seg.cols.len;
            }
            k += 1;
        }
        assert!(
            layout.breakdown.total() == layout.floats,
            "breakdown does not add up"
        );
        layout
    }

    /// Number of segments.
    pub const fn n_segments(&self) -> usize {
        n_segments(self.mode, self.first, self.last)
    }

    /// Bytes of the arena.
    pub const fn bytes(&self) -> u64 {
        self.floats as u64 * ELEM_BYTES
    }

    /// The region holding the block's output after a step or an evaluation pass (local
    /// mode); empty in global mode.
    pub const fn output(&self) -> Region {
        match self.mode {
            SegMode::Local => self.carry[(self.last - self.first) % 2],
            SegMode::Global => Region::NONE,
        }
    }

    /// Shape of the block's output per sample.
    pub const fn output_shape(&self) -> Shape {
        self.model.unit_input(self.input_shape, self.last + 1)
    }

    /// Layout of segment `k`.
    pub const fn segment(&self, k: usize) -> SegLayout {
        let (ops, n, lu) = segment_ops(
            &self.model,
            self.classes,
            self.mode,
            self.first,
            self.last,
            &self.heads,
            k,
        );
        let (input, out, s0) = match self.mode {
            SegMode::Local => {
                let input = if k == 0 {
                    self.input
                } else {
                    self.carry[(k - 1) % 2]
                };
                let s0 = self.model.unit_input(self.input_shape, self.first + k);
                let o = crate::model::chain_shape(self.model.units[self.first + k], s0);
                let out = self.carry[k % 2].prefix(self.batch * o.len());
                (input.prefix(self.batch * s0.len()), out, s0)
            }
            SegMode::Global => (
                self.input,
                Region::NONE,
                self.model.unit_input(self.input_shape, self.first),
            ),
        };
        lay_segment(
            &ops,
            n,
            lu,
            s0,
            self.batch,
            self.classes,
            input,
            out,
            self.seg_params[k],
            self.grads,
            self.seg_moms[k],
            self.seg_state[k],
            self.scratch,
            self.workers,
        )
    }
}
