//! Where a block's inputs come from, and where its outputs go.
//!
//! The first block reads the data set (pixels as stored, normalised as they are fed). Every
//! later block reads either the *activation cache* (the outputs of the frozen blocks before it,
//! computed once per sample when the previous block finished, held in host memory as `f32`,
//! `f16` or `bf16`, widened to `f32` as it is fed) or, when the cache is off, its inputs *recomputed* batch by batch by the frozen units
//! in inference mode: a forward-only chain the plan places beside the block in the same arena
//! ([`nf_core::plan::Plan::chain`]), run in chunks of the planned size.
//!
//! Host memory of a feed: the caches (their own bound, `--cache-budget`) and one staging buffer
//! of [`staging_floats`] values through which every sample and label passes on its way into or
//! out of the arena. Nothing else is allocated per batch.
use half::{bf16, f16};
use nf_core::backend::Backend;
use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, ELEM_BYTES};
use nf_core::model::{ModelSpec, Shape};
use nf_core::region::Region;
use nf_core::schedule::{Feed, Split};
use nf_core::step;

use crate::data::transform::{Augment, View};
use crate::data::Dataset;
use crate::error::CliError;

/// Element type of the activation cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheDtype {
    /// 4 bytes per value, exact.
    F32,
    /// 2 bytes per value (IEEE half precision, round to nearest).
    F16,
    /// 2 bytes per value (bfloat16: f32's exponent range, 8 bits of mantissa, round to
    /// nearest even): the block inputs a bf16 run's GEMMs round to anyway.
    Bf16,
}

impl CacheDtype {
    /// Bytes per value.
    pub fn bytes(self) -> u64 {
        match self {
            CacheDtype::F32 => 4,
            CacheDtype::F16 | CacheDtype::Bf16 => 2,
        }
    }
}

/// Per-sample activations of one split.
#[derive(Clone, Debug)]
pub enum Activations {
    /// Stored as `f32`.
    F32(Vec<f32>),
    /// Stored as `f16`.
    F16(Vec<f16>),
    /// Stored as `bf16`.
    Bf16(Vec<bf16>),
}

impl Activations {
    /// Room for `n` samples of `per` values, or the error when it cannot be allocated.
    pub fn new(
        dtype: CacheDtype,
        n: usize,
        per: usize,
    ) -> Result<Self, std::collections::TryReserveError> {
        Ok(match dtype {
            CacheDtype::F32 => Activations::F32(crate::capacity::try_zeroed(n * per)?),
            CacheDtype::F16 => Activations::F16(crate::capacity::try_zeroed(n * per)?),
            CacheDtype::Bf16 => Activations::Bf16(crate::capacity::try_zeroed(n * per)?),
        })
    }
    fn put(&mut self, at: usize, src: &[f32]) {
        match self {
            Activations::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Activations::F16(v) => {
                for (d, s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
                }
            }
            Activations::Bf16(v) => {
                for (d, s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = bf16::from_f32(*s);
                }
            }
        }
    }
    fn get(&self, at: usize, dst: &mut [f32]) {
        match self {
            Activations::F32(v) => dst.copy_from_slice(&v[at..at + dst.len()]),
            Activations::F16(v) => {
                let n = dst.len();
                for (d, s) in dst.iter_mut().zip(&v[at..at + n]) {
                    *d = s.to_f32();
                }
            }
            Activations::Bf16(v) => {
                let n = dst.len();
                for (d, s) in dst.iter_mut().zip(&v[at..at + n]) {
                    *d = s.to_f32();
                }
            }
        }
    }
}

/// Values of the feed's staging buffer for `model` on `input`: room for the largest sample
/// that crosses between host and arena (a unit's input or output), and at least 64 KiB so that
/// small samples move many at a time.
pub fn staging_floats(model: &ModelSpec, input: Shape) -> usize {
    (0..=model.units.len())
        .map(|u| model.unit_input(input, u).len())
        .fold(16 * 1024, usize::max)
}

/// Bytes of the staging buffer (see [`staging_floats`]).
pub fn staging_bytes(model: &ModelSpec, input: Shape) -> u64 {
    staging_floats(model, input) as u64 * ELEM_BYTES
}

