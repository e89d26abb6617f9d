//! One training or evaluation call's view of the current block ([`Ctx`]): an epoch, the
//! block's evaluation and freezing into the half-precision store, over nf-core's reference
//! backend in the caller's memory.

use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, SegMode};
use nf_core::model::{ModelSpec, MAX_UNITS};
use nf_core::reference::ReferenceBackend;
use nf_core::rng::Rng;
use nf_core::schedule::{self, Split, TrainConfig};
use nf_core::step::{self, SegStats};

use crate::feed::{split_slot, CFeed, Data};
use crate::half::{f16_bits, f16_value};
use crate::planned::{head_offset, store_offset, IDX_SCRATCH};
use crate::{nf_epoch_stats, NF_E_STEP, NF_MAX_UNITS};

/// The epoch order in the caller's memory: `u16` where it fits (see
/// [`crate::planned::order_is_u16`]), else `u32`.
pub(crate) enum Order<'m> {
    U16(&'m mut [u16]),
    U32(&'m mut [u32]),
}

/// One call's view of the current block (the chain is borrowed, never copied: it is large).
pub(crate) struct Ctx<'m> {
    pub(crate) spec: ModelSpec<'m>,
    pub(crate) n_units: usize,
    pub(crate) classes: usize,
    /// Whether a later block reads this one's units (then they are frozen into the store).
    pub(crate) has_next: bool,
    pub(crate) layout: BlockLayout<'m>,
    pub(crate) chain: Option<&'m InferLayout<'m>>,
    /// The chain lies over the block's scratch: its weights are copied in before every pass.
    pub(crate) chain_in_scratch: bool,
    pub(crate) be: ReferenceBackend<'m>,
    pub(crate) store: &'m mut [u16],
    pub(crate) order: Order<'m>,
    pub(crate) rng: &'m mut Rng,
    pub(crate) data: Data,
    pub(crate) cfg: TrainConfig,
    pub(crate) seed: u64,
    pub(crate) block: usize,
    pub(crate) epoch: u32,
}

/// Initialise the block's weights. Never inlined: the segment layouts it makes stay off the
/// training steps' stack.
#[inline(never)]
fn init_weights(be: &mut ReferenceBackend<'_>, l: &BlockLayout, rng: &mut Rng) -> Result<(), i32> {
    step::init_block(be, l, rng).map_err(|_| NF_E_STEP)
}

fn train_err(e: schedule::TrainError<core::convert::Infallible, i32>) -> i32 {
    match e {
        schedule::TrainError::Feed(e) => e,
        schedule::TrainError::Step(_) => NF_E_STEP,
    }
}

impl<'m> Ctx<'m> {
    /// The unit whose head segment `k` of the block ends in.
    fn unit_of(&self, k: usize) -> usize {
        match self.layout.mode {
            SegMode::Global => self.layout.last,
            SegMode::Local => self.layout.first + k,
        }
    }

    /// Copy the frozen units' weights from the store into the recompute chain.
    fn thaw(&mut self) -> Result<(), i32> {
        match self.chain {
            Some(c) => crate::feed::thaw(&mut self.be, c, self.store),
            None => Ok(()),
        }
    }

    /// Copy the block's weights that a later block or a prediction reads (its units and their
    /// heads, but the model's last unit's) into the store in half precision, and round them
    /// in the arena to the same values: the block is then evaluated with the weights the store
    /// keeps, so that a prediction after training reproduces its evaluation exactly.
    #[inline(never)] // its segment layouts stay off the evaluation's stack
    fn freeze(&mut self) -> Result<(), i32> {
        if !self.has_next || self.layout.mode != SegMode::Local {
            return Ok(());
        }
        for k in 0..self.layout.n_segments() {
            let u = self.layout.first + k;
            if u + 1 >= self.n_units {
                break;
            }
            let seg = self.layout.segment(k);
            // The unit's ops, then its head's (for predictions after training).
            let parts = [
                (&seg.ops[..=seg.last_unit_op], store_offset(&self.spec, u)),
                (
                    &seg.ops[seg.last_unit_op + 1..seg.n_ops],
                    head_offset(&self.spec, &self.layout.heads, self.classes, u),
                ),
            ];
            for (ops, mut at) in parts {
                for slot in ops {
                    for r in [slot.param, slot.state] {
                        let dst = self.store.get_mut(at..at + r.len()).ok_or(NF_E_STEP)?;
                        let src = self
                            .be
                            .arena()
                            .get_mut(r.offset..r.end())
                            .ok_or(NF_E_STEP)?;
                        for (d, v) in dst.iter_mut().zip(src) {
                            *d = f16_bits(*v);
                            *v = f16_value(*d);
                        }
                        at += r.len();
                    }
                }
            }
        }
        Ok(())
    }

