//! The training schedule of one block: epochs of shuffled batches, the learning rate that
//! follows the block's batch size, evaluation passes that hand the block's outputs on, and the
//! early-exit rules. The data comes through [`Feed`], so the same schedule runs on a host (with
//! an activation cache) and in firmware (recomputing inputs).
use crate::backend::Backend;
use crate::layout::BlockLayout;
use crate::model::MAX_UNITS;
use crate::optim::{Schedule, Sgd};
use crate::rng::Rng;
use crate::step::{self, SegStats, StepError};

/// A split of the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training samples.
    Train,
    /// Held-out validation samples (early exit is chosen on these).
    Val,
    /// Test samples.
    Test,
}

/// Where a block's inputs come from and where its outputs go.
pub trait Feed<B: Backend> {
    /// The error the data source may report.
    type Error;
    /// Number of samples of `split`.
    fn len(&self, split: Split) -> usize;
    /// Write the block inputs and labels of samples `idx` of `split` to `layout.input` and
    /// `layout.labels`.
    fn load(
        &mut self,
        be: &mut B,
        layout: &BlockLayout,
        split: Split,
        idx: &[u32],
    ) -> Result<(), Self::Error>;
    /// Called after each evaluation batch with the block's output in
    /// [`BlockLayout::output`] (local mode), so that it can be cached for the next block.
    fn output(
        &mut self,
        be: &mut B,
        layout: &BlockLayout,
        split: Split,
        idx: &[u32],
    ) -> Result<(), Self::Error> {
        let _ = (be, layout, split, idx);
        Ok(())
    }
}

/// Why a schedule step failed.
#[derive(Debug)]
pub enum TrainError<BE, FE> {
    /// The step was refused or the backend failed.
    Step(StepError<BE>),
    /// The data source failed.
    Feed(FE),
}

/// Hyper-parameters of block training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Optimiser.
    pub sgd: Sgd,
    /// Learning rate at the reference batch size.
    pub base_lr: f32,
    /// Reference batch size of the linear scaling rule.
    pub ref_batch: usize,
    /// Learning-rate schedule over the block's epochs.
    pub schedule: Schedule,
    /// Epochs per block.
    pub epochs: u32,
}

impl TrainConfig {
    /// Peak learning rate for a block of batch size `batch` (linear scaling rule).
    pub fn block_lr(&self, batch: usize) -> f32 {
        self.base_lr * batch as f32 / self.ref_batch as f32
    }
}

/// Batches in one epoch of `n` samples at batch size `b`.
pub fn batches(n: usize, b: usize) -> usize {
    n.div_ceil(b)
}

/// A sample index in an epoch order: `u32`, or `u16` where a split has at most 65,536 samples
/// (half the memory: 8 KB instead of 16 KB for 4,000 images on a microcontroller).
pub trait SampleIndex: Copy {
    /// The most samples an order of this type can index.
    const MAX_SAMPLES: usize;
    /// Index `i` (which must be below [`SampleIndex::MAX_SAMPLES`]).
    fn from_index(i: usize) -> Self;
    /// The indices of `chunk` as `u32`: the chunk itself for `u32`, else converted into `buf`
    /// (which must hold at least `chunk.len()`).
    fn as_u32s<'a>(chunk: &'a [Self], buf: &'a mut [u32]) -> &'a [u32];
}

impl SampleIndex for u32 {
    const MAX_SAMPLES: usize = (u32::MAX as usize).saturating_add(1);
    fn from_index(i: usize) -> Self {
        debug_assert!(
            u32::try_from(i).is_ok(),
            "sample index {i} does not fit u32"
        );
        i as u32
    }
    fn as_u32s<'a>(chunk: &'a [u32], _: &'a mut [u32]) -> &'a [u32] {
        chunk
    }
}