/// Where the current block's inputs come from.
pub enum Source {
    /// The data set itself (the first block).
    Data,
    /// The activation cache (one per split: train, val, test).
    Cache(Box<[Activations; 3]>),
    /// Recomputed per batch by the frozen units: the chain, whose weights are already in the
    /// arena.
    Recompute(Box<InferLayout<'static>>),
}

/// The [`Feed`] of the host: data set, cache or recomputation in, next cache out.
pub struct HostFeed<'a> {
    splits: [&'a Dataset; 3],
    source: Source,
    /// Values per sample of the current source (the current block's input).
    per: usize,
    /// The cache being filled for the next block, if any.
    pub next: Option<Box<[Activations; 3]>>,
    next_per: usize,
    staging: Vec<f32>,
    /// The augmentation of the training images of the epoch in progress, if any.
    augmenting: Option<Augmenting>,
}

/// The augmentation of one training epoch: the views of [`Augment::view`] for its seed,
/// block and epoch, each sample's keyed by its index in the whole training split
/// ([`Dataset::global_index`]), so that a rank's shard is augmented as one process would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augmenting {
    /// The augmentation.
    pub augment: Augment,
    /// The run's seed.
    pub seed: u64,
    /// The block being trained.
    pub block: usize,
    /// The epoch in progress.
    pub epoch: u32,
}

fn slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Val => 1,
        Split::Test => 2,
    }
}

impl<'a> HostFeed<'a> {
    /// A feed over the train, validation and test sets, reading `source` of `per` values per
    /// sample, with a staging buffer of `staging` values (at least one sample of every block's
    /// input and output: [`staging_floats`]).
    pub fn new(splits: [&'a Dataset; 3], source: Source, per: usize, staging: usize) -> Self {
        HostFeed {
            splits,
            source,
            per,
            next: None,
            next_per: 0,
            staging: vec![0.0; staging.max(per)],
            augmenting: None,
        }
    }

    /// Augment the training images read from now on (from the data set, or recomputed from
    /// it; cached activations are never augmented) as `augmenting` says; `None`: read them as
    /// they are (evaluation, and the pass that fills the cache).
    pub fn set_augmenting(&mut self, augmenting: Option<Augmenting>) {
        self.augmenting = augmenting;
    }

    /// Start filling a cache of `per` values per sample for the next block; an allocation
    /// that fails is an error (one line naming `--cache-budget`), not an abort.
    pub fn start_next(&mut self, dtype: CacheDtype, per: usize) -> Result<(), CliError> {
        let bytes = self.cache_bytes(dtype, per);
        let mk = |d: &Dataset| {
            Activations::new(dtype, d.len(), per).map_err(|e| {
                CliError::Usage(format!(
                    "--cache-budget: cannot allocate the activation cache ({}): {e}",
                    crate::size::format_size(bytes)
                ))
            })
        };
        self.next = Some(Box::new([
            mk(self.splits[0])?,
            mk(self.splits[1])?,
            mk(self.splits[2])?,
        ]));
        self.next_per = per;
        Ok(())
    }

    /// Bytes a cache of `per` values per sample for all three splits takes.
    pub fn cache_bytes(&self, dtype: CacheDtype, per: usize) -> u64 {
        self.splits.iter().map(|d| d.len() as u64).sum::<u64>() * per as u64 * dtype.bytes()
    }

    /// Replace the source (e.g. with the cache just filled) for the next block.
    pub fn set_source(&mut self, source: Source, per: usize) {
        assert!(per <= self.staging.len(), "staging smaller than a sample");
        self.source = source;
        self.per = per;
    }

    /// Write samples `idx` of `split` (`per` values each) to `dst` through the staging buffer:
    /// from the cache when that is the source, else the normalised images.
    fn write_inputs<B: Backend>(
        &mut self,
        be: &mut B,
        split: Split,
        idx: &[u32],
        per: usize,
        dst: Region,
    ) {
        let d = self.splits[slot(split)];
        let k = self.staging.len() / per;
        let aug = self.augmenting.filter(|_| split == Split::Train);
        for (c, chunk) in idx.chunks(k).enumerate() {
            let buf = &mut self.staging[..chunk.len() * per];
            for (s, &i) in buf.chunks_exact_mut(per).zip(chunk) {
                let view = aug.map_or(View::IDENTITY, |a| {
                    // Keyed by the sample's index in the whole training split, not in
                    // this rank's shard: N ranks augment as one process does.
                    let global = d.global_index(i as usize) as u32;
                    a.augment.view(a.seed, a.block, a.epoch, global)
                });
                match &self.source {
                    Source::Cache(cache) => cache[slot(split)].get(i as usize * per, s),
                    _ => d.write_view(i as usize, s, view),
                }
            }
            be.write(dst.sub(c * k * per, chunk.len() * per), buf);
        }
    }

    /// Write the inputs (from the data set or the cache) and labels of samples `idx` of
    /// `split` to the first `idx.len()` samples of `input` and `labels`.
    pub fn load_into<B: Backend>(
        &mut self,
        be: &mut B,
        split: Split,
        idx: &[u32],
        input: Region,
        labels: Region,
    ) {
        let per = self.per;
        self.write_labels(be, split, idx, labels.prefix(idx.len()));
        self.write_inputs(be, split, idx, per, input.prefix(idx.len() * per));
    }

    /// Load samples `idx` of `split` into the block `layout` through the frozen units `chain`:
    /// the raw images one planned chunk at a time, each chunk's output copied into the block's
    /// input.
    fn recompute<B: Backend>(
        &mut self,
        be: &mut B,
        chain: &InferLayout,
        layout: &BlockLayout,
        split: Split,
        idx: &[u32],
    ) -> Result<(), String> {
        let per = self.per;
        self.write_labels(be, split, idx, layout.labels.prefix(idx.len()));
        let raw = chain.input_shape.len();
        let c = chain.batch;
        for (k, chunk) in idx.chunks(c).enumerate() {
            self.write_inputs(be, split, chunk, raw, chain.input.prefix(chunk.len() * raw));
            step::infer(be, chain, chunk.len())
                .map_err(|e| format!("recomputing block inputs: {e}"))?;
            be.copy(
                chain.output().prefix(chunk.len() * per),
                layout.input.sub(k * c * per, chunk.len() * per),
            );
        }
        Ok(())
    }

    /// Write the labels of samples `idx` of `split` to `dst`.
    fn write_labels<B: Backend>(&mut self, be: &mut B, split: Split, idx: &[u32], dst: Region) {
        let d = self.splits[slot(split)];
        let k = self.staging.len();
        for (c, chunk) in idx.chunks(k).enumerate() {
            let buf = &mut self.staging[..chunk.len()];
            for (v, &i) in buf.iter_mut().zip(chunk) {
                *v = f32::from(d.label(i as usize));
            }
            be.write(dst.sub(c * k, chunk.len()), buf);
        }
    }
}

impl<B: Backend> Feed<B> for HostFeed<'_> {
    type Error = String;

