//! CIFAR-10 and CIFAR-100 binary batches.
//!
//! A CIFAR-10 record is 1 label byte then 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
//! each 32x32 row-major, i.e. already CHW); a CIFAR-100 record has 2 label bytes (coarse 0..20,
//! fine 0..100) then the same pixels. Files are plain concatenations of records, so a file's
//! size gives its record count ([`describe`] reads no data). Batches are read uncompressed: a
//! gzipped batch (gzip magic bytes) is refused, since its record count would only be known by
//! inflating all of it.

use std::path::{Path, PathBuf};

use nf_core::model::Shape;

use super::read::{alloc, open, Length, Payload};
use super::{Budget, DataError, Raw, Which};

/// Pixel bytes per record: 3 channels of 32x32.
const PIXELS: usize = 3 * 32 * 32;
/// The CIFAR-10 training batches, then the test batch.
const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const CIFAR10_TEST: &str = "test_batch.bin";
const CIFAR100_TRAIN: &str = "train.bin";
const CIFAR100_TEST: &str = "test.bin";

/// Which CIFAR, and the folder holding its batches.
pub(super) enum Cifar {
    /// CIFAR-10 batches in this folder.
    Ten(PathBuf),
    /// CIFAR-100 batches in this folder.
    Hundred(PathBuf),
}

/// Finds CIFAR-10 batches (in `dir` or `dir/cifar-10-batches-bin`), else CIFAR-100 batches
/// (in `dir` or `dir/cifar-100-binary`): the first folder holding any of the files.
pub(super) fn detect(dir: &Path) -> Option<Cifar> {
    for sub in [dir.to_path_buf(), dir.join("cifar-10-batches-bin")] {
        if CIFAR10_TRAIN
            .iter()
            .chain([&CIFAR10_TEST])
            .any(|n| sub.join(n).is_file())
        {
            return Some(Cifar::Ten(sub));
        }
    }
    for sub in [dir.to_path_buf(), dir.join("cifar-100-binary")] {
        if [CIFAR100_TRAIN, CIFAR100_TEST]
            .iter()
            .any(|n| sub.join(n).is_file())
        {
            return Some(Cifar::Hundred(sub));
        }
    }
    None
}

/// One batch file and its record count.
pub(super) struct Batch {
    payload: Payload,
    records: usize,
}

/// The batch files of a CIFAR dataset, sizes checked.
pub(super) struct Files {
    /// Label bytes per record (1 for CIFAR-10, 2 for CIFAR-100).
    label_bytes: usize,
    /// 10 or 100.
    pub classes: usize,
    /// The training batches (none for [`Which::Test`]).
    pub train: Vec<Batch>,
    /// The test batch.
    pub test: Batch,
}

/// Checks the batches [`detect`] found (those of the test split only for [`Which::Test`]):
/// present, not gzipped, a whole number of records, at least one; each counted against
/// `budget` (3074 bytes a record in memory).
pub(super) fn describe(
    which_cifar: &Cifar,
    which: Which,
    budget: &mut Budget,
) -> Result<Files, DataError> {
    let (dir, train, test, label_bytes, classes): (&Path, &[&str], &str, usize, usize) =
        match which_cifar {
            Cifar::Ten(d) => (d, &CIFAR10_TRAIN, CIFAR10_TEST, 1, 10),
            Cifar::Hundred(d) => (d, &[CIFAR100_TRAIN], CIFAR100_TEST, 2, 100),
        };
    let train = match which {
        Which::Both => train,
        Which::Test => &[],
    };
    // Report a missing file before looking into the others.
    for name in train.iter().chain([&test]) {
        let p = dir.join(name);
        if !p.is_file() {
            let all: Vec<&str> = train.iter().chain([&test]).copied().collect();
            return Err(DataError::new(
                p,
                format!(
                    "missing file (a CIFAR-{classes} dataset needs {})",
                    all.join(", ")
                ),
            ));
        }
    }
    let mut batch = |name: &str| batch(&dir.join(name), label_bytes, budget);
    Ok(Files {
        label_bytes,
        classes,
        train: train.iter().map(|n| batch(n)).collect::<Result<_, _>>()?,
        test: batch(test)?,
    })
}