impl SampleIndex for u16 {
    const MAX_SAMPLES: usize = 1 << 16;
    fn from_index(i: usize) -> Self {
        debug_assert!(
            u16::try_from(i).is_ok(),
            "sample index {i} does not fit u16"
        );
        i as u16
    }
    fn as_u32s<'a>(chunk: &'a [u16], buf: &'a mut [u32]) -> &'a [u32] {
        let buf = &mut buf[..chunk.len()];
        for (d, &s) in buf.iter_mut().zip(chunk) {
            *d = u32::from(s);
        }
        buf
    }
}

/// The sample order of a training epoch: `len()` positions, each a sample index. A slice of
/// any [`SampleIndex`] type is one; a device short of RAM can compute its indices instead of
/// storing them (a keyed permutation of `0..n`: no buffer of `n` indices at all), for
/// [`train_epoch_by`].
pub trait SampleOrder {
    /// Positions (samples) of the epoch.
    fn len(&self) -> usize;
    /// Whether the epoch has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The sample indices at positions `start..end` (`end <= len()`), as `u32`: borrowed from
    /// the order itself or written into `buf`, which holds at least `end - start`.
    fn indices<'a>(&'a self, start: usize, end: usize, buf: &'a mut [u32]) -> &'a [u32];
}

impl<I: SampleIndex> SampleOrder for [I] {
    fn len(&self) -> usize {
        <[I]>::len(self)
    }
    fn indices<'a>(&'a self, start: usize, end: usize, buf: &'a mut [u32]) -> &'a [u32] {
        I::as_u32s(&self[start..end], buf)
    }
}

