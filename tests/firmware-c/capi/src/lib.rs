//! A C ABI over nf-core: describe a small CNN in C, plan it under a memory budget, and train it
//! with NeuroFlux block by block in memory the caller provides, reading the data through a
//! callback. Built as a static library (`libneuroflux_c.a`) for `thumbv7em-none-eabihf` and for
//! the host; `include/neuroflux.h` is generated from this crate by cbindgen.
//!
//! The calls, in order:
//!
//! 1. [`nf_plan`]: the model (`nf_model`: an array of `nf_op`s and the number of ops of each
//!    unit), planner options and a budget in bytes give the plan: its blocks, batch sizes, head
//!    widths, and `memory_bytes`, the size of the one buffer training needs (the planned arena,
//!    the frozen-weight store and the epoch order).
//! 2. [`nf_init`]: the same inputs, that buffer (`float`-aligned), the data (a callback that
//!    reads sample `i` of a split, the split sizes) and the schedule (epochs per block, learning
//!    rate, seed) give an `nf_trainer` (a plain struct the caller declares).
//! 3. [`nf_train_epoch`] / [`nf_finish_block`] (or [`nf_train_block`], or [`nf_train`]): train,
//!    evaluate every head of the block on the held-out splits, freeze the block.
//! 4. [`nf_get_result`]: accuracies of every head and the early exit.
//!
//! Every function returns an `int32_t` code ([`NF_OK`], [`NF_DONE`], or a negative `NF_E_*`;
//! [`nf_strerror`] says what it means) and checks its pointers, sizes and alignment first. The
//! library does not panic on any input it accepts: descriptions are bounded before nf-core
//! computes with them (see `model.rs`), and nf-core's steps refuse an arena smaller than their
//! layout. Nothing allocates; nothing is global: several trainers may coexist.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![allow(non_camel_case_types)] // the C names

mod model;
mod train;

use core::ffi::{c_char, c_void};

use model::Model;

// --- Limits and codes ----------------------------------------------------------------------------

/// Most units a model may have in the C ABI.
pub const NF_MAX_UNITS: usize = 8;
/// Most ops a model may have in all (units only: heads and the classifier are added by the
/// library).
pub const NF_MAX_OPS: usize = 48;
/// Size of [`nf_trainer`] in 64-bit words.
pub const NF_TRAINER_WORDS: usize = 768;

/// Success.
pub const NF_OK: i32 = 0;
/// Nothing left to do: every block is trained (a success code).
pub const NF_DONE: i32 = 1;
/// A required pointer is NULL.
pub const NF_E_NULL: i32 = -1;
/// A pointer is not aligned for its type (the memory: `float`).
pub const NF_E_ALIGN: i32 = -2;
/// The model description is invalid (an op kind or field out of range, a unit of no ops, op
/// counts that do not add up, an op that does not accept its input shape).
pub const NF_E_MODEL: i32 = -3;
/// The model exceeds a capacity (units, ops, ops of a training segment).
pub const NF_E_CAPACITY: i32 = -4;
/// The planner options are invalid.
pub const NF_E_OPTIONS: i32 = -5;
/// The schedule is invalid (epochs, learning rate, momentum, weight decay, schedule kind).
pub const NF_E_SCHEDULE: i32 = -6;
/// The data description is invalid (no read callback, no training or held-out samples).
pub const NF_E_DATA_CONFIG: i32 = -7;
/// The budget is too small for any plan (`nf_plan_info.needed_bytes` says what would do).
pub const NF_E_BUDGET: i32 = -8;
/// The memory given to [`nf_init`] is smaller than the plan's `memory_bytes`.
pub const NF_E_MEMORY: i32 = -9;
/// The model's training memory exceeds what the C ABI accepts (2^27 floats at the largest
/// batch).
pub const NF_E_TOO_LARGE: i32 = -10;
/// The read callback failed, or returned a label outside `0..classes`.
pub const NF_E_DATA: i32 = -11;
/// The call does not fit the trainer's state (not initialised; the block's epochs are not all
/// done, or already done; a previous error stopped training).
pub const NF_E_STATE: i32 = -12;
/// A call on a trainer that is already running one (from inside a callback).
pub const NF_E_BUSY: i32 = -13;
/// A training or evaluation step was refused (an internal error: the layout does not fit the
/// arena).
pub const NF_E_STEP: i32 = -14;
/// An argument is out of range.
pub const NF_E_ARG: i32 = -15;

