//! The end of a run: the early exit, the model files and the report.
use crate::model_meta::in_exit_model;
use std::time::Instant;

use nf_core::model::{chain_params, classifier_ops};
use nf_core::plan::Plan;
use nf_core::schedule;
use serde_json::{json, Value};

use super::state::{metadata, HeadResult, RunState};
use super::Run;
use crate::data;
use crate::error::CliError;
use crate::plan_report;
use crate::progress;
use crate::run_plan::peak_rss_bytes;
use crate::size::format_size;
use crate::store::{save_tensors, TensorStore};

/// Parameters of units `0..=k` plus head `k` (or the classifier when `k` is the last unit).
fn exit_params(plan: &Plan, k: usize) -> usize {
    let m = &plan.model;
    let s = m.unit_input(plan.input, k + 1);
    let tail = if k + 1 == m.units.len() {
        chain_params(&classifier_ops(plan.classes), s)
    } else {
        m.head_params(plan.input, k, plan.heads[k], plan.classes)
    };
    m.trunk_params(plan.input, k) + tail
}

/// Pick the early exit, write the model files and report.json, and log the result.
pub(super) fn finish(
    run: &Run,
    state: &RunState,
    frozen: &TensorStore,
    start: Instant,
    device: Value,
) -> Result<(), CliError> {
    let accs: Vec<f32> = state.heads.iter().map(|h| h.val_acc).collect();
    let e = schedule::select_exit(&accs, run.args.exit_tolerance / 100.0);
    let exit = &state.heads[e];
    let last = state.heads.last().expect("at least one unit trained");
    save_models(run, frozen, last.unit, exit.unit)?;
    let seconds_total = state.seconds_before + start.elapsed().as_secs_f64();
    let peak_rss = peak_rss_bytes();
    let report = report_json(run, state, (exit, last), seconds_total, peak_rss, device);
    write_report(run, &report)?;
    log_result(run, (exit, last), seconds_total, peak_rss);
    Ok(())
}

/// Write `model.safetensors` (the model up to unit `last`: its head if --patience stopped
/// early) and `exit.safetensors` (up to unit `exit` and its head), both straight from the
/// frozen tensors (no copy of the model).
fn save_models(run: &Run, frozen: &TensorStore, last: usize, exit: usize) -> Result<(), CliError> {
    let n_units = run.plan().model.units.len();
    let out = run.args.out_dir();
    let save = |file: &str, k: usize, keep: &dyn Fn(&str) -> bool| {
        let mut meta: std::collections::BTreeMap<String, String> =
            metadata(run).into_iter().collect();
        meta.insert("exit".into(), k.to_string());
        let tensors = frozen
            .tensors
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, t)| (n.clone(), t));
        save_tensors(&out.join(file), tensors, &meta)
            .map_err(|e| CliError::Usage(format!("{}: writing {file}: {e}", run.args.out_flag())))
    };
    save("model.safetensors", last, &|_| true)?;
    save("exit.safetensors", exit, &|n| {
        in_exit_model(n, n_units, exit)
    })
}

/// Every block's plan and training figures, as report.json lists them.
fn blocks_json(plan: &Plan, state: &RunState) -> Vec<Value> {
    state
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let pb = &plan.blocks[i];
            let mut v = json!({
                "index": i,
                "units": [pb.first, pb.last],
                "batch_size": pb.batch,
                "global_batch_size": pb.batch * plan.options.world,
                "bytes": pb.bytes,
                "seconds": b.seconds,
                "train_seconds": b.train_seconds,
                "images_per_sec": b.images as f64 / b.train_seconds.max(1e-9),
                "epochs": b.epochs,
            });
            if plan.options.world > 1 {
                // Every segment's gradients are summed over the ranks once per step.
                v["allreduce_bytes_per_step"] = json!(pb.breakdown.params as u64 * 4);
            }
            v
        })
        .collect()
}