/// The sample order of `epoch` of block `block`: a permutation of `0..order.len()` that depends
/// only on the seed, the block and the epoch (so a resumed run sees the same order), in `u32`
/// or `u16` indices (the same permutation either way).
///
/// # Panics
/// When `order` is longer than its index type can count ([`SampleIndex::MAX_SAMPLES`]): a
/// `u16` order of more than 65,536 samples would repeat indices.
pub fn epoch_order<I: SampleIndex>(seed: u64, block: usize, epoch: u32, order: &mut [I]) {
    assert!(
        order.len() <= I::MAX_SAMPLES,
        "an epoch order of {} samples does not fit its index type",
        order.len()
    );
    for (i, o) in order.iter_mut().enumerate() {
        *o = I::from_index(i);
    }
    let mix = seed
        ^ (block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (epoch as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    Rng::new(mix).shuffle(order);
}

/// Batches between two reads of the scores a device backend defers
/// ([`Backend::defers_scores`]) within an epoch: the running statistics handed to `on_batch`
/// lag by at most this many batches, and the device waits for the host once per this many
/// steps, not every step.
pub const SCORE_EVERY: usize = 50;

/// Train one epoch of the block over the samples in `order`. `on_batch(done, total, stats)`
/// is called after every batch with the running statistics of each segment (up to
/// [`SCORE_EVERY`] batches behind on a backend that defers its scores; complete at the end).
///
/// The data comes through a [`Feed`]; here, a few images held in memory:
///
/// ```
/// use nf_core::backend::Backend;
/// use nf_core::layout::BlockLayout;
/// use nf_core::model::MAX_UNITS;
/// use nf_core::optim::{Schedule, Sgd};
/// use nf_core::plan::{plan, Mode, PlanOptions};
/// use nf_core::reference::ReferenceBackend;
/// use nf_core::rng::Rng;
/// use nf_core::schedule::{self, Feed, Split, TrainConfig};
/// use nf_core::step::{self, SegStats};
/// use nf_core::zoo;
///
/// /// Images of one value each, labelled by that value's tenth.
/// struct Flat { n: usize }
/// impl<B: Backend> Feed<B> for Flat {
///     type Error = core::convert::Infallible;
///     fn len(&self, _: Split) -> usize {
///         self.n
///     }
///     fn load(&mut self, be: &mut B, l: &BlockLayout, _: Split, idx: &[u32])
///         -> Result<(), Self::Error> {
///         let per = l.model.unit_input(l.input_shape, l.first).len();
///         for (k, &i) in idx.iter().enumerate() {
///             be.fill(l.input.sub(k * per, per), i as f32 / self.n as f32);
///             be.fill(l.labels.sub(k, 1), (10 * i as usize / self.n) as f32);
///         }
///         Ok(())
///     }
/// }
///
/// let m = &zoo::VGG_SMALL;
/// let options = PlanOptions { b_max: 16, ..PlanOptions::DEFAULT };
/// let p = plan(m, m.input, 10, 4 << 20, Mode::NeuroFlux, &options)?;
/// let layout = p.layout(0);
/// let mut arena = vec![0.0; layout.floats];
/// let mut be = ReferenceBackend::new(&mut arena);
/// step::init_block(&mut be, &layout, &mut Rng::new(1))?;
///
/// let cfg = TrainConfig {
///     sgd: Sgd::default(),
///     base_lr: 0.1,
///     ref_batch: 128,
///     schedule: Schedule::OneCycle,
///     epochs: 1,
/// };
/// let mut order = vec![0u32; 40];
/// schedule::epoch_order(7, 0, 0, &mut order);
/// let mut stats = [SegStats::default(); MAX_UNITS];
/// let mut batches = 0;
/// schedule::train_epoch(&mut be, &layout, &mut Flat { n: 40 }, &cfg, 0, &order, &mut stats,
///     |done, total, _| { batches = done; assert!(done <= total) })?;
/// assert_eq!(batches, schedule::batches(40, layout.batch));
/// assert_eq!(stats[0].samples, 40);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn train_epoch<B: Backend, F: Feed<B>>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut F,
    cfg: &TrainConfig,
    epoch: u32,
    order: &[u32],
    stats: &mut [SegStats; MAX_UNITS],
    on_batch: impl FnMut(usize, usize, &[SegStats]),
) -> Result<(), TrainError<B::Error, F::Error>> {
    train_epoch_in(
        be,
        layout,
        feed,
        cfg,
        epoch,
        order,
        &mut [],
        stats,
        on_batch,
    )
}

/// [`train_epoch`] over an order of any [`SampleIndex`] type: `idx` is scratch of at least the
/// block's batch size where the indices are not `u32` (it may be empty for `u32`).
///
/// # Panics
/// When `idx` is shorter than a batch that must be converted.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch_in<B: Backend, F: Feed<B>, I: SampleIndex>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut F,
    cfg: &TrainConfig,
    epoch: u32,
    order: &[I],
    idx: &mut [u32],
    stats: &mut [SegStats; MAX_UNITS],
    on_batch: impl FnMut(usize, usize, &[SegStats]),
) -> Result<(), TrainError<B::Error, F::Error>> {
    train_epoch_by(be, layout, feed, cfg, epoch, order, idx, stats, on_batch)
}

/// [`train_epoch_in`] over any [`SampleOrder`]: the same batches, learning rates and steps as
/// the slice of the same indices gives (a firmware computes its order instead of keeping
/// `n` indices in RAM). `idx` is scratch of at least the block's batch size where the order
/// writes its indices there.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch_by<B: Backend, F: Feed<B>, O: SampleOrder + ?Sized>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut F,
    cfg: &TrainConfig,
    epoch: u32,
    order: &O,
    idx: &mut [u32],
    stats: &mut [SegStats; MAX_UNITS],
    on_batch: impl FnMut(usize, usize, &[SegStats]),
) -> Result<(), TrainError<B::Error, F::Error>> {
    train_epoch_stepping(
        be,
        layout,
        feed,
        cfg,
        epoch,
        order,
        idx,
        stats,
        on_batch,
        layout.batch,
        |be, n, lr, st| step::train_step(be, layout, n, &cfg.sgd, lr, st),
    )
}

