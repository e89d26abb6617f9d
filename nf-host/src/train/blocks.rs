//! The block loop of `nf train`: each block initialised or restored, trained epoch by epoch
//! with a checkpoint after each, then evaluated and frozen while its outputs are handed on.
use std::time::Instant;

use nf_core::backend::Backend;
use nf_core::collective::{self, same_everywhere, Collective};
use nf_core::layout::BlockLayout;
use nf_core::model::MAX_UNITS;
use nf_core::plan::{Mode, Plan};
use nf_core::rng::Rng;
use nf_core::schedule::{self, epoch_order, Split, TrainError};
use nf_core::step::{self, SegStats};
use serde_json::{json, Value};

use super::finish::finish;
use super::state::{save_checkpoint, BlockResult, HeadResult, RunState, CURRENT};
use super::{failed, usage, Run};
use crate::error::CliError;
use crate::feed::{staging_floats, Augmenting, HostFeed, Source};
use crate::parallel::{weights_hash, World};
use crate::progress::{self, Progress};
use crate::size::format_size;
use crate::store::{read_block, write_block, TensorStore, MOMENTUM_PREFIX};

fn stats_err<BE: std::fmt::Display>(e: TrainError<BE, String>) -> CliError {
    match e {
        TrainError::Step(s) => failed(format!("training step failed: {s}")),
        TrainError::Feed(f) => failed(f),
    }
}

/// Fail unless every rank holds the same `tensors` (compared by a hash); a world of one has
/// nothing to compare.
fn check_same<'a>(
    world: &mut World,
    tensors: impl IntoIterator<Item = (&'a String, &'a crate::store::Tensor)>,
) -> Result<(), CliError> {
    if world.world() == 1 {
        return Ok(());
    }
    match same_everywhere(world, weights_hash(tensors)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed(
            "the ranks hold different weights (nothing written); a rank's hardware or \
             library differs, or a collective is not deterministic",
        )),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Sum the statistics of the ranks' shards.
fn reduce(world: &mut World, stats: &mut [SegStats]) -> Result<(), CliError> {
    collective::reduce_stats(world, stats).map_err(|e| failed(e.to_string()))
}

/// Evaluate block `layout` on all three splits, filling the next cache if the feed has one.
/// Returns the per-segment statistics of (val, test).
fn pass_block<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut HostFeed,
) -> Result<([SegStats; MAX_UNITS], [SegStats; MAX_UNITS]), CliError> {
    let mut idx = vec![0u32; layout.batch];
    let mut val = [SegStats::default(); MAX_UNITS];
    let mut test = [SegStats::default(); MAX_UNITS];
    schedule::evaluate(be, layout, feed, Split::Val, &mut idx, &mut val).map_err(stats_err)?;
    schedule::evaluate(be, layout, feed, Split::Test, &mut idx, &mut test).map_err(stats_err)?;
    if feed.next.is_some() {
        schedule::propagate(be, layout, feed, Split::Train, &mut idx).map_err(stats_err)?;
    }
    Ok((val, test))
}

/// Prepare the feed's source for block `i`: the data set for the first block; else the
/// recompute chain the plan gives the block (its weights, the frozen units', written into the
/// arena beside the block), or the cache filled by the previous block's pass.
fn next_source<B: Backend>(
    run: &Run,
    be: &mut B,
    feed: &mut HostFeed,
    i: usize,
    frozen: &TensorStore,
) -> Result<(), CliError> {
    let plan = run.plan();
    let l = plan.layout(i);
    let per = l.model.unit_input(plan.input, l.first).len();
    if l.first == 0 {
        feed.set_source(Source::Data, per);
    } else if let Some(chain) = plan.chain(i) {
        write_block(be, &chain, frozen, false)
            .map_err(|e| failed(format!("loading the frozen units: {e}")))?;
        feed.set_source(Source::Recompute(Box::new(chain)), per);
    } else {
        let cache = feed
            .next
            .take()
            .ok_or_else(|| failed("internal: no activation cache for the next block"))?;
        feed.set_source(Source::Cache(cache), per);
    }
    Ok(())
}

/// Start the cache of block `i`'s outputs when the next block reads one.
fn plan_cache(run: &Run, feed: &mut HostFeed, i: usize) -> Result<(), CliError> {
    let plan = run.plan();
    feed.next = None;
    if i + 1 < plan.n_blocks && plan.chain(i + 1).is_none() {
        let per = plan.layout(i).output_shape().len();
        feed.start_next(run.args.host.cache_dtype(run.args.precision()), per)?;
    }
    Ok(())
}

