//! Classifying a sample with the trained model, inside the memory the trainer holds.
//!
//! Once every block is trained, the arena's first elements hold the last block's kept state
//! (parameters, momentum and BN statistics of its units, heads and the classifier); everything
//! after them (gradients, io, scratch) is free. A prediction lays a forward-only chain
//! (`nf_core::infer::InferLayout`: units `0..=e`, then head `e`, or the classifier when `e` is the last unit)
//! at batch 1 right after that kept state, copies its weights in (units and heads of earlier
//! blocks from the frozen-weight store, those of the last block from its kept state), writes
//! the sample into the chain's input and runs it. The kept state is never written, so
//! predictions can be repeated and mixed freely, at any unit that was evaluated. The chain, the
//! loading and the pass are nf-core's (`nf_core::predict`); this file validates and maps
//! the store.
use nf_core::backend::Backend;
use nf_core::layout::Kernels;
use nf_core::model::Op;
use nf_core::predict::{self, Part};
use nf_core::reference::ReferenceBackend;

use crate::planned::{head_offset, spec, store_offset};
use crate::train::Trainer;
use crate::{NF_E_ARG, NF_E_STATE, NF_E_STEP, NF_MAX_UNITS};

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
        let c = predict::chain(&l, &plan.heads, e, &Kernels::REFERENCE);
        let (arena, store) = self.memory_views();
        let mut be = ReferenceBackend::new(arena);
        // Units and heads of earlier blocks: from the frozen-weight store (f32: the weights
        // their evaluation ran with).
        predict::load(&mut be, &l, &c, |be, f, dst| {
            let base = match f.part {
                Part::Unit => store_offset(&spec, f.unit),
                Part::Head => head_offset(&spec, &plan.heads, model.classes, f.unit),
            };
            let (p, s) = (dst.param.len, dst.state.len);
            let at = base + f.offset;
            let Some(w) = store.get(at..at + p + s) else {
                return false;
            };
            be.write(dst.param, &w[..p]);
            be.write(dst.state, &w[p..]);
            true
        })
        .map_err(|_| NF_E_STEP)?;
        let arg = predict::classify(&mut be, &c, sample, logits.unwrap_or(&mut []))
            .map_err(|_| NF_E_STEP)?;
        Ok(arg as u32)
    }
}