/// [`train_epoch_in`] with the step of `n` samples at learning rate `lr` made by
/// `step(be, n, lr, stats)` (data-parallel training reduces gradients inside it), and the
/// learning rate of batch size `lr_batch` (the global batch of data-parallel training).
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_epoch_stepping<B: Backend, F: Feed<B>, O: SampleOrder + ?Sized>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut F,
    cfg: &TrainConfig,
    epoch: u32,
    order: &O,
    idx: &mut [u32],
    stats: &mut [SegStats; MAX_UNITS],
    mut on_batch: impl FnMut(usize, usize, &[SegStats]),
    lr_batch: usize,
    mut step: impl FnMut(&mut B, usize, f32, &mut [SegStats]) -> Result<(), StepError<B::Error>>,
) -> Result<(), TrainError<B::Error, F::Error>> {
    let b = layout.batch;
    let per_epoch = batches(order.len(), b);
    let total = (per_epoch as u32).saturating_mul(cfg.epochs);
    let peak = cfg.block_lr(lr_batch);
    *stats = [SegStats::default(); MAX_UNITS];
    let nseg = layout.n_segments();
    let defer = be.defers_scores();
    let mut pending = [SegStats::default(); MAX_UNITS];
    for i in 0..per_epoch {
        let start = i * b;
        let idx = order.indices(start, (start + b).min(order.len()), &mut *idx);
        feed.load(be, layout, Split::Train, idx)
            .map_err(TrainError::Feed)?;
        let lr = cfg
            .schedule
            .lr(peak, epoch * per_epoch as u32 + i as u32, total);
        let mut st = [SegStats::default(); MAX_UNITS];
        step(be, idx.len(), lr, &mut st[..nseg]).map_err(TrainError::Step)?;
        for k in 0..nseg {
            pending[k].add(st[k]);
        }
        if !defer || i + 1 == per_epoch || (i + 1) % SCORE_EVERY == 0 {
            step::collect_scores(be, &mut pending[..nseg]);
            for k in 0..nseg {
                stats[k].add(pending[k]);
            }
            pending = [SegStats::default(); MAX_UNITS];
        }
        on_batch(i + 1, per_epoch, &stats[..nseg]);
    }
    Ok(())
}

/// Evaluate every segment of the block on all of `split` (BN in evaluation mode), handing each
/// batch's output to [`Feed::output`]. `idx` is scratch of at least the block's batch size.
pub fn evaluate<B: Backend, F: Feed<B>>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut F,
    split: Split,
    idx: &mut [u32],
    stats: &mut [SegStats; MAX_UNITS],
) -> Result<(), TrainError<B::Error, F::Error>> {
    let n = feed.len(split);
    let b = layout.batch.min(idx.len());
    *stats = [SegStats::default(); MAX_UNITS];
    let nseg = layout.n_segments();
    let mut start = 0;
    while start < n {
        let m = b.min(n - start);
        for (j, v) in idx[..m].iter_mut().enumerate() {
            *v = (start + j) as u32;
        }
        feed.load(be, layout, split, &idx[..m])
            .map_err(TrainError::Feed)?;
        let mut st = [SegStats::default(); MAX_UNITS];
        step::eval_step(be, layout, m, &mut st[..nseg]).map_err(TrainError::Step)?;
        feed.output(be, layout, split, &idx[..m])
            .map_err(TrainError::Feed)?;
        for k in 0..nseg {
            stats[k].add(st[k]);
        }
        start += m;
    }
    step::collect_scores(be, &mut stats[..nseg]);
    Ok(())
}

