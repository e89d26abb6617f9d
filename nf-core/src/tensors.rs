//! Named tensors: where each parameter, running statistic and momentum buffer of a block lives
//! in the arena, under PyTorch-style names.
//!
//! Names follow `nn.Sequential` indexing so that a PyTorch user can rebuild the model and load
//! the weights with `load_state_dict`:
//!
//! - unit `u`, op `i` of the unit: `units.{u}.{i}.weight` / `.bias` (conv OIHW, linear
//!   `[out, in]`), batch norm `units.{u}.{i}.weight`, `.bias`, `.running_mean`, `.running_var`;
//!   a basic block (always op 0 of its unit) has `conv1`, `bn1`, `conv2`, `bn2` and, with a
//!   projection, `shortcut.0` (conv 1x1) and `shortcut.1` (BN) below `units.{u}.0`;
//! - the auxiliary head of unit `u`: `heads.{u}.{i}.*` with `i` indexing
//!   `[conv, bn, relu, avgpool, flatten, linear]`;
//! - the model's classifier: `classifier.2.weight` / `.bias` (`[avgpool, flatten, linear]`).
use crate::infer::InferLayout;
use crate::layout::{BlockLayout, OpSlot, SegLayout};
use crate::model::{ModelSpec, Op};
use crate::region::Region;

/// Which part of the model a tensor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Unit `u`.
    Unit(usize),
    /// The auxiliary head of unit `u`.
    Head(usize),
    /// The model's own classifier.
    Classifier,
}

/// What a tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A trainable parameter.
    Param,
    /// A BN running statistic.
    State,
}

/// One tensor of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// The part it belongs to.
    pub part: Part,
    /// Index of the op inside the part.
    pub index: usize,
    /// The name below the op (`weight`, `bias`, `running_mean`, `conv1.weight`, …).
    pub name: &'static str,
    /// Parameter or state.
    pub kind: Kind,
    /// Where the values are.
    pub region: Region,
    /// Where its momentum is (parameters only; empty for state).
    pub momentum: Region,
    /// Dimensions (unused trailing entries are 0).
    pub shape: [usize; 4],
}

impl TensorRef {
    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.iter().take_while(|&&d| d != 0).count()
    }
}

/// Call `f` for every tensor of the block, segment by segment, in arena order.
pub fn visit(layout: &BlockLayout, mut f: impl FnMut(TensorRef)) {
    for k in 0..layout.n_segments() {
        let units = match layout.mode {
            crate::layout::SegMode::Local => (layout.first + k, layout.first + k),
            crate::layout::SegMode::Global => (layout.first, layout.last),
        };
        visit_segment(&layout.model, &layout.segment(k), units, &mut f);
    }
}

/// Call `f` for every tensor of a forward-only chain (its units, then its head or classifier
/// when it is scored).
pub fn visit_chain(chain: &InferLayout, mut f: impl FnMut(TensorRef)) {
    visit_segment(&chain.model, &chain.seg, (0, chain.last), &mut f);
}

/// The tensors of one segment holding units `units.0..=units.1` (then, after its last unit
/// op, the head of unit `units.1` or the model's classifier).
fn visit_segment(
    model: &ModelSpec,
    seg: &SegLayout,
    units: (usize, usize),
    f: &mut impl FnMut(TensorRef),
) {
    // Walk units in step with the ops to name them.
    let (mut u, mut i) = (units.0, 0);
    for (at, slot) in seg.ops[..seg.n_ops].iter().enumerate() {
        let part = if at <= seg.last_unit_op {
            while i >= model.units[u].len() {
                u += 1;
                i = 0;
            }
            Part::Unit(u)
        } else if units.1 + 1 == model.units.len() {
            Part::Classifier
        } else {
            Part::Head(units.1)
        };
        let index = if at <= seg.last_unit_op {
            i
        } else {
            at - seg.last_unit_op - 1
        };
        op_tensors(slot, part, index, f);
        i += 1;
    }
}

fn op_tensors(slot: &OpSlot, part: Part, index: usize, f: &mut impl FnMut(TensorRef)) {
    let s = slot.input;
    let mut p_at = 0;
    let mut s_at = 0;
    let mut param = |name: &'static str, shape: [usize; 4], f: &mut dyn FnMut(TensorRef)| {
        let len: usize = shape.iter().filter(|&&d| d != 0).product();
        let t = TensorRef {
            part,
            index,
            name,
            kind: Kind::Param,
            region: slot.param.sub(p_at, len),
            // A forward-only chain keeps no momentum.
            momentum: if slot.mom.is_empty() {
                Region::NONE
            } else {
                slot.mom.sub(p_at, len)
            },
            shape,
        };
        p_at += len;
        f(t);
    };
    let mut state = |name: &'static str, c: usize, f: &mut dyn FnMut(TensorRef)| {
        let t = TensorRef {
            part,
            index,
            name,
            kind: Kind::State,
            region: slot.state.sub(s_at, c),
            momentum: Region::NONE,
            shape: [c, 0, 0, 0],
        };
        s_at += c;
        f(t);
    };
    match slot.op {
        Op::Conv { out, k, bias, .. } => {
            param("weight", [out, s.c, k, k], f);
            if bias {
                param("bias", [out, 0, 0, 0], f);
            }
        }
        Op::BatchNorm => {
            param("weight", [s.c, 0, 0, 0], f);
            param("bias", [s.c, 0, 0, 0], f);
            state("running_mean", s.c, f);
            state("running_var", s.c, f);
        }
        Op::Linear(out) => {
            param("weight", [out, s.len(), 0, 0], f);
            param("bias", [out, 0, 0, 0], f);
        }
        Op::BasicBlock { out, .. } => {
            let proj = slot.op.has_projection(s);
            param("conv1.weight", [out, s.c, 3, 3], f);
            param("bn1.weight", [out, 0, 0, 0], f);
            param("bn1.bias", [out, 0, 0, 0], f);
            param("conv2.weight", [out, out, 3, 3], f);
            param("bn2.weight", [out, 0, 0, 0], f);
            param("bn2.bias", [out, 0, 0, 0], f);
            if proj {
                param("shortcut.0.weight", [out, s.c, 1, 1], f);
                param("shortcut.1.weight", [out, 0, 0, 0], f);
                param("shortcut.1.bias", [out, 0, 0, 0], f);
            }
            state("bn1.running_mean", out, f);
            state("bn1.running_var", out, f);
            state("bn2.running_mean", out, f);
            state("bn2.running_var", out, f);
            if proj {
                state("shortcut.1.running_mean", out, f);
                state("shortcut.1.running_var", out, f);
            }
        }
        Op::Relu | Op::MaxPool2 | Op::AvgPool(_) | Op::Flatten => {}
    }
}