    /// One epoch (initialising the block first at epoch 0).
    pub(crate) fn epoch(&mut self, out: &mut nf_epoch_stats) -> Result<(), i32> {
        if self.epoch == 0 {
            init_weights(&mut self.be, &self.layout, self.rng)?;
        }
        self.thaw()?;
        let mut stats = [SegStats::default(); MAX_UNITS];
        let mut feed = CFeed::new(
            &self.spec,
            &self.layout,
            self.data,
            self.chain,
            self.store,
            self.chain_in_scratch,
        );
        let (seed, block, epoch) = (self.seed, self.block, self.epoch);
        let (be, layout, cfg) = (&mut self.be, &self.layout, &self.cfg);
        match &mut self.order {
            Order::U16(order) => {
                schedule::epoch_order(seed, block, epoch, order);
                // Batches are at most IDX_SCRATCH (`order_is_u16`): the indices of one fit.
                let mut idx = [0u32; IDX_SCRATCH];
                schedule::train_epoch_in(
                    be,
                    layout,
                    &mut feed,
                    cfg,
                    epoch,
                    order,
                    &mut idx,
                    &mut stats,
                    |_, _, _| {},
                )
            }
            Order::U32(order) => {
                schedule::epoch_order(seed, block, epoch, order);
                schedule::train_epoch(
                    be,
                    layout,
                    &mut feed,
                    cfg,
                    epoch,
                    order,
                    &mut stats,
                    |_, _, _| {},
                )
            }
        }
        .map_err(train_err)?;
        let n = self.layout.n_segments().min(NF_MAX_UNITS);
        *out = nf_epoch_stats {
            block: self.block as u32,
            epoch: self.epoch,
            epochs: self.cfg.epochs,
            first: self.unit_of(0) as u32,
            n: n as u32,
            ..nf_epoch_stats::default()
        };
        for (k, st) in stats[..n].iter().enumerate() {
            out.loss[k] = st.mean_loss();
            out.acc[k] = st.accuracy();
        }
        Ok(())
    }

    /// Freeze the block (its kept weights rounded to half precision), then evaluate its heads
    /// on the validation (`acc[0]`) and test (`acc[1]`) splits.
    pub(crate) fn finish(&mut self, acc: &mut [[f32; NF_MAX_UNITS]; 2]) -> Result<(), i32> {
        self.thaw()?;
        self.freeze()?;
        for (a, split) in acc.iter_mut().zip([Split::Val, Split::Test]) {
            if self.data.n[split_slot(split)] == 0 {
                continue;
            }
            let mut feed = CFeed::new(
                &self.spec,
                &self.layout,
                self.data,
                self.chain,
                self.store,
                self.chain_in_scratch,
            );
            let mut idx = [0u32; 32];
            let mut st = [SegStats::default(); MAX_UNITS];
            schedule::evaluate(
                &mut self.be,
                &self.layout,
                &mut feed,
                split,
                &mut idx,
                &mut st,
            )
            .map_err(train_err)?;
            for (k, s) in st[..self.layout.n_segments()].iter().enumerate() {
                let u = self.unit_of(k);
                if u < NF_MAX_UNITS {
                    a[u] = s.accuracy();
                }
            }
        }
        Ok(())
    }
}
