//! The trainer behind an `nf_trainer`: the plan, the schedule state, and block-by-block
//! NeuroFlux over nf-core's reference backend in the caller's memory.
//!
//! The caller's memory holds, in order: the planned arena (`Plan::peak_floats`), the
//! frozen-weight store in half precision (parameters and BN running statistics of every unit but the last, op by
//! op) and the epoch order (one `u16` per training sample where they are at most 65,536 and
//! batches at most 32, else one `u32`). A block after the first recomputes
//! its inputs through the frozen units: the plan places that forward-only chain after the
//! block's layout in the arena, and its weights are copied in from the store.

use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, ELEM_BYTES};
use nf_core::model::Op;
use nf_core::optim::{Schedule, Sgd};
use nf_core::plan::Plan;
use nf_core::reference::ReferenceBackend;
use nf_core::rng::Rng;
use nf_core::schedule::{self, TrainConfig};

use crate::ctx::{Ctx, Order};
use crate::feed::Data;
use crate::half::f16_bytes;
use crate::model::Model;
use crate::planned::{detached, order_is_u16, spec, Planned};
use crate::{
    nf_data, nf_epoch_stats, nf_result, nf_schedule, nf_trainer, NF_DONE, NF_E_DATA_CONFIG,
    NF_E_MEMORY, NF_E_NULL, NF_E_PLAN, NF_E_SCHEDULE, NF_E_STATE, NF_E_STEP, NF_LR_CONSTANT,
    NF_LR_COSINE, NF_LR_ONECYCLE, NF_LR_STEP, NF_MAX_UNITS, NF_OK, NF_TRAINER_WORDS,
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
pub(crate) unsafe fn install(t: *mut nf_trainer, st: State) {
    let b = body(t);
    // SAFETY: the body lies inside the nf_trainer (size asserted above) and is 8-aligned
    // (word 1 of an aligned [u64] array); `write` does not read or drop the old contents. The
    // parts are written one by one, in place, so that no whole Trainer passes through the
    // stack.
    unsafe {
        core::ptr::addr_of_mut!((*b).s).write(st);
        core::ptr::addr_of_mut!((*b).lay).write(Layouts::EMPTY);
    }
    let h = t.cast::<u32>();
    // SAFETY: the header words of the nf_trainer; no reference covers them.
    unsafe {
        h.add(1).write(0);
        h.write(MAGIC);
    }
}

/// Mark `t` uninitialised (every call but `nf_init` then gets `NF_E_STATE`).
///
/// # Safety
/// `t` is non-null, aligned, writable, with no call running on it.
pub(crate) unsafe fn uninstall(t: *mut nf_trainer) {
    // SAFETY: the header word of the nf_trainer; no reference covers it.
    unsafe { t.cast::<u32>().write(0) };
}

/// Set up the trainer in `t` ([`State::new`], then [`install`]; its layouts are laid out
/// after: [`Trainer::prepare`]). Never inlined, so that the
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
    match State::new(model, p, memory, memory_bytes, data, schedule) {
        Ok(st) => {
            // SAFETY: as this function's contract.
            unsafe { install(t, st) };
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

/// The trainer inside an `nf_trainer`: its state, and the layouts it works with.
pub(crate) struct Trainer {
    pub(crate) s: State,
    pub(crate) lay: Layouts,
}

/// What lies in the arena, laid out once (when a block starts, or a prediction unit is chosen)
/// and kept here, so that no training or prediction call builds a layout on its stack. Their
/// models are detached (no units): [`Trainer::layout`] attaches them again where a segment
/// must be laid out; a pass needs only a chain's regions.
pub(crate) struct Layouts {
    /// The current block's layout (the last block's once every block is trained).
    pub(crate) layout: Option<BlockLayout<'static>>,
    /// The current block's recompute chain (`chain_for` [`ChainFor::Block`]), or the
    /// prediction chain of a unit, its weights loaded ([`ChainFor::Predict`]).
    pub(crate) chain: Option<InferLayout<'static>>,
    pub(crate) chain_for: ChainFor,
}

/// What [`Layouts::chain`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainFor {
    /// The recompute chain of the block of [`Layouts::layout`] (or none).
    Block,
    /// The prediction chain of this unit, with its weights in the arena.
    Predict(usize),
}

impl Layouts {
    /// Nothing laid out yet (written in place: no large value on the stack).
    const EMPTY: Layouts = Layouts {
        layout: None,
        chain: None,
        chain_for: ChainFor::Block,
    };
}

/// The trainer's state.
pub(crate) struct State {
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

impl State {
    /// A trainer's state of `model` planned as `p` (for `data.n_train` samples).
    pub(crate) fn new(
        model: &Model,
        p: &Planned,
        memory: *mut f32,
        memory_bytes: usize,
        data: &nf_data,
        schedule: &nf_schedule,
    ) -> Result<State, i32> {
        let cfg = train_config(schedule)?;
        check_data(data)?;
        let n_train = data.n_train as usize;
        if (memory_bytes as u64) < p.info.memory_bytes {
            return Err(NF_E_MEMORY);
        }
        Ok(State {
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

    /// The arena and the frozen-weight store (half precision) in the caller's memory.
    pub(crate) fn memory_views(&mut self) -> (&mut [f32], &mut [u16]) {
        // SAFETY: `nf_init` checked that `memory` is non-null, f32-aligned and at least
        // `4 * arena + f16_bytes(store)` bytes long (and the order after them), and the caller
        // keeps it valid and untouched while the trainer is used; calls hold `&mut Trainer`
        // (one at a time: the busy flag), and the two views do not overlap.
        unsafe {
            (
                core::slice::from_raw_parts_mut(self.memory, self.arena),
                core::slice::from_raw_parts_mut(
                    self.memory.add(self.arena).cast::<u16>(),
                    self.store,
                ),
            )
        }
    }
}

impl core::ops::Deref for Trainer {
    type Target = State;
    fn deref(&self) -> &State {
        &self.s
    }
}

impl core::ops::DerefMut for Trainer {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.s
    }
}

impl Trainer {
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

    /// Evaluate the current block, freeze it, and lay out the next one ([`Trainer::prepare`],
    /// called once the evaluation's frame is gone).
    pub(crate) fn finish_block(&mut self) -> i32 {
        let rc = self.evaluate_block();
        if rc == NF_OK && self.block < self.plan.n_blocks {
            self.prepare();
        }
        rc
    }

    /// [`Trainer::finish_block`] but the next block's layouts.
    #[inline(never)]
    fn evaluate_block(&mut self) -> i32 {
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

    /// Run `f` on the current block with the model attached; an error stops training for
    /// good (a block may be half trained).
    fn run(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> Result<(), i32>) -> i32 {
        let Trainer { s: st, lay } = self;
        let (a, s, n) = (st.arena, st.store, st.n_train);
        let u16_order = order_is_u16(n, st.plan.options.b_max);
        // SAFETY: `nf_init` checked that `memory` is non-null, f32-aligned and at least
        // `4 * a + f16_bytes(s) + order_bytes(n)` bytes long (`s` u16 after the arena, `n` u16
        // or u32 after the store), and the
        // caller keeps it valid and untouched while the trainer is used; `&mut self` (one call
        // at a time: the busy flag) makes these the only references to it, and they end with
        // this call. u32 has f32's size and alignment, u16 less.
        let (arena, store, order) = unsafe {
            let at = st.memory.add(a + f16_bytes(s) as usize / 4);
            (
                core::slice::from_raw_parts_mut(st.memory, a),
                core::slice::from_raw_parts_mut(st.memory.add(a).cast::<u16>(), s),
                if u16_order {
                    Order::U16(core::slice::from_raw_parts_mut(at.cast::<u16>(), n))
                } else {
                    Order::U32(core::slice::from_raw_parts_mut(at.cast::<u32>(), n))
                },
            )
        };
        let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
        let spec = spec(&st.model, &mut refs);
        let bi = st.block;
        let (Some(layout), ChainFor::Block) = (lay.layout.as_ref(), lay.chain_for) else {
            st.failed = true;
            return NF_E_STEP;
        };
        let layout = layout.with_model(spec);
        let chain = lay.chain.as_ref();
        // Every region of the block (and of its chain) lies in the arena: the plan's arena is
        // its largest block. Checked, so that no kernel can index past it.
        let fits = layout.floats <= arena.len() && chain.is_none_or(|c| c.floats <= arena.len());
        let rc = if !fits {
            Err(NF_E_STEP)
        } else {
            let mut ctx = Ctx {
                spec,
                n_units: st.model.n_units(),
                classes: st.model.classes,
                has_next: bi + 1 < st.plan.n_blocks,
                layout,
                chain,
                chain_in_scratch: st.plan.options.chain_in_scratch,
                be: ReferenceBackend::new(arena),
                store,
                order,
                rng: &mut st.rng,
                data: st.data,
                cfg: st.cfg,
                seed: st.seed,
                block: bi,
                epoch: st.epoch,
            };
            f(&mut ctx)
        };
        match rc {
            Ok(()) => NF_OK,
            Err(e) => {
                st.failed = true;
                e
            }
        }
    }

    /// Lay out the current block (the last one once every block is trained) and its recompute
    /// chain into [`Trainer::lay`]. The layouts are built in functions never inlined, one
    /// after the other, so that the stack holds one at a time (nf-core lays a block out by
    /// value, segment by segment: 7.5 KB of stack on a Cortex-M4), and written in place.
    pub(crate) fn prepare(&mut self) {
        self.lay.chain = None;
        self.lay.chain_for = ChainFor::Block;
        self.lay.layout = None;
        let bi = self.s.block.min(self.s.plan.n_blocks - 1);
        lay_block(&self.s, bi, &mut self.lay.layout);
        if let Some(l) = &self.lay.layout {
            lay_chain(&self.s, bi, l, &mut self.lay.chain);
        }
    }

    /// Check that every block of the plan (made on another device, say) takes the bytes the
    /// plan gives it: its layout, or its recompute chain where that ends later, as the planner
    /// counts them. `NF_E_PLAN` otherwise.
    pub(crate) fn check_blocks(&self) -> Result<(), i32> {
        for i in 0..self.plan.n_blocks {
            if block_end(&self.s, i) as u64 * ELEM_BYTES != self.plan.blocks[i].bytes {
                return Err(NF_E_PLAN);
            }
        }
        Ok(())
    }
}

/// Lay out block `bi` of `st`'s plan into `slot`, its model detached.
#[inline(never)]
fn lay_block(st: &State, bi: usize, slot: &mut Option<BlockLayout<'static>>) {
    let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
    let plan = st.plan.with_model(spec(&st.model, &mut refs));
    *slot = Some(plan.layout(bi).with_model(detached(&st.model)));
}

/// Lay out the recompute chain of block `bi` of `st`'s plan (if it has one) over its layout
/// `l` into `slot`, its model detached.
#[inline(never)]
fn lay_chain(st: &State, bi: usize, l: &BlockLayout, slot: &mut Option<InferLayout<'static>>) {
    let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
    let plan = st.plan.with_model(spec(&st.model, &mut refs));
    if let Some(c) = plan.chain_over(bi, l) {
        *slot = Some(c.with_model(detached(&st.model)));
    }
}

/// Elements block `bi` of `st`'s plan takes: its layout, or its chain where that ends later.
#[inline(never)]
fn block_end(st: &State, bi: usize) -> usize {
    let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
    let plan = st.plan.with_model(spec(&st.model, &mut refs));
    let l = plan.layout(bi);
    match plan.chain_over(bi, &l) {
        Some(c) => c.floats.max(l.floats),
        None => l.floats,
    }
}
