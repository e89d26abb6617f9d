//! Data-parallel training: the few collective operations a block-local step needs across
//! processes (ranks), behind a trait, so that the step stays `no_std` and knows no transport.
//!
//! Local learning trains one segment (a unit and its head) at a time, so a step needs only
//! the sum of one segment's parameter gradients across ranks (a contiguous region of the
//! arena) and, once an epoch, a few counters (loss sums, correct predictions) and the batch
//! norm running statistics. Every rank trains on its own equal shard of the training split;
//! [`train_step_with`] reduces a segment's gradients after its backward pass and before its
//! SGD update, each rank's gradients scaled by its share of the global batch so that the loss
//! is the global mean. With the same initial weights (the same seed) and the same sum on
//! every rank, every rank then holds the same weights after every step.
//!
//! [`Solo`] is the world of one: every operation is a no-op and the `_with` entry points call
//! the plain ones, so a single process (and a firmware) trains bit for bit as without this
//! module. A host implements [`Collective`] over MPI (nf-host's `mpi` feature) or over
//! threads (nf-host's virtual ranks, the single-process reference of a multi-rank run).
use crate::backend::Backend;
use crate::layout::BlockLayout;
use crate::model::MAX_UNITS;
use crate::optim::Sgd;
use crate::region::Region;
use crate::schedule::{Feed, TrainConfig, TrainError};
use crate::step::{self, SegStats, StepError};

pub mod error;
pub use error::CollectiveError;

/// The operations data-parallel training needs from a group of `world()` ranks. Every rank
/// calls the same operations in the same order (they are collective: each blocks until every
/// rank has called it).
pub trait Collective {
    /// This process's rank, `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Replace `buf` by its element-wise sum over all ranks; every rank receives the same
    /// values.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError>;
    /// [`Collective::all_reduce_sum`] for the small statistics (loss sums, counts), in `f64`.
    fn all_reduce_stats(&mut self, buf: &mut [f64]) -> Result<(), CollectiveError>;
    /// Replace `buf` on every rank by rank `root`'s.
    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<(), CollectiveError>;
    /// Replace region `r` of the backend's arena by its mean over the ranks, in place, when
    /// this collective reaches the arena itself (NCCL over a GPU's arena, queued on the
    /// backend's stream after the kernels that wrote the region and before those that read
    /// it): `Ok(true)`. `Ok(false)`, the default: it does not, and the caller goes through
    /// host memory ([`Collective::all_reduce_sum`]).
    fn all_reduce_mean_in_arena(&mut self, r: Region) -> Result<bool, CollectiveError> {
        let _ = r;
        Ok(false)
    }
}

/// The world of one: rank 0 of 1, every operation a no-op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_reduce_stats(&mut self, _: &mut [f64]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [u8], _: usize) -> Result<(), CollectiveError> {
        Ok(())
    }
}

/// Host elements the `_with` entry points need as reduction scratch for `layout`: the
/// largest segment's parameters or BN state.
pub const fn scratch_floats(layout: &BlockLayout) -> usize {
    let mut m = 0;
    let mut k = 0;
    while k < layout.n_segments() {
        let s = layout.seg_params[k].len();
        let b = layout.seg_state[k].len();
        if s > m {
            m = s;
        }
        if b > m {
            m = b;
        }
        k += 1;
    }
    m
}

fn scratch_for(scratch: &mut [f32], len: usize) -> Result<&mut [f32], CollectiveError> {
    let got = scratch.len();
    scratch
        .get_mut(..len)
        .ok_or(CollectiveError::ScratchTooSmall { needed: len, got })
}

/// [`step::train_step`] on one rank of `coll`: the `n` samples are this rank's part of a
/// global batch of `n * world` samples (every rank's shard is the same size), and each
/// segment's gradients are summed over the ranks, each rank's scaled by `n / (n * world)`,
/// before the segment's update. `scratch` holds at least [`scratch_floats`] elements. With a
/// world of one this is exactly [`step::train_step`].
#[allow(clippy::too_many_arguments)]
pub fn train_step_with<B: Backend, C: Collective>(
    be: &mut B,
    coll: &mut C,
    scratch: &mut [f32],
    layout: &BlockLayout,
    n: usize,
    opt: &Sgd,
    lr: f32,
    stats: &mut [SegStats],
) -> Result<(), StepError<B::Error>> {
    let world = coll.world();
    if world == 1 {
        return step::train_step(be, layout, n, opt, lr, stats);
    }
    let share = n as f32 / (n * world) as f32;
    step::train_step_hooked(be, layout, n, opt, lr, stats, |be, seg| {
        // Every rank's share is 1 / world (equal shards): the sum of the scaled gradients is
        // their mean, which a collective that reaches the arena computes there.
        if coll
            .all_reduce_mean_in_arena(seg.param_grads)
            .map_err(StepError::Collective)?
        {
            return Ok(());
        }
        let g = scratch_for(scratch, seg.param_grads.len()).map_err(StepError::Collective)?;
        be.sync().map_err(StepError::Backend)?;
        be.read(seg.param_grads, g);
        for v in g.iter_mut() {
            *v *= share;
        }
        coll.all_reduce_sum(g).map_err(StepError::Collective)?;
        be.write(seg.param_grads, g);
        Ok(())
    })
}

