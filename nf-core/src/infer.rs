//! Forward-only chains in inference mode: the frozen units that recompute a block's inputs,
//! and a trained model as it is evaluated or exported (units, then a head or the classifier).
//!
//! An [`InferLayout`] places, from a given element of the arena: the chain's parameters and BN
//! running statistics, its input batch (and the labels when it ends in a head or the
//! classifier), two ping-pong activation buffers each sized by the largest output it holds, a
//! temporary area for the inner tensors of basic blocks, and the kernel workspace. Nothing is
//! kept for a backward pass, so a chain costs its weights plus a few activations of its widest
//! layer. Every function is `const`.
#[cfg(doc)]
use crate::layout::Workspace;
use crate::layout::{
    block_geoms, op_geom, op_state, segment_ops, Kernels, OpSlot, SegLayout, SegMode, ELEM_BYTES,
    MAX_SEG_OPS,
};
use crate::model::{ModelSpec, Op, Shape, MAX_UNITS};
use crate::region::Region;

/// The placement of a forward-only chain: units `0..=last`, then (when `scored`) head `last`
/// or, for the model's last unit, the classifier.
#[derive(Clone, Copy, Debug)]
pub struct InferLayout<'a> {
    /// The model.
    pub model: ModelSpec<'a>,
    /// The model's input shape.
    pub input_shape: Shape,
    /// Number of classes.
    pub classes: usize,
    /// Head widths per unit.
    pub heads: [usize; MAX_UNITS],
    /// Last unit of the chain.
    pub last: usize,
    /// Whether the chain ends in a head (or the classifier) and a loss.
    pub scored: bool,
    /// Samples per pass.
    pub batch: usize,
    /// First element of the chain in the arena.
    pub start: usize,
    /// All parameters of the chain, op by op.
    pub params: Region,
    /// All BN running statistics, op by op.
    pub state: Region,
    /// The input batch.
    pub input: Region,
    /// Labels (class index as `f32`; only when scored).
    pub labels: Region,
    /// The ops and their buffers (no gradients, no momentum).
    pub seg: SegLayout,
    /// One past the last element of the chain.
    pub floats: usize,
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// The ping-pong buffer an op that is not in place writes after reading from buffer `cur`
/// (`2`: the chain's input).
const fn other(cur: usize) -> usize {
    if cur == 0 {
        1
    } else {
        0
    }
}

/// What a chain's ops need, measured before anything is placed (per sample where it scales
/// with the batch).
struct Needs {
    /// Parameter elements of every op.
    params: usize,
    /// BN running-statistic elements of every op.
    state: usize,
    /// Per-sample elements of each ping-pong buffer: the largest output it holds.
    ping_pong: [usize; 2],
    /// Per-sample elements of the basic blocks' temporary area.
    temps: usize,
    /// Workspace elements of the most demanding convolution (at the chain's batch).
    workspace: usize,
}

/// The needs of the first `n_ops` of `ops` on input `s` at batch `b` with `kernels`.
const fn needs(
    ops: &[Op; MAX_SEG_OPS],
    n_ops: usize,
    mut s: Shape,
    b: usize,
    kernels: &Kernels,
) -> Needs {
    let mut n = Needs {
        params: 0,
        state: 0,
        ping_pong: [0; 2],
        temps: 0,
        workspace: 0,
    };
    let mut cur = 2;
    let mut i = 0;
    while i < n_ops {
        let op = ops[i];
        let o = op.out_shape(s);
        let np = op.params(s);
        n.params = crate::layout::param_start(n.params, np, kernels.align_elems()) + np;
        n.state += op_state(&op, s);
        if !crate::layout::in_place(&op) {
            cur = other(cur);
            n.ping_pong[cur] = max(n.ping_pong[cur], o.len());
        }
        match op {
            Op::Conv { .. } => {
                n.workspace = max(n.workspace, kernels.conv(&op_geom(&op, s, b), false));
            }
            Op::BasicBlock { .. } => {
                let (g1, g2, gs) = block_geoms(&op, s, b);
                let convs = max(kernels.conv(&g1, false), kernels.conv(&g2, false));
                n.workspace = max(n.workspace, convs);
                let temps = if op.has_projection(s) {
                    n.workspace = max(n.workspace, kernels.conv(&gs, false));
                    5
                } else {
                    3
                };
                n.temps = max(n.temps, temps * o.len());
            }
            _ => {}
        }
        s = o;
        i += 1;
    }
    n
}

/// The regions a chain's ops are placed in.
struct Areas {
    /// Alignment of each op's parameters in `params`, in elements.
    align: usize,
    params: Region,
    state: Region,
    input: Region,
    ping_pong: [Region; 2],
    temps: Region,
}