/// Train every block of the run from `state` on `be`, then write the model files and the
/// report (`device_report` adds the backend's own figures to it).
pub(super) fn execute<B: Backend>(
    run: &Run,
    state: RunState,
    ckpt: Option<TensorStore>,
    be: &mut B,
    world: &mut World,
    device_report: impl Fn(&B) -> Value,
) -> Result<(), CliError> {
    let start = Instant::now();
    let plan = run.plan();
    let scratch = vec![0.0f32; plan.reduce_floats()];
    let (frozen, current) = split_checkpoint(ckpt);
    let feed = HostFeed::new(
        [&run.train, &run.val, &run.test],
        Source::Data,
        run.train.shape().len(),
        staging_floats(&run.model, plan.input),
    );
    log_start(run, world.world());
    let mut t = Trainer {
        run,
        be,
        world,
        feed,
        scratch,
        frozen,
        current,
        state,
        start,
    };
    t.rebuild_cache()?;
    while t.state.block < plan.n_blocks {
        t.train_block()?;
    }
    t.finish_run(device_report)
}

/// The checkpoint's frozen units, and the block in training (moved out, not copied).
fn split_checkpoint(ckpt: Option<TensorStore>) -> (TensorStore, TensorStore) {
    let (mut frozen, mut current) = (TensorStore::default(), TensorStore::default());
    if let Some(c) = ckpt {
        for (k, t) in c.tensors {
            match k.strip_prefix(CURRENT) {
                Some(rest) => {
                    current.tensors.insert(rest.to_string(), t);
                }
                None if !k.starts_with(MOMENTUM_PREFIX) => {
                    frozen.tensors.insert(k, t);
                }
                None => {}
            }
        }
    }
    (frozen, current)
}

/// The run's first line: model, data, mode, budget, blocks, arena (and the ranks).
fn log_start(run: &Run, ranks: usize) {
    let plan = run.plan();
    progress::log(&format!(
        "nf train: {} on {} ({} train / {} val / {} test, {}x{}x{}), {} mode, budget {}, {} block(s), arena {}{}",
        run.model.name,
        run.args.data.as_deref().unwrap_or("the bundled Fashion-MNIST subset"),
        run.global[0],
        run.global[1],
        run.global[2],
        plan.input.c,
        plan.input.h,
        plan.input.w,
        plan.mode.name(),
        format_size(plan.budget),
        plan.n_blocks,
        format_size(plan.peak_bytes()),
        if ranks > 1 {
            format!(
                " per rank; {ranks} ranks of {} train samples each",
                run.train.len()
            )
        } else {
            String::new()
        }
    ));
}

/// What the block loop works on.
struct Trainer<'a, B> {
    run: &'a Run,
    be: &'a mut B,
    world: &'a mut World,
    feed: HostFeed<'a>,
    /// The host buffer a segment's gradients are read into for the reduction (none alone).
    scratch: Vec<f32>,
    /// Every frozen unit's weights.
    frozen: TensorStore,
    /// The block in training as the checkpoint saved it (emptied once restored).
    current: TensorStore,
    state: RunState,
    /// When this process started the run (checkpoints add the time since).
    start: Instant,
}

