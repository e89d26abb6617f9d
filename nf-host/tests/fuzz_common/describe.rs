//! Model descriptions (`--model`): compact strings and JSON files.
//!
//! Inputs start from the zoo's descriptions, a JSON description with every op kind and random
//! layer tokens, then get character-level mutations. A description read must satisfy what
//! `nf_host::architecture` promises (units and layers within their capacities, a JSON round
//! trip to the same units, the compact form read back to the same units); on a few input
//! shapes it must either plan or be explained in one line.
use nf_core::layout::MAX_SEG_OPS;
use nf_core::model::{Shape, MAX_HEAD_OPS, MAX_UNITS};
use nf_core::plan::{plan, Mode, PlanOptions};
use nf_host::architecture::{compact, json, resolve, zoo_descriptions};
use nf_host::plan_args::explain_bad_input;

use super::text::mutate_str;
use super::{Probe, Rng, KIB};

const EVERY_OP: &str = r#"{"name": "n", "head_pool": 2, "units": [[{"op": "conv", "out": 8, "k": 5, "stride": 2, "pad": 2, "bias": true}, {"op": "batchnorm"}, {"op": "relu"}, {"op": "maxpool2"}], "16,A3", [{"op": "basicblock", "out": 16, "stride": 2}, {"op": "avgpool", "size": 2}, {"op": "flatten"}, {"op": "linear", "out": 12}]]}"#;

const TOKENS: [&str; 16] = [
    "8",
    "64",
    "0",
    "M",
    "A1",
    "A2",
    "A9",
    "R16",
    "R32s2",
    "16k5s2p2",
    "8k1p0",
    "k",
    "|",
    ",",
    ":",
    "8k15s15p14",
];

/// A near-valid description: a zoo one, a JSON one, or random tokens; often mutated.
pub fn gen_description(rng: &mut Rng) -> String {
    let s = match rng.below(4) {
        0 => {
            let zoo = zoo_descriptions();
            rng.pick(&zoo).1.clone()
        }
        1 => EVERY_OP.to_string(),
        2 => {
            let m: &&nf_core::model::ModelSpec = rng.pick(&nf_core::zoo::ALL);
            json::to_string(m)
        }
        _ => {
            let n = rng.range(1, 30);
            let mut s = String::new();
            for i in 0..n {
                if i > 0 {
                    let sep: &&str = rng.pick(&[",", ",", ",", "|"]);
                    s.push_str(sep);
                }
                let token: &&str = rng.pick(&TOKENS);
                s.push_str(token);
            }
            s
        }
    };
    if rng.one_in(3) {
        s
    } else {
        mutate_str(rng, &s)
    }
}

/// Reading a description: `Ok` with a model within the capacities that round-trips, or one
/// line; then, on a few input shapes, a plan or a one-line explanation.
pub fn check_description(s: &String, probe: &mut Probe) {
    let bound = 64 * s.len() as u64 + 256 * KIB;
    let read = if s.trim_start().starts_with('{') {
        probe.call("architecture::json::from_str", bound, None, || {
            json::from_str(s)
        })
    } else {
        probe.call("architecture::resolve", bound, None, || resolve(s))
    };
    let Some(Ok(m)) = read else { return };
    let ops: usize = m.units.iter().map(|u| u.len()).sum();
    if m.units.is_empty() || m.units.len() > MAX_UNITS || ops > MAX_SEG_OPS - MAX_HEAD_OPS {
        probe.fail(format!(
            "{s:?}: {} units, {ops} layers accepted",
            m.units.len()
        ));
    }
    match json::from_str(&json::to_string(&m)) {
        Ok(back) if back.units == m.units => {}
        other => probe.fail(format!("{s:?}: the JSON round trip gives {other:?}")),
    }
    if let Some(text) = compact::format(&m) {
        match compact::parse(&text) {
            Ok(back) if back.units == m.units => {}
            other => probe.fail(format!("{s:?}: compact {text:?} reads back as {other:?}")),
        }
    }
    for input in [
        Shape::new(1, 28, 28),
        Shape::new(3, 32, 32),
        Shape::new(2, 9, 300),
    ] {
        if m.accepts(input, 10) {
            let o = PlanOptions::DEFAULT;
            let r = probe.call("plan", bound, None, || {
                plan(&m, input, 10, 64 << 20, Mode::NeuroFlux, &o).map_err(|e| e.to_string())
            });
            if r.is_none() {
                return;
            }
        } else {
            let why = explain_bad_input(&m, input, 10);
            if why.is_empty() || why.contains('\n') {
                probe.fail(format!("{s:?} on {input:?}: explanation {why:?}"));
            }
        }
    }
}