/// Sum every segment's statistics over the ranks (loss sums, correct predictions, samples).
pub fn reduce_stats<C: Collective>(
    coll: &mut C,
    stats: &mut [SegStats],
) -> Result<(), CollectiveError> {
    if coll.world() == 1 {
        return Ok(());
    }
    let mut buf = [0f64; 3 * MAX_UNITS];
    let n = stats.len().min(MAX_UNITS);
    for (k, s) in stats[..n].iter().enumerate() {
        buf[3 * k] = f64::from(s.loss);
        buf[3 * k + 1] = f64::from(s.correct);
        buf[3 * k + 2] = f64::from(s.samples);
    }
    coll.all_reduce_stats(&mut buf[..3 * n])?;
    for (k, s) in stats[..n].iter_mut().enumerate() {
        s.loss = buf[3 * k] as f32;
        s.correct = buf[3 * k + 1] as u32;
        s.samples = buf[3 * k + 2] as u32;
    }
    Ok(())
}

/// Replace every segment's batch-norm running statistics by their mean over the ranks (the
/// batch statistics of a step are each rank's own; the running ones, used in evaluation and
/// written to model files, are averaged at the end of every epoch).
pub fn average_bn_state<B: Backend, C: Collective>(
    be: &mut B,
    coll: &mut C,
    scratch: &mut [f32],
    layout: &BlockLayout,
) -> Result<(), StepError<B::Error>> {
    let world = coll.world();
    if world == 1 {
        return Ok(());
    }
    let inv = 1.0 / world as f32;
    for k in 0..layout.n_segments() {
        let r = layout.seg_state[k];
        if r.is_empty() {
            continue;
        }
        if coll
            .all_reduce_mean_in_arena(r)
            .map_err(StepError::Collective)?
        {
            continue;
        }
        let s = scratch_for(scratch, r.len()).map_err(StepError::Collective)?;
        be.read(r, s);
        coll.all_reduce_sum(s).map_err(StepError::Collective)?;
        for v in s.iter_mut() {
            *v *= inv;
        }
        be.write(r, s);
    }
    be.sync().map_err(StepError::Backend)
}

/// Whether every rank holds the same `value` (e.g. a hash of its weights): rank 0's is
/// broadcast and the ranks that differ are counted.
pub fn same_everywhere<C: Collective>(coll: &mut C, value: u64) -> Result<bool, CollectiveError> {
    if coll.world() == 1 {
        return Ok(true);
    }
    let mut root = value.to_le_bytes();
    coll.broadcast(&mut root, 0)?;
    let mut differ = [f64::from(u8::from(u64::from_le_bytes(root) != value))];
    coll.all_reduce_stats(&mut differ)?;
    Ok(differ[0] == 0.0)
}

/// [`crate::schedule::train_epoch`] on one rank of `coll`: `order` is this rank's shard (the
/// same length on every rank), the learning rate follows the global batch (`world` times the
/// layout's), every step goes through [`train_step_with`], and at the end the statistics are
/// summed over the ranks and the BN running statistics averaged.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch_with<B: Backend, F: Feed<B>, C: Collective>(
    be: &mut B,
    coll: &mut C,
    scratch: &mut [f32],
    layout: &BlockLayout,
    feed: &mut F,
    cfg: &TrainConfig,
    epoch: u32,
    order: &[u32],
    stats: &mut [SegStats; MAX_UNITS],
    on_batch: impl FnMut(usize, usize, &[SegStats]),
) -> Result<(), TrainError<B::Error, F::Error>> {
    if coll.world() == 1 {
        return crate::schedule::train_epoch(be, layout, feed, cfg, epoch, order, stats, on_batch);
    }
    crate::schedule::train_epoch_stepping(
        be,
        layout,
        feed,
        cfg,
        epoch,
        order,
        &mut [],
        stats,
        on_batch,
        layout.batch * coll.world(),
        |be, n, lr, st| train_step_with(be, coll, scratch, layout, n, &cfg.sgd, lr, st),
    )?;
    let nseg = layout.n_segments();
    reduce_stats(coll, &mut stats[..nseg])
        .map_err(|e| TrainError::Step(StepError::Collective(e)))?;
    average_bn_state(be, coll, scratch, layout).map_err(TrainError::Step)
}
