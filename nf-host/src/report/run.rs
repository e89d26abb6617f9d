//! A run as `nf report` reads it: the fields of report.json it draws, each optional.
//!
//! report.json has grown over versions (the memory contract, per-unit parameters, the
//! recompute part of a block's breakdown came later), so every field may be absent or of
//! another type: such a field is `None` (or left out of a list) and named in [`Run::absent`],
//! which the report prints. Only a file that is not a JSON object is refused.
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::raw::{RawEpoch, RawEval, RawReport, RawUnit};
use super::read::{Ends, Found, List};
use crate::error::CliError;
use crate::size::format_size;

/// The file of a run directory holding `nf eval --model RUN --json`'s output, if saved.
pub const EVAL_FILE: &str = "eval.json";

/// The largest report.json `nf report` reads (a real one is a few KiB to a few MiB).
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

pub use super::raw::BREAKDOWN_PARTS;

/// One planned block: its units and bytes by part (in [`BREAKDOWN_PARTS`] order).
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedBlock {
    /// First and last unit (inclusive).
    pub units: (u64, u64),
    /// Batch size.
    pub batch: Option<u64>,
    /// Bytes of each part; `None` where absent.
    pub parts: Vec<Option<u64>>,
}

/// One epoch of a block: per trained unit (in unit order) its loss and training accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct Epoch {
    /// (unit, loss, training accuracy in [0, 1]).
    pub units: Vec<(u64, Option<f64>, Option<f64>)>,
    /// Training seconds of the epoch.
    pub seconds: Option<f64>,
}

/// One trained block.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainedBlock {
    /// First and last unit (inclusive).
    pub units: (u64, u64),
    /// Batch size.
    pub batch: Option<u64>,
    /// Training images per second.
    pub images_per_sec: Option<f64>,
    /// Its epochs.
    pub epochs: Vec<Epoch>,
}

/// One unit's head (or the classifier) after training.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitResult {
    /// The unit.
    pub unit: u64,
    /// Test accuracy in [0, 1].
    pub test_acc: Option<f64>,
    /// Parameters of the model that ends at this unit's head.
    pub params: Option<u64>,
}

/// One model measured by `nf eval --json` (saved as the run directory's eval.json).
#[derive(Clone, Debug, PartialEq)]
pub struct Inference {
    /// The unit the model ends at.
    pub unit: u64,
    /// Its parameters.
    pub params: Option<u64>,
    /// Test accuracy in [0, 1].
    pub test_acc: f64,
    /// Inference images per second.
    pub images_per_sec: f64,
}

/// The memory contract of a run, in bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    /// What `--budget` covers that the run uses (arena, staging, device reserve).
    pub budget_used: Option<u64>,
    /// The data set as stored.
    pub data: Option<u64>,
    /// The activation caches.
    pub cache: Option<u64>,
    /// The host copy of the model.
    pub model: Option<u64>,
    /// The planned total.
    pub planned_total: Option<u64>,
    /// The process's peak resident set.
    pub peak_rss: Option<u64>,
}

/// The fields of one report.json that the report draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Run {
    /// The file read.
    pub path: PathBuf,
    /// A short name for legends (the run directory's name, made unique by the caller).
    pub label: String,
    /// `neuroflux`, `ll` or `bp`.
    pub mode: Option<String>,
    /// The model's name.
    pub model: Option<String>,
    /// The data it trained on.
    pub data: Option<String>,
    /// The class names of the data, when it had them (image folders; none is no gap).
    pub class_names: Option<Vec<String>>,
    /// `--budget` in bytes.
    pub budget: Option<u64>,
    /// Epochs per block.
    pub epochs_per_block: Option<u64>,
    /// The plan's blocks.
    pub planned: Vec<PlannedBlock>,
    /// The trained blocks.
    pub blocks: Vec<TrainedBlock>,
    /// Every unit's head or classifier, in unit order.
    pub units: Vec<UnitResult>,
    /// The chosen early exit.
    pub exit: Option<UnitResult>,
    /// Parameters of the full model.
    pub full_params: Option<u64>,
    /// Test accuracy of the last unit.
    pub test_acc: Option<f64>,
    /// Wall seconds of the whole run.
    pub seconds_total: Option<f64>,
    /// The memory contract and the peak RSS.
    pub memory: Memory,
    /// The models `nf eval --model RUN --json > RUN/eval.json` measured (empty without it).
    pub inference: Vec<Inference>,
    /// The fields this report.json lacks (or holds with another type), by name.
    pub absent: Vec<String>,
}

/// The names of the absent fields, in the order first met, each once.
struct Notes(Vec<String>);

