//! Fuzzing every parser of user input, on stable Rust: a seeded generator of near-valid
//! inputs (real files from `fixtures/` and small valid ones, then mutated: bit flips,
//! truncations, header fields and lengths that lie, gzip wrapping and gzip damage, structural
//! JSON edits, random bytes and characters) feeds each parser, one target per test:
//!
//! | test | parser calls |
//! |---|---|
//! | `size` | `size::parse_size`, `size::parse_size_or_zero` |
//! | `shape` | `plan_args::parse_shape` |
//! | `model_description` | `architecture::resolve` (compact strings, zoo names) and `architecture::json::from_str`, then `plan` or `explain_bad_input` on three input shapes |
//! | `command_line` | `Cli::try_parse_from` with random flags and values (and `plan_command` when it parses as `nf plan`) |
//! | `synthetic_spec` | `data::describe`, `load`, `load_test` on `synthetic:CxHxW:N`, and `plan_command` with it as `--data` |
//! | `idx` | the same on IDX directories (raw and gzipped files) |
//! | `gzip` | the same on IDX directories whose gzip streams are damaged (or bombs) |
//! | `cifar` | the same on CIFAR-10/100 directories |
//! | `safetensors` | `TensorStore::from_bytes` |
//! | `model_meta` | `ModelMeta::from_store` |
//! | `checkpoint` | `train::train_command` with `--resume` (the checkpoint's `argv`, `state`, `plan`, tensors) |
//!
//! # What it guarantees
//! For every input, every call ends in `Ok` or in an error that displays as one non-empty
//! line (for the data loaders, naming the directory or argument); never a panic (caught and
//! reported with the input); and the most bytes live on the calling thread during the call
//! (a counting global allocator) stay within the call's bound: for `load` and `load_test`
//! the `limit` they were given (or less, what `describe` announced) plus the documented
//! `DataInfo::load_overhead`, for a resumed checkpoint the run's planned total plus the file,
//! for the others a bound proportional to the input (each bound is justified where it is
//! defined, in `fuzz_common`). Answers must also agree: `load` returns the set `describe`
//! announced, `parse_size` gives the exact value of plain spellings.
//!
//! # Running it
//! In CI (`cargo test -p nf-host --test fuzz`) each target runs a bounded number of inputs
//! (a few thousand for fast parsers, 600 checkpoints) from a fixed seed, in about 20 s. On
//! demand: `NF_FUZZ_ITERS=100000 cargo test -p nf-host --test fuzz -- --nocapture` runs that
//! many inputs per target and prints, per parser call, the Ok/Err counts, the time and the
//! largest peak allocation (`NF_FUZZ_VERBOSE=1` adds each call's most frequent errors;
//! `NF_FUZZ_SEED=N` draws other inputs). The test profile is meant (opt-level 2 with
//! overflow checks, so an arithmetic overflow is a panic, not a wrapped size); `--release`
//! runs the same inputs without those checks. A failing input is saved
//! under `target/tmp/fuzz-failures/<target>/<seed>-<index>/`; once the parser is fixed, copy
//! it into `tests/fuzz_corpus/<target>/` (a file for byte and text inputs, the directory for
//! data sets), where `corpus_replays` replays it on every run. A checkpoint can also be kept
//! as a recipe over the base run's (`checkpoint/*.json`, see `from_recipe`): a saved file
//! holds this machine's plan, which another machine may refuse before reaching the bug.
mod fuzz_common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use fuzz_common::checkpoint::{check_checkpoint, from_recipe, gen_checkpoint};
use fuzz_common::data::{
    check_data, check_plan_with_data, gen_cifar, gen_idx, saved_limit, DirInput,
};
use fuzz_common::describe::{check_description, gen_description};
use fuzz_common::stores::{check_meta, check_store, gen_meta, gen_store};
use fuzz_common::text::{
    check_argv, check_shape, check_size, gen_argv, gen_shape, gen_size, gen_synthetic,
};
use fuzz_common::{corpus, fuzz, iterations, replay, Counting, Probe, TempDir};
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Saves a text input as `input.json` (JSON keeps control characters and line breaks).
fn save_json(x: Value, dir: &Path) {
    fs::write(dir.join("input.json"), x.to_string()).unwrap();
}

fn save_bytes(b: &Vec<u8>, dir: &Path) {
    fs::write(dir.join("input.safetensors"), b).unwrap();
}

#[test]
fn size() {
    fuzz("size", iterations(20_000), gen_size, check_size, |x, d| {
        save_json(json!(x), d)
    });
}

#[test]
fn shape() {
    fuzz(
        "shape",
        iterations(20_000),
        gen_shape,
        check_shape,
        |x, d| save_json(json!(x), d),
    );
}

#[test]
fn model_description() {
    fuzz(
        "model_description",
        iterations(5_000),
        gen_description,
        check_description,
        |x, d| save_json(json!(x), d),
    );
}

#[test]
fn command_line() {
    fuzz(
        "command_line",
        iterations(5_000),
        gen_argv,
        check_argv,
        |x, d| save_json(json!(x), d),
    );
}

