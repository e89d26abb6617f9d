//! The trainer behind an `nf_trainer`: the plan, the schedule state, and block-by-block
//! NeuroFlux over nf-core's reference backend in the caller's memory.
//!
//! The caller's memory holds, in order: the planned arena (`Plan::peak_floats`), the
//! frozen-weight store (parameters and BN running statistics of every unit but the last, op by
//! op) and the epoch order (one `u32` per training sample). A block after the first recomputes
//! its inputs through the frozen units: the plan places that forward-only chain after the
//! block's layout in the arena, and its weights are copied in from the store.

use nf_core::backend::Backend;
use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, SegMode};
use nf_core::model::{ModelSpec, Op, MAX_UNITS};
use nf_core::optim::{Schedule, Sgd};
use nf_core::plan::Plan;
use nf_core::reference::ReferenceBackend;
use nf_core::rng::Rng;
use nf_core::schedule::{self, Split, TrainConfig};
use nf_core::step::{self, SegStats};

use crate::feed::{split_slot, CFeed, Data};
use crate::model::Model;
use crate::planned::{head_offset, spec, store_offset, Planned};
use crate::{
    nf_data, nf_epoch_stats, nf_result, nf_schedule, nf_trainer, NF_DONE, NF_E_DATA_CONFIG,
    NF_E_MEMORY, NF_E_NULL, NF_E_SCHEDULE, NF_E_STATE, NF_E_STEP, NF_LR_CONSTANT, NF_LR_COSINE,
    NF_LR_ONECYCLE, NF_LR_STEP, NF_MAX_UNITS, NF_OK, NF_TRAINER_WORDS,
};

/// Marks an initialised `nf_trainer` (its first word).
pub(crate) const MAGIC: u32 = 0x4e46_5452;

/// An `nf_trainer` is a header word (magic, busy flag), only ever accessed through raw
/// pointers, then the [`Trainer`].
const _: () = assert!(
    core::mem::size_of::<Trainer>() <= (NF_TRAINER_WORDS - 1) * 8
        && core::mem::align_of::<Trainer>() <= 8,
    "nf_trainer is too small for the trainer: raise NF_TRAINER_WORDS"
);

/// The header of `t`: (magic, busy).
///
/// # Safety
/// `t` is non-null, aligned and points to an `nf_trainer`.
pub(crate) unsafe fn header(t: *mut nf_trainer) -> (u32, u32) {
    let h = t.cast::<u32>();
    // SAFETY: the first two u32 of the nf_trainer (the caller); no Rust reference ever covers
    // them, so reading them aliases nothing.
    unsafe { (h.read(), h.add(1).read()) }
}

/// The trainer inside `t`.
fn body(t: *mut nf_trainer) -> *mut Trainer {
    t.cast::<u64>().wrapping_add(1).cast::<Trainer>()
}

/// Write `tr` into `t` and mark it initialised and idle.
///
/// # Safety
/// `t` is non-null, aligned, writable, with no call running on it.
pub(crate) unsafe fn install(t: *mut nf_trainer, tr: Trainer) {
    // SAFETY: the body lies inside the nf_trainer (size asserted above) and is 8-aligned
    // (word 1 of an aligned [u64] array); `write` does not read or drop the old contents.
    unsafe { body(t).write(tr) };
    let h = t.cast::<u32>();
    // SAFETY: the header words of the nf_trainer; no reference covers them.
    unsafe {
        h.add(1).write(0);
        h.write(MAGIC);
    }
}

/// Set up the trainer in `t` ([`Trainer::new`], then [`install`]). Never inlined, so that the
/// trainer is built on a stack the planner has left.
///
/// # Safety
/// `t` is non-null, aligned, writable, with no call running on it.
#[inline(never)]
pub(crate) unsafe fn start(
    t: *mut nf_trainer,
    model: &Model,
    p: &Planned,
    memory: *mut f32,
    memory_bytes: usize,
    data: &nf_data,
    schedule: &nf_schedule,
) -> i32 {
    match Trainer::new(model, p, memory, memory_bytes, data, schedule) {
        Ok(tr) => {
            // SAFETY: as this function's contract.
            unsafe { install(t, tr) };
            NF_OK
        }
        Err(e) => e,
    }
}