impl Notes {
    fn note(&mut self, name: &str) {
        // A few dozen names at most: a linear search.
        if !self.0.iter().any(|a| a == name) {
            self.0.push(name.to_string());
        }
    }
    /// `v`, its `name` noted when `None`.
    fn need<T>(&mut self, v: Option<T>, name: &str) -> Option<T> {
        if v.is_none() {
            self.note(name);
        }
        v
    }
    /// The elements of a list, its `name` noted when it is not one.
    fn list<T>(&mut self, v: List<T>, name: &str) -> Vec<T> {
        self.need(v.0, name).unwrap_or_default()
    }
    /// `[first, last]` units of a block.
    fn units(&mut self, Ends(a, b): Ends, name: &str) -> Option<(u64, u64)> {
        match (a, b) {
            (Some(a), Some(b)) if a <= b => Some((a, b)),
            _ => {
                self.note(name);
                None
            }
        }
    }
}

impl Run {
    /// Read the report of `arg`: a run directory (its report.json) or a report.json file.
    pub fn load(arg: &Path) -> Result<Run, CliError> {
        let usage = |m: String| CliError::Usage(format!("{}: {m}", arg.display()));
        let path = if arg.is_dir() {
            arg.join("report.json")
        } else {
            arg.to_path_buf()
        };
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound if arg.is_dir() => {
                usage("no report.json in this directory (is it a run of `nf train`?)".into())
            }
            _ => usage(format!("cannot read {}: {e}", path.display())),
        })?;
        if !meta.is_file() {
            return Err(usage("not a file or a run directory".into()));
        }
        if meta.len() > MAX_REPORT_BYTES {
            return Err(usage(format!(
                "{} is too large for a report.json ({}, at most {})",
                path.display(),
                format_size(meta.len()),
                format_size(MAX_REPORT_BYTES)
            )));
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        let raw = serde_json::from_slice::<Found<RawReport>>(&bytes)
            .map_err(|e| usage(format!("{} is not JSON: {e}", path.display())))?;
        drop(bytes);
        let Found::Object(raw) = raw else {
            return Err(usage(format!(
                "{} is not a report of `nf train` (not a JSON object)",
                path.display()
            )));
        };
        let label = arg
            .canonicalize()
            .ok()
            .and_then(|p| {
                let p = if p.is_dir() {
                    p
                } else {
                    p.parent()?.to_path_buf()
                };
                p.file_name().map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| arg.display().to_string());
        let mut run = Run::from_raw(raw);
        if arg.is_dir() && arg.join(EVAL_FILE).exists() {
            run.read_eval(&arg.join(EVAL_FILE));
        }
        run.path = path;
        run.label = label;
        Ok(run)
    }

    /// Add the models of an eval.json (the output of `nf eval --json`); one that cannot be
    /// read is named in [`Run::absent`], not an error (it is optional).
    fn read_eval(&mut self, path: &Path) {
        let raw = std::fs::metadata(path)
            .ok()
            .filter(|m| m.len() <= MAX_REPORT_BYTES)
            .and_then(|_| std::fs::read(path).ok())
            .and_then(|b| serde_json::from_slice::<Found<RawEval>>(&b).ok());
        let Some(Found::Object(RawEval {
            models: List(Some(models)),
        })) = raw
        else {
            self.absent
                .push(format!("{EVAL_FILE} (not the output of `nf eval --json`)"));
            return;
        };
        self.inference = models
            .into_iter()
            .filter_map(|m| {
                let m = m.fields()?;
                Some(Inference {
                    unit: m.exit_unit.u64()?,
                    params: m.params.u64(),
                    test_acc: m.test_acc.f64()?,
                    images_per_sec: m.images_per_sec.f64()?,
                })
            })
            .collect();
    }

    /// The fields of a parsed report.json (`path` and `label` left empty); for tests.
    pub fn from_json(v: &Value) -> Run {
        match serde_json::from_str::<Found<RawReport>>(&v.to_string()) {
            Ok(Found::Object(raw)) => Run::from_raw(raw),
            _ => Run::from_raw(RawReport::default()),
        }
    }

    /// The fields of a report.json as read, each absent one named (in the order of the
    /// sections of the page: the plan, the blocks, the heads, the exit, memory, the rest).
    fn from_raw(v: RawReport) -> Run {
        let mut r = Notes(Vec::new());
        let plan = v.plan.fields().unwrap_or_default();
        let part_names: Vec<String> = BREAKDOWN_PARTS
            .iter()
            .map(|(k, _)| format!("plan.blocks[].breakdown.{k}"))
            .collect();
        let planned = r
            .list(plan.blocks, "plan.blocks")
            .into_iter()
            .filter_map(|b| {
                let b = b.fields().unwrap_or_default();
                let units = r.units(b.units, "plan.blocks[].units")?;
                let breakdown = b.breakdown.fields().unwrap_or_default();
                let parts = BREAKDOWN_PARTS
                    .iter()
                    .zip(&part_names)
                    .zip(breakdown.parts)
                    .map(|((_, name), v)| r.need(v.u64(), name))
                    .collect();
                Some(PlannedBlock {
                    units,
                    batch: r.need(b.batch_size.u64(), "plan.blocks[].batch_size"),
                    parts,
                })
            })
            .collect();
        let blocks = r
            .list(v.blocks, "blocks")
            .into_iter()
            .filter_map(|b| {
                let b = b.fields().unwrap_or_default();
                let units = r.units(b.units, "blocks[].units")?;
                let epochs = r
                    .list(b.epochs, "blocks[].epochs")
                    .into_iter()
                    .map(|e| epoch(&mut r, e.fields().unwrap_or_default(), units))
                    .collect();
                Some(TrainedBlock {
                    units,
                    batch: r.need(b.batch_size.u64(), "blocks[].batch_size"),
                    images_per_sec: r.need(b.images_per_sec.f64(), "blocks[].images_per_sec"),
                    epochs,
                })
            })
            .collect();
        // The names formatted once, not per element.
        let unit = |r: &mut Notes, h: RawUnit, [unit, acc, params]: &[&str; 3]| {
            Some(UnitResult {
                unit: r.need(h.unit.u64(), unit)?,
                test_acc: r.need(h.test_acc.f64(), acc),
                params: r.need(h.params.u64(), params),
            })
        };
        let units = r
            .list(v.heads, "heads")
            .into_iter()
            .filter_map(|h| {
                let names = &["heads[].unit", "heads[].test_acc", "heads[].params"];
                unit(&mut r, h.fields().unwrap_or_default(), names)
            })
            .collect();
        let exit = r
            .need(v.exit.fields(), "exit")
            .and_then(|e| unit(&mut r, e, &["exit.unit", "exit.test_acc", "exit.params"]));
        let m = v.memory.fields().unwrap_or_default();
        let memory = Memory {
            budget_used: r.need(m.budget_used_bytes.u64(), "memory.budget_used_bytes"),
            data: r.need(m.data_bytes.u64(), "memory.data_bytes"),
            cache: r.need(m.cache_bytes.u64(), "memory.cache_bytes"),
            model: r.need(m.model_bytes.u64(), "memory.model_bytes"),
            planned_total: r.need(v.planned_total_bytes.u64(), "planned_total_bytes"),
            peak_rss: r.need(v.peak_rss_bytes.u64(), "peak_rss_bytes"),
        };
        let mode = r.need(v.mode.0, "mode");
        // A described model is shown by its description (the zoo by name).
        let described = v
            .architecture
            .0
            .and_then(|a| crate::architecture::json::from_str(&a.to_string()).ok())
            .map(|m| crate::architecture::shown(&m));
        let model = match described {
            Some(m) => Some(m),
            None => r.need(v.model.0, "model"),
        };
        Run {
            mode,
            model,
            data: r.need(v.data.0, "data"),
            class_names: v.class_names.0,
            budget: r.need(v.budget_bytes.u64(), "budget_bytes"),
            epochs_per_block: r.need(v.epochs_per_block.u64(), "epochs_per_block"),
            planned,
            blocks,
            units,
            exit,
            full_params: r.need(v.full_params.u64(), "full_params"),
            test_acc: r.need(v.test_acc.f64(), "test_acc"),
            seconds_total: r.need(v.seconds_total.f64(), "seconds_total"),
            memory,
            absent: r.0,
            ..Run::default()
        }
    }

    /// The parameters of the model ending at `unit`: the unit's own figure, else the exit's
    /// or the full model's when `unit` is theirs. Searches the heads: for each head use
    /// [`Run::params_of`].
    pub fn params_at(&self, unit: u64) -> Option<u64> {
        match self.units.iter().find(|u| u.unit == unit) {
            Some(u) => self.params_of(u),
            None => self.params_else(unit),
        }
    }

    /// The parameters of the model ending at head `u` (one of [`Run::units`]), in constant
    /// time: its own figure, else the exit's or the full model's when `u` is theirs.
    pub fn params_of(&self, u: &UnitResult) -> Option<u64> {
        u.params.or_else(|| self.params_else(u.unit))
    }

    /// The exit's or the full model's parameters when `unit` is theirs.
    fn params_else(&self, unit: u64) -> Option<u64> {
        let last = self.units.last().map(|u| u.unit);
        self.exit
            .as_ref()
            .filter(|e| e.unit == unit)
            .and_then(|e| e.params)
            .or_else(|| self.full_params.filter(|_| last == Some(unit)))
    }
}

