//! Rendering a [`Plan`] for people (a table) and for programs (a JSON object).
//!
//! Both are pure functions of the plan, so `nf plan` and the report of `nf train` show the same
//! thing. Bytes are bytes everywhere (the planner's breakdown is in `f32` elements; it is
//! multiplied by [`ELEM_BYTES`] here).
//!
//! Head widths: unit `u` of a block has an auxiliary head of `plan.heads[u]` filters, except the
//! model's last unit, which feeds the model's own classifier, and every unit in BP mode (no
//! heads at all). The table shows `cls` for the last unit and `-` for a unit without a head; the
//! JSON `head_filters` list has one entry per unit of the block and holds `0` for both.
use nf_core::layout::{Breakdown, ELEM_BYTES};
use nf_core::plan::{plan, step_cap, BatchLimit, Block, BlockWorkspace, Mode, Plan, PlanError};
use serde_json::{json, Value};

use crate::run_plan::RunPlan;
use crate::size::{format_size, format_size_short};

/// The breakdown parts as (JSON key, table header, bytes), in the planner's order.
pub fn breakdown_bytes(b: &Breakdown) -> [(&'static str, &'static str, u64); 9] {
    let e = |n: usize| n as u64 * ELEM_BYTES;
    [
        ("params", "params", e(b.params)),
        ("grads", "grads", e(b.grads)),
        ("optimizer", "optim", e(b.optimizer)),
        ("bn_state", "bn", e(b.bn_state)),
        ("io", "io", e(b.io)),
        ("activations", "acts", e(b.activations)),
        ("act_grads", "act-grads", e(b.act_grads)),
        ("workspace", "workspace", e(b.workspace)),
        ("recompute", "recompute", e(b.recompute)),
    ]
}

/// Whether the plan aligns its regions beyond the element size (a GPU plan: every region on
/// [`nf_core::layout::GEMM_ALIGN`] bytes, for cuBLAS): then the table has a `padding` column
/// and the JSON a `padding` part and `options.region_align_bytes`; a packed plan (CPU,
/// firmware) shows neither, so its report is what it was.
pub fn is_aligned(p: &Plan) -> bool {
    p.options.region_align != ELEM_BYTES as usize
}

/// The breakdown parts of a block of `p` as [`breakdown_bytes`] gives them, with the
/// alignment padding after them when the plan is aligned ([`is_aligned`]).
fn shown_parts(p: &Plan, b: &Breakdown) -> Vec<(&'static str, &'static str, u64)> {
    let mut v = breakdown_bytes(b).to_vec();
    if is_aligned(p) {
        v.push(("padding", "padding", b.padding as u64 * ELEM_BYTES));
    }
    v
}

/// Whether unit `u` of the plan's model feeds the model's classifier (the last unit).
fn is_classifier_unit(p: &Plan, u: usize) -> bool {
    u + 1 == p.model.units.len()
}

/// Head filters of the units of block `b`: one entry per unit, 0 where the unit has no
/// auxiliary head (the last unit, and every unit in BP mode).
pub fn head_filters(p: &Plan, b: &Block) -> Vec<usize> {
    (b.first..=b.last).map(|u| p.heads[u]).collect()
}