/// Run `f` on the trainer in `t`, refusing a NULL, misaligned, uninitialised or busy one.
///
/// # Safety
/// `t` is NULL or points to an `nf_trainer` (initialised by `nf_init`, or with another first
/// word); its memory and callbacks are valid (the `nf_init` contract).
pub(crate) unsafe fn with(t: *mut nf_trainer, f: impl FnOnce(&mut Trainer) -> i32) -> i32 {
    if t.is_null() {
        return NF_E_NULL;
    }
    if !t.is_aligned() {
        return crate::NF_E_ALIGN;
    }
    // SAFETY: non-null and aligned; an nf_trainer (the caller).
    let (magic, busy) = unsafe { header(t) };
    if magic != MAGIC {
        return NF_E_STATE;
    }
    if busy != 0 {
        return crate::NF_E_BUSY;
    }
    let h = t.cast::<u32>();
    // SAFETY: the busy word of the header; no reference covers it.
    unsafe { h.add(1).write(1) };
    // SAFETY: the magic says `nf_init` wrote a Trainer there; the busy flag, set just above,
    // makes every other entry point refuse this trainer until we return (a callback calling
    // back in gets NF_E_BUSY before any reference is made), so this is the only reference.
    let rc = f(unsafe { &mut *body(t) });
    // SAFETY: as above.
    unsafe { h.add(1).write(0) };
    rc
}

/// The trainer's state (inside an `nf_trainer`).
pub(crate) struct Trainer {
    pub(crate) model: Model,
    /// The plan; its `model.units` is empty between calls (each call attaches them: [`spec`]).
    pub(crate) plan: Plan<'static>,
    pub(crate) memory: *mut f32,
    pub(crate) arena: usize,
    pub(crate) store: usize,
    n_train: usize,
    data: Data,
    cfg: TrainConfig,
    seed: u64,
    pub(crate) tolerance: f32,
    rng: Rng,
    /// Current block, and epochs done in it.
    pub(crate) block: usize,
    pub(crate) epoch: u32,
    /// A training call failed midway: no more training.
    pub(crate) failed: bool,
    pub(crate) val_acc: [f32; NF_MAX_UNITS],
    pub(crate) test_acc: [f32; NF_MAX_UNITS],
}

fn train_config(s: &nf_schedule) -> Result<TrainConfig, i32> {
    let finite_pos = |x: f32| x.is_finite() && x >= 0.0;
    let schedule = match s.lr_schedule {
        NF_LR_CONSTANT => Schedule::Constant,
        NF_LR_ONECYCLE => Schedule::OneCycle,
        NF_LR_COSINE => Schedule::Cosine,
        NF_LR_STEP if finite_pos(s.step_gamma) => Schedule::Step {
            every: s.step_every,
            gamma: s.step_gamma,
        },
        _ => return Err(NF_E_SCHEDULE),
    };
    let ok = (1..=100_000).contains(&s.epochs)
        && finite_pos(s.base_lr)
        && s.base_lr > 0.0
        && s.ref_batch >= 1
        && finite_pos(s.momentum)
        && s.momentum < 1.0
        && finite_pos(s.weight_decay)
        && s.nesterov <= 1
        && finite_pos(s.exit_tolerance);
    if !ok {
        return Err(NF_E_SCHEDULE);
    }
    Ok(TrainConfig {
        sgd: Sgd {
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            nesterov: s.nesterov == 1,
        },
        base_lr: s.base_lr,
        ref_batch: s.ref_batch as usize,
        schedule,
        epochs: s.epochs,
    })
}

/// The data description is usable.
pub(crate) fn check_data(data: &nf_data) -> Result<(), i32> {
    if data.read.is_none() || data.n_train == 0 || data.n_test == 0 {
        return Err(NF_E_DATA_CONFIG);
    }
    Ok(())
}

impl Trainer {
    /// A trainer of `model` planned as `p` (by [`plan`] for `data.n_train` samples).
    pub(crate) fn new(
        model: &Model,
        p: &Planned,
        memory: *mut f32,
        memory_bytes: usize,
        data: &nf_data,
        schedule: &nf_schedule,
    ) -> Result<Trainer, i32> {
        let cfg = train_config(schedule)?;
        check_data(data)?;
        let n_train = data.n_train as usize;
        if (memory_bytes as u64) < p.info.memory_bytes {
            return Err(NF_E_MEMORY);
        }
        Ok(Trainer {
            model: *model,
            arena: p.plan.peak_floats(),
            plan: p.plan,
            memory,
            store: p.store,
            n_train,
            data: Data {
                read: data.read,
                on_epoch: data.on_epoch,
                user: data.user,
                n: [n_train, data.n_val as usize, data.n_test as usize],
            },
            cfg,
            seed: schedule.seed,
            tolerance: schedule.exit_tolerance,
            rng: Rng::new(schedule.seed),
            block: 0,
            epoch: 0,
            failed: false,
            val_acc: [-1.0; NF_MAX_UNITS],
            test_acc: [-1.0; NF_MAX_UNITS],
        })
    }

