//! Datasets for `nf train --data`: IDX (MNIST / Fashion-MNIST layout), CIFAR-10/100 binary
//! batches, NumPy `.npy` arrays, and synthetic benchmark data (`synthetic:CxHxW:N`).
//!
//! # Memory
//! A [`Dataset`] holds its pixels as stored, one `u8` each, plus a `u16` label per sample;
//! batches are normalised as they are written ([`Dataset::write_normalised`]). What a data set
//! will take is known before any of it is read: [`describe`] reads only headers (IDX, NumPy;
//! NumPy labels are also streamed once for their largest value), file sizes (CIFAR) or the spec
//! (synthetic), and [`DataInfo::bytes`] is exactly what [`load`]
//! then holds. [`load`] takes a `limit` in bytes and refuses, before allocating, a data set
//! whose headers claim more. Every buffer is allocated at its final size once the bytes behind
//! it are known to exist (raw files: their size on disk; gzip: a first pass that inflates the
//! stream through a fixed buffer, stopping one byte after the header's claim), so loading peaks
//! at [`DataInfo::bytes`] plus [`DataInfo::load_overhead`], whatever the files say or hold.
//!
//! # Errors
//! Every failure is a [`DataError`] whose message is one line naming the file (or the
//! `synthetic:` argument) and the problem; no input bytes make the loaders panic.
//!
//! # Normalisation
//! Pixels are scaled to `0..1` (`/255`), then standardised per channel with the mean and
//! standard deviation *of the training split* (computed in `f64` from a histogram), and the
//! same constants are applied to the test split. Computing the constants rather than
//! hard-coding them works for MNIST and Fashion-MNIST alike (their files cannot be told apart)
//! and for any subset; on the full Fashion-MNIST they come out at mean 0.2860, std 0.3530, the
//! published values. [`load_test`] has no training split: its set uses mean 0 and std 1 until
//! [`Dataset::set_normalisation`] gives it the model's constants.

mod cifar;
mod dataset;
mod idx;
mod images;
mod images_load;
mod npy;
mod npy_header;
mod read;
mod synthetic;
pub mod transform;

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use nf_core::model::Shape;

pub(crate) use dataset::val_count;
pub use dataset::Dataset;

use crate::size::format_size;

/// The training and test splits of a dataset, normalised with the training split's constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    /// Training split (hold out validation with [`Dataset::split`]).
    pub train: Dataset,
    /// Test split.
    pub test: Dataset,
    /// The class names, where the format has them (image folders: the folder names, sorted);
    /// label `k` is class `class_names[k]`.
    pub class_names: Option<Vec<String>>,
}

/// What a data set holds, known from its headers, file sizes or spec ([`describe`]) before any
/// pixel is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataInfo {
    /// Shape of one sample.
    pub shape: Shape,
    /// Number of classes.
    pub classes: usize,
    /// Training samples (before a validation split).
    pub train: usize,
    /// Test samples.
    pub test: usize,
    /// Bytes the loader holds beside the set while it loads, beyond
    /// [`DataInfo::load_overhead`]'s fixed part: for image folders the file list and the
    /// decoding threads' working memory (planned per image from its header); 0 for the other
    /// formats.
    pub loader: u64,
}

impl DataInfo {
    /// Bytes one sample takes in memory: its pixels and a 2-byte label.
    pub fn sample_bytes(&self) -> u64 {
        self.shape.len() as u64 + 2
    }

    /// Bytes both splits take once loaded: exactly the sum of their [`Dataset::bytes`], and
    /// what [`load`] compares with its `limit`.
    pub fn bytes(&self) -> u64 {
        (self.train as u64 + self.test as u64).saturating_mul(self.sample_bytes())
    }

    /// Most bytes [`load`] allocates beyond [`DataInfo::bytes`] while it runs (read buffers,
    /// the gzip decoder, per-channel statistics, a synthetic sample's pattern tables): 1 MiB
    /// plus 4 KiB a channel, plus [`DataInfo::loader`].
    pub fn load_overhead(&self) -> u64 {
        (1u64 << 20)
            .saturating_add(4096u64.saturating_mul(self.shape.c as u64))
            .saturating_add(self.loader)
    }

