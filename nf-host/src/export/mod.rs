//! `nf export`: a model file as an ONNX file that inference runtimes (onnxruntime, TensorRT,
//! OpenVINO, ...) load.
//!
//! `nf export --onnx OUT.onnx MODEL` writes the model of `MODEL` (a model file written by
//! `nf train`, or a run directory, then `--which exit|full`; `--unit K` cuts the full model at
//! unit K, and `--safetensors OUT` writes that cut as a model file) as one ONNX graph (IR version 7,
//! opset 13, weights inside): the input normalisation, its units and the head or classifier
//! that ends it; see [`onnx`] for the graph and [`proto`] for the protobuf messages (written
//! with `prost`). The file is written atomically: on any error nothing is left at `OUT.onnx`.
mod graph;
pub mod onnx;
pub mod proto;

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use prost::Message;

use crate::error::{usage, CliError};
use crate::model_meta::in_exit_model;
use crate::model_meta::ModelMeta;
use crate::output::{file_target, Inputs};
use crate::store::{atomic_write, TensorStore, CHECKSUMS};

/// Which model of a run directory to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The early-exit model (exit.safetensors): units up to the exit unit and its head.
    Exit,
    /// The full model (model.safetensors): every unit and the classifier.
    Full,
}

/// `nf export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Write the model as an ONNX file (opset 13) here
    #[arg(long, value_name = "OUT.onnx", help_heading = crate::output::OUTPUT)]
    pub onnx: Option<PathBuf>,
    /// Write the model as a safetensors model file here (what `nf eval` and `nf export` read;
    /// with --unit, the same bytes `nf train` writes for an exit at that unit)
    #[arg(long, value_name = "OUT.safetensors", help_heading = crate::output::OUTPUT)]
    pub safetensors: Option<PathBuf>,
    /// A model file written by `nf train` (model.safetensors or exit.safetensors), or a run
    /// directory (then --which picks the file)
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// For a run directory: the early-exit model (exit.safetensors) or the full model
    /// (model.safetensors). Default: exit
    #[arg(long, value_enum, value_name = "exit|full")]
    pub which: Option<Which>,
    /// Cut the model at unit K (counted from 0): units 0..=K and the head trained for unit K
    /// (the classifier for the last unit). Reads the full model (a run directory's
    /// model.safetensors); the early exit `nf train` picked is one such cut
    #[arg(long, value_name = "K")]
    pub unit: Option<usize>,
}

/// The model file `args` names: `MODEL` itself, or the `--which` file of a run directory
/// (the full model when `--unit` cuts it).
pub fn model_file(args: &ExportArgs) -> Result<PathBuf, CliError> {
    if args.unit.is_some() && args.which.is_some() {
        return Err(usage(
            "--which: --unit cuts the full model at the unit it names; give one of the two",
        ));
    }
    if args.model.is_dir() {
        let name = match args.which.unwrap_or(if args.unit.is_some() {
            Which::Full
        } else {
            Which::Exit
        }) {
            Which::Exit => "exit.safetensors",
            Which::Full => "model.safetensors",
        };
        return Ok(args.model.join(name));
    }
    if args.which.is_some() {
        return Err(usage(format!(
            "--which: {} is a model file, not a run directory",
            args.model.display()
        )));
    }
    Ok(args.model.clone())
}

