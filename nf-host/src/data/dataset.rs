//! [`Dataset`]: labelled images held as stored (`u8` pixels), normalised one sample at a time
//! when a batch is written.

use std::fmt;

use nf_core::model::Shape;
use nf_core::rng::Rng;

use super::transform::{write_plane, View, MAX_PAD};

/// A set of labelled images, pixels held as stored (`u8`, NCHW, sample after sample), with
/// the per-channel constants that [`Dataset::write_normalised`] applies and the zero padding
/// ([`Dataset::set_pad`]) it adds around every image as it writes it.
///
/// Invariants (kept by every constructor and method): `pixels.len() == len() * shape.len()`,
/// `shape.len() > 0`, every label `< classes`, one mean and one positive, finite std per
/// channel.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    pixels: Vec<u8>,
    labels: Vec<u16>,
    shape: Shape,
    classes: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Black pixels added on every side as samples are written (not stored).
    pad: usize,
    /// Where this set's samples were in the set it was sharded from ([`Dataset::shard`]):
    /// sample `i` was sample `shard_rank + i * shard_world` (0 and 1 when never sharded).
    shard_rank: usize,
    shard_world: usize,
}

impl fmt::Debug for Dataset {
    /// A summary (not the pixels): samples, shape, classes, constants and bytes held.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("shape", &self.shape)
            .field("pad", &self.pad)
            .field("classes", &self.classes)
            .field("mean", &self.mean)
            .field("std", &self.std)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Dataset {
    /// A set of `labels.len()` samples of `shape` whose pixels are `pixels` (NCHW, sample
    /// after sample), normalised with its own per-channel constants (as a training split is;
    /// see `channel_stats`). Refuses (with a one-line reason) an empty shape, no classes or
    /// more than 65536, a pixel count other than `labels.len() * shape.len()`, and a label
    /// `>= classes`.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u16>,
        shape: Shape,
        classes: usize,
    ) -> Result<Dataset, String> {
        let size = shape
            .c
            .checked_mul(shape.h)
            .and_then(|v| v.checked_mul(shape.w));
        if size.is_none_or(|s| s == 0) {
            return Err(format!(
                "bad sample shape {}x{}x{}",
                shape.c, shape.h, shape.w
            ));
        }
        if classes == 0 || classes > 1 << 16 {
            return Err(format!("{classes} classes (expected 1..=65536)"));
        }
        if labels.len().checked_mul(shape.len()) != Some(pixels.len()) {
            return Err(format!(
                "{} pixels for {} samples of {}x{}x{}",
                pixels.len(),
                labels.len(),
                shape.c,
                shape.h,
                shape.w
            ));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= classes)
        {
            return Err(format!("label {l} outside 0..{classes} at sample {i}"));
        }
        let (mean, std) = channel_stats(&pixels, shape);
        Ok(Dataset::from_parts(
            pixels, labels, shape, classes, mean, std,
        ))
    }