    /// Most bytes [`Dataset::split`] of the training split allocates beyond the set itself:
    /// the validation samples it copies out, the index permutation (4 bytes a sample, 8 beyond
    /// `u32::MAX` samples) and the constants.
    pub fn split_overhead(&self, val_fraction: f32) -> u64 {
        let n_val = dataset::val_count(self.train, val_fraction) as u64;
        let index: u64 = if u32::try_from(self.train).is_ok() {
            4
        } else {
            8
        };
        // Saturating: a synthetic spec may describe a set near u64::MAX bytes (refused later).
        n_val
            .saturating_mul(self.sample_bytes())
            .saturating_add(index.saturating_mul(self.train as u64))
            .saturating_add(8u64.saturating_mul(self.shape.c as u64))
    }
}

/// How an image folder becomes a data set (the other formats ignore these).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataOptions {
    /// Every image resized to `(height, width)`; `None`: the size all images share.
    pub size: Option<(usize, usize)>,
    /// Every image converted to 1 (grey) or 3 (RGB) channels; `None`: what all images are.
    pub channels: Option<usize>,
    /// Share of the images held out as the test split when the folder has no `test/`.
    pub test_split: f32,
    /// Decoding threads.
    pub threads: usize,
}

impl Default for DataOptions {
    /// Sizes and channels from the images, a test share of 0.2, a thread per core.
    fn default() -> Self {
        DataOptions {
            size: None,
            channels: None,
            test_split: DEFAULT_TEST_SPLIT,
            threads: nf_cpu::threads(),
        }
    }
}

/// Share of an image folder without `test/` held out as the test split.
pub const DEFAULT_TEST_SPLIT: f32 = 0.2;

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

/// Describes the `--data` argument without reading pixels: `synthetic:CxHxW:N` is parsed,
/// anything else is a dataset directory (see [`load_dir`]) whose IDX headers are read and
/// checked (and, for raw files, compared with the file sizes) or whose CIFAR batch sizes are
/// checked. Gzipped IDX files are inflated only as far as their 8- or 16-byte header.
pub fn describe(arg: impl AsRef<OsStr>) -> Result<DataInfo, DataError> {
    describe_with(arg, &DataOptions::default())
}

/// [`describe`] with the options of an image folder.
pub fn describe_with(arg: impl AsRef<OsStr>, opts: &DataOptions) -> Result<DataInfo, DataError> {
    Ok(Source::find(arg.as_ref(), Which::Both, u64::MAX, opts)?.info())
}

/// Loads the `--data` argument: `synthetic:CxHxW:N` is generated, anything else is a directory
/// read by [`load_dir`]. `limit` is the memory the data set may take, in bytes (pixels and
/// labels of both splits, [`DataInfo::bytes`]); a larger set is refused before anything is
/// allocated, with an error naming the file (or argument) that goes over it: the files are
/// taken in reading order (training images, training labels, test images, test labels for IDX)
/// and the first whose header (or size) takes the total over `limit` is named, before any
/// other check involving later files.
pub fn load(arg: impl AsRef<OsStr>, limit: u64) -> Result<Splits, DataError> {
    load_with(arg, limit, &DataOptions::default())
}

/// [`load`] with the options of an image folder.
pub fn load_with(
    arg: impl AsRef<OsStr>,
    limit: u64,
    opts: &DataOptions,
) -> Result<Splits, DataError> {
    Source::find(arg.as_ref(), Which::Both, limit, opts)?.load()
}

/// Loads the dataset in `dir` (never read as a `synthetic:` spec), detecting its format:
/// - IDX (MNIST / Fashion-MNIST): `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
///   `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each raw or gzipped (told apart by
///   the gzip magic bytes, with or without a `.gz` name); 10 classes.
/// - CIFAR-10 binary: `data_batch_1.bin` ..= `data_batch_5.bin` and `test_batch.bin`, in
///   `dir` or `dir/cifar-10-batches-bin`; 10 classes.
/// - CIFAR-100 binary: `train.bin` and `test.bin`, in `dir` or `dir/cifar-100-binary`; the
///   fine label, 100 classes.
/// - NumPy: `x_train.npy`, `y_train.npy`, `x_test.npy`, `y_test.npy` as `numpy.save` writes
///   them: `uint8` images `N x H x W`, `N x H x W x C` or `N x C x H x W` (the layout told by
///   the shape, see the `npy` module), integer labels; classes `0 ..= max` training label.
///
/// CIFAR batches must be uncompressed. Both splits are normalised with the training split's
/// per-channel mean and std. `limit` as for [`load`].
pub fn load_dir(dir: &Path, limit: u64) -> Result<Splits, DataError> {
    let opts = DataOptions::default();
    Source::find_dir(dir, Which::Both, &mut Budget::new(limit), &opts)?.load()
}

