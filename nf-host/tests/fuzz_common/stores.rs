//! Safetensors inputs: model files and checkpoints, their metadata (`ModelMeta`), and a
//! checkpoint's run state, plan and command line as `nf train --resume` reads them.
//!
//! The real files come from one small run made once per test process ([`base_run`]: the
//! small VGG on `synthetic:1x8x8:40`, 3 blocks, a second or less); the made-up ones are small
//! stores of random tensors with correct checksums. Mutations work on bytes (anywhere, or in
//! the JSON header, or its length prefix) and on JSON structure (a node of the header, of the
//! run state, of the plan or of the command line replaced, removed or duplicated).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use nf_host::cli::{Cli, Command};
use nf_host::model_meta::ModelMeta;
use nf_host::store::{TensorStore, CHECKSUMS};
use nf_host::train::{train_command, CHECKPOINT};
use serde_json::{json, Value};

use super::text::mutate_str;
use super::{interesting_u32, mutate_bytes, Probe, Rng, KIB};

/// The run every store target starts from.
pub struct BaseRun {
    /// Its directory (kept for the process's lifetime).
    pub dir: PathBuf,
    /// Its final checkpoint, its full model and its early-exit model, as files.
    pub files: [Vec<u8>; 3],
    /// The final checkpoint, loaded.
    pub checkpoint: TensorStore,
    /// `planned_total_bytes` of its report: the run's memory contract.
    pub planned_total: u64,
}

/// The base run's command line.
const RUN_ARGS: [&str; 13] = [
    "train",
    "--data",
    "synthetic:1x8x8:40",
    "--budget",
    "4MiB",
    "--host-budget",
    "16MiB",
    "--threads",
    "1",
    "--epochs",
    "1",
    "--seed",
    "7",
];

/// Trains the base run once per process (its progress lines go to the captured stdout).
pub fn base_run() -> &'static BaseRun {
    static RUN: OnceLock<BaseRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nf-fuzz-{}-base-run", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut argv: Vec<String> = std::iter::once("nf")
            .chain(RUN_ARGS)
            .map(String::from)
            .collect();
        argv.extend(["--out".into(), dir.display().to_string()]);
        let Command::Train(args) = Cli::try_parse_from(&argv).unwrap().cmd else {
            unreachable!()
        };
        train_command(&args, &argv).expect("the base run trains");
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let files = [
            read(CHECKPOINT),
            read("model.safetensors"),
            read("exit.safetensors"),
        ];
        let report: Value = serde_json::from_slice(&read("report.json")).unwrap();
        BaseRun {
            checkpoint: TensorStore::from_bytes(&files[0]).unwrap(),
            planned_total: report["memory"]["planned_total_bytes"].as_u64().unwrap(),
            files,
            dir,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// JSON mutation.

/// Every node of `v`, as a path of keys and indices.
fn paths(v: &Value, at: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(json!(i));
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                at.push(json!(k));
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(s) => &mut v[s.as_str()],
        k => &mut v[k.as_u64().unwrap() as usize],
    })
}

/// A JSON value that breaks numeric and structural assumptions.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => json!(-1),
        1 => json!(u64::MAX),
        2 => json!(i64::MIN),
        3 => json!(1e308),
        4 => json!(-0.5),
        5 => json!(0.5),
        6 => json!(""),
        7 => json!("x"),
        8 => Value::Null,
        9 => json!(true),
        10 => json!([]),
        11 => json!({}),
        12 => json!(9_007_199_254_740_993u64),
        _ => json!(interesting_u32(rng, 1)),
    }
}

/// One to three edits of random nodes of `v`: replaced by an odd value or moved by one, an
/// array element removed or duplicated, an object key removed, a string mutated.
pub fn mutate_json(rng: &mut Rng, v: &mut Value) {
    for _ in 0..rng.range(1, 3) {
        let mut all = Vec::new();
        paths(v, &mut Vec::new(), &mut all);
        let path = rng.pick(&all).clone();
        let n = node(v, &path);
        match (rng.below(4), &mut *n) {
            (0, Value::Array(a)) if !a.is_empty() => {
                let i = rng.below(a.len());
                if rng.one_in(2) {
                    a.remove(i);
                } else {
                    let x = a[i].clone();
                    a.insert(i, x);
                }
            }
            (0, Value::Object(o)) if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).unwrap().clone();
                o.remove(&k);
            }
            (1, Value::Number(x)) => {
                let d = if rng.one_in(2) { 1 } else { -1 };
                *n = match x.as_i64() {
                    Some(i) => json!(i.saturating_add(d)),
                    None => json!(x.as_f64().unwrap_or(0.0) * 2.0),
                };
            }
            (1, Value::String(s)) => *s = mutate_str(rng, s),
            _ => *n = odd_value(rng),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TensorStore::from_bytes.

/// Safetensors bytes of a small store of random tensors (scalars, empty and odd shapes) and
/// metadata, with correct checksums most of the time.
fn small_store(rng: &mut Rng) -> Vec<u8> {
    let mut st = TensorStore::new();
    let mut sums = BTreeMap::new();
    for t in 0..rng.range(0, 4) {
        let shape: Vec<usize> = (0..rng.range(0, 3)).map(|_| rng.range(0, 4)).collect();
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| f32::from_bits(rng.u64() as u32)).collect();
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let name = format!("units.{t}.0.weight");
        sums.insert(name.clone(), crc32fast::hash(&bytes));
        st.insert(name, shape, data);
    }
    for k in 0..rng.range(0, 2) {
        st.metadata
            .insert(format!("k{k}"), mutate_str(rng, "value"));
    }
    if !rng.one_in(4) {
        st.metadata
            .insert(CHECKSUMS.into(), serde_json::to_string(&sums).unwrap());
    }
    st.to_bytes().unwrap()
}