/// Op kind: 2-D convolution (`out` filters of `k` x `k`, `stride`, `pad` zeros on every side,
/// `bias` 0 or 1).
pub const NF_OP_CONV: u32 = 1;
/// Op kind: batch normalisation (affine, running statistics).
pub const NF_OP_BATCHNORM: u32 = 2;
/// Op kind: ReLU.
pub const NF_OP_RELU: u32 = 3;
/// Op kind: 2x2 max-pool, stride 2.
pub const NF_OP_MAXPOOL2: u32 = 4;
/// Op kind: adaptive average pool to `out` x `out` (1: global average pooling).
pub const NF_OP_AVGPOOL: u32 = 5;
/// Op kind: flatten to `c*h*w` x 1 x 1.
pub const NF_OP_FLATTEN: u32 = 6;
/// Op kind: fully connected layer with `out` outputs and a bias.
pub const NF_OP_LINEAR: u32 = 7;
/// Op kind: ResNet basic block with `out` channels and `stride`.
pub const NF_OP_BASICBLOCK: u32 = 8;

/// Planner mode: NeuroFlux (adaptive heads, blocks, batch sizes per block).
pub const NF_MODE_NEUROFLUX: u32 = 0;
/// Planner mode: classic local learning (one block, fixed heads).
pub const NF_MODE_LL: u32 = 1;
/// Planner mode: backpropagation (one block, one segment).
pub const NF_MODE_BP: u32 = 2;

/// Learning-rate schedule: constant.
pub const NF_LR_CONSTANT: u32 = 0;
/// Learning-rate schedule: one-cycle (warm-up then cosine anneal) over each block's epochs.
pub const NF_LR_ONECYCLE: u32 = 1;
/// Learning-rate schedule: cosine from the peak to 0.
pub const NF_LR_COSINE: u32 = 2;
/// Learning-rate schedule: multiply by `step_gamma` every `step_every` steps.
pub const NF_LR_STEP: u32 = 3;

/// Split: training samples.
pub const NF_SPLIT_TRAIN: u32 = 0;
/// Split: validation samples (the exit is chosen on them when there are any).
pub const NF_SPLIT_VAL: u32 = 1;
/// Split: test samples.
pub const NF_SPLIT_TEST: u32 = 2;

// --- Types ---------------------------------------------------------------------------------------

/// One op of a unit. Fields an op kind does not use are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_op {
    /// `NF_OP_*`.
    pub kind: u32,
    /// Output channels (conv, basic block), outputs (linear), output side (average pool).
    pub out: u32,
    /// Kernel size (conv).
    pub k: u32,
    /// Stride (conv, basic block).
    pub stride: u32,
    /// Zero padding on every side (conv).
    pub pad: u32,
    /// 1 for a bias (conv).
    pub bias: u32,
}

/// A CNN as a chain of units. Each unit is trained on its own auxiliary head (added by the
/// library); after the last unit come global average pooling and a linear classifier.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_model {
    /// All ops, unit after unit.
    pub ops: *const nf_op,
    /// Number of ops in `ops` (at most `NF_MAX_OPS`).
    pub n_ops: u32,
    /// Number of ops of each unit (`n_units` entries, summing to `n_ops`).
    pub unit_ops: *const u32,
    /// Number of units (at most `NF_MAX_UNITS`).
    pub n_units: u32,
    /// Input channels.
    pub in_c: u32,
    /// Input height.
    pub in_h: u32,
    /// Input width.
    pub in_w: u32,
    /// Number of classes.
    pub classes: u32,
    /// Heads first average-pool a unit output larger than this to this size (0: never).
    pub head_pool: u32,
}

/// Planner options ([`nf_options_default`] gives the microcontroller defaults).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_options {
    /// `NF_MODE_*`.
    pub mode: u32,
    /// Head filters of the first unit (NeuroFlux).
    pub f_max: u32,
    /// Head filters of the last unit with a head (NeuroFlux).
    pub f_min: u32,
    /// Head filters of every unit (classic local learning).
    pub ll_filters: u32,
    /// Smallest batch size.
    pub b_min: u32,
    /// Largest batch size.
    pub b_max: u32,
    /// Units join a block while their per-sample memory is within this factor of its first.
    pub homogeneity: u32,
}

/// One block of a plan.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_block_info {
    /// First unit.
    pub first: u32,
    /// Last unit (inclusive).
    pub last: u32,
    /// Batch size.
    pub batch: u32,
    /// Samples per pass of the chain that recomputes the block's inputs (0: none).
    pub chunk: u32,
    /// Arena bytes of the block (with its recompute chain).
    pub bytes: u64,
}