    fn check_running(&self) -> Result<(), i32> {
        if self.failed {
            return Err(NF_E_STATE);
        }
        if self.block >= self.plan.n_blocks {
            return Err(NF_DONE);
        }
        Ok(())
    }

    pub(crate) fn train_epoch(&mut self, out: &mut nf_epoch_stats) -> i32 {
        if let Err(e) = self.check_running() {
            return e;
        }
        if self.epoch >= self.cfg.epochs {
            return NF_E_STATE;
        }
        let rc = self.run(|ctx| ctx.epoch(out));
        if rc == NF_OK {
            self.epoch += 1;
            if let Some(cb) = self.data.on_epoch {
                // SAFETY: `nf_init`'s contract: a function of this signature; `out` is valid
                // during the call. A call back into this trainer is refused (busy flag).
                unsafe { cb(self.data.user, out) };
            }
        }
        rc
    }

    pub(crate) fn finish_block(&mut self) -> i32 {
        if let Err(e) = self.check_running() {
            return e;
        }
        if self.epoch < self.cfg.epochs {
            return NF_E_STATE;
        }
        let mut acc = [[-1.0f32; NF_MAX_UNITS]; 2];
        let rc = self.run(|ctx| ctx.finish(&mut acc));
        if rc == NF_OK {
            let [val, test] = acc;
            for (u, (&v, &t)) in val.iter().zip(&test).enumerate() {
                if t >= 0.0 {
                    self.test_acc[u] = t;
                    self.val_acc[u] = if v >= 0.0 { v } else { t };
                }
            }
            self.block += 1;
            self.epoch = 0;
        }
        rc
    }

    pub(crate) fn train_block(&mut self) -> i32 {
        if let Err(e) = self.check_running() {
            return e;
        }
        while self.epoch < self.cfg.epochs {
            let mut st = nf_epoch_stats::default();
            let rc = self.train_epoch(&mut st);
            if rc != NF_OK {
                return rc;
            }
        }
        self.finish_block()
    }

    /// The exit among the evaluated units, or `None` before any is.
    pub(crate) fn exit(&self, tolerance: f32) -> Option<usize> {
        let n = self.model.n_units();
        if self.val_acc[..n].iter().all(|&a| a < 0.0) {
            return None;
        }
        Some(schedule::select_exit(&self.val_acc[..n], tolerance))
    }

    pub(crate) fn result(&self) -> nf_result {
        nf_result {
            n_units: self.model.n_units() as u32,
            n_blocks: self.plan.n_blocks as u32,
            blocks_done: self.block as u32,
            epochs_done: self.epoch,
            val_acc: self.val_acc,
            test_acc: self.test_acc,
            exit: self.exit(self.tolerance).map_or(-1, |e| e as i32),
        }
    }

    /// Floats of one input sample.
    pub(crate) fn input_len(&self) -> usize {
        self.model.input.len()
    }

    /// Classes of the model.
    pub(crate) fn classes(&self) -> usize {
        self.model.classes
    }

    /// Units of the model.
    pub(crate) fn n_units(&self) -> usize {
        self.model.n_units()
    }

    /// The arena and the frozen-weight store in the caller's memory.
    pub(crate) fn memory_views(&mut self) -> (&mut [f32], &mut [f32]) {
        // SAFETY: `nf_init` checked that `memory` is non-null, f32-aligned and at least
        // `4 * (arena + store + n_train)` bytes long, and the caller keeps it valid and
        // untouched while the trainer is used; calls hold `&mut Trainer` (one at a time: the
        // busy flag), and the two views do not overlap.
        unsafe {
            (
                core::slice::from_raw_parts_mut(self.memory, self.arena),
                core::slice::from_raw_parts_mut(self.memory.add(self.arena), self.store),
            )
        }
    }