/// The header length a safetensors file declares, when it has 8 bytes.
fn header_len(b: &[u8]) -> Option<usize> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize)
}

/// A near-valid safetensors file: a real model file or checkpoint of the base run, or a small
/// made-up store, damaged in its bytes, its header's JSON or its header length.
pub fn gen_store(rng: &mut Rng) -> Vec<u8> {
    let mut b = if rng.one_in(4) {
        rng.pick(&base_run().files).clone()
    } else {
        small_store(rng)
    };
    let n = header_len(&b).unwrap();
    match rng.below(8) {
        0 => {}
        1 | 2 => mutate_bytes(rng, &mut b, 4),
        // Bytes of the header only.
        3 => {
            let mut head = b[8..8 + n].to_vec();
            mutate_bytes(rng, &mut head, 3);
            let fix = rng.one_in(2);
            let len = if fix { head.len() } else { n };
            b.splice(..8 + n, (len as u64).to_le_bytes().into_iter().chain(head));
        }
        // The header length lies.
        4 => {
            let v = match rng.below(3) {
                0 => u64::from(interesting_u32(rng, n as u32)),
                1 => (n as u64)
                    .wrapping_add(rng.below(17) as u64)
                    .wrapping_sub(8),
                _ => *rng.pick(&[u64::MAX, 1 << 40, 100_000_000, 100_000_001]),
            };
            b[..8].copy_from_slice(&v.to_le_bytes());
        }
        // The header's JSON: a tensor's dtype, shape or offsets, the metadata, the checksums.
        _ => {
            if let Ok(mut h) = serde_json::from_slice::<Value>(&b[8..8 + n]) {
                if rng.one_in(3) {
                    if let Some(sums) = h["__metadata__"][CHECKSUMS].as_str() {
                        let mut s: Value = serde_json::from_str(sums).unwrap_or(Value::Null);
                        mutate_json(rng, &mut s);
                        h["__metadata__"][CHECKSUMS] = json!(s.to_string());
                    }
                } else {
                    mutate_json(rng, &mut h);
                }
                let mut head = h.to_string().into_bytes();
                head.resize(head.len().next_multiple_of(8), b' ');
                let len = if rng.one_in(8) { n } else { head.len() };
                b.splice(..8 + n, (len as u64).to_le_bytes().into_iter().chain(head));
            }
        }
    }
    b
}

/// Bound of `from_bytes`: proportional to the bytes given, never to what they claim. The
/// header's JSON parsed into maps and vectors (a shape dimension of 2 bytes becomes an 8-byte
/// `usize`, so up to 4x the header), the tensors copied as `f32` (1x the data), the metadata
/// strings and the checksum map (1x); 8x the input plus 64 KiB covers them.
pub fn store_bound(len: usize) -> u64 {
    8 * len as u64 + 64 * KIB
}

/// `TensorStore::from_bytes`: `Ok`, or a one-line error, within [`store_bound`].
pub fn check_store(b: &[u8], probe: &mut Probe) {
    probe.call(
        "TensorStore::from_bytes",
        store_bound(b.len()),
        None,
        || TensorStore::from_bytes(b),
    );
}

// ---------------------------------------------------------------------------------------------
// ModelMeta::from_store.

/// The path `ModelMeta` errors must name.
pub const MODEL_PATH: &str = "fuzz/model.safetensors";

/// Metadata of a model file: the base run's full or exit model, with keys removed, swapped or
/// set to odd values (numbers, JSON arrays, shapes, other models' names).
pub fn gen_meta(rng: &mut Rng) -> BTreeMap<String, String> {
    let run = base_run();
    let file = &run.files[rng.range(1, 2)];
    let mut md = TensorStore::from_bytes(file).unwrap().metadata;
    if rng.one_in(8) {
        return md;
    }
    let keys = [
        "model", "input", "classes", "heads", "exit", "mean", "std", "format", "mode",
    ];
    for _ in 0..rng.range(1, 3) {
        let k = rng.pick(&keys).to_string();
        let old = md.get(&k).cloned().unwrap_or_default();
        let new = match rng.below(7) {
            0 => {
                md.remove(&k);
                continue;
            }
            1 => mutate_str(rng, &old),
            2 => {
                let mut v: Value = serde_json::from_str(&old).unwrap_or(json!(old));
                mutate_json(rng, &mut v);
                v.to_string()
            }
            3 => rng
                .pick(&[
                    "vgg11",
                    "resnet18",
                    "vgg-small",
                    "3x32x32",
                    "1x28x28",
                    "0x8x8",
                ])
                .to_string(),
            4 => interesting_u32(rng, 3).to_string(),
            5 => {
                let n = rng.range(0, 6);
                let xs: Vec<Value> = (0..n).map(|_| odd_value(rng)).collect();
                json!(xs).to_string()
            }
            _ => md
                .values()
                .nth(rng.below(md.len().max(1)))
                .cloned()
                .unwrap_or_default(),
        };
        md.insert(k, new);
    }
    md
}

/// `ModelMeta::from_store`: `Ok`, or a one-line error naming the file, within 64 KiB plus 4x
/// the metadata.
pub fn check_meta(md: &BTreeMap<String, String>, probe: &mut Probe) {
    let store = TensorStore {
        tensors: BTreeMap::new(),
        metadata: md.clone(),
    };
    let len: usize = md.iter().map(|(k, v)| k.len() + v.len()).sum();
    probe.call(
        "ModelMeta::from_store",
        64 * KIB + 4 * len as u64,
        Some(MODEL_PATH),
        || ModelMeta::from_store(&store, Path::new(MODEL_PATH)),
    );
}