/// A plan, as [`nf_plan`] reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_plan_info {
    /// Bytes of the memory [`nf_init`] needs: `arena_bytes + store_bytes + order_bytes`.
    pub memory_bytes: u64,
    /// The planner's arena: the largest block.
    pub arena_bytes: u64,
    /// The frozen-weight store (parameters and BN statistics of every unit but the last).
    pub store_bytes: u64,
    /// The epoch order (4 bytes per training sample).
    pub order_bytes: u64,
    /// With `NF_E_BUDGET`: the smallest budget that plans (0 otherwise).
    pub needed_bytes: u64,
    /// Number of units.
    pub n_units: u32,
    /// Number of blocks.
    pub n_blocks: u32,
    /// Head filters per unit (0 for the last unit, which has the classifier, and in BP).
    pub heads: [u32; NF_MAX_UNITS],
    /// The blocks (`n_blocks` of them).
    pub blocks: [nf_block_info; NF_MAX_UNITS],
}

/// Reads sample `index` of `split` (`NF_SPLIT_*`): writes its `n_values` input values (`c*h*w`,
/// channel-major, normalised as the caller wishes) to `values` and its class to `label`.
/// Returns 0, or non-zero on failure (training stops with `NF_E_DATA`). `values` points into
/// the training memory and is valid only during the call; the callback must not call the
/// library on the same trainer.
pub type nf_read_fn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        split: u32,
        index: u32,
        values: *mut f32,
        n_values: u32,
        label: *mut u32,
    ) -> i32,
>;

/// Called after every epoch with the block's training statistics (may be NULL).
pub type nf_epoch_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, stats: *const nf_epoch_stats)>;

/// Where the samples come from.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_data {
    /// Reads one sample (required).
    pub read: nf_read_fn,
    /// Progress after every epoch (optional).
    pub on_epoch: nf_epoch_fn,
    /// Passed to both callbacks.
    pub user: *mut c_void,
    /// Training samples (at least 1).
    pub n_train: u32,
    /// Validation samples (0: the exit is chosen on the test split).
    pub n_val: u32,
    /// Test (held-out) samples (at least 1).
    pub n_test: u32,
}

/// The training schedule ([`nf_schedule_default`] gives the firmware's).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_schedule {
    /// Epochs per block.
    pub epochs: u32,
    /// Learning rate at batch size `ref_batch` (each block scales it linearly to its batch).
    pub base_lr: f32,
    /// Reference batch size of the linear scaling rule.
    pub ref_batch: u32,
    /// `NF_LR_*`.
    pub lr_schedule: u32,
    /// `NF_LR_STEP`: steps between decays (0: never).
    pub step_every: u32,
    /// `NF_LR_STEP`: factor at each decay.
    pub step_gamma: f32,
    /// SGD momentum (0 <= m < 1).
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// 1 for Nesterov momentum.
    pub nesterov: u32,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// The exit is the earliest unit within this accuracy of the best (0.005: half a point).
    pub exit_tolerance: f32,
}

/// Training statistics of one epoch of a block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_epoch_stats {
    /// Block index.
    pub block: u32,
    /// Epoch just trained (from 0).
    pub epoch: u32,
    /// Epochs of the block.
    pub epochs: u32,
    /// First unit of the block.
    pub first: u32,
    /// Heads reported (`loss[0..n]`, `acc[0..n]`: units `first..first+n`; in BP, the classifier).
    pub n: u32,
    /// Mean training loss of each head over the epoch.
    pub loss: [f32; NF_MAX_UNITS],
    /// Training accuracy of each head over the epoch.
    pub acc: [f32; NF_MAX_UNITS],
}

/// Results so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_result {
    /// Number of units.
    pub n_units: u32,
    /// Number of blocks.
    pub n_blocks: u32,
    /// Blocks trained, evaluated and frozen.
    pub blocks_done: u32,
    /// Epochs done in the current block.
    pub epochs_done: u32,
    /// Validation accuracy of each unit's head (the last unit: the classifier); -1 where not
    /// evaluated. Without a validation split, the test accuracy.
    pub val_acc: [f32; NF_MAX_UNITS],
    /// Test accuracy of each unit's head; -1 where not evaluated.
    pub test_acc: [f32; NF_MAX_UNITS],
    /// The early exit among the evaluated units (by `val_acc`, `exit_tolerance`); -1 before
    /// the first block is done.
    pub exit: i32,
}