/// The model of `cut` (a whole model file) cut at unit `k`, in place: units `0..=k` and the head of unit `k` (or the
/// classifier), with the metadata of the file and `exit` set to `k`: what `nf train` writes
/// as `exit.safetensors` when its exit is unit `k`.
fn cut_at(
    mut cut: TensorStore,
    meta: &ModelMeta,
    k: usize,
    path: &Path,
) -> Result<TensorStore, CliError> {
    let n_units = meta.model.units.len();
    if k >= n_units {
        return Err(usage(format!(
            "--unit {k}: {} has units 0 to {}",
            path.display(),
            n_units - 1
        )));
    }
    // In place: the tensors of the cut are the file's, not copies.
    cut.metadata.remove(CHECKSUMS);
    cut.metadata.insert("exit".into(), k.to_string());
    cut.tensors
        .retain(|name, _| in_exit_model(name, n_units, k));
    let has = |prefix: &str| cut.tensors.keys().any(|n| n.starts_with(prefix));
    let ending = if k + 1 == n_units {
        "classifier.".to_string()
    } else {
        format!("heads.{k}.")
    };
    if !has(&ending) {
        return Err(usage(format!(
            "--unit {k}: {} holds no trained {} for unit {k} (an exit file holds only the units \
             up to its exit: give the run directory or its model.safetensors)",
            path.display(),
            if k + 1 == n_units {
                "classifier"
            } else {
                "head"
            }
        )));
    }
    Ok(cut)
}

/// `nf export`: write the ONNX file and/or the model file; returns the lines that say what
/// was written.
pub fn export_command(args: &ExportArgs) -> Result<String, CliError> {
    if args.onnx.is_none() && args.safetensors.is_none() {
        return Err(usage(
            "nothing to write: give --onnx OUT.onnx and/or --safetensors OUT.safetensors",
        ));
    }
    let path = model_file(args)?;
    let mut inputs = Inputs::new();
    inputs.path("MODEL", &args.model, &crate::eval::MODEL_FILES);
    let safetensors = match &args.safetensors {
        Some(p) => Some(file_target("--safetensors", p, &inputs)?),
        None => None,
    };
    let onnx = match &args.onnx {
        Some(p) => Some(file_target("--onnx", p, &inputs)?),
        None => None,
    };
    if let (Some(a), Some(b)) = (&safetensors, &onnx) {
        if crate::output::same_target(a, b) {
            return Err(usage(format!(
                "--onnx {}: is also --safetensors; give two files",
                b.display()
            )));
        }
    }
    let mut store = TensorStore::load(&path).map_err(|e| usage(e.to_string()))?;
    let mut meta = ModelMeta::from_store(&store, &path)?;
    if let Some(k) = args.unit {
        store = cut_at(store, &meta, k, &path)?;
        meta = ModelMeta::from_store(&store, &path)?;
    }
    let mut said = String::new();
    if let (Some(out), Some(to)) = (&args.safetensors, &safetensors) {
        store.save(to).map_err(|e| {
            usage(format!(
                "--safetensors {}: cannot write: {e}",
                out.display()
            ))
        })?;
        said.push_str(&format!(
            "wrote {}: {} units 0..={} and {}, {} tensors\n",
            out.display(),
            meta.model.name,
            meta.exit,
            ending(&meta),
            store.tensors.len()
        ));
    }
    let (Some(onnx_out), Some(onnx_to)) = (&args.onnx, &onnx) else {
        return Ok(said);
    };
    let exported = onnx::build(&meta, &store)
        .map_err(|e| usage(format!("{}: cannot export: {e}", path.display())))?;
    let bytes = exported.model.encode_to_vec();
    atomic_write(onnx_to, &bytes)
        .map_err(|e| usage(format!("--onnx {}: cannot write: {e}", onnx_out.display())))?;
    let (c, h, w) = (
        meta.input.c,
        meta.input.h - 2 * meta.pad,
        meta.input.w - 2 * meta.pad,
    );
    said.push_str(&format!(
        "wrote {} ({} bytes): {} units 0..={} and {}, {} parameters; input `{}` [N, {c}, \
         {h}, {w}] in [0, 1], output `{}` [N, {}]\n",
        onnx_out.display(),
        bytes.len(),
        meta.model.name,
        meta.exit,
        ending(&meta),
        exported.params,
        onnx::INPUT,
        onnx::OUTPUT,
        meta.classes
    ));
    Ok(said)
}

/// What ends the model: "the classifier" or "the head of unit K".
fn ending(meta: &ModelMeta) -> String {
    if meta.exit + 1 == meta.model.units.len() {
        "the classifier".to_string()
    } else {
        format!("the head of unit {}", meta.exit)
    }
}