/// One epoch: the losses and accuracies belong to the block's last units (a BP block reports
/// only its classifier's, an LL or NeuroFlux block one per unit).
fn epoch(r: &mut Notes, e: RawEpoch, (first, last): (u64, u64)) -> Epoch {
    r.need(e.lists.0.then_some(()), "blocks[].epochs[].loss");
    r.need(e.lists.1.then_some(()), "blocks[].epochs[].train_acc");
    let mut units = e.entries;
    // The last n units, none before the block's first (n = 0: none); in place.
    if let Some(n1) = (units.len() as u64).checked_sub(1) {
        let start = last.saturating_sub(n1).max(first);
        units.truncate((last - start + 1) as usize);
        for (j, u) in units.iter_mut().enumerate() {
            u.0 = start + j as u64;
        }
    }
    Epoch {
        units,
        seconds: r.need(e.seconds.f64(), "blocks[].epochs[].seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_described_model_is_shown_by_its_description() {
        let m = crate::architecture::resolve("net:16,M,R32s2").unwrap();
        let v = json!({"model": "net", "architecture": crate::architecture::json::to_value(&m)});
        assert_eq!(Run::from_json(&v).model.as_deref(), Some("net:16,M,R32s2"));
        let zoo = json!({"model": "vgg11",
                         "architecture": crate::architecture::json::to_value(&nf_core::zoo::VGG11)});
        assert_eq!(Run::from_json(&zoo).model.as_deref(), Some("vgg11"));
    }

    #[test]
    fn fields_of_other_types_or_missing_are_named() {
        let v = json!({
            "mode": "bp", "model": 3, "budget_bytes": -1,
            "blocks": [{"units": [0, 3], "batch_size": 48, "epochs": [{"loss": [1.5], "train_acc": [0.5], "seconds": 1.0}]}],
            "heads": "x",
        });
        let r = Run::from_json(&v);
        assert_eq!(r.mode.as_deref(), Some("bp"));
        assert_eq!(r.model, None);
        assert_eq!(r.budget, None);
        assert_eq!(r.blocks[0].epochs[0].units, vec![(3, Some(1.5), Some(0.5))]);
        for name in [
            "model",
            "budget_bytes",
            "heads",
            "plan.blocks",
            "peak_rss_bytes",
            "exit",
        ] {
            assert!(r.absent.iter().any(|a| a == name), "{name}: {:?}", r.absent);
        }
        assert!(!r.absent.iter().any(|a| a == "mode"));
    }

    #[test]
    fn unread_fields_are_read_through_and_checked_for_duplicate_keys() {
        let read = |text: &str| serde_json::from_str::<Found<RawReport>>(text).map(|_| ());
        for text in [
            r#"{"extra": {"a": 1, "a": 2}}"#,
            r#"{"blocks": [{"epochs": [{"loss": [1], "note": [{"k": 0, "k": 1}]}]}]}"#,
            r#"{"architecture": {"units": [], "units": []}}"#,
            r#"{"heads": 3, "heads": 4}"#,
        ] {
            let e = read(text).unwrap_err().to_string();
            assert!(e.starts_with("duplicate key"), "{text}: {e}");
        }
        // Elements that are not objects read as empty ones; an oversized architecture is
        // read through and the model shown by its name.
        let big: Vec<u32> = vec![0; 200_000];
        let v = json!({"model": "m", "architecture": {"units": big},
                       "heads": [1, {"unit": 2, "params": 5}], "exit": "x"});
        let r = Run::from_json(&v);
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.units.len(), 1);
        assert_eq!(r.params_at(2), Some(5));
        for name in ["heads[].unit", "exit.unit"] {
            assert!(r.absent.iter().any(|a| a == name), "{name}: {:?}", r.absent);
        }
    }

    #[test]
    fn epochs_map_to_the_block_s_last_units() {
        let v = json!({"blocks": [{"units": [2, 3], "epochs": [{"loss": [1.0, 2.0], "train_acc": [0.1, 0.2]}]}]});
        let r = Run::from_json(&v);
        assert_eq!(
            r.blocks[0].epochs[0].units,
            vec![(2, Some(1.0), Some(0.1)), (3, Some(2.0), Some(0.2))]
        );
        // More entries than units: no unit before the block's first.
        let v = json!({"blocks": [{"units": [2, 2], "epochs": [{"loss": [1.0, 2.0, 3.0]}]}]});
        assert_eq!(Run::from_json(&v).blocks[0].epochs[0].units.len(), 1);
    }
}
