//! Checkpoints as `nf train --resume DIR` reads them: the base run's final checkpoint with its
//! run state (`state`), plan (`plan`), command line (`argv`) or tensors changed, written into
//! a directory and resumed in-process through the public `train_command`.
//!
//! The run state's parser is private (`train/state.rs`); it is reached the way a user reaches
//! it, after the checkpoint has been read and its command line replayed (data described,
//! planned and loaded). Some inputs are valid states (the run stopped after any number of
//! blocks), which resume and train the remaining blocks: the fuzz then also covers resumed
//! training. Command-line edits take values from a fixed list that keeps the run small (no
//! larger `--budget`, data sets of a few KiB), so the bound below holds for all of them.
use std::path::Path;

use clap::Parser;
use nf_host::cli::{Cli, Command};
use nf_host::train::{train_command, CHECKPOINT};
use serde_json::{json, Value};

use super::stores::{base_run, mutate_json};
use super::text::mutate_str;
use super::{Probe, Rng, MIB};

/// Flags (and values) the command-line edits insert.
const FLAGS: [&[&str]; 22] = [
    &["--epochs", "2"],
    &["--epochs", "0"],
    &["--mode", "bp"],
    &["--mode", "ll"],
    &["--val", "0.5"],
    &["--val", "0"],
    &["--limit", "10"],
    &["--patience", "1"],
    &["--seed", "8"],
    &["--lr", "-1"],
    &["--threads", "2"],
    &["--budget", "2MiB"],
    &["--budget", "3MiB"],
    &["--cache-budget", "0"],
    &["--cache-dtype", "f16"],
    &["--data", "synthetic:1x8x8:400"],
    &["--data", "synthetic:1x8x9:40"],
    &["--data", "synthetic:3x8x8:40"],
    &["--data", "/nonexistent/nf-fuzz"],
    &["--device", "cuda"],
    &["--resume", "/nonexistent/nf-fuzz"],
    &["--f-max", "8"],
];

/// The state of a run stopped after `k` of its blocks (valid for the base run's plan, whose
/// blocks list their units as `[first, last]`).
fn stopped_after(state: &Value, plan: &Value, k: usize) -> Value {
    let units: usize = plan["blocks"].as_array().unwrap()[..k]
        .iter()
        .map(|b| b["units"][1].as_u64().unwrap() - b["units"][0].as_u64().unwrap() + 1)
        .map(|n| n as usize)
        .sum();
    let mut s = state.clone();
    s["block"] = json!(k);
    s["epoch"] = json!(0);
    s["heads"] = json!(state["heads"].as_array().unwrap()[..units]);
    s["blocks"] = json!(state["blocks"].as_array().unwrap()[..k]);
    s
}

/// One to three edits of the saved command line: a token removed, doubled or swapped, a
/// value replaced, a flag inserted; or the line replaced by something that is not one.
fn mutate_argv(rng: &mut Rng, text: &str) -> String {
    let mut argv: Vec<String> = serde_json::from_str(text).unwrap();
    for _ in 0..rng.range(1, 3) {
        let n = argv.len();
        match rng.below(8) {
            0 if n > 1 => {
                argv.remove(rng.range(1, n - 1));
            }
            1 if n > 1 => {
                let i = rng.range(1, n - 1);
                argv.insert(i, argv[i].clone());
            }
            2 if n > 2 => {
                let (i, j) = (rng.range(1, n - 1), rng.range(1, n - 1));
                argv.swap(i, j);
            }
            3 if n > 2 => {
                let i = rng.range(2, n - 1);
                argv[i] = rng.pick(&FLAGS)[1].to_string();
            }
            4 => {
                argv[1] = rng
                    .pick(&["plan", "eval", "trian", "", "train"])
                    .to_string()
            }
            5 => {
                return rng
                    .pick(&["", "[]", "[\"nf\"]", "{}", "[1,2]", "\"nf train\"", "null"])
                    .to_string()
            }
            _ => {
                let i = rng.range(1, n);
                let f = rng.pick(&FLAGS);
                argv.splice(i..i, f.iter().map(|s| s.to_string()));
            }
        }
    }
    json!(argv).to_string()
}

