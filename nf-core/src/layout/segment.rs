//! One segment's buffers: the ops a segment runs ([`segment_ops`]), the gradient buffers its
//! backward pass writes, and where each op reads, writes and keeps its activations
//! ([`SegLayout`]). A segment is what runs forward then backward as one chain (a unit and its
//! head or the classifier in local learning; the whole block in backpropagation).
use crate::model::{classifier_ops, ModelSpec, Op, Shape, MAX_UNITS};
use crate::region::{Bump, Region};

/// `bump.take` of `n` elements of kind `kind` (in words under `kernels`' precision), adding
/// the words to `count` (the words of activations, without padding).
const fn counted(
    bump: &mut Bump,
    kernels: &Kernels,
    kind: RegionKind,
    n: usize,
    count: &mut usize,
) -> Region {
    *count += kernels.words(kind, n);
    bump.take_of(kernels.elem(kind), n)
}

use super::{block_geoms, op_geom, Kernels, RegionKind, MAX_SEG_OPS};

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
    pub(crate) const EMPTY: OpSlot = OpSlot {
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

/// Where the parameters of an op with `np` of them start in its segment's (or chain's)
/// parameter area when the ops before it end at element `p`: on a multiple of `align`
/// elements, so that a GPU's GEMMs get aligned weights and weight gradients (the area itself
/// starts aligned), or at `p` for an op without parameters or a packed layout. The elements
/// skipped are padding inside the area: the SGD update, which runs over the area as one call,
/// updates them elementwise from the gradients' padding, and nothing else reads them.
pub const fn param_start(p: usize, np: usize, align: usize) -> usize {
    if np > 0 && align > 1 {
        p.next_multiple_of(align)
    } else {
        p
    }
}

/// Whether an op writes its output over its input (no new buffer).
pub const fn in_place(op: &Op) -> bool {
    matches!(op, Op::Relu | Op::Flatten)
}

/// The ops of segment `seg` of a block, flattened: returns the ops, their count and the index
/// of the last unit op.
#[allow(clippy::too_many_arguments)]
pub(crate) const fn segment_ops(
    model: &ModelSpec,
    input: Shape,
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
    let out_shape = model.unit_input(input, u1 + 1);
    let (tail_head, n_head) = model.head(heads[u1], classes, out_shape);
    let tail_cls = classifier_ops(classes);
    let tail: &[Op] = if u1 + 1 == model.units.len() {
        &tail_cls
    } else {
        tail_head.split_at(n_head).0
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

pub(super) const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Per-sample lengths of the gradient buffers a segment's backward pass writes.
///
/// The step ([`crate::step`]) starts with dL/dlogits in buffer 0 and walks the ops backwards:
/// a convolution, linear layer or pooling writes dL/dx into the next buffer (never for the
/// segment's first op, whose input is detached), BN, ReLU and flatten work in place, and a
/// basic block uses the two other buffers for its inner gradients and writes its dL/dx over
/// its dL/dy. Each buffer is sized by the largest tensor that lands in it, so every element is
/// written. Three buffers only when the segment has a basic block.
const fn grad_lens(
    ops: &[Op; MAX_SEG_OPS],
    n_ops: usize,
    in_shape: Shape,
    classes: usize,
) -> [usize; 3] {
    let mut shapes = [Shape::new(0, 0, 0); MAX_SEG_OPS];
    let mut s = in_shape;
    let mut has_block = false;
    let mut i = 0;
    while i < n_ops {
        shapes[i] = s;
        if let Op::BasicBlock { .. } = ops[i] {
            has_block = true;
        }
        s = ops[i].out_shape(s);
        i += 1;
    }
    let nbuf = if has_block { 3 } else { 2 };
    let mut len = [classes, 0, 0];
    let mut cur = 0;
    let mut i = n_ops;
    while i > 0 {
        i -= 1;
        let s = shapes[i];
        let o = ops[i].out_shape(s);
        let need_dx = i > 0;
        let next = (cur + 1) % nbuf;
        match ops[i] {
            Op::Conv { .. } | Op::Linear(_) | Op::MaxPool2 | Op::AvgPool(_) => {
                if need_dx {
                    len[next] = max(len[next], s.len());
                }
                cur = next;
            }
            Op::BatchNorm | Op::Relu | Op::Flatten => {}
            Op::BasicBlock { .. } => {
                let (g1, g2) = ((cur + 1) % 3, (cur + 2) % 3);
                len[g1] = max(len[g1], o.len());
                if need_dx {
                    len[g2] = max(len[g2], s.len());
                    len[cur] = max(len[cur], s.len());
                }
            }
        }
    }
    len
}

/// The inputs of [`lay_segment`]: where a segment's persistent buffers are and where its
/// scratch starts.
pub(super) struct SegPlace {
    /// The segment's input (batch).
    pub(super) input: Region,
    /// Receives the output of its last unit op, if non-empty.
    pub(super) out: Region,
    pub(super) params: Region,
    pub(super) grads: Region,
    pub(super) moms: Region,
    pub(super) state: Region,
    /// First element of the scratch.
    pub(super) scratch: usize,
    /// The block's shared kernel workspace ([`super::Workspace::Fixed`]); empty to lay the segment's
    /// own out at the end of its scratch.
    pub(super) shared_ws: Region,
}

/// Lay out the scratch of one segment of `ops` (the first `n_ops`, units up to
/// `last_unit_op`) for training at batch `b`: the activations each op keeps for its backward,
/// the gradient buffers ([`grad_lens`]) and the kernel workspace.
#[allow(clippy::too_many_arguments)]
pub(super) const fn lay_segment(
    ops: &[Op; MAX_SEG_OPS],
    n_ops: usize,
    last_unit_op: usize,
    in_shape: Shape,
    b: usize,
    classes: usize,
    place: &SegPlace,
    kernels: &Kernels,
) -> SegLayout {
    use RegionKind::{Activations as Act, BnStats as Stats, Logits};
    let mut slots = [OpSlot::EMPTY; MAX_SEG_OPS];
    let mut bump = kernels.bump(place.scratch);
    let mut act = 0;
    // The op that allocates the unit's output is the last non-in-place op of the unit.
    let mut out_op = last_unit_op;
    while in_place(&ops[out_op]) && out_op > 0 {
        out_op -= 1;
    }
    let mut s = in_shape;
    let mut x = place.input;
    let mut p = 0;
    let mut st = 0;
    let mut ws = 0;
    let mut i = 0;
    while i < n_ops {
        let op = ops[i];
        let o = op.out_shape(s);
        let np = op.params(s);
        let ns = op_state(&op, s);
        p = param_start(p, np, kernels.align_elems());
        let mut aux = [Region::NONE; 8];
        let fresh = !place.out.is_empty() && i == out_op;
        // An in-place op writes over its input, except where it must produce the unit's
        // output: in a unit of in-place ops only (a ReLU alone), the first writes into
        // `place.out` (a copy, then the op in place there).
        let y = if in_place(&op) && !fresh {
            x
        } else if in_place(&op) {
            place.out
        } else {
            match op {
                Op::BatchNorm => aux[0] = counted(&mut bump, kernels, Stats, s.c, &mut act),
                Op::Conv { .. } => ws = max(ws, kernels.conv(&op_geom(&op, s, b), true)),
                Op::BasicBlock { out, .. } => {
                    let (g1, g2, gs) = block_geoms(&op, s, b);
                    ws = max(ws, kernels.conv(&g1, true));
                    ws = max(ws, kernels.conv(&g2, true));
                    if op.has_projection(s) {
                        ws = max(ws, kernels.conv(&gs, true));
                    }
                    let ol = b * o.len();
                    aux[0] = counted(&mut bump, kernels, Act, ol, &mut act);
                    aux[1] = counted(&mut bump, kernels, Stats, out, &mut act);
                    aux[2] = counted(&mut bump, kernels, Act, ol, &mut act);
                    aux[3] = counted(&mut bump, kernels, Act, ol, &mut act);
                    aux[4] = counted(&mut bump, kernels, Stats, out, &mut act);
                    if op.has_projection(s) {
                        aux[5] = counted(&mut bump, kernels, Act, ol, &mut act);
                        aux[6] = counted(&mut bump, kernels, Stats, out, &mut act);
                        aux[7] = counted(&mut bump, kernels, Act, ol, &mut act);
                    }
                }
                _ => {}
            }
            if fresh {
                place.out
            } else {
                // The segment's last op writes the logits the loss reads.
                let kind = if i + 1 == n_ops { Logits } else { Act };
                counted(&mut bump, kernels, kind, b * o.len(), &mut act)
            }
        };
        slots[i] = OpSlot {
            op,
            input: s,
            x,
            y,
            aux,
            param: place.params.sub(p, np),
            grad: place.grads.sub(p, np),
            mom: place.moms.sub(p, np),
            state: place.state.sub(st, ns),
        };
        p += np;
        st += ns;
        x = y;
        s = o;
        i += 1;
    }
    assert!(
        p == place.params.len() && st == place.state.len(),
        "parameter layout mismatch"
    );
    let activations = act;
    let gl = grad_lens(ops, n_ops, in_shape, classes);
    let grads = [
        bump.take_of(kernels.elem(RegionKind::ActGrads), b * gl[0]),
        bump.take_of(kernels.elem(RegionKind::ActGrads), b * gl[1]),
        bump.take_of(kernels.elem(RegionKind::ActGrads), b * gl[2]),
    ];
    let cols = if place.shared_ws.is_empty() {
        bump.take(kernels.segment_of(ws))
    } else {
        place.shared_ws
    };
    SegLayout {
        batch: b,
        n_ops,
        ops: slots,
        last_unit_op,
        grads,
        cols,
        params: place.params,
        param_grads: place.grads.prefix(place.params.len()),
        moms: place.moms,
        classes,
        end: bump.next,
        activations,
    }
}
