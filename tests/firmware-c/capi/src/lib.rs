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
//! 5. [`nf_predict`] / [`nf_predict_unit`]: classify a sample with the trained model (the early
//!    exit, the full model or any evaluated head), in the memory the trainer already holds.
//! 6. [`nf_export_model`] / [`nf_load_model`]: the trained model as flat bytes (versioned,
//!    checksummed) to keep in flash, and back into a trainer after a reset.
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

mod abi;
mod ctx;
mod feed;
mod half;
mod init;
mod model;
mod planned;
mod predict;
mod saved;
mod train;

pub use abi::*;
pub use init::{nf_init, nf_init_planned, nf_trainer_bytes};
pub use saved::{nf_export_model, nf_load_model};

use core::ffi::c_char;

use model::Model;

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
        NF_E_OVERLAP => c"the memory overlaps the nf_trainer struct",
        NF_E_FORMAT => c"not a model file of this trainer's model and plan (magic, version, sizes or checksum)",
        NF_E_PLAN => c"the plan does not fit the model and options (blocks, heads, batches or sizes)",
        _ => c"unknown error code",
    };
    s.as_ptr()
}

// --- Defaults ------------------------------------------------------------------------------------

/// The microcontroller defaults: NeuroFlux, heads 16 -> 8 filters (LL: 16), batches 2..=32,
/// homogeneity 2, the recompute chain after each block's scratch.
///
/// # Safety
/// `o` is NULL or points to a writable `nf_options`.
#[no_mangle]
pub unsafe extern "C" fn nf_options_default(o: *mut nf_options) -> i32 {
    // SAFETY: `out_ref` checks null and alignment; the caller guarantees writability.
    let o = match unsafe { out_ref(o) } {
        Ok(o) => o,
        Err(e) => return e,
    };
    *o = nf_options {
        mode: NF_MODE_NEUROFLUX,
        f_max: 16,
        f_min: 8,
        ll_filters: 16,
        b_min: 2,
        b_max: 32,
        homogeneity: 2,
        chain_in_scratch: 0,
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
    let s = match unsafe { out_ref(s) } {
        Ok(s) => s,
        Err(e) => return e,
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

/// `NF_E_NULL` for a NULL `p`, `NF_E_ALIGN` for a misaligned one, else `Ok`.
pub(crate) fn check_ptr<T>(p: *const T) -> Result<(), i32> {
    if p.is_null() {
        Err(NF_E_NULL)
    } else if !p.is_aligned() {
        Err(NF_E_ALIGN)
    } else {
        Ok(())
    }
}

/// As [`check_ptr`], where NULL is allowed (an optional output): `Ok(None)` for NULL.
pub(crate) fn check_opt_ptr<T>(p: *const T) -> Result<Option<()>, i32> {
    if p.is_null() {
        Ok(None)
    } else {
        check_ptr(p).map(Some)
    }
}

/// `p` as a shared reference; `NF_E_NULL` when it is NULL, `NF_E_ALIGN` when misaligned.
///
/// # Safety
/// A non-null, aligned `p` must point to a valid `T` that nothing writes during the call.
unsafe fn in_ref<'a, T>(p: *const T) -> Result<&'a T, i32> {
    check_ptr(p)?;
    // SAFETY: non-null and aligned (checked); valid and not written meanwhile (the caller).
    Ok(unsafe { &*p })
}

/// `p` as an exclusive reference; `NF_E_NULL` when it is NULL, `NF_E_ALIGN` when misaligned.
///
/// # Safety
/// A non-null, aligned `p` must point to memory writable as a `T` (any bits: the caller only
/// writes through the result) that nothing else accesses during the call.
unsafe fn out_ref<'a, T>(p: *mut T) -> Result<&'a mut T, i32> {
    check_ptr(p)?;
    // SAFETY: non-null and aligned (checked); exclusive and writable (the caller). Every `T`
    // used here is plain integers and floats, so any bits are a valid `T`.
    Ok(unsafe { &mut *p })
}

/// Whether the `a_len` bytes at `a` and the `b_len` bytes at `b` share a byte (or either
/// range wraps around the address space).
fn overlaps(a: *const u8, a_len: usize, b: *const u8, b_len: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    match (a.checked_add(a_len), b.checked_add(b_len)) {
        (Some(a_end), Some(b_end)) => a < b_end && b < a_end && a_len > 0 && b_len > 0,
        _ => true,
    }
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
    let (m, o) = (unsafe { in_ref(model) }?, unsafe { in_ref(options) }?);
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
    let info = match unsafe { out_ref(info) } {
        Ok(i) => i,
        Err(e) => return e,
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
    match planned::plan(&model, mode, &opts, budget, n_train as usize) {
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

/// Train one epoch of the current block (initialising the block at its first epoch); `stats`
/// (may be NULL; misaligned: `NF_E_ALIGN`, before any training) receives its statistics. `NF_DONE` when every block is trained;
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
    // A misaligned `stats` is refused before any training.
    if let Err(e) = check_opt_ptr(stats) {
        return e;
    }
    let mut st = None;
    // SAFETY: as this function's contract.
    let rc = unsafe {
        train::with(trainer, |t| {
            let mut s = nf_epoch_stats::default();
            let rc = t.train_epoch(&mut s);
            st = Some(s);
            rc
        })
    };
    if let (Some(s), false) = (st, stats.is_null()) {
        // SAFETY: non-null and aligned (checked above); writable (the caller).
        unsafe { *stats = s };
    }
    rc
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
                Ok(r) => {
                    *r = t.result();
                    NF_OK
                }
                Err(e) => e,
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
    if let Err(e) = check_ptr(exit) {
        return e;
    }
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| {
            let Some(e) = t.exit(tolerance) else {
                return NF_E_STATE;
            };
            // SAFETY: the caller guarantees `exit` is NULL or writable.
            match out_ref(exit) {
                Ok(x) => {
                    *x = e as u32;
                    NF_OK
                }
                Err(e) => e,
            }
        })
    }
}

// --- Prediction ----------------------------------------------------------------------------------

/// Classify `sample` with the trained model at its early exit (the exit of [`nf_get_result`]):
/// `class` receives the class (the first largest logit), `logits` (may be NULL) the model's
/// `classes` logits. As [`nf_predict_unit`] with `NF_UNIT_EXIT`.
///
/// # Safety
/// As [`nf_predict_unit`].
#[no_mangle]
pub unsafe extern "C" fn nf_predict(
    trainer: *mut nf_trainer,
    sample: *const f32,
    class: *mut u32,
    logits: *mut f32,
) -> i32 {
    // SAFETY: as this function's contract.
    unsafe { nf_predict_unit(trainer, NF_UNIT_EXIT, sample, class, logits) }
}

/// Classify `sample` (`in_c·in_h·in_w` floats, normalised as the read callback gives them)
/// with unit `unit`'s head: `NF_UNIT_EXIT` for the early exit, `NF_UNIT_FULL` (or the last
/// unit) for the full model and its classifier, or any unit whose head was evaluated
/// (`NF_E_ARG` otherwise). `class` receives the class, `logits` (may be NULL) the `classes`
/// logits. Every block must be trained (`NF_E_STATE` before, and after a failed call).
///
/// No memory is needed beyond the trainer's: the prediction runs, one sample at a time, in the
/// part of the training memory's arena that training no longer uses (after the last block's
/// weights), with the weights of earlier units and heads copied there from the frozen-weight
/// store. Its accuracy over a split equals the trainer's own evaluation of that head, bit for
/// bit (the same kernels on the same weights).
///
/// # Safety
/// As [`nf_train_epoch`]; `sample` is NULL or points to the model's input size of floats;
/// `class` is NULL or points to a writable `uint32_t`; `logits` is NULL or points to `classes`
/// writable floats.
#[no_mangle]
pub unsafe extern "C" fn nf_predict_unit(
    trainer: *mut nf_trainer,
    unit: u32,
    sample: *const f32,
    class: *mut u32,
    logits: *mut f32,
) -> i32 {
    for r in [
        check_ptr(sample),
        check_ptr(class),
        check_opt_ptr(logits).map(|_| ()),
    ] {
        if let Err(e) = r {
            return e;
        }
    }
    let unit = match unit {
        NF_UNIT_EXIT => None,
        u => Some(u as usize),
    };
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| {
            let n_in = t.input_len();
            let classes = t.classes();
            let unit = match unit {
                Some(u) if u == NF_UNIT_FULL as usize => Some(t.n_units() - 1),
                u => u,
            };
            // SAFETY: `sample` is non-null and aligned (checked) and holds the model's input
            // size of floats (the caller); `logits`, when non-null, is aligned (checked) and
            // holds `classes` writable floats (the caller); neither is the trainer's memory.
            let (x, z) = (
                core::slice::from_raw_parts(sample, n_in),
                (!logits.is_null()).then(|| core::slice::from_raw_parts_mut(logits, classes)),
            );
            match t.predict(unit, x, z) {
                Ok(c) => {
                    // SAFETY: non-null and aligned (checked); writable (the caller).
                    *class = c;
                    NF_OK
                }
                Err(e) => e,
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
#[cfg(test)]
mod tests_planned;
#[cfg(test)]
mod tests_predict;