/// The record count of one batch file, from its size.
fn batch(path: &Path, label_bytes: usize, budget: &mut Budget) -> Result<Batch, DataError> {
    let (_, gz) = open(path)?;
    if gz {
        return Err(DataError::new(
            path,
            "gzip-compressed; CIFAR batches are read uncompressed (gunzip the file first)",
        ));
    }
    let size = std::fs::metadata(path)
        .map_err(|e| DataError::new(path, format!("cannot open: {e}")))?
        .len();
    let record = (label_bytes + PIXELS) as u64;
    let what = if label_bytes == 1 {
        "CIFAR-10 record (1 label byte + 3072 pixel bytes)"
    } else {
        "CIFAR-100 record (2 label bytes + 3072 pixel bytes)"
    };
    if size == 0 {
        return Err(DataError::new(path, "empty file (expected CIFAR records)"));
    }
    if size % record != 0 {
        return Err(DataError::new(
            path,
            format!("size {size} bytes is not a multiple of the {record}-byte {what}"),
        ));
    }
    let records = usize::try_from(size / record)
        .map_err(|_| DataError::new(path, format!("too large: {size} bytes")))?;
    budget.add(
        path,
        &format!("{records} records of 3x32x32"),
        records as u64 * (PIXELS as u64 + 2),
    )?;
    Ok(Batch {
        payload: Payload {
            path: path.to_path_buf(),
            gz,
            header: 0,
            claim: size,
        },
        records,
    })
}

impl Batch {
    /// Records in the file.
    pub fn records(&self) -> usize {
        self.records
    }
}

impl Files {
    /// Shape of one image.
    pub fn shape(&self) -> Shape {
        Shape::new(3, 32, 32)
    }

    /// Training records in all.
    pub fn n_train(&self) -> usize {
        self.train.iter().map(|b| b.records).sum()
    }

    /// Reads the training batches (`test` false) or the test batch into one set.
    pub fn load(&self, test: bool) -> Result<Raw, DataError> {
        let batches = if test {
            std::slice::from_ref(&self.test)
        } else {
            &self.train[..]
        };
        let n: usize = batches.iter().map(|b| b.records).sum();
        let first = batches
            .first()
            .map_or(&self.test.payload.path, |b| &b.payload.path);
        let mut raw = Raw {
            pixels: alloc(first, n.saturating_mul(PIXELS), "the images")?,
            labels: alloc(first, n, "the labels")?,
        };
        for b in batches {
            self.read_batch(b, &mut raw)?;
        }
        Ok(raw)
    }

    /// Appends the records of one batch file to `raw`, checking every label.
    fn read_batch(&self, b: &Batch, raw: &mut Raw) -> Result<(), DataError> {
        let path = &b.payload.path;
        let lb = self.label_bytes;
        let record = lb + PIXELS;
        let mut i = 0usize;
        let len = b
            .payload
            .stream_in(record * (super::read::CHUNK / record), &mut |chunk| {
                for rec in chunk.chunks_exact(record) {
                    if i == b.records {
                        // The file grew since it was measured; the length check reports it.
                        return Ok(());
                    }
                    raw.labels.push(u16::from(label(path, rec, lb, i)?));
                    raw.pixels.extend_from_slice(&rec[lb..]);
                    i += 1;
                }
                Ok(())
            })?;
        match len {
            Length::Exact if i == b.records => Ok(()),
            _ => Err(DataError::new(
                path,
                "changed while being read (its size no longer matches)",
            )),
        }
    }
}

/// The label of record `i` (the fine label for CIFAR-100), checked.
fn label(path: &Path, rec: &[u8], label_bytes: usize, i: usize) -> Result<u8, DataError> {
    let bad = |p: String| Err(DataError::new(path, p));
    if label_bytes == 1 {
        if rec[0] >= 10 {
            return bad(format!("label {} outside 0..10 at record {i}", rec[0]));
        }
        return Ok(rec[0]);
    }
    if rec[0] >= 20 {
        return bad(format!(
            "coarse label {} outside 0..20 at record {i}",
            rec[0]
        ));
    }
    if rec[1] >= 100 {
        return bad(format!(
            "fine label {} outside 0..100 at record {i}",
            rec[1]
        ));
    }
    Ok(rec[1])
}
