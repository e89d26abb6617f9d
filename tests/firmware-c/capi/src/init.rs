//! Setting a trainer up: [`nf_init`] (planning under a budget) and [`nf_init_planned`] (a plan
//! made before, checked), then the first block's layouts.
use crate::{
    checked, in_ref, nf_data, nf_model, nf_options, nf_plan_info, nf_schedule, nf_trainer,
    overlaps, planned, train, NF_E_ALIGN, NF_E_BUSY, NF_E_NULL, NF_E_OVERLAP, NF_OK,
};

/// Plan as [`nf_plan`] and set up `trainer` to train in `memory` (`memory_bytes` bytes, at least
/// the plan's `memory_bytes`, aligned for `float`, not overlapping `trainer`: `NF_E_OVERLAP`),
/// reading samples through `data`, with `schedule`. The memory and the callbacks' `user` must
/// stay valid, and the memory untouched by the caller, while the trainer is used. Calling it
/// again restarts training; what the memory held before does not change the run (every
/// element is written before it is read).
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
    // SAFETY: as this function's contract.
    let rc = unsafe {
        init(
            trainer,
            model,
            options,
            Source::Budget(budget),
            memory,
            memory_bytes,
            data,
            schedule,
        )
    };
    // SAFETY: `init` set the trainer up (or failed); as this function's contract.
    unsafe { lay_out(trainer, rc, false) }
}

/// As [`nf_init`], with the plan [`nf_plan`] made (for this model, options and `data->n_train`;
/// on this device or on another, a host say) instead of a budget: the planner does not run, and
/// its stack is not needed (on the firmware: 24 KB at `nf_init`, the deepest point of the run,
/// against 9 KB for the rest). The plan is checked, not trusted: its blocks must cover the
/// units in order at batches within the options, its head widths be ones the options allow,
/// and every size it gives (each block's bytes, the arena, store, order and memory) be the one
/// the library computes for it; otherwise `NF_E_PLAN`.
///
/// # Safety
/// As [`nf_init`]; `plan` is NULL or points to a valid `nf_plan_info`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn nf_init_planned(
    trainer: *mut nf_trainer,
    model: *const nf_model,
    options: *const nf_options,
    plan: *const nf_plan_info,
    memory: *mut f32,
    memory_bytes: usize,
    data: *const nf_data,
    schedule: *const nf_schedule,
) -> i32 {
    // SAFETY: as this function's contract.
    let rc = unsafe {
        init(
            trainer,
            model,
            options,
            Source::Info(plan),
            memory,
            memory_bytes,
            data,
            schedule,
        )
    };
    // SAFETY: `init` set the trainer up (or failed); as this function's contract.
    unsafe { lay_out(trainer, rc, true) }
}

/// After [`init`] returned `rc` for `trainer` (its frame gone, so that the stack holds one
/// layout at a time): with `check`, every block's bytes checked against the plan's
/// (`NF_E_PLAN`: the trainer is then left uninitialised); the first block laid out.
///
/// # Safety
/// As [`nf_init_planned`].
unsafe fn lay_out(trainer: *mut nf_trainer, rc: i32, check: bool) -> i32 {
    if rc != NF_OK {
        return rc;
    }
    // SAFETY: `init` installed an idle trainer; the caller's contract for the rest.
    let rc = unsafe {
        train::with(trainer, |t| {
            if check {
                if let Err(e) = t.check_blocks() {
                    return e;
                }
            }
            t.prepare();
            NF_OK
        })
    };
    if rc != NF_OK {
        // SAFETY: non-null, aligned, writable (the caller), idle (`with` returned).
        unsafe { train::uninstall(trainer) };
    }
    rc
}

/// Where [`init`]'s plan comes from.
enum Source {
    /// The planner, under this budget.
    Budget(u64),
    /// A plan made before (checked).
    Info(*const nf_plan_info),
}

/// [`nf_init`] and [`nf_init_planned`] but the layouts ([`lay_out`]). Never inlined: its frame
/// (the model, the plan) is gone before the layouts are made.
///
/// # Safety
/// As [`nf_init_planned`].
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn init(
    trainer: *mut nf_trainer,
    model: *const nf_model,
    options: *const nf_options,
    source: Source,
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
    if overlaps(
        trainer.cast(),
        core::mem::size_of::<nf_trainer>(),
        memory.cast(),
        memory_bytes,
    ) {
        return NF_E_OVERLAP;
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
    let (data, schedule) = match (unsafe { in_ref(data) }, unsafe { in_ref(schedule) }) {
        (Ok(d), Ok(s)) => (d, s),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if let Err(e) = train::check_data(data) {
        return e;
    }
    let n_train = data.n_train as usize;
    let planned = match source {
        Source::Budget(budget) => match planned::plan(&model, mode, &opts, budget, n_train) {
            Ok(p) => p,
            Err((e, _)) => return e,
        },
        // SAFETY: null and alignment checked by `in_ref`; the caller guarantees validity.
        Source::Info(info) => match unsafe { in_ref(info) }
            .and_then(|i| planned::from_info(&model, mode, &opts, i, n_train))
        {
            Ok(p) => p,
            Err(e) => return e,
        },
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

/// `sizeof(nf_trainer)` as the library was built: a C program may check that its header
/// agrees (the header's `NF_TRAINER_WORDS` follows the pointer width).
#[no_mangle]
pub extern "C" fn nf_trainer_bytes() -> usize {
    core::mem::size_of::<nf_trainer>()
}
