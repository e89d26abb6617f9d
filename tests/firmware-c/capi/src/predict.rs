//! Classifying a sample with the trained model, inside the memory the trainer holds.
//!
//! Once every block is trained, the arena's first elements hold the last block's kept state
//! (parameters, momentum and BN statistics of its units, heads and the classifier); everything
//! after them (gradients, io, scratch) is free. The first prediction at a unit lays a forward-only chain
//! (`nf_core::infer::InferLayout`: units `0..=e`, then head `e`, or the classifier when `e` is the last unit)
//! at batch 1 right after that kept state, copies its weights in (units and heads of earlier
//! blocks from the frozen-weight store, those of the last block from its kept state) and keeps
//! the chain in the trainer (nothing a pass writes overlaps its weights); each prediction then
//! writes the sample into the chain's input and runs it. The kept state is never written, so
//! predictions can be repeated and mixed freely, at any unit that was evaluated. The chain, the
//! loading and the pass are nf-core's (`nf_core::predict`); this file validates and maps
//! the store.
use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, Kernels};
use nf_core::model::Op;
use nf_core::predict::{self, Part};
use nf_core::reference::ReferenceBackend;

use crate::feed::write_f16;
use crate::planned::{detached, head_offset, spec, store_offset};
use crate::train::{ChainFor, State, Trainer};
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
        if self.lay.chain_for != ChainFor::Predict(e) || self.lay.chain.is_none() {
            self.load_chain(e)?;
        }
        let Trainer { s, lay } = self;
        let c = lay.chain.as_ref().ok_or(NF_E_STEP)?;
        let (arena, _) = s.memory_views();
        let mut be = ReferenceBackend::new(arena);
        let arg = predict::classify(&mut be, c, sample, logits.unwrap_or(&mut []))
            .map_err(|_| NF_E_STEP)?;
        Ok(arg as u32)
    }

    /// Lay out the prediction chain of unit `e` into [`Trainer::lay`] and write its weights
    /// (units and heads of earlier blocks from the frozen-weight store, those of the last
    /// block from its kept state).
    fn load_chain(&mut self, e: usize) -> Result<(), i32> {
        self.lay.chain = None;
        self.lay.chain_for = ChainFor::Block;
        let Trainer { s: st, lay } = self;
        let last = lay.layout.as_ref().ok_or(NF_E_STATE)?;
        load_predict(st, last, e, &mut lay.chain)?;
        lay.chain_for = ChainFor::Predict(e);
        Ok(())
    }
}

/// Lay out the prediction chain of unit `e` after `last` (the last block's layout), write its
/// weights, and keep it in `slot`, its model detached. Never inlined: the chain and the
/// segment layouts the loading makes are gone when the predictions run.
#[inline(never)]
fn load_predict(
    st: &mut State,
    last: &BlockLayout<'static>,
    e: usize,
    slot: &mut Option<InferLayout<'static>>,
) -> Result<(), i32> {
    let model = st.model;
    let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
    let spec = spec(&model, &mut refs);
    let l = last.with_model(spec);
    let heads = st.plan.heads;
    let c = predict::chain(&l, &heads, e, &Kernels::REFERENCE);
    let (arena, store) = st.memory_views();
    let mut be = ReferenceBackend::new(arena);
    // Units and heads of earlier blocks: from the frozen-weight store (half precision: the
    // weights their evaluation ran with).
    predict::load(&mut be, &l, &c, |be, f, dst| {
        let base = match f.part {
            Part::Unit => store_offset(&spec, f.unit),
            Part::Head => head_offset(&spec, &heads, model.classes, f.unit),
        };
        let (p, s) = (dst.param.len(), dst.state.len());
        let at = base + f.offset;
        let Some(w) = store.get(at..at + p + s) else {
            return false;
        };
        write_f16(be, dst.param, &w[..p]).is_ok() && write_f16(be, dst.state, &w[p..]).is_ok()
    })
    .map_err(|_| NF_E_STEP)?;
    *slot = Some(c.with_model(detached(&model)));
    Ok(())
}
