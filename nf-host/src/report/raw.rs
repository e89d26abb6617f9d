//! The fields of report.json and eval.json as [`super::read`] finds them, before
//! [`super::run`] names the absent ones: one struct per kind of object, a field per key read.
use serde::de::MapAccess;

use super::read::{Ends, Fields, Found, List, Num, Scalar, SmallTree, Strings, Text};

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

/// `impl Fields`: each JSON key read into its field.
macro_rules! fields {
    ($ty:ty { $($key:literal => $field:ident),* $(,)? }) => {
        impl Fields for $ty {
            fn field<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $($key => self.$field = map.next_value()?,)*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

/// A report.json.
#[derive(Debug, Default)]
pub struct RawReport {
    pub mode: Text,
    pub model: Text,
    pub architecture: SmallTree,
    pub data: Text,
    pub class_names: Strings,
    pub budget_bytes: Scalar,
    pub epochs_per_block: Scalar,
    pub plan: Found<RawPlan>,
    pub blocks: List<Found<RawBlock>>,
    pub heads: List<Found<RawUnit>>,
    pub exit: Found<RawUnit>,
    pub full_params: Scalar,
    pub test_acc: Scalar,
    pub seconds_total: Scalar,
    pub memory: Found<RawMemory>,
    pub planned_total_bytes: Scalar,
    pub peak_rss_bytes: Scalar,
}

fields!(RawReport {
    "mode" => mode,
    "model" => model,
    "architecture" => architecture,
    "data" => data,
    "class_names" => class_names,
    "budget_bytes" => budget_bytes,
    "epochs_per_block" => epochs_per_block,
    "plan" => plan,
    "blocks" => blocks,
    "heads" => heads,
    "exit" => exit,
    "full_params" => full_params,
    "test_acc" => test_acc,
    "seconds_total" => seconds_total,
    "memory" => memory,
    "planned_total_bytes" => planned_total_bytes,
    "peak_rss_bytes" => peak_rss_bytes,
});

/// `plan`.
#[derive(Debug, Default)]
pub struct RawPlan {
    pub blocks: List<Found<RawPlanned>>,
}

fields!(RawPlan { "blocks" => blocks });

/// `plan.blocks[]`.
#[derive(Debug, Default)]
pub struct RawPlanned {
    pub units: Ends,
    pub batch_size: Scalar,
    pub breakdown: Found<RawBreakdown>,
}

fields!(RawPlanned {
    "units" => units,
    "batch_size" => batch_size,
    "breakdown" => breakdown,
});

/// `plan.blocks[].breakdown`: the bytes of each part, in [`BREAKDOWN_PARTS`] order.
#[derive(Debug, Default)]
pub struct RawBreakdown {
    pub parts: [Scalar; BREAKDOWN_PARTS.len()],
}

impl Fields for RawBreakdown {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        let Some(k) = BREAKDOWN_PARTS.iter().position(|(name, _)| *name == key) else {
            return Ok(false);
        };
        self.parts[k] = map.next_value()?;
        Ok(true)
    }
}

/// `blocks[]`.
#[derive(Debug, Default)]
pub struct RawBlock {
    pub units: Ends,
    pub batch_size: Scalar,
    pub images_per_sec: Scalar,
    pub epochs: List<Found<RawEpoch>>,
}

fields!(RawBlock {
    "units" => units,
    "batch_size" => batch_size,
    "images_per_sec" => images_per_sec,
    "epochs" => epochs,
});

/// `blocks[].epochs[]`: once read, the entries of its lists paired (the lists dropped), so a
/// million epochs hold one small list each.
#[derive(Debug, Default)]
pub struct RawEpoch {
    /// `(j, loss[j], train_acc[j])` for j below the longer list's length.
    pub entries: Vec<(u64, Option<f64>, Option<f64>)>,
    /// Whether `loss` and `train_acc` were lists.
    pub lists: (bool, bool),
    pub seconds: Scalar,
    /// `loss` and `train_acc` while the object is read.
    reading: Option<Box<(List<Num>, List<Num>)>>,
}

impl Fields for RawEpoch {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        let lists = self.reading.get_or_insert_default();
        match key {
            "loss" => lists.0 = map.next_value()?,
            "train_acc" => lists.1 = map.next_value()?,
            "seconds" => self.seconds = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish(&mut self) {
        let (List(loss), List(acc)) = *self.reading.take().unwrap_or_default();
        self.lists = (loss.is_some(), acc.is_some());
        let (loss, acc) = (loss.unwrap_or_default(), acc.unwrap_or_default());
        let at = |l: &[Num], j: usize| l.get(j).and_then(|v| v.0);
        self.entries = (0..loss.len().max(acc.len()))
            .map(|j| (j as u64, at(&loss, j), at(&acc, j)))
            .collect();
    }
}

/// `heads[]` and `exit`.
#[derive(Debug, Default)]
pub struct RawUnit {
    pub unit: Scalar,
    pub test_acc: Scalar,
    pub params: Scalar,
}

fields!(RawUnit {
    "unit" => unit,
    "test_acc" => test_acc,
    "params" => params,
});

/// `memory`.
#[derive(Debug, Default)]
pub struct RawMemory {
    pub budget_used_bytes: Scalar,
    pub data_bytes: Scalar,
    pub cache_bytes: Scalar,
    pub model_bytes: Scalar,
}

fields!(RawMemory {
    "budget_used_bytes" => budget_used_bytes,
    "data_bytes" => data_bytes,
    "cache_bytes" => cache_bytes,
    "model_bytes" => model_bytes,
});

/// An eval.json (`nf eval --json`).
#[derive(Debug, Default)]
pub struct RawEval {
    pub models: List<Found<RawModel>>,
}

fields!(RawEval { "models" => models });

/// `models[]` of an eval.json.
#[derive(Debug, Default)]
pub struct RawModel {
    pub exit_unit: Scalar,
    pub params: Scalar,
    pub test_acc: Scalar,
    pub images_per_sec: Scalar,
}

fields!(RawModel {
    "exit_unit" => exit_unit,
    "params" => params,
    "test_acc" => test_acc,
    "images_per_sec" => images_per_sec,
});
