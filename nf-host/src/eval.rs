//! `nf eval`: test accuracy and inference throughput of a model file, or of a run directory's
//! full and early-exit models side by side.
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use nf_core::backend::Backend;
use nf_core::infer::InferLayout;
use nf_core::layout::{Kernels, Workspace};
use nf_core::probe::chain_workspace;
use nf_core::region::Region;
use nf_core::schedule::Split;
use nf_core::step::{self, SegStats};
use serde_json::json;

use crate::data;
use crate::error::{usage, CliError};
use crate::feed::{staging_bytes, staging_floats, HostFeed, Source};
use crate::model_meta::ModelMeta;
use crate::output::{file_target, Inputs};
use crate::plan_args::ImageArgs;
use crate::precision::PrecisionArg;
use crate::run_plan::{peak_rss_bytes, HostKernels};
use crate::size::{format_size, parse_size};
use crate::store::{atomic_write_with, write_block, TensorStore};
use nf_cpu::{threads as host_threads, FastCpuBackend, Pool};

/// `nf eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A model file written by `nf train` (model.safetensors or exit.safetensors), a model a
    /// device saved through the C ABI (`nf_export_model`'s bytes: its exit model is
    /// evaluated), or a run directory (then both files are evaluated side by side)
    #[arg(long, value_name = "FILE|DIR")]
    pub model: PathBuf,
    /// Data whose test split is evaluated (same forms as `nf train --data`; default: the
    /// bundled Fashion-MNIST subset)
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// How an image folder becomes a data set (pass what `nf train` was given).
    #[command(flatten)]
    pub images: ImageArgs,
    /// Evaluate only the first N test images (as `nf train --limit N` does)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Memory budget of the inference pass: the model, its activations, kernel workspace and
    /// staging buffer (the batch is the largest that fits, up to --batch)
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub budget: u64,
    /// Largest batch size of the inference pass
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch: u32,
    /// Host memory for the test set and the model file
    #[arg(long, value_name = "SIZE", default_value = "8GiB", value_parser = parse_size)]
    pub host_budget: u64,
    /// CPU worker threads (default: all cores)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Operand precision of the convolutions' and linear layers' GEMMs, as `nf train
    /// --precision` (any model file evaluates in either: its weights are f32)
    #[arg(long, value_enum, value_name = "P", default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,
    /// Also write each test image's label, predicted class and logits to this CSV file: a
    /// header, then one row per model file and image (`model,image,label,predicted,logit_0,
    /// ...`; `model` is the file's name, e.g. exit.safetensors)
    #[arg(long, value_name = "FILE", help_heading = crate::output::OUTPUT)]
    pub predictions: Option<PathBuf>,
}

/// The model files of a run directory, in the order `nf eval` evaluates them.
pub const MODEL_FILES: [&str; 2] = ["model.safetensors", "exit.safetensors"];

/// Result of evaluating one model file.
#[derive(Clone, Debug)]
pub struct EvalResult {
    /// The file.
    pub path: PathBuf,
    /// The unit the model ends at.
    pub exit: usize,
    /// Parameters in the file.
    pub params: usize,
    /// Batch size the budget allowed.
    pub batch: usize,
    /// Test accuracy in [0, 1].
    pub test_acc: f32,
    /// Inference throughput.
    pub images_per_sec: f64,
    /// With `--predictions`: the logits of every test image, `classes` per image, in order
    /// (empty otherwise).
    pub logits: Vec<f32>,
    /// Classes (the number of logits per image).
    pub classes: usize,
    /// The class names the model file carries, if any.
    pub class_names: Option<Vec<String>>,
}

/// The chain of `meta` (its units, then its head or classifier) for `batch` samples, with
/// the workspace the host kernels `hk` need for it.
fn chain_for(meta: &ModelMeta, batch: usize, hk: HostKernels) -> InferLayout<'static> {
    let at = |ws: usize| {
        let k = Kernels {
            workers: hk.threads,
            workspace: Workspace::Fixed(ws),
            ..Kernels::REFERENCE
        };
        InferLayout::new(
            &meta.model,
            meta.input,
            meta.classes,
            &meta.heads,
            meta.exit,
            true,
            batch,
            0,
            &k,
            Region::NONE,
        )
    };
    // A chain's calls do not depend on its workspace: one probe sizes it exactly.
    at(chain_workspace(&at(0), |k| hk.need(k)))
}

