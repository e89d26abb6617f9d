//! What a model file says about itself: its architecture (in full, as JSON), input, classes,
//! head widths and the unit that ends it.
use std::path::Path;

use nf_core::model::{ModelSpec, Shape, MAX_UNITS};
use nf_core::plan::MIN_HEAD;

use crate::error::{usage, CliError};
use crate::limits::{MAX_CLASSES, MAX_FILTERS, MAX_INPUT_SIDE};
use crate::store::TensorStore;

/// Model metadata read back from a model file.
#[derive(Clone, Debug)]
pub struct ModelMeta {
    /// The architecture, with the head pooling it was trained with.
    pub model: ModelSpec<'static>,
    /// Input shape.
    pub input: Shape,
    /// Classes.
    pub classes: usize,
    /// Head widths per unit.
    pub heads: [usize; MAX_UNITS],
    /// The unit whose head (or the classifier) ends this model.
    pub exit: usize,
    /// Per-channel input normalisation (mean, std) the model was trained with.
    pub mean: Vec<f32>,
    /// See `mean`.
    pub std: Vec<f32>,
    /// Black pixels the model's input adds on every side of a stored image (`nf train --pad`);
    /// `input` includes them.
    pub pad: usize,
    /// The class names, one per class, when the training data had them (image folders).
    pub class_names: Option<Vec<String>>,
}

impl ModelMeta {
    /// Read the metadata of a model file (`path` only names it in errors).
    pub fn from_store(store: &TensorStore, path: &Path) -> Result<ModelMeta, CliError> {
        let bad = |what: &str| usage(format!("{}: not an nf model file ({what})", path.display()));
        let md = &store.metadata;
        // The architecture: written in full since descriptions (any CNN); files from before
        // name their zoo model only.
        let described = match md.get("architecture") {
            Some(a) => crate::architecture::json::from_str(a)
                .map_err(|e| usage(format!("{}: architecture: {e}", path.display())))?,
            None => *md
                .get("model")
                .and_then(|m| nf_core::zoo::by_name(m))
                .ok_or_else(|| bad("unknown model and no architecture"))?,
        };
        // Files written before heads could pool their input have no entry: no pooling.
        let head_pool = match md.get("head_pool") {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&p| p != 1 && p <= MAX_INPUT_SIDE)
                .ok_or_else(|| bad("head_pool"))?,
        };
        let model = ModelSpec {
            head_pool,
            ..described
        };
        // Files written before --pad have no entry: no padding.
        let pad = match md.get("pad") {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&p| p <= crate::data::transform::MAX_PAD)
                .ok_or_else(|| bad("pad"))?,
        };
        let input = md
            .get("input")
            .and_then(|s| crate::plan_args::parse_shape(s).ok())
            .ok_or_else(|| bad("input shape"))?;
        let classes: usize = md
            .get("classes")
            .and_then(|s| s.parse().ok())
            .filter(|&c| (2..=MAX_CLASSES).contains(&c))
            .ok_or_else(|| bad("classes"))?;
        let hv: Vec<usize> = md
            .get("heads")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("heads"))?;
        let exit: usize = md
            .get("exit")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("exit"))?;
        if hv.len() != model.units.len()
            || exit >= model.units.len()
            || input.h <= 2 * pad
            || input.w <= 2 * pad
            || !model.accepts(input, classes)
        {
            return Err(bad("inconsistent model description"));
        }
        // Heads: none (0, as in BP and for the last unit, which has the classifier) or a width
        // the planner could give; the exit unit's head must exist.
        let (last, with_heads) = hv.split_last().expect("a model has units");
        if *last != 0
            || with_heads
                .iter()
                .any(|&f| f != 0 && !(MIN_HEAD..=MAX_FILTERS).contains(&f))
            || (exit + 1 < hv.len() && hv[exit] == 0)
        {
            return Err(bad("head widths"));
        }
        let stats = |key: &str| -> Result<Vec<f32>, CliError> {
            md.get(key)
                .and_then(|s| serde_json::from_str::<Vec<f32>>(s).ok())
                .filter(|v| v.len() == input.c && v.iter().all(|x| x.is_finite()))
                .ok_or_else(|| bad(key))
        };
        let (mean, std) = (stats("mean")?, stats("std")?);
        if std.iter().any(|&x| x <= 0.0) {
            return Err(bad("std"));
        }
        // Files of data without names (and from before names) have no entry.
        let class_names = match md.get("class_names") {
            None => None,
            Some(s) => Some(
                serde_json::from_str::<Vec<String>>(s)
                    .ok()
                    .filter(|n| n.len() == classes)
                    .ok_or_else(|| bad("class_names"))?,
            ),
        };
        let mut heads = [0usize; MAX_UNITS];
        heads[..hv.len()].copy_from_slice(&hv);
        Ok(ModelMeta {
            model,
            input,
            classes,
            heads,
            exit,
            mean,
            std,
            pad,
            class_names,
        })
    }
}

/// Whether tensor `name` belongs to the early-exit model ending at unit `k` (of `n_units`):
/// units `0..=k`, then head `k` or, for the last unit, the classifier.
pub fn in_exit_model(name: &str, n_units: usize, k: usize) -> bool {
    match name.split('.').collect::<Vec<_>>().as_slice() {
        ["units", u, ..] => u.parse::<usize>().is_ok_and(|u| u <= k),
        ["heads", u, ..] => u.parse::<usize>() == Ok(k),
        ["classifier", ..] => k + 1 == n_units,
        _ => false,
    }
}
