//! A run as `nf report` reads it: the fields of report.json it draws, each optional.
//!
//! report.json has grown over versions (the memory contract, per-unit parameters, the
//! recompute part of a block's breakdown came later), so every field may be absent or of
//! another type: such a field is `None` (or left out of a list) and named in [`Run::absent`],
//! which the report prints. Only a file that is not a JSON object is refused.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::CliError;
use crate::size::format_size;

/// The file of a run directory holding `nf eval --model RUN --json`'s output, if saved.
pub const EVAL_FILE: &str = "eval.json";

/// The largest report.json `nf report` reads (a real one is a few KiB to a few MiB).
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

/// The parts of a block's memory breakdown, as (report.json key, legend label), bottom up.
pub const BREAKDOWN_PARTS: [(&str, &str); 9] = [
    ("params", "params"),
    ("grads", "grads"),
    ("optimizer", "optimiser"),
    ("bn_state", "BN state"),
    ("io", "io"),
    ("activations", "activations"),
    ("act_grads", "activation grads"),
    ("workspace", "workspace"),
    ("recompute", "recompute chain"),
];

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

/// Reads fields, noting the absent ones.
struct Reader<'a> {
    absent: &'a mut Vec<String>,
}

impl Reader<'_> {
    fn get<'v>(&mut self, v: &'v Value, path: &str, name: &str) -> Option<&'v Value> {
        let found = path
            .split('.')
            .try_fold(v, |v, k| v.get(k))
            .filter(|v| !v.is_null());
        if found.is_none() {
            self.note(name);
        }
        found
    }
    fn note(&mut self, name: &str) {
        if !self.absent.iter().any(|a| a == name) {
            self.absent.push(name.to_string());
        }
    }
    fn u64(&mut self, v: &Value, path: &str, name: &str) -> Option<u64> {
        let r = self.get(v, path, name)?.as_u64();
        r.or_else(|| {
            self.note(name);
            None
        })
    }
    fn f64(&mut self, v: &Value, path: &str, name: &str) -> Option<f64> {
        let r = self.get(v, path, name)?.as_f64();
        r.or_else(|| {
            self.note(name);
            None
        })
    }
    fn str(&mut self, v: &Value, path: &str, name: &str) -> Option<String> {
        let r = self.get(v, path, name)?.as_str().map(str::to_string);
        r.or_else(|| {
            self.note(name);
            None
        })
    }
    fn list<'v>(&mut self, v: &'v Value, path: &str, name: &str) -> &'v [Value] {
        match self.get(v, path, name).map(Value::as_array) {
            Some(Some(a)) => a,
            Some(None) => {
                self.note(name);
                &[]
            }
            None => &[],
        }
    }
    /// `[first, last]` units of a block.
    fn units(&mut self, v: &Value, name: &str) -> Option<(u64, u64)> {
        let u = self.list(v, "units", name);
        match (
            u.first().and_then(Value::as_u64),
            u.last().and_then(Value::as_u64),
        ) {
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
        let v: Value = crate::strict_json::from_slice(&bytes)
            .map_err(|e| usage(format!("{} is not JSON: {e}", path.display())))?;
        if !v.is_object() {
            return Err(usage(format!(
                "{} is not a report of `nf train` (not a JSON object)",
                path.display()
            )));
        }
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
        let mut run = Run::from_json(&v);
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
        let v: Option<Value> = std::fs::metadata(path)
            .ok()
            .filter(|m| m.len() <= MAX_REPORT_BYTES)
            .and_then(|_| std::fs::read(path).ok())
            .and_then(|b| crate::strict_json::from_slice(&b).ok());
        let models = v.as_ref().and_then(|v| v.get("models")?.as_array());
        let Some(models) = models else {
            self.absent
                .push(format!("{EVAL_FILE} (not the output of `nf eval --json`)"));
            return;
        };
        self.inference = models
            .iter()
            .filter_map(|m| {
                Some(Inference {
                    unit: m.get("exit_unit")?.as_u64()?,
                    params: m.get("params").and_then(Value::as_u64),
                    test_acc: m.get("test_acc")?.as_f64()?,
                    images_per_sec: m.get("images_per_sec")?.as_f64()?,
                })
            })
            .collect();
    }

    /// The fields of a parsed report.json (`path` and `label` left empty).
    pub fn from_json(v: &Value) -> Run {
        let mut absent = Vec::new();
        let mut r = Reader {
            absent: &mut absent,
        };
        let planned = r
            .list(v, "plan.blocks", "plan.blocks")
            .iter()
            .filter_map(|b| {
                let units = r.units(b, "plan.blocks[].units")?;
                let parts = BREAKDOWN_PARTS
                    .iter()
                    .map(|(k, _)| {
                        r.u64(
                            b,
                            &format!("breakdown.{k}"),
                            &format!("plan.blocks[].breakdown.{k}"),
                        )
                    })
                    .collect();
                Some(PlannedBlock {
                    units,
                    batch: r.u64(b, "batch_size", "plan.blocks[].batch_size"),
                    parts,
                })
            })
            .collect();
        let blocks = r
            .list(v, "blocks", "blocks")
            .iter()
            .filter_map(|b| {
                let units = r.units(b, "blocks[].units")?;
                let epochs = r
                    .list(b, "epochs", "blocks[].epochs")
                    .iter()
                    .map(|e| epoch(&mut r, e, units))
                    .collect();
                Some(TrainedBlock {
                    units,
                    batch: r.u64(b, "batch_size", "blocks[].batch_size"),
                    images_per_sec: r.f64(b, "images_per_sec", "blocks[].images_per_sec"),
                    epochs,
                })
            })
            .collect();
        let unit = |r: &mut Reader, h: &Value, name: &str| {
            Some(UnitResult {
                unit: r.u64(h, "unit", &format!("{name}.unit"))?,
                test_acc: r.f64(h, "test_acc", &format!("{name}.test_acc")),
                params: r.u64(h, "params", &format!("{name}.params")),
            })
        };
        let units = r
            .list(v, "heads", "heads")
            .iter()
            .filter_map(|h| unit(&mut r, h, "heads[]"))
            .collect();
        let exit = r
            .get(v, "exit", "exit")
            .and_then(|e| unit(&mut r, e, "exit"));
        let memory = Memory {
            budget_used: r.u64(v, "memory.budget_used_bytes", "memory.budget_used_bytes"),
            data: r.u64(v, "memory.data_bytes", "memory.data_bytes"),
            cache: r.u64(v, "memory.cache_bytes", "memory.cache_bytes"),
            model: r.u64(v, "memory.model_bytes", "memory.model_bytes"),
            planned_total: r.u64(v, "planned_total_bytes", "planned_total_bytes"),
            peak_rss: r.u64(v, "peak_rss_bytes", "peak_rss_bytes"),
        };
        Run {
            mode: r.str(v, "mode", "mode"),
            // A described model is shown by its description (the zoo by name).
            model: v
                .get("architecture")
                .and_then(|a| crate::architecture::json::from_str(&a.to_string()).ok())
                .map(|m| crate::architecture::shown(&m))
                .or_else(|| r.str(v, "model", "model")),
            data: r.str(v, "data", "data"),
            class_names: v
                .get("class_names")
                .and_then(|n| serde_json::from_value::<Vec<String>>(n.clone()).ok()),
            budget: r.u64(v, "budget_bytes", "budget_bytes"),
            epochs_per_block: r.u64(v, "epochs_per_block", "epochs_per_block"),
            planned,
            blocks,
            units,
            exit,
            full_params: r.u64(v, "full_params", "full_params"),
            test_acc: r.f64(v, "test_acc", "test_acc"),
            seconds_total: r.f64(v, "seconds_total", "seconds_total"),
            memory,
            absent,
            ..Run::default()
        }
    }

    /// The parameters of the model ending at `unit`: the unit's own figure, else the exit's
    /// or the full model's when `unit` is theirs.
    pub fn params_at(&self, unit: u64) -> Option<u64> {
        let own = self
            .units
            .iter()
            .find(|u| u.unit == unit)
            .and_then(|u| u.params);
        let last = self.units.last().map(|u| u.unit);
        own.or_else(|| {
            self.exit
                .as_ref()
                .filter(|e| e.unit == unit)
                .and_then(|e| e.params)
        })
        .or_else(|| self.full_params.filter(|_| last == Some(unit)))
    }
}

/// One epoch: the losses and accuracies belong to the block's last units (a BP block reports
/// only its classifier's, an LL or NeuroFlux block one per unit).
fn epoch(r: &mut Reader, e: &Value, (first, last): (u64, u64)) -> Epoch {
    let loss = r.list(e, "loss", "blocks[].epochs[].loss");
    let acc = r.list(e, "train_acc", "blocks[].epochs[].train_acc");
    let n = loss.len().max(acc.len()) as u64;
    let start = (last + 1).saturating_sub(n).max(first);
    let units = (start..=last)
        .enumerate()
        .map(|(j, u)| {
            (
                u,
                loss.get(j).and_then(Value::as_f64),
                acc.get(j).and_then(Value::as_f64),
            )
        })
        .collect();
    Epoch {
        units,
        seconds: r.f64(e, "seconds", "blocks[].epochs[].seconds"),
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