/// The head-width cell of a block: `64,57,cls`, with `-` for a unit without a head.
pub fn heads_label(p: &Plan, b: &Block) -> String {
    (b.first..=b.last)
        .map(|u| {
            if is_classifier_unit(p, u) {
                "cls".to_string()
            } else if p.heads[u] == 0 {
                "-".to_string()
            } else {
                p.heads[u].to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The units cell of a block: `3` or `0-2`.
pub fn units_label(b: &Block) -> String {
    if b.first == b.last {
        b.first.to_string()
    } else {
        format!("{}-{}", b.first, b.last)
    }
}

/// The smallest budget under which backpropagation trains this model (at the minimum batch
/// size), if the planner can say.
pub fn bp_min_bytes(p: &Plan) -> Option<u64> {
    match plan(&p.model, p.input, p.classes, 0, Mode::Bp, &p.options) {
        Err(PlanError::BudgetTooSmall { needed }) => Some(needed),
        _ => None,
    }
}

/// The line comparing with backpropagation under the same budget; `bp_needed` is the budget BP
/// needs on the run's kernels when it cannot train ([`crate::run_plan::bp_needed`]; `None`: the
/// planner's own figure, without a backend's workspace).
pub fn bp_line(p: &Plan, bp_needed: Option<u64>) -> String {
    if p.bp_batch > 0 {
        format!("BP under the same budget: batch {}", p.bp_batch)
    } else {
        match bp_needed.or_else(|| bp_min_bytes(p)) {
            Some(n) => format!(
                "BP cannot train under this budget (needs {} = {} bytes at batch {})",
                format_size(n),
                n,
                p.options.b_min
            ),
            None => "BP cannot train under this budget".to_string(),
        }
    }
}

/// What set a block's batch, as the table's `set by` column says it.
fn limit_label(l: BatchLimit) -> &'static str {
    match l {
        BatchLimit::Budget => "budget",
        BatchLimit::BatchMax => "--batch-max",
        BatchLimit::Steps => "--min-steps",
    }
}

/// The step cap of the plan in words (a line ending in a newline).
pub fn steps_line(p: &Plan) -> String {
    let o = &p.options;
    if o.min_steps == 0 {
        return "step cap: none (--min-steps 0 or an explicit --batch-max)\n".to_string();
    }
    if o.samples == 0 {
        return format!(
            "step cap: at least {} steps an epoch, once the training set's size is known (give --data)\n",
            o.min_steps
        );
    }
    format!(
        "step cap: {} training samples / at least {} steps an epoch: batch <= {}\n",
        o.samples,
        o.min_steps,
        step_cap(o)
    )
}

fn with_bytes(n: u64) -> String {
    format!("{} ({} bytes)", format_size(n), n)
}

/// The plan as a table for people, ending in a newline.
///
/// A title line, an options line, one row per block (index, units, head widths, batch size,
/// bytes, and the bytes by kind), the total (the arena: the largest block, since blocks train
/// one after another) against the budget, and the BP comparison.
pub fn table(p: &Plan, bp_needed: Option<u64>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} on {}x{}x{}, {} classes, {} mode, budget {}\n",
        crate::architecture::shown(&p.model),
        p.input.c,
        p.input.h,
        p.input.w,
        p.classes,
        p.mode.name(),
        with_bytes(p.budget)
    ));
    let o = &p.options;
    let opts = match p.mode {
        Mode::NeuroFlux => format!(
            "heads {} -> {} filters, homogeneity {}x, batch {}..={}",
            o.f_max, o.f_min, o.homogeneity, o.b_min, o.b_max
        ),
        Mode::Ll => format!(
            "heads {} filters, batch {}..={}",
            o.ll_filters, o.b_min, o.b_max
        ),
        Mode::Bp => format!("no heads, batch {}..={}", o.b_min, o.b_max),
    };
    let workers = if o.workers == 1 {
        "1 CPU worker".to_string()
    } else {
        format!("{} CPU workers", o.workers)
    };
    out.push_str(&format!("options: {opts}, {workers}\n"));
    if is_aligned(p) {
        out.push_str(&format!(
            "regions aligned to {} bytes for the GPU's GEMMs (cuBLAS); the padding column counts \
             it. This plan depends on the GPU: the device reserve holds a cuBLAS workspace sized \
             by its compute capability, so --resume on another GPU model replays it or refuses\n",
            p.options.region_align
        ));
    }
    out.push_str(&steps_line(p));
    out.push('\n');

    let mut header: Vec<String> = ["block", "units", "heads", "batch", "set by", "bytes"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(b) = p.blocks().first() {
        header.extend(
            shown_parts(p, &b.breakdown)
                .iter()
                .map(|(_, h, _)| h.to_string()),
        );
    }
    // Left-aligned columns: units, heads, set by; the rest right-aligned.
    let left = |i: usize| i == 1 || i == 2 || i == 4;
    let mut rows = vec![header];
    for (i, b) in p.blocks().iter().enumerate() {
        let mut row = vec![
            i.to_string(),
            units_label(b),
            heads_label(p, b),
            b.batch.to_string(),
            limit_label(b.limit).to_string(),
            format_size(b.bytes),
        ];
        row.extend(
            shown_parts(p, &b.breakdown)
                .iter()
                .map(|&(_, _, n)| format_size_short(n)),
        );
        rows.push(row);
    }
    let ncols = rows[0].len();
    let widths: Vec<usize> = (0..ncols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if left(c) {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let peak = p.peak_bytes();
    let reserve = p.options.reserve;
    let pct = if p.budget > 0 {
        (peak + reserve) as f64 * 100.0 / p.budget as f64
    } else {
        0.0
    };
    out.push('\n');
    out.push_str(&format!(
        "total: {} = arena of the largest block (blocks train one after another)\n",
        with_bytes(peak)
    ));
    let beside = if reserve > 0 {
        format!(" ({} kept beside the arena)", format_size(reserve))
    } else {
        String::new()
    };
    out.push_str(&format!(
        "budget: {}, {pct:.1}% used{beside}\n",
        with_bytes(p.budget)
    ));
    out.push_str(&bp_line(p, bp_needed));
    out.push('\n');
    out.push_str(
        "bytes = params + grads (one unit's at a time) + optim (momentum) + bn (running stats) \
         + io (input batch, labels, unit outputs) + acts (kept for backward) + act-grads \
         + workspace (im2col columns, GEMM packing) + recompute (the frozen units that \
         recompute the block's inputs when there is no activation cache)\n",
    );
    if is_aligned(p) {
        out.push_str("       + padding (before regions, to align them; planned, never touched)\n");
    }
    out
}

/// The memory contract of a run as text: what `--budget` covers, the host memory beside it,
/// and the planned total that the process's peak RSS is held to.
pub fn contract(m: &RunPlan) -> String {
    let mut out = String::from("\nmemory contract:\n");
    let beside = if m.on_device() {
        format!(
            "device reserve {} (reductions, cuBLAS)",
            format_size(m.device_reserve)
        )
    } else {
        format!("feed staging {}", format_size(m.staging))
    };
    out.push_str(&format!(
        "  --budget {}: arena {} + {beside} = {}\n",
        format_size(m.plan.budget),
        format_size(m.plan.peak_bytes()),
        format_size(m.budget_bytes())
    ));
    let cache = match (&m.recompute, m.data_known) {
        (Some(why), _) => format!("none (later blocks recompute their inputs: {why})"),
        (None, true) => format_size(m.host.cache),
        (None, false) => "sized by the data (give --data)".to_string(),
    };
    let data = if m.data_known {
        format_size(m.host.data)
    } else {
        "not given (--data)".to_string()
    };
    let staging = if m.on_device() {
        format!(", feed staging {}", format_size(m.staging))
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  host: data set {data}, activation cache {cache}, model weights {}{staging}\n",
        format_size(m.host.model)
    ));
    out.push_str(&format!(
        "  planned total: {} ({} bytes); the process's peak RSS stays within it + 16 MiB\n",
        format_size(m.total_bytes()),
        m.total_bytes()
    ));
    out
}

/// The memory contract as JSON (bytes).
pub fn contract_json(m: &RunPlan) -> Value {
    let mut v = json!({
        "budget_bytes": m.plan.budget,
        "budget_used_bytes": m.budget_bytes(),
        "host_bytes": m.host_bytes(),
        "arena_bytes": m.plan.peak_bytes(),
        "staging_bytes": m.staging,
        "device_reserve_bytes": m.device_reserve,
        "data_bytes": if m.data_known { Some(m.host.data) } else { None },
        "cache_bytes": if m.data_known || m.recompute.is_some() { Some(m.host.cache) } else { None },
        "model_bytes": m.host.model,
        "recompute": m.recompute,
        "planned_total_bytes": m.total_bytes(),
    });
    if m.plan.options.world > 1 {
        v["reduce_bytes"] = json!(m.host.reduce);
        v["mpi_bytes"] = json!(m.host.mpi);
    }
    v
}

/// The plan as one JSON object.
///
/// Fields: `mode`, `model`, `input` (`[c, h, w]`), `classes`, `budget_bytes`, `options`,
/// `n_units`, `blocks` (each: `index`, `units` `[first, last]` inclusive, `head_filters` (one
/// per unit of the block, 0 for a unit without an auxiliary head: the last unit, which uses the
/// model's classifier, and every unit in BP mode), `batch_size`, `batch_limit` (what set it: `budget`, `batch_max` or `steps`), `bytes`, `breakdown` (bytes by
/// kind: `params`, `grads`, `optimizer`, `bn_state`, `io`, `activations`, `act_grads`,
/// `workspace`)), `peak_bytes` (the largest block: the arena), `bp_batch_size` (`null` if BP
/// cannot train under the budget) and `bp_min_bytes` (the smallest budget under which BP
/// trains, or `null`).
pub fn json(p: &Plan) -> Value {
    let blocks: Vec<Value> = p
        .blocks()
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let breakdown: serde_json::Map<String, Value> = shown_parts(p, &b.breakdown)
                .iter()
                .map(|&(k, _, n)| (k.to_string(), json!(n)))
                .collect();
            json!({
                "index": i,
                "units": [b.first, b.last],
                "head_filters": head_filters(p, b),
                "batch_size": b.batch,
                "batch_limit": b.limit.name(),
                "bytes": b.bytes,
                "breakdown": breakdown,
            })
        })
        .collect();
    let o = &p.options;
    let mut v = json!({
        "mode": p.mode.name(),
        "model": p.model.name,
        "architecture": crate::architecture::json::to_value(&p.model),
        "input": [p.input.c, p.input.h, p.input.w],
        "classes": p.classes,
        "budget_bytes": p.budget,
        "options": {
            "f_max": o.f_max,
            "f_min": o.f_min,
            "ll_filters": o.ll_filters,
            "batch_min": o.b_min,
            "batch_max": o.b_max,
            "min_steps": o.min_steps,
            "train_samples": o.samples,
            "step_cap": if o.min_steps > 0 && o.samples > 0 { Some(step_cap(o)) } else { None },
            "homogeneity": o.homogeneity,
            "workers": o.workers,
            "reserve_bytes": o.reserve,
            "recompute": o.recompute,
            "storage": o.precision.name(),
            "workspace": match o.workspace {
                BlockWorkspace::Columns => "im2col columns",
                BlockWorkspace::Fixed(_) => "sized by the kernels for each block",
            },
        },
        "n_units": p.model.units.len(),
        "blocks": blocks,
        "peak_bytes": p.peak_bytes(),
        "bp_batch_size": if p.bp_batch > 0 { Some(p.bp_batch) } else { None },
        "bp_min_bytes": bp_min_bytes(p),
    });
    if is_aligned(p) {
        // Absent for a packed plan, whose JSON (and a checkpoint's saved plan) is unchanged.
        v["options"]["region_align_bytes"] = json!(o.region_align);
    }
    if o.world > 1 {
        // Ranks of a data-parallel run (absent for one process, whose plan is unchanged).
        v["options"]["world"] = json!(o.world);
        v["options"]["global_batch_sizes"] = json!(p
            .blocks()
            .iter()
            .map(|b| b.batch * o.world)
            .collect::<Vec<_>>());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_core::plan::PlanOptions;
    use nf_core::zoo;

    fn make(mode: Mode, budget: u64) -> Plan<'static> {
        plan(
            &zoo::VGG11,
            zoo::VGG11.input,
            10,
            budget,
            mode,
            &PlanOptions::DEFAULT,
        )
        .unwrap()
    }

    #[test]
    fn json_matches_the_plan() {
        for mode in [Mode::NeuroFlux, Mode::Ll, Mode::Bp] {
            let p = make(mode, 256 << 20);
            let v = json(&p);
            assert_eq!(v["mode"], mode.name());
            assert_eq!(v["peak_bytes"], p.peak_bytes());
            let blocks = v["blocks"].as_array().unwrap();
            assert_eq!(blocks.len(), p.blocks().len());
            let mut next = 0;
            for (jb, b) in blocks.iter().zip(p.blocks()) {
                assert_eq!(jb["units"][0], next);
                next = b.last + 1;
                let sum: u64 = jb["breakdown"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|x| x.as_u64().unwrap())
                    .sum();
                assert_eq!(sum, b.bytes, "breakdown adds up to the block bytes");
                assert_eq!(
                    jb["head_filters"].as_array().unwrap().len(),
                    b.last - b.first + 1
                );
            }
            assert_eq!(next, zoo::VGG11.units.len());
        }
    }

    #[test]
    fn table_shows_blocks_total_and_bp() {
        let p = make(Mode::NeuroFlux, 64 << 20);
        let t = table(&p, None);
        assert!(t.contains(&format!("({} bytes)", p.peak_bytes())), "{t}");
        assert!(t.contains("cls"), "{t}");
        assert!(t.contains("BP "), "{t}");
        for (i, b) in p.blocks().iter().enumerate() {
            let row = t.lines().find(|l| {
                l.split_whitespace().next() == Some(i.to_string().as_str())
                    && l.contains(&format_size(b.bytes))
            });
            assert!(row.is_some(), "no row for block {i}:\n{t}");
        }
    }

    /// A GPU plan (regions aligned for cuBLAS) shows its padding in the table and the JSON,
    /// whose breakdown still adds up; a CPU plan shows none.
    #[test]
    fn aligned_plans_report_their_padding() {
        let o = PlanOptions {
            region_align: nf_core::layout::GEMM_ALIGN,
            ..PlanOptions::DEFAULT
        };
        let m = &zoo::VGG_SMALL;
        let p = plan(m, m.input, 10, 32 << 20, Mode::NeuroFlux, &o).unwrap();
        let t = table(&p, None);
        assert!(t.contains("padding"), "{t}");
        assert!(t.contains("aligned to 128 bytes"), "{t}");
        assert!(t.contains("depends on the GPU"), "{t}");
        let v = json(&p);
        assert_eq!(v["options"]["region_align_bytes"], 128);
        for (jb, b) in v["blocks"].as_array().unwrap().iter().zip(p.blocks()) {
            assert_eq!(jb["breakdown"]["padding"], b.breakdown.padding as u64 * 4);
            assert!(b.breakdown.padding > 0);
            let sum: u64 = jb["breakdown"]
                .as_object()
                .unwrap()
                .values()
                .map(|x| x.as_u64().unwrap())
                .sum();
            assert_eq!(sum, b.bytes);
        }
        let cpu = make(Mode::NeuroFlux, 64 << 20);
        assert!(!table(&cpu, None).contains("padding"));
        let v = json(&cpu);
        assert!(v["options"].get("region_align_bytes").is_none());
        assert!(v["blocks"][0]["breakdown"].get("padding").is_none());
    }

    #[test]
    fn bp_that_cannot_train_says_what_it_needs() {
        let o = PlanOptions::DEFAULT;
        let needed = |mode| match plan(&zoo::VGG11, zoo::VGG11.input, 10, 0, mode, &o) {
            Err(PlanError::BudgetTooSmall { needed }) => needed,
            other => panic!("{other:?}"),
        };
        let (nf, bp) = (needed(Mode::NeuroFlux), needed(Mode::Bp));
        assert!(nf < bp, "NeuroFlux needs less than BP");
        let p = make(Mode::NeuroFlux, nf);
        assert_eq!(p.bp_batch, 0);
        assert_eq!(bp_min_bytes(&p), Some(bp));
        assert!(bp_line(&p, None).contains(&format!("{bp} bytes")));
        assert!(bp_line(&p, Some(7)).contains("(needs 7 B = 7 bytes"));
        assert!(json(&p)["bp_batch_size"].is_null());
        let p = make(Mode::Bp, bp);
        assert_eq!(p.bp_batch, o.b_min);
        assert_eq!(json(&p)["bp_batch_size"], o.b_min);
    }
}
