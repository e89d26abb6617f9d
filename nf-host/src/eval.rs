//! `nf eval`: test accuracy and inference throughput of a model file, or of a run directory's
//! full and early-exit models side by side.
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use nf_core::layout::{BlockLayout, SegMode};
use nf_core::model::MAX_UNITS;
use nf_core::schedule::{self, Split};
use nf_core::step::SegStats;
use serde_json::json;

use crate::cli::CliError;
use crate::data;
use crate::feed::{HostFeed, Source};
use crate::host_backend::{threads as host_threads, HostBackend, Pool};
use crate::store::{write_block, TensorStore};
use crate::train::ModelMeta;

/// `nf eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A model file written by `nf train` (model.safetensors or exit.safetensors), or a run
    /// directory (then both are evaluated side by side)
    #[arg(long, value_name = "FILE|DIR")]
    pub model: PathBuf,
    /// Data whose test split is evaluated (same forms as `nf train --data`; default: the
    /// bundled Fashion-MNIST subset)
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// Evaluate only the first N test images (as `nf train --limit N` does)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Batch size of the inference pass
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch: u32,
    /// CPU worker threads (default: all cores)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,
}

/// Result of evaluating one model file.
#[derive(Clone, Debug)]
pub struct EvalResult {
    /// The file.
    pub path: PathBuf,
    /// The unit the model ends at.
    pub exit: usize,
    /// Parameters in the file.
    pub params: usize,
    /// Test accuracy in [0, 1].
    pub test_acc: f32,
    /// Inference throughput.
    pub images_per_sec: f64,
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

/// Evaluate the model in `path` on the test split of `test`.
pub fn eval_file(
    path: &Path,
    test: &data::Dataset,
    batch: usize,
    pool: &Pool,
) -> Result<EvalResult, CliError> {
    let store = TensorStore::load(path).map_err(|e| usage(format!("--model: {e}")))?;
    let meta = ModelMeta::from_store(&store, path)?;
    if test.shape() != meta.input || test.classes() != meta.classes {
        return Err(usage(format!(
            "--data: the test set is {}x{}x{} with {} classes but {} expects {}x{}x{} with {} classes",
            test.shape().c, test.shape().h, test.shape().w, test.classes(),
            path.display(), meta.input.c, meta.input.h, meta.input.w, meta.classes
        )));
    }
    let layout = BlockLayout::with_workers(
        meta.model,
        meta.input,
        meta.classes,
        SegMode::Global,
        0,
        meta.exit,
        &meta.heads,
        batch,
        pool.threads(),
    );
    let mut arena = vec![0.0f32; layout.floats];
    let mut be = HostBackend::new(&mut arena, pool);
    write_block(&mut be, &layout, &store, false).map_err(|e| usage(format!("--model: {e}")))?;
    let mut feed = HostFeed::new([test, test, test], Source::Data, test.shape().len());
    let mut idx = vec![0u32; batch];
    let mut st = [SegStats::default(); MAX_UNITS];
    let t0 = Instant::now();
    schedule::evaluate(&mut be, &layout, &mut feed, Split::Test, &mut idx, &mut st)
        .map_err(|e| CliError::Failed(format!("evaluation failed: {e:?}")))?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(EvalResult {
        path: path.to_path_buf(),
        exit: meta.exit,
        // The deployed model: units 0..=exit and the head (or classifier) that ends it.
        params: layout.seg_params[0].len,
        test_acc: st[0].accuracy(),
        images_per_sec: test.len() as f64 / secs.max(1e-9),
    })
}

/// `nf eval`: the report as text (or JSON).
pub fn eval_command(args: &EvalArgs) -> Result<String, CliError> {
    let splits = match &args.data {
        Some(d) => data::load(d, u64::MAX), // lead: host budget
        None => data::load_dir(&data::default_dir(), u64::MAX), // lead: host budget
    }
    .map_err(|e| usage(format!("--data: {e}")))?;
    let mut test = splits.test;
    if let Some(n) = args.limit {
        test.truncate(n);
    }
    let pool = Pool::new(args.threads.map_or_else(host_threads, |t| t as usize));
    let files: Vec<PathBuf> = if args.model.is_dir() {
        vec![
            args.model.join("model.safetensors"),
            args.model.join("exit.safetensors"),
        ]
    } else {
        vec![args.model.clone()]
    };
    let results = files
        .iter()
        .map(|f| eval_file(f, &test, args.batch as usize, &pool))
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|r| json!({"file": r.path.display().to_string(), "exit_unit": r.exit, "params": r.params, "test_acc": r.test_acc, "images_per_sec": r.images_per_sec}))
            .collect();
        let mut v = json!({"models": rows, "test_samples": test.len()});
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
    Ok(s)
}