    /// Run `f` on the current block with the model attached; an error stops training for
    /// good (a block may be half trained).
    fn run(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> Result<(), i32>) -> i32 {
        let (a, s, n) = (self.arena, self.store, self.n_train);
        // SAFETY: `nf_init` checked that `memory` is non-null, f32-aligned and at least
        // `4 * (a + s + n)` bytes long, and the caller keeps it valid and untouched while the
        // trainer is used; `&mut self` (one call at a time: the busy flag) makes these the only
        // references to it, and they end with this call. u32 has f32's size and alignment.
        let (arena, store, order) = unsafe {
            (
                core::slice::from_raw_parts_mut(self.memory, a),
                core::slice::from_raw_parts_mut(self.memory.add(a), s),
                core::slice::from_raw_parts_mut(self.memory.add(a + s).cast::<u32>(), n),
            )
        };
        let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
        let spec = spec(&self.model, &mut refs);
        let mut plan = self.plan;
        plan.model = spec;
        let bi = self.block;
        let layout = plan.layout(bi);
        let chain = plan.chain(bi);
        // Every region of the block (and of its chain) lies in the arena: the plan's arena is
        // its largest block. Checked, so that no kernel can index past it.
        let fits =
            layout.floats <= arena.len() && chain.as_ref().is_none_or(|c| c.floats <= arena.len());
        let rc = if !fits {
            Err(NF_E_STEP)
        } else {
            let mut ctx = Ctx {
                spec,
                n_units: self.model.n_units(),
                classes: self.model.classes,
                has_next: bi + 1 < plan.n_blocks,
                layout,
                chain: chain.as_ref(),
                chain_in_scratch: plan.options.chain_in_scratch,
                be: ReferenceBackend::new(arena),
                store,
                order,
                rng: &mut self.rng,
                data: self.data,
                cfg: self.cfg,
                seed: self.seed,
                block: bi,
                epoch: self.epoch,
            };
            f(&mut ctx)
        };
        match rc {
            Ok(()) => NF_OK,
            Err(e) => {
                self.failed = true;
                e
            }
        }
    }
}

/// One call's view of the current block (the chain is borrowed, never copied: it is large).
pub(crate) struct Ctx<'m> {
    spec: ModelSpec<'m>,
    n_units: usize,
    classes: usize,
    /// Whether a later block reads this one's units (then they are frozen into the store).
    has_next: bool,
    layout: BlockLayout<'m>,
    chain: Option<&'m InferLayout<'m>>,
    /// The chain lies over the block's scratch: its weights are copied in before every pass.
    chain_in_scratch: bool,
    be: ReferenceBackend<'m>,
    store: &'m mut [f32],
    order: &'m mut [u32],
    rng: &'m mut Rng,
    data: Data,
    cfg: TrainConfig,
    seed: u64,
    block: usize,
    epoch: u32,
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

    /// Copy the block's unit weights that a later block reads into the store.
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
            let mut at = store_offset(&self.spec, u);
            for slot in &seg.ops[..=seg.last_unit_op] {
                for r in [slot.param, slot.state] {
                    let dst = self.store.get_mut(at..at + r.len).ok_or(NF_E_STEP)?;
                    self.be.read(r, dst);
                    at += r.len;
                }
            }
            // The unit's head, for predictions after training.
            let mut at = head_offset(&self.spec, &self.layout.heads, self.classes, u);
            for slot in &seg.ops[seg.last_unit_op + 1..seg.n_ops] {
                for r in [slot.param, slot.state] {
                    let dst = self.store.get_mut(at..at + r.len).ok_or(NF_E_STEP)?;
                    self.be.read(r, dst);
                    at += r.len;
                }
            }
        }
        Ok(())
    }

    /// One epoch (initialising the block first at epoch 0).
    fn epoch(&mut self, out: &mut nf_epoch_stats) -> Result<(), i32> {
        if self.epoch == 0 {
            step::init_block(&mut self.be, &self.layout, self.rng).map_err(|_| NF_E_STEP)?;
        }
        self.thaw()?;
        schedule::epoch_order(self.seed, self.block, self.epoch, self.order);
        let mut stats = [SegStats::default(); MAX_UNITS];
        let mut feed = CFeed::new(
            &self.spec,
            &self.layout,
            self.data,
            self.chain,
            self.store,
            self.chain_in_scratch,
        );
        schedule::train_epoch(
            &mut self.be,
            &self.layout,
            &mut feed,
            &self.cfg,
            self.epoch,
            self.order,
            &mut stats,
            |_, _, _| {},
        )
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

    /// Evaluate the block's heads on the validation (`acc[0]`) and test (`acc[1]`) splits,
    /// then freeze it.
    fn finish(&mut self, acc: &mut [[f32; NF_MAX_UNITS]; 2]) -> Result<(), i32> {
        self.thaw()?;
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
        self.freeze()
    }
}
