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
use crate::region::{Bump, Region};

/// The placement of a forward-only chain: units `0..=last`, then (when `scored`) head `last`
/// or, for the model's last unit, the classifier.
#[derive(Clone, Copy, Debug)]
pub struct InferLayout {
    /// The model.
    pub model: ModelSpec,
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

impl InferLayout {
    /// Lay out units `0..=last` of `model` (and, when `scored`, their head or classifier) for
    /// `batch` samples from element `start` of the arena, with the workspace of `kernels`:
    /// `shared_ws` when it is not empty (a block's [`Workspace::Fixed`] region, which the chain
    /// uses between the block's steps), else a region of its own.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        model: &ModelSpec,
        input_shape: Shape,
        classes: usize,
        heads: &[usize; MAX_UNITS],
        last: usize,
        scored: bool,
        batch: usize,
        start: usize,
        kernels: &Kernels,
        shared_ws: Region,
    ) -> InferLayout {
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
        // Parameters and state, op by op; the sizes of the ping-pong and temporary buffers.
        let mut np = 0;
        let mut ns = 0;
        let mut len = [0usize; 2];
        let mut tmp = 0;
        let mut ws = 0;
        let mut s = input_shape;
        // Buffer holding the current activation: 2 is the input.
        let mut cur = 2;
        let mut i = 0;
        while i < n_ops {
            let op = ops[i];
            let o = op.out_shape(s);
            np += op.params(s);
            ns += op_state(&op, s);
            if !crate::layout::in_place(&op) {
                cur = if cur == 0 { 1 } else { 0 };
                len[cur] = max(len[cur], o.len());
            }
            match op {
                Op::Conv { .. } => ws = max(ws, kernels.conv(&op_geom(&op, s, b), false)),
                Op::BasicBlock { .. } => {
                    let (g1, g2, gs) = block_geoms(&op, s, b);
                    ws = max(ws, max(kernels.conv(&g1, false), kernels.conv(&g2, false)));
                    let temps = if op.has_projection(s) {
                        ws = max(ws, kernels.conv(&gs, false));
                        5
                    } else {
                        3
                    };
                    tmp = max(tmp, temps * o.len());
                }
                _ => {}
            }
            s = o;
            i += 1;
        }
        let mut bump = Bump::at(start);
        let params = bump.take(np);
        let state = bump.take(ns);
        let input = bump.take(b * input_shape.len());
        let labels = if scored { bump.take(b) } else { Region::NONE };
        let pp = [bump.take(b * len[0]), bump.take(b * len[1])];
        let temps = bump.take(b * tmp);
        let activations = pp[0].len + pp[1].len + temps.len;
        let cols = if shared_ws.is_empty() {
            bump.take(kernels.segment_of(ws))
        } else {
            shared_ws
        };
        // The slots.
        let mut slots = [OpSlot::EMPTY; MAX_SEG_OPS];
        let mut s = input_shape;
        let mut x = input;
        let mut cur = 2;
        let mut p = 0;
        let mut st = 0;
        let mut i = 0;
        while i < n_ops {
            let op = ops[i];
            let o = op.out_shape(s);
            let mut aux = [Region::NONE; 8];
            let y = if crate::layout::in_place(&op) {
                x
            } else {
                cur = if cur == 0 { 1 } else { 0 };
                pp[cur].prefix(b * o.len())
            };
            if let Op::BasicBlock { .. } = op {
                // Evaluation uses a1, z1, a2 and, with a projection, s1 and zs (no invstd).
                let ol = b * o.len();
                aux[0] = temps.sub(0, ol);
                aux[2] = temps.sub(ol, ol);
                aux[3] = temps.sub(2 * ol, ol);
                if op.has_projection(s) {
                    aux[5] = temps.sub(3 * ol, ol);
                    aux[7] = temps.sub(4 * ol, ol);
                }
            }
            let n_p = op.params(s);
            let n_s = op_state(&op, s);
            slots[i] = OpSlot {
                op,
                input: s,
                x,
                y,
                aux,
                param: params.sub(p, n_p),
                grad: Region::NONE,
                mom: Region::NONE,
                state: state.sub(st, n_s),
            };
            p += n_p;
            st += n_s;
            x = y;
            s = o;
            i += 1;
        }
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
                ops: slots,
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