/// A trainer: declare one (static, global or on the stack) and pass it to [`nf_init`]. Its
/// contents are private; it may be copied only while no call runs on it.
#[repr(C)]
pub struct nf_trainer {
    /// Private.
    pub opaque: [u64; NF_TRAINER_WORDS],
}

// --- Error strings -------------------------------------------------------------------------------

/// A NUL-terminated, static description of `code`.
#[no_mangle]
pub extern "C" fn nf_strerror(code: i32) -> *const c_char {
    let s: &core::ffi::CStr = match code {
        NF_OK => c"ok",
        NF_DONE => c"done: every block is trained",
        NF_E_NULL => c"a required pointer is NULL",
        NF_E_ALIGN => c"a pointer is not aligned for its type",
        NF_E_MODEL => c"invalid model description (op kind or field out of range, empty unit, op counts, or an op that does not accept its input shape)",
        NF_E_CAPACITY => c"the model exceeds a capacity (units, ops, ops per training segment)",
        NF_E_OPTIONS => c"invalid planner options",
        NF_E_SCHEDULE => c"invalid schedule",
        NF_E_DATA_CONFIG => c"invalid data description (no read callback, or no training or test samples)",
        NF_E_BUDGET => c"the budget is too small for any plan",
        NF_E_MEMORY => c"the memory is smaller than the plan needs",
        NF_E_TOO_LARGE => c"the model's training memory exceeds the C ABI's limit",
        NF_E_DATA => c"the read callback failed or returned a label out of range",
        NF_E_STATE => c"the call does not fit the trainer's state",
        NF_E_BUSY => c"the trainer is already running a call (called from a callback)",
        NF_E_STEP => c"a training step was refused (internal error)",
        NF_E_ARG => c"an argument is out of range",
        _ => c"unknown error code",
    };
    s.as_ptr()
}

// --- Defaults ------------------------------------------------------------------------------------

/// The microcontroller defaults: NeuroFlux, heads 16 -> 8 filters (LL: 16), batches 2..=32,
/// homogeneity 2.
///
/// # Safety
/// `o` is NULL or points to a writable `nf_options`.
#[no_mangle]
pub unsafe extern "C" fn nf_options_default(o: *mut nf_options) -> i32 {
    // SAFETY: `out_ref` checks null and alignment; the caller guarantees writability.
    let Some(o) = (unsafe { out_ref(o) }) else {
        return NF_E_NULL;
    };
    *o = nf_options {
        mode: NF_MODE_NEUROFLUX,
        f_max: 16,
        f_min: 8,
        ll_filters: 16,
        b_min: 2,
        b_max: 32,
        homogeneity: 2,
    };
    NF_OK
}

/// The firmware's schedule: 3 epochs per block, one-cycle learning rate 1.6 at batch 128,
/// SGD momentum 0.9, weight decay 5e-4, seed 7, exit tolerance half a point.
///
/// # Safety
/// `s` is NULL or points to a writable `nf_schedule`.
#[no_mangle]
pub unsafe extern "C" fn nf_schedule_default(s: *mut nf_schedule) -> i32 {
    // SAFETY: `out_ref` checks null and alignment; the caller guarantees writability.
    let Some(s) = (unsafe { out_ref(s) }) else {
        return NF_E_NULL;
    };
    *s = nf_schedule {
        epochs: 3,
        base_lr: 1.6,
        ref_batch: 128,
        lr_schedule: NF_LR_ONECYCLE,
        step_every: 0,
        step_gamma: 1.0,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: 0,
        seed: 7,
        exit_tolerance: 0.005,
    };
    NF_OK
}

// --- Pointer checks ------------------------------------------------------------------------------

/// `p` as a shared reference, or `None` when it is NULL or misaligned.
///
/// # Safety
/// A non-null, aligned `p` must point to a valid `T` that nothing writes during the call.
unsafe fn in_ref<'a, T>(p: *const T) -> Option<&'a T> {
    if p.is_null() || !p.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned (checked); valid and not written meanwhile (the caller).
    Some(unsafe { &*p })
}

/// `p` as an exclusive reference, or `None` when it is NULL or misaligned.
///
/// # Safety
/// A non-null, aligned `p` must point to memory writable as a `T` (any bits: the caller only
/// writes through the result) that nothing else accesses during the call.
unsafe fn out_ref<'a, T>(p: *mut T) -> Option<&'a mut T> {
    if p.is_null() || !p.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned (checked); exclusive and writable (the caller). Every `T`
    // used here is plain integers and floats, so any bits are a valid `T`.
    Some(unsafe { &mut *p })
}