/// Every trained head (and the classifier), as report.json lists them.
fn heads_json(plan: &Plan, state: &RunState) -> Vec<Value> {
    let n_units = plan.model.units.len();
    state
        .heads
        .iter()
        .map(|h| {
            json!({
                "unit": h.unit,
                "filters": if h.unit + 1 == n_units { Value::Null } else { json!(h.filters) },
                "kind": if h.unit + 1 == n_units { "classifier" } else { "head" },
                "val_acc": h.val_acc,
                "test_acc": h.test_acc,
                "params": exit_params(plan, h.unit),
            })
        })
        .collect()
}

/// report.json: the run's settings, plan, blocks, heads, exit, memory and `device`'s figures.
fn report_json(
    run: &Run,
    state: &RunState,
    (exit, last): (&HeadResult, &HeadResult),
    seconds_total: f64,
    peak_rss: Option<u64>,
    device: Value,
) -> Value {
    let plan = run.plan();
    let mut memory = plan_report::contract_json(&run.memory);
    memory["peak_rss_bytes"] = json!(peak_rss);
    let report = json!({
        "mode": plan.mode.name(),
        "model": plan.model.name,
        "architecture": crate::architecture::json::to_value(&plan.model),
        "data": run.args.data.clone().unwrap_or_else(|| data::default_dir().display().to_string()),
        "input": [plan.input.c, plan.input.h, plan.input.w],
        "classes": plan.classes,
        "class_names": run.class_names,
        "samples": {"train": run.global[0], "val": run.global[1], "test": run.global[2]},
        "budget_bytes": run.args.spec.budget,
        "epochs_per_block": run.args.epochs,
        "pad": run.args.pad,
        "augment": run.augment.map(|a| json!({"crop_pad": a.crop, "flip": a.flip})),
        "seed": run.args.seed,
        "precision": run.args.precision().name(),
        "plan": plan_report::json(plan),
        "blocks": blocks_json(plan, state),
        "heads": heads_json(plan, state),
        "exit": {"unit": exit.unit, "val_acc": exit.val_acc, "test_acc": exit.test_acc, "params": exit_params(plan, exit.unit)},
        "full_params": plan.model.full_params(plan.input, plan.classes),
        "last_unit": last.unit,
        "test_acc": last.test_acc,
        "seconds_total": seconds_total,
        "peak_arena_bytes": plan.peak_bytes(),
        "workers": plan.options.workers,
        "memory": memory,
        "planned_total_bytes": run.memory.total_bytes(),
        "peak_rss_bytes": peak_rss,
    });
    let mut report = report;
    if let (Some(r), Value::Object(d)) = (report.as_object_mut(), device) {
        r.extend(d);
    }
    report
}

/// Write `report` as report.json into the run directory.
fn write_report(run: &Run, report: &Value) -> Result<(), CliError> {
    let out = run.args.out_dir();
    let text = serde_json::to_string_pretty(report).expect("report serialises");
    crate::store::atomic_write(&out.join("report.json"), text.as_bytes()).map_err(|e| {
        CliError::Usage(format!(
            "{} {}: writing report.json: {e}",
            run.args.out_flag(),
            out.display()
        ))
    })
}

/// The run's last two lines: its memory, and its result (the last unit's and the exit's).
fn log_result(
    run: &Run,
    (exit, last): (&HeadResult, &HeadResult),
    seconds_total: f64,
    peak_rss: Option<u64>,
) {
    let plan = run.plan();
    let full_params = plan.model.full_params(plan.input, plan.classes);
    progress::log(&format!(
        "memory: planned total {} ({} under --budget, {} of host memory), peak RSS {}",
        format_size(run.memory.total_bytes()),
        format_size(run.memory.budget_bytes()),
        format_size(run.memory.host_bytes()),
        peak_rss.map_or_else(|| "unknown".to_string(), format_size)
    ));
    progress::log(&format!(
        "done in {:.1}s: last unit {} test {:.2}%; exit at unit {} test {:.2}% with {} of {} parameters ({:.1}x fewer); wrote {}",
        seconds_total,
        last.unit,
        100.0 * last.test_acc,
        exit.unit,
        100.0 * exit.test_acc,
        exit_params(plan, exit.unit),
        full_params,
        full_params as f64 / exit_params(plan, exit.unit) as f64,
        run.args.out_dir().display()
    ));
}
