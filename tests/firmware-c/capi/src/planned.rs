//! Planning through the C ABI: the model as nf-core sees it, nf-core's planner under the
//! budget left after the frozen-weight store and the epoch order, and the store's layout (every
//! unit but the last, then the heads of every block but the last, op by op: parameters, then
//! BN statistics).
use nf_core::layout::{op_state, Breakdown, ELEM_BYTES};
use nf_core::model::{ModelSpec, Op, MAX_UNITS};
use nf_core::plan::{
    plan as nf_plan_core, BatchLimit, Block, Mode, Plan, PlanError, PlanOptions, MIN_HEAD,
};

use crate::half::f16_bytes;
use crate::model::Model;
use crate::{
    nf_block_info, nf_plan_info, NF_E_BUDGET, NF_E_MODEL, NF_E_OPTIONS, NF_E_PLAN, NF_MAX_UNITS,
};

/// Most batch indices the training step converts from a `u16` epoch order at once (a stack
/// buffer): the order is `u16` only when no batch is larger.
pub(crate) const IDX_SCRATCH: usize = 32;

/// Whether the epoch order of `n_train` samples is kept in `u16` (at most 65,536 samples and
/// batches of at most [`IDX_SCRATCH`]), else `u32`.
pub(crate) fn order_is_u16(n_train: usize, b_max: usize) -> bool {
    n_train <= 1 << 16 && b_max <= IDX_SCRATCH
}

/// Bytes of the epoch order (a whole number of `f32` elements, so that the memory stays a
/// `float` buffer).
pub(crate) fn order_bytes(n_train: usize, b_max: usize) -> u64 {
    if order_is_u16(n_train, b_max) {
        (n_train as u64).div_ceil(2) * ELEM_BYTES
    } else {
        n_train as u64 * ELEM_BYTES
    }
}

/// A plan of the C ABI: nf-core's plan (whose model has no units: they must be attached again
/// with [`spec`] before use) and its description.
pub(crate) struct Planned {
    pub(crate) plan: Plan<'static>,
    pub(crate) info: nf_plan_info,
    pub(crate) store: usize,
}

/// The model as nf-core sees it with no units: what the plan kept in the trainer holds
/// between calls (see [`Planned`]).
pub(crate) fn detached(model: &Model) -> ModelSpec<'static> {
    ModelSpec {
        name: "c-model",
        about: "described through the C ABI",
        input: model.input,
        units: &[],
        head_pool: model.head_pool,
    }
}

/// The model as nf-core sees it, borrowing `model`'s ops through `refs`.
pub(crate) fn spec<'a>(model: &'a Model, refs: &'a mut [&'a [Op]; NF_MAX_UNITS]) -> ModelSpec<'a> {
    ModelSpec {
        units: model.units(refs),
        ..detached(model)
    }
}

/// Elements the frozen-weight store keeps for unit `u`: its parameters and BN statistics.
fn unit_store(spec: &ModelSpec, u: usize) -> usize {
    let mut s = spec.unit_input(spec.input, u);
    let mut n = 0;
    for op in spec.units[u] {
        n += op.params(s) + op_state(op, s);
        s = op.out_shape(s);
    }
    n
}

/// Offset of unit `u` in the store.
pub(crate) fn store_offset(spec: &ModelSpec, u: usize) -> usize {
    (0..u).map(|i| unit_store(spec, i)).sum()
}

/// Elements of head `u` of `f` filters (parameters and BN statistics), as the store keeps it.
fn head_len(spec: &ModelSpec, classes: usize, u: usize, f: usize) -> usize {
    if f == 0 {
        return 0;
    }
    let mut s = spec.unit_input(spec.input, u + 1);
    let (ops, n) = spec.head(f, classes, s);
    let mut len = 0;
    for op in &ops[..n] {
        len += op.params(s) + op_state(op, s);
        s = op.out_shape(s);
    }
    len
}

/// Offset of head `u` in the store: after every unit but the last, the heads of the units
/// before `u` (heads `heads`).
pub(crate) fn head_offset(spec: &ModelSpec, heads: &[usize], classes: usize, u: usize) -> usize {
    let units = store_offset(spec, spec.units.len() - 1);
    units
        + (0..u)
            .map(|v| head_len(spec, classes, v, heads[v]))
            .sum::<usize>()
}

/// Elements of the heads the store keeps for plan `p`: those of every block but the last.
fn heads_store(spec: &ModelSpec, model: &Model, p: &Plan) -> usize {
    let first = p.blocks()[p.n_blocks - 1].first;
    head_offset(spec, &p.heads, model.classes, first) - store_offset(spec, spec.units.len() - 1)
}

