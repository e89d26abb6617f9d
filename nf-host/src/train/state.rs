//! The progress of a run as the checkpoint keeps it, and the checkpoint itself.
use std::time::Instant;

use nf_core::plan::{Mode, Plan};
use serde_json::{json, Value};

use std::collections::BTreeMap;

use super::{Run, CHECKPOINT};
use crate::error::CliError;
use crate::plan_report;
use crate::store::{save_tensors, TensorStore};

/// Checkpoint metadata key of the plan the run trains (as `nf plan --json` shows it).
pub(super) const PLAN: &str = "plan";
/// Checkpoint metadata key of the number of ranks (absent: one).
pub(super) const WORLD: &str = "world";
/// Name prefix of the block-in-training's tensors in a checkpoint.
pub(super) const CURRENT: &str = "current.";

/// What one head (or the classifier) scored.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct HeadResult {
    pub unit: usize,
    pub filters: usize,
    pub val_acc: f32,
    pub test_acc: f32,
}

/// What one finished block took.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BlockResult {
    pub seconds: f64,
    pub train_seconds: f64,
    pub images: u64,
    pub epochs: Vec<Value>,
}

/// Progress of a run, as saved in the checkpoint.
#[derive(Clone, Debug, Default)]
pub(super) struct RunState {
    /// Block being trained (or the number of blocks when done).
    pub block: usize,
    /// Epochs of that block already done (all of them: trained, not yet frozen).
    pub epoch: u32,
    /// Every finished unit's head (or classifier), in order.
    pub heads: Vec<HeadResult>,
    /// Every started block.
    pub blocks: Vec<BlockResult>,
    /// Seconds spent training before the last resume.
    pub seconds_before: f64,
}

impl RunState {
    pub fn to_json(&self) -> Value {
        json!({
            "block": self.block,
            "epoch": self.epoch,
            "seconds_before": self.seconds_before,
            "heads": self.heads.iter().map(|h| json!([h.unit, h.filters, h.val_acc, h.test_acc])).collect::<Vec<_>>(),
            "blocks": self.blocks.iter().map(|b| json!({"seconds": b.seconds, "train_seconds": b.train_seconds, "images": b.images, "epochs": b.epochs})).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(v: &Value) -> Option<RunState> {
        let heads = v["heads"]
            .as_array()?
            .iter()
            .map(|h| {
                Some(HeadResult {
                    unit: h[0].as_u64()? as usize,
                    filters: h[1].as_u64()? as usize,
                    val_acc: h[2].as_f64()? as f32,
                    test_acc: h[3].as_f64()? as f32,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let blocks = v["blocks"]
            .as_array()?
            .iter()
            .map(|b| {
                Some(BlockResult {
                    seconds: b["seconds"].as_f64()?,
                    train_seconds: b["train_seconds"].as_f64()?,
                    images: b["images"].as_u64()?,
                    epochs: b["epochs"].as_array()?.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RunState {
            block: v["block"].as_u64()? as usize,
            epoch: v["epoch"].as_u64()? as u32,
            heads,
            blocks,
            seconds_before: v["seconds_before"].as_f64()?,
        })
    }

    /// The heads `plan` yields for its first `blocks` blocks, in order (one per segment: each
    /// unit in local learning, the last unit in BP).
    fn expected_heads(plan: &Plan, blocks: usize) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for b in &plan.blocks()[..blocks] {
            let units = if plan.mode == Mode::Bp {
                b.last..=b.last
            } else {
                b.first..=b.last
            };
            v.extend(units.map(|u| (u, plan.heads[u])));
        }
        v
    }

    /// Whether this state can come from a run of `plan` with `epochs` epochs per block: block
    /// and epoch in range, one result per started block, the heads of exactly the finished
    /// blocks (their units and widths as the plan has them), accuracies in `0..=1` and finite
    /// times. (`--patience` may end the run before the last block.)
    pub fn fits(&self, plan: &Plan, epochs: u32) -> bool {
        let n = plan.n_blocks;
        let training = self.epoch > 0;
        let finished = if training {
            self.blocks.len().wrapping_sub(1)
        } else {
            self.blocks.len()
        };
        let in_range = self.block <= n
            && self.epoch <= epochs
            && finished <= n
            && (self.block == finished || (!training && self.block == n && finished >= 1))
            && (!training || self.block < n);
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        in_range
            && self
                .heads
                .iter()
                .map(|h| (h.unit, h.filters))
                .eq(Self::expected_heads(plan, finished))
            && self
                .heads
                .iter()
                .all(|h| (0.0..=1.0).contains(&h.val_acc) && (0.0..=1.0).contains(&h.test_acc))
            && self
                .blocks
                .iter()
                .all(|b| finite(b.seconds) && finite(b.train_seconds))
            && finite(self.seconds_before)
    }
}

/// The model-file metadata of a run (see the README's model files).
pub(super) fn metadata(run: &Run) -> Vec<(String, String)> {
    let p = &run.memory.plan;
    let mut md = vec![
        ("format".into(), "neuroflux".into()),
        ("model".into(), p.model.name.into()),
        // Every op of every unit: nf eval and scripts/to_pytorch.py rebuild the model from it.
        (
            "architecture".into(),
            crate::architecture::json::to_string(&p.model),
        ),
        (
            "input".into(),
            format!("{}x{}x{}", p.input.c, p.input.h, p.input.w),
        ),
        ("classes".into(), p.classes.to_string()),
        ("head_pool".into(), p.model.head_pool.to_string()),
        // The black border `--pad` added around the stored images (`input` includes it).
        ("pad".into(), run.args.pad.to_string()),
        ("mode".into(), p.mode.name().into()),
        (
            "heads".into(),
            json!(p.heads[..p.model.units.len()]).to_string(),
        ),
        ("mean".into(), json!(run.train.mean()).to_string()),
        ("std".into(), json!(run.train.std()).to_string()),
    ];
    // Only data with names (image folders) adds the key, so other files stay as they were.
    if let Some(names) = &run.class_names {
        md.push(("class_names".into(), json!(names).to_string()));
    }
    md
}

/// Write the checkpoint atomically: the frozen units, the block in training (`current.*`, with
/// its momentum), the run state, the command line and the plan (which `--resume` replays).
pub(super) fn save_checkpoint(
    run: &Run,
    state: &RunState,
    frozen: &TensorStore,
    current: Option<&TensorStore>,
    start: Instant,
) -> Result<(), CliError> {
    let mut st = state.clone();
    st.seconds_before += start.elapsed().as_secs_f64();
    let mut meta: BTreeMap<String, String> = metadata(run).into_iter().collect();
    meta.insert("argv".into(), json!(run.argv).to_string());
    meta.insert("precision".into(), run.args.precision().name().into());
    meta.insert("state".into(), st.to_json().to_string());
    meta.insert(PLAN.into(), plan_report::json(&run.memory.plan).to_string());
    let world = run.memory.plan.options.world;
    if world > 1 {
        meta.insert(WORLD.into(), world.to_string());
    }
    let tensors = frozen.tensors.iter().map(|(k, t)| (k.clone(), t));
    let current = current
        .into_iter()
        .flat_map(|c| c.tensors.iter().map(|(k, t)| (format!("{CURRENT}{k}"), t)));
    let path = run.args.out_dir().join(CHECKPOINT);
    save_tensors(&path, tensors.chain(current), &meta).map_err(|e| {
        CliError::Usage(format!(
            "{}: writing the checkpoint: {e}",
            run.args.out_flag()
        ))
    })
}
