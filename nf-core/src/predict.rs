//! Classifying one sample with a trained model, inside the arena that trained it.
//!
//! Once the last block of a plan is trained, the arena's first elements hold that block's kept
//! state (the parameters, momentum and BN statistics of its units, their heads and the
//! classifier); everything after them (gradients, inputs, activations, scratch) is free.
//! [`chain`] lays out a forward-only chain ([`InferLayout`]: units `0..=exit`, then head
//! `exit`, or the classifier when `exit` is the model's last unit) at batch 1 right after that
//! kept state. [`load`] writes the chain's weights: those of the last block's units and heads
//! are copied from its kept state, those of earlier blocks come from the caller (its
//! frozen-weight store, in whatever precision it keeps them). [`classify`] writes one sample
//! into the chain's input, runs it ([`step::infer`], BN in evaluation mode) and returns the
//! class. The kept state is never written, so predictions can be repeated and mixed freely.
//!
//! This is what the C ABI's `nf_predict` and the Rust firmware run after training. A
//! prediction with the reference backend gives, sample by sample, the class the block's own
//! evaluation ([`crate::schedule::evaluate`]) counted, when the weights given for the earlier
//! blocks are the ones that evaluation ran with.
use crate::backend::Backend;
use crate::infer::InferLayout;
use crate::layout::{BlockLayout, Kernels, OpSlot, SegMode};
use crate::model::MAX_UNITS;
use crate::region::Region;
use crate::step::{self, StepError};

/// Which part of the model a frozen op belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The unit itself.
    Unit,
    /// The unit's auxiliary head.
    Head,
}

/// An op of the chain whose weights are not in the arena (it belongs to a block before the
/// last): the caller writes them into the op's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frozen {
    /// The unit, or the unit whose head this is.
    pub unit: usize,
    /// The unit or its head.
    pub part: Part,
    /// The op's index within the unit (or the head).
    pub op: usize,
    /// Elements (parameters, then BN statistics) of the unit's (or head's) earlier ops: where
    /// this op's weights start in a store that keeps the part's ops one after another.
    pub offset: usize,
}

/// Why a prediction did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PredictError<E> {
    /// The sample does not have the model's input size.
    Sample {
        /// Values given.
        len: usize,
        /// Values of one input.
        expected: usize,
    },
    /// The chain and the block layout are not of one plan (an op's weights differ in size).
    Mismatch,
    /// The caller could not give a frozen op's weights.
    Frozen(Frozen),
    /// The chain did not run (the arena is too small for it, or the backend failed).
    Step(StepError<E>),
}

impl<E: core::fmt::Display> core::fmt::Display for PredictError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PredictError::Sample { len, expected } => write!(
                f,
                "a sample of {len} values given to a model whose input has {expected}"
            ),
            PredictError::Mismatch => {
                f.write_str("the chain and the block layout are not of one plan")
            }
            PredictError::Frozen(z) => write!(
                f,
                "the weights of op {} of unit {}{} were not given",
                z.op,
                z.unit,
                match z.part {
                    Part::Unit => "",
                    Part::Head => "'s head",
                }
            ),
            PredictError::Step(e) => e.fmt(f),
        }
    }
}

impl<E: core::error::Error> core::error::Error for PredictError<E> {}

/// One past the last element of block layout `l`'s kept state (parameters, momentum and BN
/// statistics of every segment).
pub const fn kept_end(l: &BlockLayout) -> usize {
    let mut end = 0;
    let mut k = 0;
    while k < l.n_segments() {
        let rs = [l.seg_params[k], l.seg_moms[k], l.seg_state[k]];
        let mut i = 0;
        while i < rs.len() {
            if rs[i].end() > end {
                end = rs[i].end();
            }
            i += 1;
        }
        k += 1;
    }
    end
}

/// The prediction chain for unit `exit` at batch 1, placed right after the kept state of
/// `last` (the layout of the plan's last block: its model, input shape and classes), with the
/// head widths `heads` (the plan's, [`crate::plan::Plan::heads`]) and the workspace of
/// `kernels`. It needs [`InferLayout::floats`] elements of arena.
///
/// # Panics
/// If `exit` is not a unit of the model (at compile time in a `const`).
pub const fn chain<'a>(
    last: &BlockLayout<'a>,
    heads: &[usize; MAX_UNITS],
    exit: usize,
    kernels: &Kernels,
) -> InferLayout<'a> {
    InferLayout::new(
        &last.model,
        last.input_shape,
        last.classes,
        heads,
        exit,
        true,
        1,
        kept_end(last),
        kernels,
        Region::NONE,
    )
}

/// Segment of `l` that holds unit `u`, and the index of the unit's first op in it.
fn unit_in_block(l: &BlockLayout, u: usize) -> (usize, usize) {
    match l.mode {
        SegMode::Local => (u - l.first, 0),
        SegMode::Global => (0, (l.first..u).map(|v| l.model.units[v].len()).sum()),
    }
}

