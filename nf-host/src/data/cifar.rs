//! CIFAR-10 and CIFAR-100 binary batches.
//!
//! A CIFAR-10 record is 1 label byte then 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
//! each 32x32 row-major, i.e. already CHW); a CIFAR-100 record has 2 label bytes (coarse 0..20,
//! fine 0..100) then the same pixels. Files are plain concatenations of records. Gzipped files
//! (gzip magic bytes) are read too.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use nf_core::model::Shape;

use super::{open, read_error, DataError, RawSplits};

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

/// Loads the batches [`detect`] found.
pub(super) fn load(which: &Cifar) -> Result<RawSplits, DataError> {
    let (dir, train, test, label_bytes, classes): (&Path, &[&str], &str, usize, usize) = match which
    {
        Cifar::Ten(d) => (d, &CIFAR10_TRAIN, CIFAR10_TEST, 1, 10),
        Cifar::Hundred(d) => (d, &[CIFAR100_TRAIN], CIFAR100_TEST, 2, 100),
    };
    // Report a missing file before spending time reading the others.
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
    let mut train_pixels = Vec::new();
    let mut train_labels = Vec::new();
    for name in train {
        read_batch(
            &dir.join(name),
            label_bytes,
            &mut train_pixels,
            &mut train_labels,
        )?;
    }
    let mut test_pixels = Vec::new();
    let mut test_labels = Vec::new();
    read_batch(
        &dir.join(test),
        label_bytes,
        &mut test_pixels,
        &mut test_labels,
    )?;
    Ok(RawSplits {
        shape: Shape::new(3, 32, 32),
        classes,
        train_pixels,
        train_labels,
        test_pixels,
        test_labels,
    })
}

/// Appends the records of one batch file to `pixels` and `labels`.
fn read_batch(
    path: &Path,
    label_bytes: usize,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u16>,
) -> Result<(), DataError> {
    let (mut r, gz) = open(path)?;
    let mut data = Vec::new();
    r.read_to_end(&mut data)
        .map_err(|e| read_error(path, gz, e))?;
    let record = label_bytes + PIXELS;
    let what = if label_bytes == 1 {
        "CIFAR-10 record (1 label byte + 3072 pixel bytes)"
    } else {
        "CIFAR-100 record (2 label bytes + 3072 pixel bytes)"
    };
    let size = if gz { "decompressed size" } else { "size" };
    if data.is_empty() {
        return Err(DataError::new(path, "empty file (expected CIFAR records)"));
    }
    if data.len() % record != 0 {
        return Err(DataError::new(
            path,
            format!(
                "{size} {} bytes is not a multiple of the {record}-byte {what}",
                data.len()
            ),
        ));
    }
    pixels.reserve(data.len() / record * PIXELS);
    labels.reserve(data.len() / record);
    for (i, rec) in data.chunks_exact(record).enumerate() {
        let label = if label_bytes == 1 {
            if rec[0] >= 10 {
                return Err(DataError::new(
                    path,
                    format!("label {} outside 0..10 at record {i}", rec[0]),
                ));
            }
            rec[0]
        } else {
            if rec[0] >= 20 {
                return Err(DataError::new(
                    path,
                    format!("coarse label {} outside 0..20 at record {i}", rec[0]),
                ));
            }
            if rec[1] >= 100 {
                return Err(DataError::new(
                    path,
                    format!("fine label {} outside 0..100 at record {i}", rec[1]),
                ));
            }
            rec[1]
        };
        labels.push(u16::from(label));
        pixels.extend_from_slice(&rec[label_bytes..]);
    }
    Ok(())
}