/// A checkpoint file: the base run's, usually with one part changed.
pub fn gen_checkpoint(rng: &mut Rng) -> Vec<u8> {
    let run = base_run();
    let mut st = run.checkpoint.clone();
    let md = &mut st.metadata;
    let state: Value = serde_json::from_str(&md["state"]).unwrap();
    let plan: Value = serde_json::from_str(&md["plan"]).unwrap();
    let n_blocks = plan["blocks"].as_array().unwrap().len();
    match rng.below(12) {
        0 => {}
        1 => {
            let k = rng.range(0, n_blocks);
            md.insert("state".into(), stopped_after(&state, &plan, k).to_string());
        }
        2..=4 => {
            let mut s = if rng.one_in(2) {
                stopped_after(&state, &plan, rng.range(0, n_blocks))
            } else {
                state
            };
            mutate_json(rng, &mut s);
            md.insert("state".into(), s.to_string());
        }
        5 => {
            let s = mutate_str(rng, &md["state"]);
            md.insert("state".into(), s);
        }
        6 => {
            let mut p = plan;
            mutate_json(rng, &mut p);
            md.insert("plan".into(), p.to_string());
        }
        7 | 8 => {
            let a = mutate_argv(rng, &md["argv"]);
            md.insert("argv".into(), a);
        }
        9 => {
            let k = *rng.pick(&["argv", "state", "plan", "model", "heads", "input"]);
            md.remove(k);
        }
        _ => {
            // A tensor removed, renamed into the block in training, or cut short.
            let names: Vec<String> = st.tensors.keys().cloned().collect();
            let name = rng.pick(&names).clone();
            let mut t = st.tensors.remove(&name).unwrap();
            match rng.below(3) {
                0 => {}
                1 => {
                    st.tensors.insert(format!("current.{name}"), t);
                    let k = rng.range(0, n_blocks - 1);
                    let mut s = stopped_after(&state, &plan, k);
                    s["epoch"] = json!(1);
                    s["blocks"]
                        .as_array_mut()
                        .unwrap()
                        .push(state["blocks"][k].clone());
                    st.metadata.insert("state".into(), s.to_string());
                }
                _ => {
                    let keep = rng.below(t.data.len().max(1));
                    t.data.truncate(keep);
                    t.shape = vec![keep];
                    st.tensors.insert(name, t);
                }
            }
        }
    }
    st.to_bytes().unwrap()
}

/// Bound of a resume: the base run's planned total (its memory contract: arena, data set,
/// caches, weights on the host), plus the checkpoint file read whole before it is parsed and
/// its parsed copy (2x the file), plus 2 MiB for what the contract leaves out (the command
/// line, the plan's JSON, progress text).
pub fn resume_bound(file_len: usize) -> u64 {
    base_run().planned_total + 2 * file_len as u64 + 2 * MIB
}

/// `nf train --resume dir` with `bytes` as its checkpoint: `Ok` (the run resumed and
/// finished) or a one-line error, within [`resume_bound`].
pub fn check_checkpoint(bytes: &Vec<u8>, dir: &Path, probe: &mut Probe) {
    std::fs::write(dir.join(CHECKPOINT), bytes).unwrap();
    let argv = ["nf", "train", "--resume", dir.to_str().unwrap()];
    let Command::Train(args) = Cli::try_parse_from(argv).unwrap().cmd else {
        unreachable!()
    };
    probe.call(
        "train_command --resume",
        resume_bound(bytes.len()),
        None,
        || train_command(&args, &[]),
    );
}

/// A checkpoint from a corpus recipe (machine-independent, unlike a saved file, whose plan
/// holds this machine's batch sizes): the base run's checkpoint, with its run state cut after
/// `"stopped_after"` blocks when given, then the metadata entries of `"metadata"` set
/// (strings) or removed (`null`).
pub fn from_recipe(recipe: &Value) -> Option<Vec<u8>> {
    let mut st = base_run().checkpoint.clone();
    if let Some(k) = recipe.get("stopped_after") {
        let state: Value = serde_json::from_str(&st.metadata["state"]).ok()?;
        let plan: Value = serde_json::from_str(&st.metadata["plan"]).ok()?;
        let k = (k.as_u64()? as usize).min(plan["blocks"].as_array()?.len());
        st.metadata
            .insert("state".into(), stopped_after(&state, &plan, k).to_string());
    }
    for (key, v) in recipe
        .get("metadata")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        match v {
            Value::Null => st.metadata.remove(key),
            v => st.metadata.insert(key.clone(), v.as_str()?.to_string()),
        };
    }
    Some(st.to_bytes().unwrap())
}
