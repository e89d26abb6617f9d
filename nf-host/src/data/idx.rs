//! IDX files (MNIST / Fashion-MNIST layout), raw or gzipped.
//!
//! An IDX file is a big-endian header, magic `0x00000803` (unsigned bytes, 3 dimensions) for
//! images or `0x00000801` (unsigned bytes, 1 dimension) for labels, one `u32` per dimension,
//! then the data. The header must describe exactly the bytes that follow.

use std::path::{Path, PathBuf};

use nf_core::model::Shape;

use super::{open, read_at_most, read_error, read_up_to, DataError, RawSplits};

/// Classes of an IDX dataset (MNIST, Fashion-MNIST).
const CLASSES: usize = 10;
/// Magic of an image file: unsigned bytes, 3 dimensions.
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of a label file: unsigned bytes, 1 dimension.
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The four files, by base name (without `.gz`).
const NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// `Some(dir)` when `dir` holds at least one of the IDX files (raw or `.gz`).
pub(super) fn detect(dir: &Path) -> Option<PathBuf> {
    NAMES
        .iter()
        .any(|n| dir.join(n).is_file() || dir.join(format!("{n}.gz")).is_file())
        .then(|| dir.to_path_buf())
}

/// The file for base name `name`: raw if present, else `.gz`; an error naming it if neither.
fn resolve(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if raw.is_file() {
        Ok(raw)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        Err(DataError::new(
            raw,
            format!(
                "missing file (neither {name} nor {name}.gz exists; an IDX dataset needs \
                 train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and \
                 t10k-labels-idx1-ubyte, each raw or .gz)"
            ),
        ))
    }
}

/// Loads the four IDX files of `dir` (see [`detect`]).
pub(super) fn load(dir: &Path) -> Result<RawSplits, DataError> {
    let paths = NAMES
        .iter()
        .map(|n| resolve(dir, n))
        .collect::<Result<Vec<_>, _>>()?;
    let (train_shape, train_pixels, n_train) = read_images(&paths[0])?;
    let train_labels = read_labels(&paths[1])?;
    check_count(&paths[1], train_labels.len(), &paths[0], n_train)?;
    let (test_shape, test_pixels, n_test) = read_images(&paths[2])?;
    if test_shape != train_shape {
        return Err(DataError::new(
            &paths[2],
            format!(
                "images are {}x{} but the training images ({}) are {}x{}",
                test_shape.h,
                test_shape.w,
                file_name(&paths[0]),
                train_shape.h,
                train_shape.w
            ),
        ));
    }
    let test_labels = read_labels(&paths[3])?;
    check_count(&paths[3], test_labels.len(), &paths[2], n_test)?;
    Ok(RawSplits {
        shape: train_shape,
        classes: CLASSES,
        train_pixels,
        train_labels,
        test_pixels,
        test_labels,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn check_count(
    labels_path: &Path,
    n_labels: usize,
    images_path: &Path,
    n_images: usize,
) -> Result<(), DataError> {
    if n_labels == n_images {
        return Ok(());
    }
    Err(DataError::new(
        labels_path,
        format!(
            "holds {n_labels} labels but {} holds {n_images} images",
            file_name(images_path)
        ),
    ))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads `header.len()` bytes of header and checks the magic; returns the reader and gz flag.
fn read_header(
    path: &Path,
    header: &mut [u8],
    magic: u32,
    what: &str,
) -> Result<(Box<dyn std::io::Read>, bool), DataError> {
    let (mut r, gz) = open(path)?;
    let got = read_up_to(&mut r, header).map_err(|e| read_error(path, gz, e))?;
    if got < 4 {
        let problem = if got == 0 {
            "empty file (expected an IDX header)".to_string()
        } else {
            format!("truncated: {got} bytes, too short for an IDX magic number")
        };
        return Err(DataError::new(path, problem));
    }
    let found = be32(&header[..4]);
    if found != magic {
        return Err(DataError::new(
            path,
            format!("bad IDX magic 0x{found:08x} (expected 0x{magic:08x} for {what})"),
        ));
    }
    if got < header.len() {
        return Err(DataError::new(
            path,
            format!(
                "truncated: IDX header is {got} bytes, expected {}",
                header.len()
            ),
        ));
    }
    Ok((r, gz))
}

/// Reads an image file: shape (1 channel), pixels, image count.
fn read_images(path: &Path) -> Result<(Shape, Vec<u8>, usize), DataError> {
    let mut h = [0u8; 16];
    let (mut r, gz) = read_header(path, &mut h, IMAGES_MAGIC, "images")?;
    let (n, rows, cols) = (be32(&h[4..8]), be32(&h[8..12]), be32(&h[12..16]));
    if rows == 0 || cols == 0 {
        return Err(DataError::new(
            path,
            format!("bad dimensions: images of {rows}x{cols} pixels"),
        ));
    }
    if n == 0 {
        return Err(DataError::new(path, "holds no images (header count is 0)"));
    }
    let per_image = u64::from(rows) * u64::from(cols);
    let expected = per_image
        .checked_mul(u64::from(n))
        .filter(|&b| b < isize::MAX as u64)
        .ok_or_else(|| {
            DataError::new(
                path,
                format!("bad dimensions: {n} images of {rows}x{cols} is too large"),
            )
        })?;
    let data = read_at_most(&mut r, expected + 1).map_err(|e| read_error(path, gz, e))?;
    let got = data.len() as u64;
    if got < expected {
        return Err(DataError::new(
            path,
            format!(
                "truncated: header says {n} images of {rows}x{cols} but the file holds {} \
                 whole images ({got} of {expected} pixel bytes)",
                got / per_image
            ),
        ));
    }
    if got > expected {
        return Err(DataError::new(
            path,
            format!(
                "over-long: header says {n} images of {rows}x{cols} ({expected} bytes) but \
                 more data follows them"
            ),
        ));
    }
    let shape = Shape::new(1, rows as usize, cols as usize);
    Ok((shape, data, n as usize))
}

/// Reads a label file; every label must be in `0..CLASSES`.
fn read_labels(path: &Path) -> Result<Vec<u16>, DataError> {
    let mut h = [0u8; 8];
    let (mut r, gz) = read_header(path, &mut h, LABELS_MAGIC, "labels")?;
    let n = be32(&h[4..8]);
    if n == 0 {
        return Err(DataError::new(path, "holds no labels (header count is 0)"));
    }
    let expected = u64::from(n);
    let data = read_at_most(&mut r, expected + 1).map_err(|e| read_error(path, gz, e))?;
    let got = data.len() as u64;
    if got < expected {
        return Err(DataError::new(
            path,
            format!("truncated: header says {n} labels but the file holds {got}"),
        ));
    }
    if got > expected {
        return Err(DataError::new(
            path,
            format!("over-long: header says {n} labels but more data follows them"),
        ));
    }
    if let Some((i, &l)) = data
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= CLASSES)
    {
        return Err(DataError::new(
            path,
            format!("label {l} outside 0..{CLASSES} at record {i}"),
        ));
    }
    Ok(data.into_iter().map(u16::from).collect())
}
