//! `nf export`: a model file as an ONNX file that inference runtimes (onnxruntime, TensorRT,
//! OpenVINO, ...) load.
//!
//! `nf export --onnx OUT.onnx MODEL` writes the model of `MODEL` (a model file written by
//! `nf train`, or a run directory, then `--which exit|full`) as one ONNX graph (IR version 7,
//! opset 13, weights inside): the input normalisation, its units and the head or classifier
//! that ends it; see [`onnx`] for the graph and [`proto`] for the protobuf messages (written
//! with `prost`). The file is written atomically: on any error nothing is left at `OUT.onnx`.
mod graph;
pub mod onnx;
pub mod proto;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use prost::Message;

use crate::error::{usage, CliError};
use crate::model_meta::ModelMeta;
use crate::store::{atomic_write, TensorStore};

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
    #[arg(long, value_name = "OUT.onnx")]
    pub onnx: PathBuf,
    /// A model file written by `nf train` (model.safetensors or exit.safetensors), or a run
    /// directory (then --which picks the file)
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// For a run directory: the early-exit model (exit.safetensors) or the full model
    /// (model.safetensors). Default: exit
    #[arg(long, value_enum, value_name = "exit|full")]
    pub which: Option<Which>,
}

/// The model file `args` names: `MODEL` itself, or the `--which` file of a run directory.
pub fn model_file(args: &ExportArgs) -> Result<PathBuf, CliError> {
    if args.model.is_dir() {
        let name = match args.which.unwrap_or(Which::Exit) {
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

/// `nf export`: write the ONNX file; returns the line that says what was written.
pub fn export_command(args: &ExportArgs) -> Result<String, CliError> {
    let path = model_file(args)?;
    let store = TensorStore::load(&path).map_err(|e| usage(e.to_string()))?;
    let meta = ModelMeta::from_store(&store, &path)?;
    let exported = onnx::build(&meta, &store)
        .map_err(|e| usage(format!("{}: cannot export: {e}", path.display())))?;
    let bytes = exported.model.encode_to_vec();
    atomic_write(&args.onnx, &bytes)
        .map_err(|e| usage(format!("--onnx {}: cannot write: {e}", args.onnx.display())))?;
    let ending = if meta.exit + 1 == meta.model.units.len() {
        "the classifier".to_string()
    } else {
        format!("the head of unit {}", meta.exit)
    };
    let (c, h, w) = (
        meta.input.c,
        meta.input.h - 2 * meta.pad,
        meta.input.w - 2 * meta.pad,
    );
    Ok(format!(
        "wrote {} ({} bytes): {} units 0..={} and {ending}, {} parameters; input `{}` [N, {c}, \
         {h}, {w}] in [0, 1], output `{}` [N, {}]\n",
        args.onnx.display(),
        bytes.len(),
        meta.model.name,
        meta.exit,
        exported.params,
        onnx::INPUT,
        onnx::OUTPUT,
        meta.classes
    ))
}