/// Plan with room in the store for the heads the plan keeps (see [`plan`]), and the fixed
/// bytes (store and order) set aside. `Err((NF_E_BUDGET, smallest arena))` when it does not plan.
///
/// The store keeps every unit but the last and, so that the model can predict at any
/// evaluated unit after training, the heads of the blocks before the last one, whose widths the
/// plan chooses: planned with no room for them first, then again with the room the previous
/// plan's heads need until they fit (then with room for the widest heads).
fn plan_with_heads<'a>(
    spec: &ModelSpec<'a>,
    model: &Model,
    mode: Mode,
    opts: &PlanOptions,
    budget: u64,
    n_train: usize,
) -> Result<(Plan<'a>, u64), (i32, u64)> {
    let nu = model.n_units();
    let units_store = store_offset(spec, nu - 1);
    let mut reserve = 0;
    let mut tries = 0;
    loop {
        let fixed = f16_bytes(units_store + reserve) + order_bytes(n_train, opts.b_max);
        let arena_budget = budget.saturating_sub(fixed);
        let p = match nf_plan_core(spec, model.input, model.classes, arena_budget, mode, opts) {
            Ok(p) => p,
            Err(PlanError::BudgetTooSmall { needed }) => return Err((NF_E_BUDGET, needed)),
            Err(PlanError::BadInput) => return Err((NF_E_MODEL, 0)),
            Err(PlanError::BadOptions(_)) => return Err((NF_E_OPTIONS, 0)),
        };
        let need = heads_store(spec, model, &p);
        if need <= reserve {
            return Ok((p, fixed));
        }
        if tries == 3 {
            // Heads wider than the options allow: cannot happen (the planner stays within).
            return Err((NF_E_OPTIONS, 0));
        }
        tries += 1;
        reserve = if tries < 3 {
            need
        } else {
            let f = opts.f_max.max(opts.ll_filters);
            (0..nu - 1)
                .map(|u| head_len(spec, model.classes, u, f))
                .sum()
        };
    }
}

/// Plan `model` for `n_train` samples under `budget` bytes of memory (arena, store, order).
/// Errors carry the smallest budget that would plan (0 when that is not the issue).
///
/// Never inlined: the planner's deep stack (nf-core lays candidate blocks out by value) is
/// then gone before a caller builds anything large of its own.
#[inline(never)]
pub(crate) fn plan(
    model: &Model,
    mode: Mode,
    opts: &PlanOptions,
    budget: u64,
    n_train: usize,
) -> Result<Planned, (i32, u64)> {
    let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
    let spec = spec(model, &mut refs);
    let nu = model.n_units();
    let units_store = store_offset(&spec, nu - 1);
    let (p, fixed) = match plan_with_heads(&spec, model, mode, opts, budget, n_train) {
        Ok(v) => v,
        Err((NF_E_BUDGET, arena)) => {
            // The smallest budget that plans: between the smallest arena plus the store with
            // no heads and plus the widest heads (which always plans), found by bisection.
            let f = opts.f_max.max(opts.ll_filters);
            let widest: usize = (0..nu - 1)
                .map(|u| head_len(&spec, model.classes, u, f))
                .sum();
            let base =
                arena.saturating_add(f16_bytes(units_store) + order_bytes(n_train, opts.b_max));
            // `lo` never plans (less than the smallest arena), `hi` does.
            let lo0 = base.saturating_sub(ELEM_BYTES);
            let (mut lo, mut hi) = (lo0, base.saturating_add(f16_bytes(widest + 1)));
            while hi - lo > ELEM_BYTES {
                let mid = lo + (hi - lo) / 2;
                match plan_with_heads(&spec, model, mode, opts, mid, n_train) {
                    Ok(_) => hi = mid,
                    Err(_) => lo = mid,
                }
            }
            return Err((NF_E_BUDGET, hi));
        }
        Err((e, _)) => return Err((e, 0)),
    };
    if budget < fixed {
        // The planner was given nothing; it cannot have planned, but be explicit.
        return Err((NF_E_BUDGET, p.peak_bytes().saturating_add(fixed)));
    }
    Ok(described(model, &spec, &p, n_train))
}