/// Loads only the test split of the `--data` argument (for evaluation): the training files are
/// neither read nor needed, and `limit` bounds the test split alone. The set's normalisation
/// constants are mean 0 and std 1 (pixels scaled to `0..1` only) until
/// [`Dataset::set_normalisation`] replaces them, e.g. with those stored in a model file.
pub fn load_test(arg: impl AsRef<OsStr>, limit: u64) -> Result<Dataset, DataError> {
    load_test_with(arg, limit, &DataOptions::default())
}

/// [`load_test`] with the options of an image folder.
pub fn load_test_with(
    arg: impl AsRef<OsStr>,
    limit: u64,
    opts: &DataOptions,
) -> Result<Dataset, DataError> {
    let source = Source::find(arg.as_ref(), Which::Test, limit, opts)?;
    let test = source.read(true)?;
    let (shape, classes) = (source.info().shape, source.info().classes);
    Ok(Dataset::from_parts(
        test.pixels,
        test.labels,
        shape,
        classes,
        vec![0.0; shape.c],
        vec![1.0; shape.c],
    ))
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

/// Which splits to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// Training and test.
    Both,
    /// Test only.
    Test,
}

/// The memory a data set may take, counted file by file as the headers are read.
pub(crate) struct Budget {
    limit: u64,
    total: u64,
}

impl Budget {
    fn new(limit: u64) -> Budget {
        Budget { limit, total: 0 }
    }

    /// Counts `bytes` that `path` (a file or `synthetic:` argument) puts in memory, holding
    /// `what` (e.g. `60000 images of 28x28`); an error naming it when that takes the total
    /// over the limit.
    pub fn add(&mut self, path: &Path, what: &str, bytes: u64) -> Result<(), DataError> {
        let before = self.total;
        self.total = self.total.saturating_add(bytes);
        if self.total <= self.limit {
            return Ok(());
        }
        let (size, limit) = (format_size(bytes), format_size(self.limit));
        let problem = if before == 0 {
            format!("{what} ({size}) exceed the host memory budget ({limit})")
        } else {
            format!(
                "{what} ({size}) bring the data set to {}, over the host memory budget \
                 ({limit})",
                format_size(self.total)
            )
        };
        Err(DataError::new(path, problem))
    }
}

/// Refuses `--size` and `--channels` for data that is not an image folder (`what`).
fn image_options_unused(path: &Path, opts: &DataOptions, what: &str) -> Result<(), DataError> {
    let flag = match (opts.size, opts.channels) {
        (Some(_), _) => "--size",
        (_, Some(_)) => "--channels",
        _ => return Ok(()),
    };
    Err(DataError::new(
        path,
        format!("{flag} applies to image folders only, and this is {what}"),
    ))
}

/// One split as read: pixels (`u8`, NCHW) and validated labels.
pub(crate) struct Raw {
    pub pixels: Vec<u8>,
    pub labels: Vec<u16>,
}

/// A data set found and described, not yet read.
enum Source {
    Idx(idx::Files),
    Cifar(cifar::Files),
    Npy(npy::Files),
    Images(images::Files),
    Synthetic(synthetic::Spec, Which),
}

impl Source {
    /// `synthetic:` specs and directories, described and checked against `limit`.
    fn find(
        arg: &OsStr,
        which: Which,
        limit: u64,
        opts: &DataOptions,
    ) -> Result<Source, DataError> {
        let mut budget = Budget::new(limit);
        match arg.to_str() {
            Some(s) if s.starts_with("synthetic:") => {
                image_options_unused(Path::new(s), opts, "synthetic data")?;
                let spec = synthetic::parse(s)?;
                spec.check(which, &mut budget)?;
                Ok(Source::Synthetic(spec, which))
            }
            _ => Source::find_dir(Path::new(arg), which, &mut budget, opts),
        }
    }