/// Check the description, options and budget shared by [`nf_plan`] and [`nf_init`].
///
/// # Safety
/// As [`nf_plan`].
unsafe fn checked(
    model: *const nf_model,
    options: *const nf_options,
) -> Result<(Model, nf_core::plan::Mode, nf_core::plan::PlanOptions), i32> {
    // SAFETY: null and alignment checked by `in_ref`; the caller guarantees validity.
    let (Some(m), Some(o)) = (unsafe { in_ref(model) }, unsafe { in_ref(options) }) else {
        return Err(NF_E_NULL);
    };
    // SAFETY: the caller guarantees `m.ops` and `m.unit_ops` hold `n_ops` / `n_units` entries.
    let model = unsafe { Model::from_c(m) }?;
    let (mode, opts) = model::options(o)?;
    model.check_bound(&opts)?;
    Ok((model, mode, opts))
}

// --- Planning ------------------------------------------------------------------------------------

/// Plan `model` under `budget` bytes of training memory (arena, frozen-weight store and epoch
/// order together) for `n_train` training samples, and describe the plan in `info` (also on
/// `NF_E_BUDGET`, where `info->needed_bytes` is the smallest budget that plans).
///
/// # Safety
/// `model` and `options` are NULL or point to valid structs whose `ops` / `unit_ops` hold
/// `n_ops` / `n_units` entries; `info` is NULL or points to a writable `nf_plan_info`.
#[no_mangle]
pub unsafe extern "C" fn nf_plan(
    model: *const nf_model,
    options: *const nf_options,
    budget: u64,
    n_train: u32,
    info: *mut nf_plan_info,
) -> i32 {
    // SAFETY: `out_ref` checks null and alignment; the caller guarantees writability.
    let Some(info) = (unsafe { out_ref(info) }) else {
        return NF_E_NULL;
    };
    *info = nf_plan_info::default();
    // SAFETY: as this function's contract.
    let (model, mode, opts) = match unsafe { checked(model, options) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    if n_train == 0 {
        return NF_E_DATA_CONFIG;
    }
    match train::plan(&model, mode, &opts, budget, n_train as usize) {
        Ok(p) => {
            *info = p.info;
            NF_OK
        }
        Err((e, needed)) => {
            info.needed_bytes = needed;
            e
        }
    }
}

// --- Training ------------------------------------------------------------------------------------

/// Plan as [`nf_plan`] and set up `trainer` to train in `memory` (`memory_bytes` bytes, at least
/// the plan's `memory_bytes`, aligned for `float`), reading samples through `data`, with
/// `schedule`. The memory and the callbacks' `user` must stay valid, and the memory untouched by
/// the caller, while the trainer is used. Calling it again restarts training.
///
/// # Safety
/// As [`nf_plan`]; `trainer` is NULL or points to a writable `nf_trainer` on which no call is
/// running; `memory` is NULL or points to `memory_bytes` writable bytes; `data` and `schedule`
/// are NULL or point to valid structs, and `data->read` / `data->on_epoch` are NULL or
/// functions of the documented signatures.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn nf_init(
    trainer: *mut nf_trainer,
    model: *const nf_model,
    options: *const nf_options,
    budget: u64,
    memory: *mut f32,
    memory_bytes: usize,
    data: *const nf_data,
    schedule: *const nf_schedule,
) -> i32 {
    if trainer.is_null() || memory.is_null() {
        return NF_E_NULL;
    }
    if !trainer.is_aligned() || !memory.is_aligned() {
        return NF_E_ALIGN;
    }
    // SAFETY: `trainer` is non-null and aligned; the caller guarantees it is writable and that
    // no call runs on it (a running one would be refused here by its busy flag, and nothing
    // is written before `train::install`).
    match unsafe { train::header(trainer) } {
        (m, busy) if m == train::MAGIC && busy != 0 => return NF_E_BUSY,
        _ => {}
    }
    // SAFETY: as this function's contract.
    let (model, mode, opts) = match unsafe { checked(model, options) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    // SAFETY: null and alignment checked by `in_ref`; the caller guarantees validity.
    let (Some(data), Some(schedule)) = (unsafe { in_ref(data) }, unsafe { in_ref(schedule) })
    else {
        return NF_E_NULL;
    };
    if let Err(e) = train::check_data(data) {
        return e;
    }
    let planned = match train::plan(&model, mode, &opts, budget, data.n_train as usize) {
        Ok(p) => p,
        Err((e, _)) => return e,
    };
    // SAFETY: `trainer` is non-null, aligned and writable, with no call running (above).
    unsafe {
        train::start(
            trainer,
            &model,
            &planned,
            memory,
            memory_bytes,
            data,
            schedule,
        )
    }
}

/// Train one epoch of the current block (initialising the block at its first epoch); `stats`
/// (may be NULL) receives its statistics. `NF_DONE` when every block is trained;
/// `NF_E_STATE` when the block's epochs are done and [`nf_finish_block`] is due.
///
/// # Safety
/// `trainer` is NULL or points to an `nf_trainer` set up by [`nf_init`] (its memory still
/// valid); `stats` is NULL or points to a writable `nf_epoch_stats`.
#[no_mangle]
pub unsafe extern "C" fn nf_train_epoch(
    trainer: *mut nf_trainer,
    stats: *mut nf_epoch_stats,
) -> i32 {
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| {
            let mut st = nf_epoch_stats::default();
            let rc = t.train_epoch(&mut st);
            // SAFETY: the caller guarantees `stats` is NULL or writable.
            if let Some(out) = out_ref(stats) {
                *out = st;
            }
            rc
        })
    }
}