/// The plan `p` of `model` (units attached in `spec`) for `n_train` samples, described.
fn described(model: &Model, spec: &ModelSpec, p: &Plan, n_train: usize) -> Planned {
    let nu = model.n_units();
    let store = store_offset(spec, nu - 1) + heads_store(spec, model, p);
    let mut info = nf_plan_info {
        arena_bytes: p.peak_bytes(),
        store_bytes: f16_bytes(store),
        order_bytes: order_bytes(n_train, p.options.b_max),
        n_units: nu as u32,
        n_blocks: p.n_blocks as u32,
        ..nf_plan_info::default()
    };
    info.memory_bytes = info.arena_bytes + info.store_bytes + info.order_bytes;
    for (d, &h) in info.heads.iter_mut().zip(&p.heads[..nu]) {
        *d = h as u32;
    }
    for (d, b) in info.blocks.iter_mut().zip(p.blocks()) {
        *d = nf_block_info {
            first: b.first as u32,
            last: b.last as u32,
            batch: b.batch as u32,
            chunk: b.chunk as u32,
            bytes: b.bytes,
        };
    }
    // Detach the borrowed units: the plan is kept in the trainer between calls.
    Planned {
        plan: p.with_model(detached(model)),
        info,
        store,
    }
}

/// The plan `info` describes (one [`plan`] made for this model, options and `n_train`), checked
/// field by field and rebuilt: blocks covering the units in order (one of them all in
/// backpropagation), batches within `b_min..=b_max`, a recompute chunk of `1..=batch` for
/// every block but the first (0 for it), head widths the options allow (0 for the last unit
/// and in backpropagation), and every size (arena, store, order, memory) the one computed
/// here; `NF_E_PLAN` otherwise (each block's bytes are checked against its layouts once the
/// trainer holds the plan: `Trainer::check_blocks`). The bounds keep every layout within what
/// [`Model::check_bound`] checked.
#[inline(never)]
pub(crate) fn from_info(
    model: &Model,
    mode: Mode,
    opts: &PlanOptions,
    info: &nf_plan_info,
    n_train: usize,
) -> Result<Planned, i32> {
    let nu = model.n_units();
    let nb = info.n_blocks as usize;
    let bp = matches!(mode, Mode::Bp);
    if info.n_units as usize != nu || !(1..=nu).contains(&nb) || (bp && nb != 1) {
        return Err(NF_E_PLAN);
    }
    let widest = opts.f_max.max(opts.ll_filters);
    let mut heads = [0usize; MAX_UNITS];
    for (u, (h, &w)) in heads.iter_mut().zip(&info.heads).enumerate().take(nu) {
        let w = w as usize;
        let ok = if bp || u + 1 == nu {
            w == 0
        } else {
            (MIN_HEAD..=widest).contains(&w)
        };
        if !ok {
            return Err(NF_E_PLAN);
        }
        *h = w;
    }
    let empty = Block {
        first: 0,
        last: 0,
        batch: 0,
        limit: BatchLimit::Budget,
        chunk: 0,
        bytes: 0,
        breakdown: Breakdown::default(),
    };
    let mut blocks = [empty; MAX_UNITS];
    let mut next = 0;
    for (d, b) in blocks.iter_mut().zip(&info.blocks[..nb]) {
        let (first, last) = (b.first as usize, b.last as usize);
        let (batch, chunk) = (b.batch as usize, b.chunk as usize);
        let ok = first == next
            && first <= last
            && last < nu
            && (opts.b_min..=opts.b_max).contains(&batch)
            && if first == 0 {
                chunk == 0
            } else {
                (1..=batch).contains(&chunk)
            };
        if !ok {
            return Err(NF_E_PLAN);
        }
        *d = Block {
            first,
            last,
            batch,
            chunk,
            ..empty
        };
        next = last + 1;
    }
    if next != nu {
        return Err(NF_E_PLAN);
    }
    let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
    let spec = spec(model, &mut refs);
    let mut p = Plan {
        mode,
        model: spec,
        input: model.input,
        classes: model.classes,
        budget: info.memory_bytes,
        options: *opts,
        heads,
        n_blocks: nb,
        blocks,
        bp_batch: 0,
    };
    // Each block's bytes as the plan gives them (checked against the layouts once the
    // trainer holds the plan: `Trainer::check_blocks`, so that no layout is made on this
    // function's stack).
    for (b, i) in p.blocks.iter_mut().zip(&info.blocks[..nb]) {
        b.bytes = i.bytes;
    }
    let d = described(model, &spec, &p, n_train);
    let same = d.info.arena_bytes == info.arena_bytes
        && d.info.store_bytes == info.store_bytes
        && d.info.order_bytes == info.order_bytes
        && d.info.memory_bytes == info.memory_bytes;
    if !same {
        return Err(NF_E_PLAN);
    }
    Ok(d)
}