    fn find_dir(
        dir: &Path,
        which: Which,
        budget: &mut Budget,
        opts: &DataOptions,
    ) -> Result<Source, DataError> {
        if !dir.is_dir() {
            let problem = if dir.exists() {
                "not a directory (--data takes a dataset directory or synthetic:CxHxW:N)"
            } else {
                "no such directory"
            };
            return Err(DataError::new(dir, problem));
        }
        if idx::detect(dir) {
            image_options_unused(dir, opts, "IDX files")?;
            Ok(Source::Idx(idx::describe(dir, which, budget)?))
        } else if let Some(c) = cifar::detect(dir) {
            image_options_unused(dir, opts, "CIFAR batches")?;
            Ok(Source::Cifar(cifar::describe(&c, which, budget)?))
        } else if npy::detect(dir) {
            image_options_unused(dir, opts, "NumPy arrays")?;
            Ok(Source::Npy(npy::describe(dir, which, budget)?))
        } else if images::detect(dir) {
            Ok(Source::Images(images::describe(dir, which, opts, budget)?))
        } else {
            Err(DataError::new(
                dir,
                "no dataset found (expected IDX files train-images-idx3-ubyte[.gz], \
                 train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], \
                 t10k-labels-idx1-ubyte[.gz], or CIFAR-10 binary batches data_batch_1..5.bin + \
                 test_batch.bin, or CIFAR-100 binary train.bin + test.bin, or NumPy arrays \
                 x_train.npy, y_train.npy, x_test.npy, y_test.npy, or an image folder: one \
                 folder of PNG/JPEG files per class)",
            ))
        }
    }

    fn info(&self) -> DataInfo {
        match self {
            Source::Idx(f) => DataInfo {
                shape: f.shape,
                classes: idx::CLASSES,
                train: f.train.as_ref().map_or(0, |p| p.n),
                test: f.test.n,
                loader: 0,
            },
            Source::Cifar(f) => DataInfo {
                shape: f.shape(),
                classes: f.classes,
                train: f.n_train(),
                test: f.test.records(),
                loader: 0,
            },
            Source::Npy(f) => DataInfo {
                shape: f.shape,
                classes: f.classes,
                train: f.train.as_ref().map_or(0, |p| p.n),
                test: f.test.n,
                loader: 0,
            },
            Source::Images(f) => DataInfo {
                shape: f.shape,
                classes: f.classes.len(),
                train: f.train.len(),
                test: f.test.len(),
                loader: f.loader_bytes,
            },
            Source::Synthetic(s, which) => DataInfo {
                shape: s.shape,
                classes: synthetic::CLASSES,
                train: if *which == Which::Both { s.n_train } else { 0 },
                test: s.n_test,
                loader: 0,
            },
        }
    }

    /// Reads (or generates) the test split (`test`) or the training split.
    fn read(&self, test: bool) -> Result<Raw, DataError> {
        match self {
            Source::Idx(f) => match (&f.train, test) {
                (Some(train), false) => idx::load(train),
                _ => idx::load(&f.test),
            },
            Source::Cifar(f) => f.load(test),
            Source::Npy(f) => match (&f.train, test) {
                (Some(train), false) => npy::load(train, f.classes),
                _ => npy::load(&f.test, f.classes),
            },
            Source::Images(f) => f.load(test),
            Source::Synthetic(s, _) => s.generate(test),
        }
    }

    /// Both splits, normalised with the training split's constants.
    fn load(self) -> Result<Splits, DataError> {
        let info = self.info();
        let class_names = match &self {
            Source::Images(f) => Some(f.classes.clone()),
            _ => None,
        };
        let train = self.read(false)?;
        let test = self.read(true)?;
        let (mean, std) = dataset::channel_stats(&train.pixels, info.shape);
        let ds = |r: Raw| {
            Dataset::from_parts(
                r.pixels,
                r.labels,
                info.shape,
                info.classes,
                mean.clone(),
                std.clone(),
            )
        };
        Ok(Splits {
            train: ds(train),
            test: ds(test),
            class_names,
        })
    }
}