/// Evaluate every head of the current block (whose epochs are all trained) on the validation
/// and test splits, freeze the block and move to the next. `NF_DONE` when every block is
/// trained already.
///
/// # Safety
/// As [`nf_train_epoch`].
#[no_mangle]
pub unsafe extern "C" fn nf_finish_block(trainer: *mut nf_trainer) -> i32 {
    // SAFETY: as this function's contract.
    unsafe { train::with(trainer, |t| t.finish_block()) }
}

/// Train the rest of the current block's epochs, then [`nf_finish_block`]. `NF_DONE` when every
/// block is trained already.
///
/// # Safety
/// As [`nf_train_epoch`].
#[no_mangle]
pub unsafe extern "C" fn nf_train_block(trainer: *mut nf_trainer) -> i32 {
    // SAFETY: as this function's contract.
    unsafe { train::with(trainer, |t| t.train_block()) }
}

/// Train every remaining block ([`nf_train_block`] until `NF_DONE`); returns `NF_OK` at the end.
///
/// # Safety
/// As [`nf_train_epoch`].
#[no_mangle]
pub unsafe extern "C" fn nf_train(trainer: *mut nf_trainer) -> i32 {
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| loop {
            match t.train_block() {
                NF_OK => {}
                NF_DONE => return NF_OK,
                e => return e,
            }
        })
    }
}

/// The results so far: accuracies of every evaluated head and the early exit.
///
/// # Safety
/// As [`nf_train_epoch`]; `result` is NULL or points to a writable `nf_result`.
#[no_mangle]
pub unsafe extern "C" fn nf_get_result(trainer: *mut nf_trainer, result: *mut nf_result) -> i32 {
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| {
            // SAFETY: the caller guarantees `result` is NULL or writable.
            match out_ref(result) {
                Some(r) => {
                    *r = t.result();
                    NF_OK
                }
                None => NF_E_NULL,
            }
        })
    }
}

/// The early exit for another tolerance: the earliest evaluated unit whose accuracy (validation,
/// else test) is within `tolerance` of the best, in `exit`.
///
/// # Safety
/// As [`nf_train_epoch`]; `exit` is NULL or points to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn nf_select_exit(
    trainer: *mut nf_trainer,
    tolerance: f32,
    exit: *mut u32,
) -> i32 {
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return NF_E_ARG;
    }
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| {
            let Some(e) = t.exit(tolerance) else {
                return NF_E_STATE;
            };
            // SAFETY: the caller guarantees `exit` is NULL or writable.
            match out_ref(exit) {
                Some(x) => {
                    *x = e as u32;
                    NF_OK
                }
                None => NF_E_NULL,
            }
        })
    }
}

/// Library panics cannot happen on accepted inputs (see the crate documentation); if one did (a
/// bug), it aborts the program: unwinding into C is never an option.
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    extern "C" {
        fn abort() -> !;
    }
    // SAFETY: `abort` from the C library takes no arguments and does not return.
    unsafe { abort() }
}

#[cfg(test)]
mod tests;