/// The slots of the first `n_ops` of `ops` on input `s` at batch `b`: parameters and state
/// op by op, activations alternating between the ping-pong buffers (in place for ReLU and
/// flatten), a basic block's inner tensors in the temporary area.
const fn place_ops(
    ops: &[Op; MAX_SEG_OPS],
    n_ops: usize,
    mut s: Shape,
    b: usize,
    a: &Areas,
) -> [OpSlot; MAX_SEG_OPS] {
    let mut slots = [OpSlot::EMPTY; MAX_SEG_OPS];
    let mut x = a.input;
    let mut cur = 2;
    let mut p = 0;
    let mut st = 0;
    let mut i = 0;
    while i < n_ops {
        let op = ops[i];
        let o = op.out_shape(s);
        let y = if crate::layout::in_place(&op) {
            x
        } else {
            cur = other(cur);
            a.ping_pong[cur].prefix(b * o.len())
        };
        let aux = if let Op::BasicBlock { .. } = op {
            block_aux(op.has_projection(s), b * o.len(), a.temps)
        } else {
            [Region::NONE; 8]
        };
        let n_p = op.params(s);
        let n_s = op_state(&op, s);
        p = crate::layout::param_start(p, n_p, a.align);
        slots[i] = OpSlot {
            op,
            input: s,
            x,
            y,
            aux,
            param: a.params.sub(p, n_p),
            grad: Region::NONE,
            mom: Region::NONE,
            state: a.state.sub(st, n_s),
        };
        p += n_p;
        st += n_s;
        x = y;
        s = o;
        i += 1;
    }
    slots
}

/// A basic block's inner tensors in evaluation (`a1`, `z1`, `a2` and, with a projection,
/// `s1` and `zs`; no `invstd`), each of `len` elements, one after another in `temps`.
const fn block_aux(projection: bool, len: usize, temps: Region) -> [Region; 8] {
    let mut aux = [Region::NONE; 8];
    aux[0] = temps.sub(0, len);
    aux[2] = temps.sub(len, len);
    aux[3] = temps.sub(2 * len, len);
    if projection {
        aux[5] = temps.sub(3 * len, len);
        aux[7] = temps.sub(4 * len, len);
    }
    aux
}

impl<'a> InferLayout<'a> {
    /// The same chain over `model` (which must describe the same units), as
    /// [`crate::plan::Plan::with_model`]: a pass ([`crate::step::infer`]) reads only the
    /// chain's regions, so a caller may keep it with an empty `units` between calls.
    pub const fn with_model<'b>(&self, model: ModelSpec<'b>) -> InferLayout<'b> {
        InferLayout {
            model,
            input_shape: self.input_shape,
            classes: self.classes,
            heads: self.heads,
            last: self.last,
            scored: self.scored,
            batch: self.batch,
            start: self.start,
            params: self.params,
            state: self.state,
            input: self.input,
            labels: self.labels,
            seg: self.seg,
            floats: self.floats,
        }
    }

    /// Lay out units `0..=last` of `model` (and, when `scored`, their head or classifier) for
    /// `batch` samples from element `start` of the arena, with the workspace of `kernels`:
    /// `shared_ws` when it is not empty (a block's [`Workspace::Fixed`] region, which the chain
    /// uses between the block's steps), else a region of its own.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        model: &ModelSpec<'a>,
        input_shape: Shape,
        classes: usize,
        heads: &[usize; MAX_UNITS],
        last: usize,
        scored: bool,
        batch: usize,
        start: usize,
        kernels: &Kernels,
        shared_ws: Region,
    ) -> Self {
        assert!(last < model.units.len(), "bad chain range");
        let (ops, all, lu) = segment_ops(
            model,
            input_shape,
            classes,
            SegMode::Global,
            0,
            last,
            heads,
            0,
        );
        let n_ops = if scored { all } else { lu + 1 };
        let b = batch;
        let need = needs(&ops, n_ops, input_shape, b, kernels);
        let mut bump = kernels.bump(start);
        let params = bump.take(need.params);
        let state = bump.take(need.state);
        let input = bump.take(b * input_shape.len());
        let labels = if scored { bump.take(b) } else { Region::NONE };
        let ping_pong = [
            bump.take(b * need.ping_pong[0]),
            bump.take(b * need.ping_pong[1]),
        ];
        let temps = bump.take(b * need.temps);
        let activations = ping_pong[0].len() + ping_pong[1].len() + temps.len();
        let cols = if shared_ws.is_empty() {
            bump.take(kernels.segment_of(need.workspace))
        } else {
            shared_ws
        };
        let areas = Areas {
            align: kernels.align_elems(),
            params,
            state,
            input,
            ping_pong,
            temps,
        };
        InferLayout {
            model: *model,
            input_shape,
            classes,
            heads: *heads,
            last,
            scored,
            batch,
            start,
            params,
            state,
            input,
            labels,
            seg: SegLayout {
                batch,
                n_ops,
                ops: place_ops(&ops, n_ops, input_shape, b, &areas),
                last_unit_op: lu,
                grads: [Region::NONE; 3],
                cols,
                params,
                param_grads: Region::NONE,
                moms: Region::NONE,
                classes,
                end: bump.next,
                activations,
            },
            floats: bump.next,
        }
    }

    /// Elements the chain occupies (from [`InferLayout::start`]).
    pub const fn len(&self) -> usize {
        self.floats - self.start
    }

    /// Whether the chain occupies no element (never: it has at least one unit).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the chain occupies.
    pub const fn bytes(&self) -> u64 {
        self.len() as u64 * ELEM_BYTES
    }

    /// Where the output of unit [`InferLayout::last`] is after a pass (per sample
    /// [`InferLayout::output_shape`]).
    pub const fn output(&self) -> Region {
        self.seg.ops[self.seg.last_unit_op].y
    }

    /// Shape of unit `last`'s output per sample.
    pub const fn output_shape(&self) -> Shape {
        self.model.unit_input(self.input_shape, self.last + 1)
    }
}
