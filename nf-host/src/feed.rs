//! Where a block's inputs come from, and where its outputs go.
//!
//! The first block reads the data set. Every later block reads the *activation cache*: the
//! outputs of the frozen blocks before it, computed once per sample (BN in evaluation mode)
//! when the previous block finished, stored in host memory as `f32` or `f16`. When the cache
//! would not fit the host budget, the block's inputs are instead recomputed batch by batch from
//! the frozen blocks, in an inference arena of their own.
use half::f16;
use nf_core::backend::Backend;
use nf_core::layout::{BlockLayout, SegMode};
use nf_core::model::{ModelSpec, Shape, MAX_UNITS};
use nf_core::schedule::{Feed, Split};
use nf_core::step::{self, SegStats};

use crate::data::Dataset;
use crate::host_backend::{HostBackend, Pool};
use crate::store::{write_block, StoreError, TensorStore};

/// Element type of the activation cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheDtype {
    /// 4 bytes per value, exact.
    F32,
    /// 2 bytes per value (IEEE half precision, round to nearest).
    F16,
}

impl CacheDtype {
    /// Bytes per value.
    pub fn bytes(self) -> u64 {
        match self {
            CacheDtype::F32 => 4,
            CacheDtype::F16 => 2,
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
}

impl Activations {
    /// Room for `n` samples of `per` values.
    pub fn new(dtype: CacheDtype, n: usize, per: usize) -> Self {
        match dtype {
            CacheDtype::F32 => Activations::F32(vec![0.0; n * per]),
            CacheDtype::F16 => Activations::F16(vec![f16::ZERO; n * per]),
        }
    }
    fn put(&mut self, at: usize, src: &[f32]) {
        match self {
            Activations::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Activations::F16(v) => {
                for (d, s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
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
        }
    }
}

/// The frozen blocks `0..units` as one inference chain with its own arena.
pub struct Frozen {
    layout: BlockLayout,
    arena: Vec<f32>,
    pool: Pool,
    /// The raw images of the batch being recomputed (reused from batch to batch).
    raw: Vec<f32>,
}

impl Frozen {
    /// Load units `0..units` of `model` from `store` into an inference arena for batches of up
    /// to `batch` samples.
    pub fn new(
        model: &ModelSpec,
        input: Shape,
        classes: usize,
        heads: &[usize; MAX_UNITS],
        units: usize,
        batch: usize,
        store: &TensorStore,
    ) -> Result<Frozen, StoreError> {
        let layout = BlockLayout::new(
            model,
            input,
            classes,
            SegMode::Global,
            0,
            units - 1,
            heads,
            batch,
        );
        let mut arena = vec![0.0; layout.floats];
        // The host kernels, as in the pass that fills the cache, so that recomputed inputs are
        // the cached ones bit for bit (forward kernels do not depend on the worker count).
        let pool = Pool::new(1);
        write_block(
            &mut HostBackend::new(&mut arena, &pool),
            &layout,
            store,
            false,
        )?;
        Ok(Frozen {
            layout,
            arena,
            pool,
            raw: Vec::new(),
        })
    }
}

/// Where the current block's inputs come from.
pub enum Source {
    /// The data set itself (the first block).
    Data,
    /// The activation cache (one per split: train, val, test) of `per` values per sample.
    Cache(Box<[Activations; 3]>),
    /// Recomputed per batch from the frozen blocks.
    Recompute(Box<Frozen>),
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
    xbuf: Vec<f32>,
    ybuf: Vec<f32>,
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
    /// sample.
    pub fn new(splits: [&'a Dataset; 3], source: Source, per: usize) -> Self {
        HostFeed {
            splits,
            source,
            per,
            next: None,
            next_per: 0,
            xbuf: Vec::new(),
            ybuf: Vec::new(),
        }
    }

    /// Start filling a cache of `per` values per sample for the next block.
    pub fn start_next(&mut self, dtype: CacheDtype, per: usize) {
        let mk = |d: &Dataset| Activations::new(dtype, d.len(), per);
        self.next = Some(Box::new([
            mk(self.splits[0]),
            mk(self.splits[1]),
            mk(self.splits[2]),
        ]));
        self.next_per = per;
    }

    /// Bytes a cache of `per` values per sample for all three splits takes.
    pub fn cache_bytes(&self, dtype: CacheDtype, per: usize) -> u64 {
        self.splits.iter().map(|d| d.len() as u64).sum::<u64>() * per as u64 * dtype.bytes()
    }

    /// Replace the source (e.g. with the cache just filled) for the next block.
    pub fn set_source(&mut self, source: Source, per: usize) {
        self.source = source;
        self.per = per;
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
        let d = self.splits[slot(split)];
        let per = self.per;
        let n = idx.len();
        self.xbuf.resize(n * per, 0.0);
        self.ybuf.resize(n, 0.0);
        for (k, &i) in idx.iter().enumerate() {
            self.ybuf[k] = f32::from(d.label(i as usize));
        }
        match &mut self.source {
            Source::Data => {
                for (k, &i) in idx.iter().enumerate() {
                    d.write_normalised(i as usize, &mut self.xbuf[k * per..(k + 1) * per]);
                }
            }
            Source::Cache(c) => {
                for (k, &i) in idx.iter().enumerate() {
                    c[slot(split)].get(i as usize * per, &mut self.xbuf[k * per..(k + 1) * per]);
                }
            }
            Source::Recompute(f) => {
                let fl = &f.layout;
                let s0 = fl.input_shape.len();
                let mut fb = HostBackend::new(&mut f.arena, &f.pool);
                f.raw.resize(n * s0, 0.0);
                for (k, &i) in idx.iter().enumerate() {
                    d.write_normalised(i as usize, &mut f.raw[k * s0..(k + 1) * s0]);
                }
                fb.write(fl.input.prefix(n * s0), &f.raw);
                fb.write(fl.labels.prefix(n), &self.ybuf);
                let mut st = [SegStats::default(); 1];
                step::eval_step(&mut fb, fl, n, &mut st)
                    .map_err(|e| format!("recomputing block inputs: {e:?}"))?;
                let seg = fl.segment(0);
                fb.read(seg.ops[seg.last_unit_op].y.prefix(n * per), &mut self.xbuf);
            }
        }
        be.write(layout.input.prefix(n * per), &self.xbuf);
        be.write(layout.labels.prefix(n), &self.ybuf);
        Ok(())
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
        let n = idx.len();
        self.xbuf.resize(n * per, 0.0);
        be.read(layout.output().prefix(n * per), &mut self.xbuf[..n * per]);
        for (k, &i) in idx.iter().enumerate() {
            next[slot(split)].put(i as usize * per, &self.xbuf[k * per..(k + 1) * per]);
        }
        Ok(())
    }
}