/// Copy a kept op's weights into the chain's slot.
fn copy_kept<B: Backend, E>(be: &mut B, src: &OpSlot, dst: &OpSlot) -> Result<(), PredictError<E>> {
    if src.param.len() != dst.param.len() || src.state.len() != dst.state.len() {
        return Err(PredictError::Mismatch);
    }
    be.copy(src.param, dst.param);
    be.copy(src.state, dst.state);
    Ok(())
}

/// Write the weights of every op of `c` (a [`chain`] over `last`, the layout of the plan's
/// last block, whose kept state the arena holds): ops of `last`'s units and heads from that
/// state, the others through `frozen`, which writes the op's parameters into `slot.param` and
/// its BN statistics into `slot.state` and returns `false` when it cannot.
pub fn load<B: Backend>(
    be: &mut B,
    last: &BlockLayout,
    c: &InferLayout,
    mut frozen: impl FnMut(&mut B, Frozen, &OpSlot) -> bool,
) -> Result<(), PredictError<B::Error>> {
    if be.arena_len() < c.floats {
        return Err(PredictError::Step(StepError::ArenaTooSmall {
            needed: c.floats as u64 * crate::layout::ELEM_BYTES,
            got: be.arena_len() as u64 * crate::layout::ELEM_BYTES,
        }));
    }
    let seg = &c.seg;
    // The ops `dsts` of `unit`'s `part` through `frozen`, each at the offset its predecessors
    // in the part leave.
    let mut load_frozen = |be: &mut B, unit: usize, part: Part, dsts: &[OpSlot]| {
        let mut offset = 0;
        for (op, dst) in dsts.iter().enumerate() {
            let f = Frozen {
                unit,
                part,
                op,
                offset,
            };
            if !frozen(be, f, dst) {
                return Err(PredictError::Frozen(f));
            }
            offset += dst.param.len() + dst.state.len();
        }
        Ok(())
    };
    // Units, then the head: each kept op read from the last block's segment (one segment
    // layout built at a time: 2-12 KB on a device's stack).
    let mut at = 0;
    for u in 0..=c.last {
        let n = c.model.units[u].len();
        if u < last.first {
            load_frozen(be, u, Part::Unit, &seg.ops[at..at + n])?;
        } else {
            let (k, first) = unit_in_block(last, u);
            let src = last.segment(k);
            for (j, dst) in seg.ops[at..at + n].iter().enumerate() {
                copy_kept(be, &src.ops[first + j], dst)?;
            }
        }
        at += n;
    }
    let e = c.last;
    let head = &seg.ops[seg.last_unit_op + 1..seg.n_ops];
    if e < last.first {
        load_frozen(be, e, Part::Head, head)?;
    } else {
        let (k, _) = unit_in_block(last, e);
        let src = last.segment(k);
        for (i, dst) in head.iter().enumerate() {
            copy_kept(be, &src.ops[src.last_unit_op + 1 + i], dst)?;
        }
    }
    Ok(())
}

/// Classify `sample` (one input, normalised as in training) with the chain `c` whose weights
/// [`load`] wrote: the class is the first largest logit (the one the loss counts as correct);
/// the logits go to `logits` when it is not empty (its first `min(len, classes)` values).
pub fn classify<B: Backend>(
    be: &mut B,
    c: &InferLayout,
    sample: &[f32],
    logits: &mut [f32],
) -> Result<usize, PredictError<B::Error>> {
    let expected = c.input_shape.len();
    if sample.len() != expected {
        return Err(PredictError::Sample {
            len: sample.len(),
            expected,
        });
    }
    check_arena(be, c)?;
    be.write(c.input.prefix(expected), sample);
    classify_input(be, c, logits)
}

/// [`classify`] of the sample the caller already wrote into the chain's input region
/// (`c.input`, [`InferLayout::input_shape`] values): a device that reads its sample straight
/// into the arena needs no buffer of its own beside it.
pub fn classify_input<B: Backend>(
    be: &mut B,
    c: &InferLayout,
    logits: &mut [f32],
) -> Result<usize, PredictError<B::Error>> {
    check_arena(be, c)?;
    be.write(c.labels.prefix(1), &[0.0]);
    step::infer(be, c, 1).map_err(PredictError::Step)?;
    let z = c.seg.logits();
    let (mut arg, mut max) = (0, f32::NEG_INFINITY);
    for j in 0..c.classes {
        let mut v = [0.0f32];
        be.read(z.sub(j, 1), &mut v);
        if j == 0 || v[0] > max {
            max = v[0];
            arg = j;
        }
        if let Some(l) = logits.get_mut(j) {
            *l = v[0];
        }
    }
    Ok(arg)
}

/// Refuse an arena shorter than the chain.
fn check_arena<B: Backend>(be: &B, c: &InferLayout) -> Result<(), PredictError<B::Error>> {
    if be.arena_len() < c.floats {
        return Err(PredictError::Step(StepError::ArenaTooSmall {
            needed: c.floats as u64 * crate::layout::ELEM_BYTES,
            got: be.arena_len() as u64 * crate::layout::ELEM_BYTES,
        }));
    }
    Ok(())
}
