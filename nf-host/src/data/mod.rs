//! Datasets for `nf train --data`: IDX (MNIST / Fashion-MNIST layout), CIFAR-10/100 binary
//! batches, and synthetic benchmark data.
//!
//! [`load`] takes the `--data` argument: `synthetic:CxHxW:N` goes to [`synthetic`], anything
//! else is a directory for [`load_dir`], which detects the format from the file names and
//! validates every header, size and label against the bytes actually present. Every failure is
//! a [`DataError`] whose message is one line naming the file and the problem; no input bytes
//! make the loaders panic.
//!
//! # Normalisation
//! Pixels are scaled to `0..1` (`/255`), then standardised per channel with the mean and
//! standard deviation *of the training split* (computed in `f64`), and the same constants are
//! applied to the test split. Computing the constants rather than hard-coding them works for
//! MNIST and Fashion-MNIST alike (their files cannot be told apart) and for any subset; on the
//! full Fashion-MNIST they come out at mean 0.2860, std 0.3530, the published values. The
//! constants used are kept in [`Dataset::mean`] and [`Dataset::std`].

mod cifar;
mod idx;
mod synthetic;

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use nf_core::model::Shape;
use nf_core::rng::Rng;

pub use synthetic::synthetic;

/// A set of labelled images, normalised, in NCHW order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `n * shape.len()` pixels: sample after sample, each channel-major (C, then H, then W).
    pub images: Vec<f32>,
    /// One label per sample, each in `0..classes`.
    pub labels: Vec<u16>,
    /// Shape of one sample (channels, height, width).
    pub shape: Shape,
    /// Number of classes (10 for IDX and CIFAR-10 and synthetic data, 100 for CIFAR-100).
    pub classes: usize,
    /// Number of samples.
    pub n: usize,
    /// Per-channel mean subtracted from the `0..1`-scaled pixels (from the training split).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation the centred pixels were divided by (from the training
    /// split; 1 where the training split has a constant channel).
    pub std: Vec<f32>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the set holds no sample.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The pixels of sample `i` (`shape.len()` values). Panics when `i >= len()`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let s = self.shape.len();
        &self.images[i * s..(i + 1) * s]
    }

    /// Sample `i` normalised into `dst` (temporary shim until the u8 storage lands).
    pub fn write_normalised(&self, i: usize, dst: &mut [f32]) {
        dst.copy_from_slice(self.sample(i));
    }

    /// Label of sample `i`. Panics when `i >= len()`.
    pub fn label(&self, i: usize) -> u16 {
        self.labels[i]
    }

    /// A new set holding the samples `idx` (in that order; repeats allowed), with the same
    /// shape, classes and normalisation constants. Panics on an index `>= len()`.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let s = self.shape.len();
        let mut images = Vec::with_capacity(idx.len() * s);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            images.extend_from_slice(self.sample(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            shape: self.shape,
            classes: self.classes,
            n: idx.len(),
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }

    /// Copies samples `idx` into a batch: `images` gets `idx.len() * shape.len()` pixels,
    /// `labels` one class index each as `f32` (the form the training step's arena holds).
    /// Panics when a buffer is shorter than that or an index is `>= len()`.
    pub fn gather(&self, idx: &[usize], images: &mut [f32], labels: &mut [f32]) {
        let s = self.shape.len();
        for (k, &i) in idx.iter().enumerate() {
            images[k * s..(k + 1) * s].copy_from_slice(self.sample(i));
            labels[k] = f32::from(self.labels[i]);
        }
    }

    /// Splits off a validation set: a seeded random subset of `round(n * val_fraction)`
    /// samples (no stratification), returned as `(train, val)`. Which samples go where depends
    /// only on `seed` and `n`; both parts keep the original order. `val_fraction` is clamped
    /// to `0..=1` (NaN counts as 0).
    pub fn split(self, val_fraction: f32, seed: u64) -> (Dataset, Dataset) {
        let f = if val_fraction.is_nan() {
            0.0
        } else {
            f64::from(val_fraction).clamp(0.0, 1.0)
        };
        let n_val = ((self.n as f64 * f).round() as usize).min(self.n);
        let mut perm: Vec<usize> = (0..self.n).collect();
        Rng::new(seed).shuffle(&mut perm);
        let (val_idx, train_idx) = perm.split_at_mut(n_val);
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        (self.subset(train_idx), self.subset(val_idx))
    }
}

/// The training and test splits of a dataset, normalised with the training split's constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    /// Training split (hold out validation with [`Dataset::split`]).
    pub train: Dataset,
    /// Test split.
    pub test: Dataset,
}

/// A dataset that cannot be loaded: the file (or `--data` argument) and what is wrong with it.
/// It displays as one line, `PATH: PROBLEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError {
    /// The file, directory or `synthetic:` argument at fault.
    pub path: PathBuf,
    /// What is wrong, one line.
    pub problem: String,
}