impl<B: Backend> Trainer<'_, B> {
    /// On resume, rebuild the cache of the current block's input from the frozen blocks.
    fn rebuild_cache(&mut self) -> Result<(), CliError> {
        let (run, plan) = (self.run, self.run.plan());
        let b = self.state.block;
        if b > 0 && b < plan.n_blocks && plan.chain(b).is_none() {
            progress::log("resuming: recomputing the activation cache from the frozen blocks");
            for j in 0..b {
                let l = plan.layout(j);
                next_source(run, self.be, &mut self.feed, j, &self.frozen)?;
                plan_cache(run, &mut self.feed, j)?;
                write_block(self.be, &l, &self.frozen, false)
                    .map_err(|e| usage(format!("--resume: {e}")))?;
                pass_block(self.be, &l, &mut self.feed)?;
            }
        }
        Ok(())
    }

    /// Block `state.block`: started, trained for the epochs left, evaluated and frozen, then
    /// the early-exit choice and the checkpoint.
    fn train_block(&mut self) -> Result<(), CliError> {
        let (run, plan) = (self.run, self.run.plan());
        let i = self.state.block;
        let l = plan.layout(i);
        next_source(run, self.be, &mut self.feed, i, &self.frozen)?;
        let block_start = Instant::now();
        self.start_block(i, &l)?;
        let mut order = vec![0u32; run.train.len()];
        for epoch in self.state.epoch..run.args.epochs {
            let (secs, st) = self.train_epoch(i, &l, epoch, &mut order)?;
            self.record_epoch(&l, epoch, secs, &st, order.len());
            // Checkpoint the block in progress (after its last epoch too: an interruption of
            // the pass below then loses no training).
            self.checkpoint_current(&l)?;
        }
        self.evaluate_and_freeze(i, &l)?;
        self.state.blocks.last_mut().expect("block result").seconds +=
            block_start.elapsed().as_secs_f64();
        self.state.block += 1;
        self.state.epoch = 0;
        self.choose_exit(i);
        check_same(self.world, self.frozen.tensors.iter())?;
        if self.world.rank() == 0 {
            save_checkpoint(run, &self.state, &self.frozen, None, self.start)?;
        }
        Ok(())
    }

    /// Restore block `i` from the checkpoint when it is resumed mid-block, else initialise it.
    fn start_block(&mut self, i: usize, l: &BlockLayout) -> Result<(), CliError> {
        if self.state.epoch > 0 {
            write_block(self.be, l, &self.current, true)
                .map_err(|e| usage(format!("--resume: {e}")))?;
            self.current = TensorStore::default();
        } else {
            step::init_block(
                self.be,
                l,
                &mut Rng::new(self.run.args.seed ^ (0xB10C + i as u64)),
            )
            .map_err(|e| failed(format!("initialising block {}: {e}", i + 1)))?;
            self.state.blocks.push(BlockResult {
                seconds: 0.0,
                train_seconds: 0.0,
                images: 0,
                epochs: Vec::new(),
            });
        }
        Ok(())
    }

    /// One epoch of block `i` (its progress bar and summary line); returns its seconds and
    /// per-segment statistics.
    fn train_epoch(
        &mut self,
        i: usize,
        l: &BlockLayout,
        epoch: u32,
        order: &mut [u32],
    ) -> Result<(f64, [SegStats; MAX_UNITS]), CliError> {
        let (run, plan) = (self.run, self.run.plan());
        let ranks = self.world.world();
        let nb = schedule::batches(order.len(), l.batch) as u64;
        epoch_order(run.args.seed, i, epoch, order);
        let label = format!(
            "block {}/{} (units {}-{}, batch {}) epoch {}/{}",
            i + 1,
            plan.n_blocks,
            l.first,
            l.last,
            l.batch,
            epoch + 1,
            run.args.epochs
        );
        let mut bar = Progress::new(label, nb);
        let t0 = Instant::now();
        let mut seen = 0u64;
        let mut st = [SegStats::default(); MAX_UNITS];
        self.feed
            .set_augmenting(run.augment.map(|augment| Augmenting {
                augment,
                seed: run.args.seed,
                block: i,
                epoch,
            }));
        collective::train_epoch_with(
            self.be,
            self.world,
            &mut self.scratch,
            l,
            &mut self.feed,
            &run.cfg,
            epoch,
            order,
            &mut st,
            |done, _, s| {
                seen = ((done * l.batch).min(order.len()) * ranks) as u64;
                let last = s[s.len() - 1];
                bar.update(
                    done as u64,
                    last.mean_loss(),
                    last.accuracy(),
                    seen as f64 / t0.elapsed().as_secs_f64(),
                );
            },
        )
        .map_err(stats_err)?;
        let secs = t0.elapsed().as_secs_f64();
        let nseg = l.n_segments();
        let summary: Vec<String> = (0..nseg)
            .map(|k| {
                format!(
                    "u{} loss {:.3} acc {:.1}%",
                    l.first + k.min(l.last - l.first),
                    st[k].mean_loss(),
                    100.0 * st[k].accuracy()
                )
            })
            .collect();
        bar.finish(&format!(
            "{:.1}s, {:.0} img/s: {}",
            secs,
            (order.len() * ranks) as f64 / secs,
            summary.join(", ")
        ));
        warn_if_diverged(
            &st[..nseg],
            l.first,
            l.last,
            epoch,
            plan.classes,
            run.args.lr,
        );
        Ok((secs, st))
    }

    /// Add epoch `epoch` (`secs` seconds over `samples` samples per rank, statistics `st`) to
    /// the block's result.
    fn record_epoch(
        &mut self,
        l: &BlockLayout,
        epoch: u32,
        secs: f64,
        st: &[SegStats; MAX_UNITS],
        samples: usize,
    ) {
        let nseg = l.n_segments();
        let ranks = self.world.world();
        let b = self.state.blocks.last_mut().expect("block result");
        b.train_seconds += secs;
        b.images += (samples * ranks) as u64;
        b.epochs.push(json!({
            "epoch": epoch + 1,
            "seconds": secs,
            "loss": (0..nseg).map(|k| st[k].mean_loss()).collect::<Vec<_>>(),
            "train_acc": (0..nseg).map(|k| st[k].accuracy()).collect::<Vec<_>>(),
        }));
        self.state.epoch = epoch + 1;
    }

    /// Save the checkpoint with the block in training (`l`) beside the frozen units.
    fn checkpoint_current(&mut self, l: &BlockLayout) -> Result<(), CliError> {
        let mut cur = TensorStore::default();
        read_block(self.be, l, &mut cur, true);
        check_same(
            self.world,
            self.frozen.tensors.iter().chain(cur.tensors.iter()),
        )?;
        if self.world.rank() == 0 {
            save_checkpoint(self.run, &self.state, &self.frozen, Some(&cur), self.start)?;
        }
        Ok(())
    }

    /// Freeze block `i`: score its heads and compute the next block's inputs (from the images
    /// as they are: the cache holds the features of unaugmented images), then keep its weights.
    fn evaluate_and_freeze(&mut self, i: usize, l: &BlockLayout) -> Result<(), CliError> {
        let plan = self.run.plan();
        self.feed.set_augmenting(None);
        plan_cache(self.run, &mut self.feed, i)?;
        let (mut val, mut test) = pass_block(self.be, l, &mut self.feed)?;
        // Every decision below is taken on the statistics of all ranks.
        reduce(self.world, &mut val[..l.n_segments()])?;
        reduce(self.world, &mut test[..l.n_segments()])?;
        read_block(self.be, l, &mut self.frozen, false);
        for k in 0..l.n_segments() {
            let unit = if plan.mode == Mode::Bp {
                l.last
            } else {
                l.first + k
            };
            self.state.heads.push(HeadResult {
                unit,
                filters: plan.heads[unit],
                val_acc: val[k].accuracy(),
                test_acc: test[k].accuracy(),
            });
            progress::log(&format!(
                "  unit {unit} {}: val {:.2}% test {:.2}%",
                head_label(plan, unit),
                100.0 * val[k].accuracy(),
                100.0 * test[k].accuracy()
            ));
        }
        Ok(())
    }

    /// After block `i` (NeuroFlux mode): stop when `--patience` units in a row gave no
    /// validation gain and blocks are left.
    fn choose_exit(&mut self, i: usize) {
        let plan = self.run.plan();
        let accs: Vec<f32> = self.state.heads.iter().map(|h| h.val_acc).collect();
        let stop = plan.mode == Mode::NeuroFlux
            && schedule::no_gain(&accs, self.run.args.patience)
            && self.state.block < plan.n_blocks;
        if stop {
            progress::log(&format!(
                "patience: {} unit(s) without validation gain; stopping after block {}",
                self.run.args.patience,
                i + 1
            ));
            self.state.block = plan.n_blocks;
        }
    }

    /// After the last block: every rank's peak resident memory gathered, then rank 0 writes
    /// the model files and the report.
    fn finish_run(self, device_report: impl Fn(&B) -> Value) -> Result<(), CliError> {
        let ranks = self.world.world();
        self.be.sync().map_err(|e| failed(format!("device: {e}")))?;
        let mut rss = vec![0f64; ranks];
        rss[self.world.rank()] = crate::run_plan::peak_rss_bytes().unwrap_or(0) as f64;
        self.world
            .all_reduce_stats(&mut rss)
            .map_err(|e| failed(e.to_string()))?;
        if self.world.rank() > 0 {
            return Ok(());
        }
        let mut device = device_report(self.be);
        if let Value::Object(d) = &mut device {
            d.insert("world".into(), json!(ranks));
            if ranks > 1 {
                d.insert(
                    "rank_peak_rss_bytes".into(),
                    json!(rss.iter().map(|&b| b as u64).collect::<Vec<_>>()),
                );
            }
        }
        finish(self.run, &self.state, &self.frozen, self.start, device)
    }
}

/// `(classifier)` or `(head, F filters)` for unit `unit`.
fn head_label(plan: &Plan, unit: usize) -> String {
    if unit + 1 == plan.model.units.len() {
        "(classifier)".to_string()
    } else {
        format!("(head, {} filters)", plan.heads[unit])
    }
}

/// A line on the console when a segment's mean training loss in an epoch is not finite or far
/// above chance level (20x `ln(classes)`): the run goes on, the user learns why its accuracy
/// collapsed and what usually helps.
fn warn_if_diverged(
    st: &[SegStats],
    first: usize,
    last: usize,
    epoch: u32,
    classes: usize,
    lr: f32,
) {
    let chance = (classes as f32).ln().max(1.0);
    for (k, s) in st.iter().enumerate() {
        let loss = s.mean_loss();
        if !loss.is_finite() || loss > 20.0 * chance {
            crate::progress::log(&format!(
                "warning: unit {} diverged in epoch {} (mean training loss {loss:.3e}); a lower \
                 --lr (now {lr}) or batch norm after its layers usually helps",
                first + k.min(last - first),
                epoch + 1
            ));
        }
    }
}