/// Run the block's units (no heads) over all of `split`, handing each batch's output to
/// [`Feed::output`]: fills the activation cache where no accuracy is needed.
pub fn propagate<B: Backend, F: Feed<B>>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut F,
    split: Split,
    idx: &mut [u32],
) -> Result<(), TrainError<B::Error, F::Error>> {
    let n = feed.len(split);
    let b = layout.batch.min(idx.len());
    let mut start = 0;
    while start < n {
        let m = b.min(n - start);
        for (j, v) in idx[..m].iter_mut().enumerate() {
            *v = (start + j) as u32;
        }
        feed.load(be, layout, split, &idx[..m])
            .map_err(TrainError::Feed)?;
        step::infer_step(be, layout, m).map_err(TrainError::Step)?;
        feed.output(be, layout, split, &idx[..m])
            .map_err(TrainError::Feed)?;
        start += m;
    }
    Ok(())
}

/// The early exit: the earliest unit whose validation accuracy is within `tolerance`
/// (a fraction, e.g. 0.005 for half a point) of the best. `val_acc[u]` is unit `u`'s.
pub fn select_exit(val_acc: &[f32], tolerance: f32) -> usize {
    let best = val_acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    val_acc
        .iter()
        .position(|&a| a >= best - tolerance)
        .unwrap_or(0)
}

/// Whether training should stop: the last `patience` units brought no gain over the best
/// accuracy before them (`patience == 0` never stops).
pub fn no_gain(val_acc: &[f32], patience: usize) -> bool {
    if patience == 0 || val_acc.len() <= patience {
        return false;
    }
    let (before, recent) = val_acc.split_at(val_acc.len() - patience);
    let best_before = before.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    recent.iter().all(|&a| a <= best_before)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    #[should_panic(expected = "does not fit its index type")]
    fn a_u16_order_longer_than_65536_is_refused() {
        let mut order = [0u16; (1 << 16) + 1];
        epoch_order(1, 0, 0, &mut order);
    }

    #[test]
    fn u16_orders_are_the_u32_permutation() {
        let mut a = [0u32; 1000];
        let mut b = [0u16; 1000];
        epoch_order(7, 1, 2, &mut a);
        epoch_order(7, 1, 2, &mut b);
        assert!(a.iter().zip(&b).all(|(&x, &y)| x == u32::from(y)));
        let mut buf = [0u32; 4];
        assert_eq!(u16::as_u32s(&b[..3], &mut buf), &a[..3]);
        assert_eq!(u32::as_u32s(&a[..3], &mut []), &a[..3]);
    }

    #[test]
    fn exit_is_the_earliest_within_tolerance() {
        assert_eq!(select_exit(&[0.80, 0.906, 0.91, 0.908], 0.005), 1);
        assert_eq!(select_exit(&[0.80, 0.90, 0.91, 0.908], 0.005), 2);
        assert_eq!(select_exit(&[0.5], 0.005), 0);
    }

    #[test]
    fn patience_stops_after_units_without_gain() {
        assert!(!no_gain(&[0.8, 0.85], 1));
        assert!(no_gain(&[0.8, 0.85, 0.84], 1));
        assert!(!no_gain(&[0.8, 0.85, 0.84], 2));
        assert!(no_gain(&[0.8, 0.85, 0.84, 0.85], 2));
        assert!(!no_gain(&[0.8, 0.7, 0.6], 0));
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let mut a = [0u32; 100];
        let mut b = [0u32; 100];
        epoch_order(1, 2, 3, &mut a);
        epoch_order(1, 2, 3, &mut b);
        assert_eq!(a, b);
        epoch_order(1, 2, 4, &mut b);
        assert_ne!(a, b);
        let mut s = a;
        s.sort();
        assert!(s.iter().enumerate().all(|(i, &v)| v == i as u32));
    }

    #[test]
    fn lr_follows_the_batch_size() {
        let c = TrainConfig {
            sgd: Sgd::default(),
            base_lr: 0.1,
            ref_batch: 128,
            schedule: Schedule::Constant,
            epochs: 1,
        };
        assert_eq!(c.block_lr(256), 0.2);
        assert_eq!(c.block_lr(64), 0.05);
    }
}