    /// A set from parts the caller has validated (the loaders).
    pub(crate) fn from_parts(
        pixels: Vec<u8>,
        labels: Vec<u16>,
        shape: Shape,
        classes: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Dataset {
        debug_assert_eq!(pixels.len(), labels.len() * shape.len());
        debug_assert_eq!((mean.len(), std.len()), (shape.c, shape.c));
        Dataset {
            pixels,
            labels,
            shape,
            classes,
            mean,
            std,
            pad: 0,
            shard_rank: 0,
            shard_world: 1,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one sample as written (channels, height, width): the stored shape plus the
    /// padding on every side.
    pub fn shape(&self) -> Shape {
        Shape::new(
            self.shape.c,
            self.shape.h + 2 * self.pad,
            self.shape.w + 2 * self.pad,
        )
    }

    /// Shape of one sample as stored.
    pub fn stored_shape(&self) -> Shape {
        self.shape
    }

    /// Black pixels added on every side of each image as it is written.
    pub fn pad(&self) -> usize {
        self.pad
    }

    /// Pad every image written from now on with `pad` black pixels on every side (pixel value
    /// 0, normalised like any other); refuses more than [`MAX_PAD`].
    pub fn set_pad(&mut self, pad: usize) -> Result<(), String> {
        if pad > MAX_PAD {
            return Err(format!("padding {pad} is more than {MAX_PAD} pixels"));
        }
        self.pad = pad;
        Ok(())
    }

    /// Number of classes (10 for IDX, CIFAR-10 and synthetic data, 100 for CIFAR-100).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Per-channel mean subtracted from the `0..1`-scaled pixels.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-channel standard deviation the centred pixels are divided by.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// Label of sample `i`. Panics when `i >= len()`.
    pub fn label(&self, i: usize) -> u16 {
        self.labels[i]
    }

    /// All labels, one per sample.
    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    /// The stored pixels of sample `i` (`shape.len()` bytes, channel-major). Panics when
    /// `i >= len()`.
    pub fn raw(&self, i: usize) -> &[u8] {
        let s = self.shape.len();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Memory the set holds, in bytes: its pixel and label buffers.
    pub fn bytes(&self) -> u64 {
        self.pixels.capacity() as u64 + 2 * self.labels.capacity() as u64
    }

    /// Writes sample `i` scaled to `0..1` and standardised: pixel `p` of channel `c` becomes
    /// `(f32::from(p) / 255.0 - mean[c]) / std[c]`, exactly (the same `f32` operations, so
    /// bit-identical to normalising in advance), the padding as pixel 0. Panics when
    /// `i >= len()` or `dst.len() != shape().len()`.
    pub fn write_normalised(&self, i: usize, dst: &mut [f32]) {
        self.write_view(i, dst, View::IDENTITY);
    }

    /// [`write_normalised`](Self::write_normalised) through `view` (an augmentation's shift
    /// and flip of the padded image; what they uncover is pixel 0).
    pub fn write_view(&self, i: usize, dst: &mut [f32], view: View) {
        let out = self.shape();
        assert_eq!(dst.len(), out.len(), "write_view: buffer size");
        let hw = (self.shape.h, self.shape.w);
        let src = self.raw(i);
        let planes = dst
            .chunks_exact_mut(out.h * out.w)
            .zip(src.chunks_exact(hw.0 * hw.1));
        for (c, (d, s)) in planes.enumerate() {
            let (m, sd) = (self.mean[c], self.std[c]);
            write_plane(s, hw, self.pad, view, d, |p| {
                (f32::from(p) / 255.0 - m) / sd
            });
        }
    }

    /// Replaces the normalisation constants (e.g. with those a model was trained with). Refuses,
    /// with a one-line reason and nothing changed, a number of constants other than the
    /// channel count, a non-finite mean, and a std that is not finite and positive.
    pub fn set_normalisation(&mut self, mean: &[f32], std: &[f32]) -> Result<(), String> {
        let c = self.shape.c;
        if mean.len() != c || std.len() != c {
            return Err(format!(
                "normalisation constants for {} (mean) and {} (std) channels, but the data \
                 has {c} channel{}",
                mean.len(),
                std.len(),
                if c == 1 { "" } else { "s" }
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("normalisation mean {m} is not finite"));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("normalisation std {s} is not finite and positive"));
        }
        self.mean = mean.to_vec();
        self.std = std.to_vec();
        Ok(())
    }

    /// Keeps the first `n` samples (all of them when `n >= len()`), in place, and returns the
    /// memory of the rest to the allocator.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.pixels.truncate(n * self.shape.len());
            self.pixels.shrink_to_fit();
            self.labels.truncate(n);
            self.labels.shrink_to_fit();
        }
    }

    /// Keeps this rank's shard of a data set split over `world` ranks: samples `rank`,
    /// `rank + world`, `rank + 2 * world`, ... (strided, so that a set ordered by class
    /// shards evenly), in place. With `equal`, only the first `world * (len / world)`
    /// samples are shared out, so every rank holds the same number (the last `len % world`
    /// are dropped: no rank waits for a batch that never comes); without it, every sample
    /// goes to some rank. A world of one keeps everything. [`Dataset::global_index`] then
    /// gives each sample's index in the whole set.
    pub fn shard(&mut self, rank: usize, world: usize, equal: bool) {
        if world <= 1 {
            return;
        }
        // Sample i is now sample rank + i * world of the set as it was.
        self.shard_rank += rank * self.shard_world;
        self.shard_world *= world;
        let n = if equal {
            self.len() / world * world
        } else {
            self.len()
        };
        let s = self.shape.len();
        let mut k = 0;
        for i in (rank..n).step_by(world) {
            // i >= k: nothing is overwritten before it is moved.
            self.pixels.copy_within(i * s..(i + 1) * s, k * s);
            self.labels[k] = self.labels[i];
            k += 1;
        }
        self.pixels.truncate(k * s);
        self.labels.truncate(k);
        self.truncate(k);
        self.pixels.shrink_to_fit();
        self.labels.shrink_to_fit();
    }

    /// The index sample `i` had before [`Dataset::shard`] took this rank's share (`i` itself
    /// when the set was never sharded): what keys its augmentation, so that a sample is
    /// augmented alike whichever rank holds it and however many ranks there are.
    pub fn global_index(&self, i: usize) -> usize {
        self.shard_rank + i * self.shard_world
    }

    /// Splits off a validation set: a seeded random subset of `round(len * val_fraction)`
    /// samples (no stratification), returned as `(train, val)`. Which samples go where depends
    /// only on `seed` and `len()`: the first `n_val` entries of the permutation
    /// `Rng::new(seed).shuffle` makes of `0..len`. Both parts keep the original order and the
    /// normalisation constants. `val_fraction` is clamped to `0..=1` (NaN counts as 0).
    ///
    /// Memory: the validation samples are copied out, then the training samples are compacted
    /// in place and the buffers shrunk, so the peak is the set plus the validation part plus the
    /// permutation (4 bytes a sample): [`split_overhead`](super::DataInfo::split_overhead).
    pub fn split(self, val_fraction: f32, seed: u64) -> (Dataset, Dataset) {
        let n = self.len();
        let n_val = val_count(n, val_fraction);
        // The shuffle draws the same numbers whatever the index type, so u32 indices (half the
        // memory) give the same split as usize ones.
        match u32::try_from(n) {
            Ok(n32) => self.split_by((0..n32).collect(), n_val, seed, |i| i as usize),
            Err(_) => self.split_by((0..n).collect(), n_val, seed, |i| i),
        }
    }

    fn split_by<T: Copy + Ord>(
        mut self,
        mut perm: Vec<T>,
        n_val: usize,
        seed: u64,
        index: fn(T) -> usize,
    ) -> (Dataset, Dataset) {
        Rng::new(seed).shuffle(&mut perm);
        let (val_idx, train_idx) = perm.split_at_mut(n_val);
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        let s = self.shape.len();
        let mut val_pixels = Vec::with_capacity(n_val * s);
        let mut val_labels = Vec::with_capacity(n_val);
        for &i in val_idx.iter() {
            let i = index(i);
            val_pixels.extend_from_slice(&self.pixels[i * s..(i + 1) * s]);
            val_labels.push(self.labels[i]);
        }
        // Training indices ascend, so sample `i` moves to position `k <= i`: nothing is
        // overwritten before it is moved.
        for (k, &i) in train_idx.iter().enumerate() {
            let i = index(i);
            if i != k {
                self.pixels.copy_within(i * s..(i + 1) * s, k * s);
                self.labels[k] = self.labels[i];
            }
        }
        let n_train = train_idx.len();
        drop(perm);
        self.truncate(n_train);
        let mut val = Dataset::from_parts(
            val_pixels,
            val_labels,
            self.shape,
            self.classes,
            self.mean.clone(),
            self.std.clone(),
        );
        val.pad = self.pad;
        (self, val)
    }
}

/// Samples [`Dataset::split`] puts in the validation part: `round(n * val_fraction)`, the
/// fraction clamped to `0..=1` (NaN counts as 0).
pub(crate) fn val_count(n: usize, val_fraction: f32) -> usize {
    let f = if val_fraction.is_nan() {
        0.0
    } else {
        f64::from(val_fraction).clamp(0.0, 1.0)
    };
    ((n as f64 * f).round() as usize).min(n)
}

/// Per-channel mean and std of `u8` pixels scaled to `0..1` (computed in `f64` from a
/// histogram, so exact whatever the count); a constant channel gets std 1, an empty set mean 0
/// and std 1.
pub(crate) fn channel_stats(pixels: &[u8], shape: Shape) -> (Vec<f32>, Vec<f32>) {
    let plane = shape.h * shape.w;
    let sample = shape.len();
    let mut hist = vec![[0u64; 256]; shape.c];
    if sample > 0 {
        for img in pixels.chunks_exact(sample) {
            for (c, h) in hist.iter_mut().enumerate() {
                for &p in &img[c * plane..(c + 1) * plane] {
                    h[usize::from(p)] += 1;
                }
            }
        }
    }
    let mut mean = Vec::with_capacity(shape.c);
    let mut std = Vec::with_capacity(shape.c);
    for h in &hist {
        let count: u64 = h.iter().sum();
        let (m, s) = if count == 0 {
            (0.0, 1.0)
        } else {
            let n = count as f64;
            let m = h
                .iter()
                .enumerate()
                .map(|(v, &k)| v as f64 / 255.0 * k as f64)
                .sum::<f64>()
                / n;
            let var = h
                .iter()
                .enumerate()
                .map(|(v, &k)| (v as f64 / 255.0 - m).powi(2) * k as f64)
                .sum::<f64>()
                / n;
            (m, var.sqrt())
        };
        mean.push(m as f32);
        std.push(if s > 1e-6 { s as f32 } else { 1.0 });
    }
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transform::Augment;

    /// `n` 1x4x4 images whose pixels tell the sample and the position apart.
    fn numbered(n: usize) -> Dataset {
        let pixels = (0..n * 16).map(|p| p as u8).collect();
        let labels = (0..n).map(|i| (i % 3) as u16).collect();
        Dataset::new(pixels, labels, Shape::new(1, 4, 4), 3).unwrap()
    }

    #[test]
    fn a_shard_augments_every_sample_as_the_whole_set_does() {
        let whole = numbered(11);
        let aug = Augment {
            crop: 1,
            flip: true,
        };
        // What one process writes for sample g in epoch 2 of block 1 under seed 7.
        let written = |d: &Dataset, i: usize, key: usize| {
            let mut v = vec![0.0; 16];
            d.write_view(i, &mut v, aug.view(7, 1, 2, key as u32));
            v
        };
        // The views differ between samples, so keying by the wrong index would show.
        assert!((0..11).any(|g| aug.view(7, 1, 2, g) != aug.view(7, 1, 2, 0)));
        for world in 1..=3 {
            for equal in [true, false] {
                let mut held = Vec::new();
                for rank in 0..world {
                    let mut shard = whole.clone();
                    shard.shard(rank, world, equal);
                    for i in 0..shard.len() {
                        let g = shard.global_index(i);
                        assert_eq!(g, rank + i * world, "world {world} rank {rank}");
                        assert_eq!(shard.label(i), whole.label(g));
                        // The same pixels, read through the same view: the feed keys the
                        // view by global_index, so the sample is augmented alike on any rank.
                        assert_eq!(written(&shard, i, g), written(&whole, g, g));
                        held.push(g);
                    }
                }
                held.sort_unstable();
                let n = if equal { 11 / world * world } else { 11 };
                assert_eq!(held, (0..n).collect::<Vec<_>>(), "world {world}");
            }
        }
        // A world of one: the global index is the index.
        assert!((0..11).all(|i| whole.global_index(i) == i));
    }
}