/// The largest batch (up to `max`) whose chain and staging buffer fit `budget` bytes.
fn eval_batch(
    meta: &ModelMeta,
    max: usize,
    budget: u64,
    hk: HostKernels,
) -> Result<usize, CliError> {
    let staging = staging_bytes(&meta.model, meta.input);
    let fits = |b: usize| chain_for(meta, b, hk).bytes() + staging <= budget;
    if !fits(1) {
        let needed = chain_for(meta, 1, hk).bytes() + staging;
        return Err(usage(format!(
            "--budget {} is too small to evaluate {} (exit unit {}): at least {} ({needed} \
             bytes) is needed at batch 1",
            format_size(budget),
            meta.model.name,
            meta.exit,
            format_size(needed)
        )));
    }
    let (mut lo, mut hi) = (1, max);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Evaluate the model in `path` on `test` (normalised as the model was trained) in batches
/// that fit `budget`; returns the result and the planned bytes (inference arena, staging,
/// the model's tensors on the host).
pub fn eval_file(
    path: &Path,
    test: &mut data::Dataset,
    args: &EvalArgs,
    pool: &Pool,
) -> Result<(EvalResult, u64), CliError> {
    // A device's saved model (nf_export_model's bytes) or a model file of nf train.
    let store = match crate::device_model::read_if_device(path)? {
        Some(s) => s,
        None => TensorStore::load(path).map_err(|e| usage(format!("--model: {e}")))?,
    };
    let meta = ModelMeta::from_store(&store, path)?;
    test.set_pad(meta.pad)
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    if test.shape() != meta.input || test.classes() != meta.classes {
        return Err(usage(format!(
            "--data: the test set is {}x{}x{} with {} classes but {} expects {}x{}x{} with {} classes",
            test.shape().c, test.shape().h, test.shape().w, test.classes(),
            path.display(), meta.input.c, meta.input.h, meta.input.w, meta.classes
        )));
    }
    test.set_normalisation(&meta.mean, &meta.std)
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    let hk = HostKernels::of(pool);
    let batch = eval_batch(&meta, args.batch as usize, args.budget, hk)?;
    let chain = chain_for(&meta, batch, hk);
    let staging = staging_floats(&meta.model, meta.input);
    let budget = format!("--budget {}", crate::size::format_size(args.budget));
    let mut arena = crate::capacity::alloc(&budget, "the inference arena", chain.floats)?;
    let mut be = FastCpuBackend::with_precision(&mut arena, pool, args.precision.cpu());
    write_block(&mut be, &chain, &store, false).map_err(|e| usage(format!("--model: {e}")))?;
    let model_bytes = store
        .tensors
        .values()
        .map(|t| t.data.len() as u64 * 4)
        .sum::<u64>();
    drop(store);
    let mut feed = HostFeed::new(
        [test, test, test],
        Source::Data,
        test.shape().len(),
        staging,
    );
    let mut idx = vec![0u32; batch];
    let mut st = SegStats::default();
    // The logits are read back only for --predictions (host memory beside the plan, counted).
    let classes = meta.classes;
    let mut logits = Vec::new();
    if args.predictions.is_some() {
        logits = crate::capacity::alloc("--predictions", "the logits", test.len() * classes)?;
    }
    let t0 = Instant::now();
    for start in (0..test.len()).step_by(batch) {
        let n = batch.min(test.len() - start);
        for (j, v) in idx[..n].iter_mut().enumerate() {
            *v = (start + j) as u32;
        }
        feed.load_into(&mut be, Split::Test, &idx[..n], chain.input, chain.labels);
        let s = step::infer(&mut be, &chain, n)
            .map_err(|e| CliError::Failed(format!("evaluation failed: {e}")))?;
        st.add(s);
        if !logits.is_empty() {
            let rows = &mut logits[start * classes..(start + n) * classes];
            be.read(chain.seg.logits().prefix(n * classes), rows);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let planned = chain.bytes() + staging as u64 * 4 + 2 * model_bytes + logits.len() as u64 * 4;
    Ok((
        EvalResult {
            path: path.to_path_buf(),
            exit: meta.exit,
            // The deployed model: units 0..=exit and the head (or classifier) that ends it.
            params: chain.params.len(),
            batch,
            test_acc: st.accuracy(),
            images_per_sec: test.len() as f64 / secs.max(1e-9),
            logits,
            classes,
            class_names: meta.class_names.clone(),
        },
        planned,
    ))
}

/// Write the CSV of `--predictions` to `w` (streamed: no copy of it in memory): a header, then
/// for each result and test image its file name, the image's index and label, the predicted
/// class (the first largest logit, as the accuracy counts it) and the logits. When a model file
/// carries class names (trained on an image folder), `label_name` and `predicted_name` follow
/// `predicted` (empty for a file without names).
fn write_predictions(
    w: &mut dyn std::io::Write,
    results: &[EvalResult],
    labels: &[u16],
) -> std::io::Result<()> {
    let classes = results.iter().map(|r| r.classes).max().unwrap_or(0);
    let named = results.iter().any(|r| r.class_names.is_some());
    write!(w, "model,image,label,predicted")?;
    if named {
        write!(w, ",label_name,predicted_name")?;
    }
    for c in 0..classes {
        write!(w, ",logit_{c}")?;
    }
    writeln!(w)?;
    for r in results {
        let name = r.path.file_name().map_or_else(
            || r.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let name = csv_field(&name);
        let names: Option<Vec<String>> = r
            .class_names
            .as_ref()
            .map(|n| n.iter().map(|c| csv_field(c)).collect());
        for (i, (row, label)) in r.logits.chunks_exact(r.classes).zip(labels).enumerate() {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            write!(w, "{name},{i},{label},{best}")?;
            if named {
                let of = |k: usize| names.as_ref().and_then(|n| n.get(k)).map_or("", |s| s);
                write!(w, ",{},{}", of(usize::from(*label)), of(best))?;
            }
            for v in row {
                write!(w, ",{v:e}")?;
            }
            writeln!(w)?;
        }
    }
    Ok(())
}

/// `s` as one CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `nf eval`: the report as text (or JSON).
pub fn eval_command(args: &EvalArgs) -> Result<String, CliError> {
    let source = args
        .data
        .clone()
        .unwrap_or_else(|| data::default_dir().display().to_string());
    let predictions = match &args.predictions {
        Some(path) => {
            let mut inputs = Inputs::new();
            inputs.path("--model", &args.model, &MODEL_FILES);
            inputs.data(&source);
            Some(file_target("--predictions", path, &inputs)?)
        }
        None => None,
    };
    let threads = args.threads.map_or_else(host_threads, |t| t as usize);
    let opts = args.images.options(threads)?;
    let mut test = data::load_test_with(&source, args.host_budget, &opts)
        .map_err(|e| usage(format!("--data: {e}")))?;
    if let Some(n) = args.limit {
        test.truncate(n);
    }
    let pool = Pool::new(args.threads.map_or_else(host_threads, |t| t as usize));
    let files: Vec<PathBuf> = if args.model.is_dir() {
        MODEL_FILES.iter().map(|f| args.model.join(f)).collect()
    } else {
        vec![args.model.clone()]
    };
    let mut planned = 0;
    let mut results: Vec<EvalResult> = Vec::new();
    for f in &files {
        let (r, p) = eval_file(f, &mut test, args, &pool)?;
        // The logits of the models before this one stay alive beside its pass (--predictions).
        let kept: u64 = results.iter().map(|r| r.logits.len() as u64 * 4).sum();
        planned = planned.max(p + kept);
        results.push(r);
    }
    let planned = planned + test.bytes();
    let peak_rss = peak_rss_bytes();
    if let (Some(path), Some(to)) = (&args.predictions, &predictions) {
        atomic_write_with(to, |w| write_predictions(w, &results, test.labels())).map_err(|e| {
            usage(format!(
                "--predictions {}: cannot write: {e}",
                path.display()
            ))
        })?;
    }
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|r| json!({"file": r.path.display().to_string(), "exit_unit": r.exit, "params": r.params, "batch_size": r.batch, "test_acc": r.test_acc, "images_per_sec": r.images_per_sec}))
            .collect();
        let mut v = json!({"models": rows, "test_samples": test.len(), "budget_bytes": args.budget, "planned_total_bytes": planned, "peak_rss_bytes": peak_rss, "precision": args.precision.name()});
        if results.len() == 2 {
            v["param_ratio"] = json!(results[0].params as f64 / results[1].params as f64);
            v["throughput_ratio"] = json!(results[1].images_per_sec / results[0].images_per_sec);
        }
        return Ok(format!("{v}\n"));
    }
    let mut s = format!(
        "{:<40} {:>5} {:>12} {:>9} {:>10}\n",
        "model", "exit", "params", "test acc", "images/s"
    );
    for r in &results {
        s += &format!(
            "{:<40} {:>5} {:>12} {:>8.2}% {:>10.0}\n",
            r.path.display(),
            r.exit,
            r.params,
            100.0 * r.test_acc,
            r.images_per_sec
        );
    }
    if results.len() == 2 {
        s += &format!(
            "exit model: {:.1}x fewer parameters, {:.2}x the throughput, {:+.2} accuracy points\n",
            results[0].params as f64 / results[1].params as f64,
            results[1].images_per_sec / results[0].images_per_sec,
            100.0 * (results[1].test_acc - results[0].test_acc)
        );
    }
    if args.precision != PrecisionArg::F32 {
        s += &format!(
            "precision: {} GEMM operands (f32 accumulation)\n",
            args.precision.name()
        );
    }
    s += &format!(
        "memory: batch {} under --budget {}; planned total {}, peak RSS {}\n",
        results[0].batch,
        format_size(args.budget),
        format_size(planned),
        peak_rss.map_or_else(|| "unknown".to_string(), format_size)
    );
    Ok(s)
}
