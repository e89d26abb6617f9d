//! `nf plan --precision`: the memory model's element type per kind of region
//! ([`nf_core::layout::Precision`]) and what it does to the smallest budget.
//!
//! Under `--precision bf16` the plan is the memory model's figure for bf16 *storage* of the
//! tensors a step streams (input, carry buffers, activations kept for backward, activation
//! gradients, im2col columns); master weights, momentum, gradients, BN statistics, labels,
//! logits and partial sums stay f32. `nf train --precision bf16` plans and runs this storage on
//! the fast CPU backend (the CUDA backend keeps f32 storage).
use nf_core::layout::{Precision, RegionKind};
use nf_core::plan::{Mode, PlanError};
use serde_json::{json, Value};

use crate::plan_args::{PlanSpecArgs, Target};
use crate::precision::PrecisionArg;
use crate::size::format_size;

impl From<PrecisionArg> for Precision {
    /// `nf plan --precision`: bf16 is the memory model's figure for bf16 storage of the
    /// streamed tensors.
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// The smallest budget under which `spec` plans in `mode` on `target` at `precision`, with
/// `reserved` bytes beside the arena (kernel workspace included); `None` when it cannot plan
/// at all (bad input or options, which the plan itself reports).
pub fn smallest_budget(
    spec: &PlanSpecArgs,
    target: Target,
    reserved: u64,
    mode: Mode,
    precision: Precision,
) -> Option<u64> {
    let model = spec.model_spec().ok()?;
    let input = spec.input_shape().ok()?;
    let mut options = spec.options.to_options().ok()?;
    options.workers = match target {
        Target::Host(t) | Target::Columns(t) => t,
        Target::Cuda(_) => 1,
    };
    options.reserve = reserved;
    options.precision = precision;
    let planned = crate::run_plan::plan_on(target, &model, input, spec.classes, 0, mode, &options);
    match planned {
        Err(PlanError::BudgetTooSmall { needed }) => Some(needed),
        _ => None,
    }
}

/// The smallest budgets in f32 and bf16 of `spec` in its mode.
fn smallest_both(spec: &PlanSpecArgs, target: Target, reserved: u64) -> [Option<u64>; 2] {
    let mode = Mode::from(spec.mode);
    [Precision::F32, Precision::Bf16].map(|p| smallest_budget(spec, target, reserved, mode, p))
}

/// The section `nf plan --precision` prints after the plan: the element size of each kind of
/// region and the smallest budget that plans in f32 and in bf16.
pub fn section(spec: &PlanSpecArgs, target: Target, reserved: u64, precision: Precision) -> String {
    let mut s = format!(
        "\nprecision {}: element size per region kind\n",
        precision.name()
    );
    for k in RegionKind::ALL {
        let e = precision.elem(k);
        s.push_str(&format!(
            "  {:<16} {:>4} ({} bytes)\n",
            k.name(),
            e.name(),
            e.bytes()
        ));
    }
    let [f, b] = smallest_both(spec, target, reserved);
    let show = |v: Option<u64>| {
        v.map_or("-".to_string(), |v| {
            format!("{} ({v} bytes)", format_size(v))
        })
    };
    s.push_str(&format!(
        "smallest budget that plans ({} mode): f32 {}, bf16 {}",
        Mode::from(spec.mode).name(),
        show(f),
        show(b)
    ));
    if let (Some(f), Some(b)) = (f, b) {
        s.push_str(&format!(", bf16/f32 {:.3}", b as f64 / f as f64));
    }
    s.push('\n');
    s
}

/// The same as JSON: `{"precision", "elem_bytes": {kind: bytes}, "smallest_budget": {"f32",
/// "bf16"}}`.
pub fn json(spec: &PlanSpecArgs, target: Target, reserved: u64, precision: Precision) -> Value {
    let elems: serde_json::Map<String, Value> = RegionKind::ALL
        .iter()
        .map(|k| (k.name().to_string(), json!(precision.elem(*k).bytes())))
        .collect();
    let [f, b] = smallest_both(spec, target, reserved);
    json!({
        "precision": precision.name(),
        "elem_bytes": elems,
        "smallest_budget": {"f32": f, "bf16": b},
    })
}
