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
        feed.start_next(run.args.host.cache_dtype, per)?;
    }
    Ok(())
}

/// Train every block of the run from `state` on `be`, then write the model files and the
/// report (`device_report` adds the backend's own figures to it).
pub(super) fn execute<B: Backend>(
    run: &Run,
    mut state: RunState,
    ckpt: Option<TensorStore>,
    be: &mut B,
    world: &mut World,
    device_report: impl Fn(&B) -> Value,
) -> Result<(), CliError> {
    let start = Instant::now();
    let plan = run.plan();
    let ranks = world.world();
    // The host buffer a segment's gradients are read into for the reduction (none alone).
    let mut scratch = vec![0.0f32; plan.reduce_floats()];
    // The checkpoint's frozen units, and the block in training (moved out, not copied).
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
    let mut feed = HostFeed::new(
        [&run.train, &run.val, &run.test],
        Source::Data,
        run.train.shape().len(),
        staging_floats(&run.model, plan.input),
    );
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
    // On resume, rebuild the cache of the current block's input from the frozen blocks.
    if state.block > 0 && state.block < plan.n_blocks && plan.chain(state.block).is_none() {
        progress::log("resuming: recomputing the activation cache from the frozen blocks");
        for j in 0..state.block {
            let l = plan.layout(j);
            next_source(run, be, &mut feed, j, &frozen)?;
            plan_cache(run, &mut feed, j)?;
            write_block(be, &l, &frozen, false).map_err(|e| usage(format!("--resume: {e}")))?;
            pass_block(be, &l, &mut feed)?;
        }
    }
    while state.block < plan.n_blocks {
        let i = state.block;
        let l = plan.layout(i);
        next_source(run, be, &mut feed, i, &frozen)?;
        let block_start = Instant::now();
        let resumed = state.epoch > 0;
        if resumed {
            write_block(be, &l, &current, true).map_err(|e| usage(format!("--resume: {e}")))?;
            current = TensorStore::default();
        } else {
            step::init_block(be, &l, &mut Rng::new(run.args.seed ^ (0xB10C + i as u64)))
                .map_err(|e| failed(format!("initialising block {}: {e}", i + 1)))?;
            state.blocks.push(BlockResult {
                seconds: 0.0,
                train_seconds: 0.0,
                images: 0,
                epochs: Vec::new(),
            });
        }
        let mut order = vec![0u32; run.train.len()];
        let nb = schedule::batches(order.len(), l.batch) as u64;
        for epoch in state.epoch..run.args.epochs {
            epoch_order(run.args.seed, i, epoch, &mut order);
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
            feed.set_augmenting(run.augment.map(|augment| Augmenting {
                augment,
                seed: run.args.seed,
                block: i,
                epoch,
            }));
            collective::train_epoch_with(
                be,
                world,
                &mut scratch,
                &l,
                &mut feed,
                &run.cfg,
                epoch,
                &order,
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
            let b = state.blocks.last_mut().expect("block result");
            b.train_seconds += secs;
            b.images += (order.len() * ranks) as u64;
            b.epochs.push(json!({
                "epoch": epoch + 1,
                "seconds": secs,
                "loss": (0..nseg).map(|k| st[k].mean_loss()).collect::<Vec<_>>(),
                "train_acc": (0..nseg).map(|k| st[k].accuracy()).collect::<Vec<_>>(),
            }));
            state.epoch = epoch + 1;
            // Checkpoint the block in progress (after its last epoch too: an interruption of
            // the pass below then loses no training).
            let mut cur = TensorStore::default();
            read_block(be, &l, &mut cur, true);
            check_same(world, frozen.tensors.iter().chain(cur.tensors.iter()))?;
            if world.rank() == 0 {
                save_checkpoint(run, &state, &frozen, Some(&cur), start)?;
            }
        }
        // Freeze: score the heads and compute the next block's inputs (from the images as
        // they are: the cache holds the features of unaugmented images).
        feed.set_augmenting(None);
        plan_cache(run, &mut feed, i)?;
        let (mut val, mut test) = pass_block(be, &l, &mut feed)?;
        // Every decision below is taken on the statistics of all ranks.
        reduce(world, &mut val[..l.n_segments()])?;
        reduce(world, &mut test[..l.n_segments()])?;
        read_block(be, &l, &mut frozen, false);
        for k in 0..l.n_segments() {
            let unit = if plan.mode == Mode::Bp {
                l.last
            } else {
                l.first + k
            };
            state.heads.push(HeadResult {
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
        state.blocks.last_mut().expect("block result").seconds +=
            block_start.elapsed().as_secs_f64();
        state.block += 1;
        state.epoch = 0;
        let accs: Vec<f32> = state.heads.iter().map(|h| h.val_acc).collect();
        let stop = plan.mode == Mode::NeuroFlux
            && schedule::no_gain(&accs, run.args.patience)
            && state.block < plan.n_blocks;
        if stop {
            progress::log(&format!(
                "patience: {} unit(s) without validation gain; stopping after block {}",
                run.args.patience,
                i + 1
            ));
            state.block = plan.n_blocks;
        }
        check_same(world, frozen.tensors.iter())?;
        if world.rank() == 0 {
            save_checkpoint(run, &state, &frozen, None, start)?;
        }
    }
    be.sync().map_err(|e| failed(format!("device: {e}")))?;
    // Every rank's peak resident memory, for rank 0's report.
    let mut rss = vec![0f64; ranks];
    rss[world.rank()] = crate::memory::peak_rss_bytes().unwrap_or(0) as f64;
    world
        .all_reduce_stats(&mut rss)
        .map_err(|e| failed(e.to_string()))?;
    if world.rank() > 0 {
        return Ok(());
    }
    let mut device = device_report(be);
    if let Value::Object(d) = &mut device {
        d.insert("world".into(), json!(ranks));
        if ranks > 1 {
            d.insert(
                "rank_peak_rss_bytes".into(),
                json!(rss.iter().map(|&b| b as u64).collect::<Vec<_>>()),
            );
        }
    }
    finish(run, &state, &frozen, start, device)
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
