//! Classifying a sample with the trained model, inside the memory the trainer holds.
//!
//! Once every block is trained, the arena's first elements hold the last block's kept state
//! (parameters, momentum and BN statistics of its units, heads and the classifier); everything
//! after them (gradients, io, scratch) is free. A prediction lays a forward-only chain
//! ([`InferLayout`]: units `0..=e`, then head `e`, or the classifier when `e` is the last unit)
//! at batch 1 right after that kept state, copies its weights in (units and heads of earlier
//! blocks from the frozen-weight store, those of the last block from its kept state), writes
//! the sample into the chain's input and runs it. The kept state is never written, so
//! predictions can be repeated and mixed freely, at any unit that was evaluated.
use nf_core::backend::Backend;
use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, Kernels, OpSlot, SegMode};
use nf_core::model::{ModelSpec, Op};
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::step;

use crate::planned::{head_offset, spec, store_offset};
use crate::train::Trainer;
use crate::{NF_E_ARG, NF_E_STATE, NF_E_STEP, NF_MAX_UNITS};

/// Where the weights of one op of the prediction chain come from.
enum Source {
    /// The frozen-weight store, from this offset: the parameters, then the BN statistics.
    Store(usize),
    /// The parameters and BN statistics of an op of the last block (its kept state in the
    /// arena).
    Slot(Region, Region),
}

/// The slots of unit `u` (the block's ops from its `j`-th on) and of its head or classifier in
/// the last block `l`: (segment, index of the unit's first op in it).
fn unit_in_block(spec: &ModelSpec, l: &BlockLayout, u: usize) -> (usize, usize) {
    match l.mode {
        SegMode::Local => (u - l.first, 0),
        SegMode::Global => (0, (l.first..u).map(|v| spec.units[v].len()).sum()),
    }
}

impl Trainer {
    /// Classify `sample` (the model's input, normalised as the read callback gives it) with
    /// unit `unit`'s head (the classifier for the last unit), or with the early exit when
    /// `unit` is `None`; the logits go to `logits` when given. Every block must be trained.
    pub(crate) fn predict(
        &mut self,
        unit: Option<usize>,
        sample: &[f32],
        logits: Option<&mut [f32]>,
    ) -> Result<u32, i32> {
        if self.failed || self.block < self.plan.n_blocks {
            return Err(NF_E_STATE);
        }
        let nu = self.model.n_units();
        let e = match unit {
            Some(u) => u,
            None => self.exit(self.tolerance).ok_or(NF_E_STATE)?,
        };
        // Only a unit whose head was evaluated (all of them but in backpropagation, where
        // only the classifier is) has one.
        if e >= nu || e >= NF_MAX_UNITS || self.test_acc[e] < 0.0 {
            return Err(NF_E_ARG);
        }
        let model = self.model;
        let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
        let spec = spec(&model, &mut refs);
        let mut plan = self.plan;
        plan.model = spec;
        let l = plan.layout(plan.n_blocks - 1);
        let kept_end = (0..l.n_segments())
            .flat_map(|k| [l.seg_params[k], l.seg_moms[k], l.seg_state[k]])
            .map(|r| r.end())
            .max()
            .unwrap_or(0);
        let c = InferLayout::new(
            &spec,
            model.input,
            model.classes,
            &plan.heads,
            e,
            true,
            1,
            kept_end,
            &Kernels::REFERENCE,
            Region::NONE,
        );
        let (arena, store) = self.memory_views();
        if c.floats > arena.len() || sample.len() != model.input.len() {
            return Err(NF_E_STEP);
        }
        let mut be = ReferenceBackend::new(arena);
        let seg = &c.seg;
        // Each op of the chain: unit `u`'s `j`-th op, or the head's.
        let mut at = 0;
        for u in 0..=e {
            let n = spec.units[u].len();
            for j in 0..n {
                let src = if u < l.first {
                    let off = store_offset(&spec, u) + op_store_offset(&spec, u, j);
                    Source::Store(off)
                } else {
                    let (k, first) = unit_in_block(&spec, &l, u);
                    {
                        let o = l.segment(k).ops[first + j];
                        Source::Slot(o.param, o.state)
                    }
                };
                load(&mut be, store, &seg.ops[at + j], src)?;
            }
            at += n;
        }
        // The head (or classifier).
        let mut off = if e < l.first {
            head_offset(&spec, &plan.heads, model.classes, e)
        } else {
            0
        };
        for (i, dst) in seg.ops[seg.last_unit_op + 1..seg.n_ops].iter().enumerate() {
            let src = if e < l.first {
                let s = Source::Store(off);
                off += dst.param.len + dst.state.len;
                s
            } else {
                let (k, _) = unit_in_block(&spec, &l, e);
                let sl = l.segment(k);
                {
                    let o = sl.ops[sl.last_unit_op + 1 + i];
                    Source::Slot(o.param, o.state)
                }
            };
            load(&mut be, store, dst, src)?;
        }
        be.write(c.input.prefix(sample.len()), sample);
        be.write(c.labels.prefix(1), &[0.0]);
        step::infer(&mut be, &c, 1).map_err(|_| NF_E_STEP)?;
        let (arena, _) = self.memory_views();
        let z = c.seg.logits().prefix(model.classes);
        let z = &arena[z.offset..z.end()];
        // The class the accuracy counts: the first largest logit (as nf-core's loss).
        let (mut arg, mut max) = (0usize, z[0]);
        for (j, &v) in z.iter().enumerate().skip(1) {
            if v > max {
                max = v;
                arg = j;
            }
        }
        if let Some(out) = logits {
            out.copy_from_slice(z);
        }
        Ok(arg as u32)
    }
}

/// Offset of op `j` of unit `u` within the unit's part of the store.
fn op_store_offset(spec: &ModelSpec, u: usize, j: usize) -> usize {
    let mut s = spec.unit_input(spec.input, u);
    let mut n = 0;
    for op in &spec.units[u][..j] {
        n += op.params(s) + nf_core::layout::op_state(op, s);
        s = op.out_shape(s);
    }
    n
}

/// Copy one op's parameters and BN statistics from `src` into the chain's slot `dst`.
fn load(
    be: &mut ReferenceBackend<'_>,
    store: &[f32],
    dst: &OpSlot,
    src: Source,
) -> Result<(), i32> {
    match src {
        Source::Store(off) => {
            let (p, s) = (dst.param.len, dst.state.len);
            let w = store.get(off..off + p + s).ok_or(NF_E_STEP)?;
            be.write(dst.param, &w[..p]);
            be.write(dst.state, &w[p..]);
        }
        Source::Slot(param, state) => {
            if param.len != dst.param.len || state.len != dst.state.len {
                return Err(NF_E_STEP);
            }
            be.copy(param, dst.param);
            be.copy(state, dst.state);
        }
    }
    Ok(())
}