    fn len(&self, split: Split) -> usize {
        self.splits[slot(split)].len()
    }

    fn load(
        &mut self,
        be: &mut B,
        layout: &BlockLayout,
        split: Split,
        idx: &[u32],
    ) -> Result<(), String> {
        let chain = match std::mem::replace(&mut self.source, Source::Data) {
            Source::Recompute(chain) => chain,
            // Not a chain: put the source (data or cache) back before reading from it.
            other => {
                self.source = other;
                self.load_into(be, split, idx, layout.input, layout.labels);
                return Ok(());
            }
        };
        let done = self.recompute(be, &chain, layout, split, idx);
        self.source = Source::Recompute(chain);
        done
    }

    fn output(
        &mut self,
        be: &mut B,
        layout: &BlockLayout,
        split: Split,
        idx: &[u32],
    ) -> Result<(), String> {
        let Some(next) = &mut self.next else {
            return Ok(());
        };
        let per = self.next_per;
        let k = self.staging.len() / per;
        let out = layout.output();
        for (c, chunk) in idx.chunks(k).enumerate() {
            let buf = &mut self.staging[..chunk.len() * per];
            be.read(out.sub(c * k * per, chunk.len() * per), buf);
            for (s, &i) in buf.chunks_exact(per).zip(chunk) {
                next[slot(split)].put(i as usize * per, s);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bf16 cache feeds each block input rounded to bf16 (nearest even) and widened exactly,
    /// so a block trained from it sees what rounding its f32 inputs to bf16 would give; the
    /// f32 cache feeds them unchanged. Half the bytes of the f32 cache.
    #[test]
    fn a_bf16_cache_feeds_inputs_rounded_to_bf16() {
        let src: Vec<f32> = (0..4096)
            .map(|i| ((i as f32) * 0.37).sin() * 10f32.powi(i % 9 - 4))
            .chain([
                0.0,
                -0.0,
                1.0 + f32::EPSILON,
                3.0e38,
                -1.0e-39,
                f32::INFINITY,
            ])
            .collect();
        let per = src.len();
        for dtype in [CacheDtype::F32, CacheDtype::Bf16] {
            let mut a = Activations::new(dtype, 3, per).unwrap();
            a.put(per, &src);
            let mut got = vec![f32::NAN; per];
            a.get(per, &mut got);
            for (g, s) in got.iter().zip(&src) {
                let want = match dtype {
                    CacheDtype::Bf16 => bf16::from_f32(*s).to_f32(),
                    _ => *s,
                };
                assert_eq!(g.to_bits(), want.to_bits(), "{dtype:?} {s:e}");
            }
        }
        // Rounding to nearest even, not truncation: 1 + 2^-8 + 2^-9 rounds up.
        assert_eq!(
            bf16::from_f32(1.0 + 3.0 / 512.0).to_f32(),
            1.0 + 1.0 / 128.0
        );
        assert_eq!(CacheDtype::Bf16.bytes() * 2, CacheDtype::F32.bytes());
    }
}