fn check_synthetic(input: &(String, u64), probe: &mut Probe) {
    if check_data(&input.0, input.1, probe) {
        check_plan_with_data(&input.0, probe);
    }
}

#[test]
fn synthetic_spec() {
    fuzz(
        "synthetic_spec",
        iterations(3_000),
        gen_synthetic,
        check_synthetic,
        |x, d| save_json(json!(x), d),
    );
}

/// Fuzzes a data-set directory target: each input is written into one scratch directory.
fn fuzz_dir(target: &str, iters: usize, generate: impl FnMut(&mut fuzz_common::Rng) -> DirInput) {
    let dir = TempDir::new(target);
    let arg = dir.path().to_str().unwrap().to_string();
    fuzz(
        target,
        iters,
        generate,
        |input, probe| {
            input.write(dir.path());
            if check_data(&arg, input.limit, probe) {
                check_plan_with_data(&arg, probe);
            }
        },
        DirInput::save,
    );
}

#[test]
fn idx() {
    fuzz_dir("idx", iterations(3_000), |rng| gen_idx(rng, false));
}

#[test]
fn gzip() {
    fuzz_dir("gzip", iterations(2_000), |rng| gen_idx(rng, true));
}

#[test]
fn cifar() {
    fuzz_dir("cifar", iterations(2_000), gen_cifar);
}

#[test]
fn safetensors() {
    fuzz(
        "safetensors",
        iterations(5_000),
        gen_store,
        |b, probe| check_store(b, probe),
        save_bytes,
    );
}

#[test]
fn model_meta() {
    fuzz(
        "model_meta",
        iterations(5_000),
        gen_meta,
        check_meta,
        |x, d| save_json(json!(x), d),
    );
}

#[test]
fn checkpoint() {
    let dir = TempDir::new("checkpoint");
    fuzz(
        "checkpoint",
        iterations(600),
        gen_checkpoint,
        |b, probe| check_checkpoint(b, dir.path(), probe),
        save_bytes,
    );
}

/// The JSON inputs of a corpus directory, converted by `f`.
fn json_inputs<T>(target: &str, f: impl Fn(Value) -> Option<T>) -> Vec<(String, T)> {
    corpus(target)
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let x = serde_json::from_str(&text).ok().and_then(&f);
            let x = x.unwrap_or_else(|| panic!("{}: not a {target} input", p.display()));
            (p.display().to_string(), x)
        })
        .collect()
}

fn byte_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    corpus(target)
        .into_iter()
        .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
        .collect()
}

/// Every committed regression input (`tests/fuzz_corpus/<target>/`), through its target's
/// checks.
#[test]
fn corpus_replays() {
    let (mut n, mut failed) = (0, Vec::new());
    let string = |v: Value| v.as_str().map(String::from);
    n += replay("size", json_inputs("size", string), check_size, &mut failed);
    n += replay(
        "shape",
        json_inputs("shape", string),
        check_shape,
        &mut failed,
    );
    n += replay(
        "model_description",
        json_inputs("model_description", string),
        check_description,
        &mut failed,
    );
    let argv = |v: Value| serde_json::from_value::<Vec<String>>(v).ok();
    n += replay(
        "command_line",
        json_inputs("command_line", argv),
        check_argv,
        &mut failed,
    );
    let spec = |v: Value| serde_json::from_value::<(String, u64)>(v).ok();
    n += replay(
        "synthetic_spec",
        json_inputs("synthetic_spec", spec),
        check_synthetic,
        &mut failed,
    );
    for target in ["idx", "gzip", "cifar"] {
        let dirs = corpus(target)
            .into_iter()
            .map(|p| (p.display().to_string(), p));
        n += replay(
            target,
            dirs,
            |p, probe| {
                let arg = p.to_str().unwrap();
                if check_data(arg, saved_limit(p), probe) {
                    check_plan_with_data(arg, probe);
                }
            },
            &mut failed,
        );
    }
    n += replay(
        "safetensors",
        byte_inputs("safetensors"),
        |b, probe| check_store(b, probe),
        &mut failed,
    );
    let meta = |v: Value| serde_json::from_value::<BTreeMap<String, String>>(v).ok();
    n += replay(
        "model_meta",
        json_inputs("model_meta", meta),
        check_meta,
        &mut failed,
    );
    // Checkpoints: saved files (`*.safetensors`) or recipes over the base run's (`*.json`).
    let checkpoints = corpus("checkpoint").into_iter().map(|p| {
        let b = fs::read(&p).unwrap();
        let b = match p.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::from_slice(&b)
                .ok()
                .and_then(|v| from_recipe(&v)),
            _ => Some(b),
        };
        let b = b.unwrap_or_else(|| panic!("{}: not a checkpoint recipe", p.display()));
        (p.display().to_string(), b)
    });
    let dir = TempDir::new("checkpoint-corpus");
    n += replay(
        "checkpoint",
        checkpoints,
        |b, probe| check_checkpoint(b, dir.path(), probe),
        &mut failed,
    );
    println!("corpus: {n} inputs replayed");
    assert!(failed.is_empty(), "corpus:\n{}", failed.join("\n"));
}