impl DataError {
    /// An error about `path`; line breaks in `problem` are turned into spaces.
    pub fn new(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        let problem: String = problem.into();
        DataError {
            path: path.into(),
            problem: problem.replace(['\n', '\r'], " "),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display().to_string().replace(['\n', '\r'], " ");
        write!(f, "{path}: {}", self.problem)
    }
}

impl std::error::Error for DataError {}

/// Loads the `--data` argument: `synthetic:CxHxW:N` is generated by [`synthetic`], anything else
/// is a directory read by [`load_dir`].
pub fn load(arg: &str) -> Result<Splits, DataError> {
    if arg.starts_with("synthetic:") {
        synthetic(arg)
    } else {
        load_dir(Path::new(arg))
    }
}

/// Loads the dataset in `dir`, detecting its format:
/// - IDX (MNIST / Fashion-MNIST): `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
///   `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or gzipped (told apart by
///   the gzip magic bytes, with or without a `.gz` name); 10 classes.
/// - CIFAR-10 binary: `data_batch_1.bin` ..= `data_batch_5.bin` and `test_batch.bin`, in
///   `dir` or `dir/cifar-10-batches-bin`; 10 classes.
/// - CIFAR-100 binary: `train.bin` and `test.bin`, in `dir` or `dir/cifar-100-binary`; the
///   fine label, 100 classes.
///
/// Both splits are normalised with the training split's per-channel mean and std.
pub fn load_dir(dir: &Path) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        let problem = if dir.exists() {
            "not a directory (--data takes a dataset directory or synthetic:CxHxW:N)"
        } else {
            "no such directory"
        };
        return Err(DataError::new(dir, problem));
    }
    let raw = if let Some(files) = idx::detect(dir) {
        idx::load(&files)?
    } else if let Some(files) = cifar::detect(dir) {
        cifar::load(&files)?
    } else {
        return Err(DataError::new(
            dir,
            "no dataset found (expected IDX files train-images-idx3-ubyte[.gz], \
             train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], \
             t10k-labels-idx1-ubyte[.gz], or CIFAR-10 binary batches data_batch_1..5.bin + \
             test_batch.bin, or CIFAR-100 binary train.bin + test.bin)",
        ));
    };
    Ok(raw.normalise())
}

/// The bundled Fashion-MNIST subset (`fixtures/fashion-mnist`, 4000 training and 1000 test
/// images). Looks next to the source tree first, then relative to the running executable
/// (`fixtures/fashion-mnist`, `../fixtures/fashion-mnist`, `../share/neuroflux/fashion-mnist`,
/// `../../fixtures/fashion-mnist` for `target/<profile>/nf`); returns the first that exists, or
/// the source-tree path when none does (so the error names it).
pub fn default_dir() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fashion-mnist");
    let mut candidates = vec![source.clone()];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for rel in [
            "fixtures/fashion-mnist",
            "../fixtures/fashion-mnist",
            "../share/neuroflux/fashion-mnist",
            "../../fixtures/fashion-mnist",
        ] {
            candidates.push(exe_dir.join(rel));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.is_dir())
        .map(|p| p.canonicalize().unwrap_or(p))
        .unwrap_or(source)
}

/// Splits as read from files: pixels still `u8`, labels validated.
pub(crate) struct RawSplits {
    pub shape: Shape,
    pub classes: usize,
    pub train_pixels: Vec<u8>,
    pub train_labels: Vec<u16>,
    pub test_pixels: Vec<u8>,
    pub test_labels: Vec<u16>,
}

impl RawSplits {
    /// Scales to `0..1` and standardises both splits per channel with the training split's
    /// mean and std.
    fn normalise(self) -> Splits {
        let (mean, std) = channel_stats_u8(&self.train_pixels, self.shape);
        let scale = |pixels: &[u8]| -> Vec<f32> {
            let plane = self.shape.h * self.shape.w;
            let sample = self.shape.len();
            pixels
                .iter()
                .enumerate()
                .map(|(k, &p)| {
                    let c = (k % sample) / plane;
                    (f32::from(p) / 255.0 - mean[c]) / std[c]
                })
                .collect()
        };
        let train = Dataset {
            images: scale(&self.train_pixels),
            n: self.train_labels.len(),
            labels: self.train_labels,
            shape: self.shape,
            classes: self.classes,
            mean: mean.clone(),
            std: std.clone(),
        };
        let test = Dataset {
            images: scale(&self.test_pixels),
            n: self.test_labels.len(),
            labels: self.test_labels,
            shape: self.shape,
            classes: self.classes,
            mean,
            std,
        };
        Splits { train, test }
    }
}

/// Per-channel mean and std of `u8` pixels scaled to `0..1`; a constant channel gets std 1.
fn channel_stats_u8(pixels: &[u8], shape: Shape) -> (Vec<f32>, Vec<f32>) {
    // Histogram per channel: exact and fast, whatever the number of pixels.
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

/// Opens `path` for reading, transparently gunzipping when it starts with the gzip magic
/// bytes `1f 8b` (whatever its name). Returns the reader and whether it is gzipped.
pub(crate) fn open(path: &Path) -> Result<(Box<dyn Read>, bool), DataError> {
    let file = File::open(path).map_err(|e| {
        let problem = if e.kind() == std::io::ErrorKind::NotFound {
            "missing file".to_string()
        } else {
            format!("cannot open: {e}")
        };
        DataError::new(path, problem)
    })?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(DataError::new(path, "is a directory, expected a data file"));
    }
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut head = [0u8; 2];
    let got = read_up_to(&mut reader, &mut head)
        .map_err(|e| DataError::new(path, format!("read error: {e}")))?;
    let gz = head[..got] == [0x1f, 0x8b];
    // Put the peeked bytes back in front of the rest of the file.
    let stream: Box<dyn Read> = Box::new(std::io::Cursor::new(head[..got].to_vec()).chain(reader));
    Ok(wrap(stream, gz))
}

fn wrap(r: Box<dyn Read>, gz: bool) -> (Box<dyn Read>, bool) {
    if gz {
        (Box::new(flate2::read::MultiGzDecoder::new(r)), true)
    } else {
        (r, false)
    }
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
pub(crate) fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads at most `limit` bytes of `r` to the end, allocating only as data arrives.
pub(crate) fn read_at_most(r: &mut dyn Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// The error for a failed read: gzip streams say so, since that is the usual cause.
pub(crate) fn read_error(path: &Path, gz: bool, e: std::io::Error) -> DataError {
    if gz {
        DataError::new(path, format!("unreadable gzip data: {e}"))
    } else {
        DataError::new(path, format!("read error: {e}"))
    }
}
