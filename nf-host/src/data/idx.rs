//! IDX files (MNIST / Fashion-MNIST layout), raw or gzipped.
//!
//! An IDX file is a big-endian header, magic `0x00000803` (unsigned bytes, 3 dimensions) for
//! images or `0x00000801` (unsigned bytes, 1 dimension) for labels, one `u32` per dimension,
//! then the data. The header must describe exactly the bytes that follow.
//!
//! [`describe`] reads the four headers (and, for raw files, compares each claim with the file
//! size); [`load`] then reads the payloads, each into a buffer of exactly the claimed size,
//! allocated only once the payload is known to be that long (see [`Payload::measure`]).

use std::path::{Path, PathBuf};

use nf_core::model::Shape;

use super::read::{alloc, open, read_error, read_up_to, Length, Payload};
use super::{Budget, DataError, Raw, Which};
use crate::limits::MAX_INPUT_SIDE;

/// Classes of an IDX dataset (MNIST, Fashion-MNIST).
pub(super) const CLASSES: usize = 10;
/// Magic of an image file: unsigned bytes, 3 dimensions.
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of a label file: unsigned bytes, 1 dimension.
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The four files, by base name (without `.gz`): training images and labels, test images and
/// labels.
const NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// `true` when `dir` holds at least one of the IDX files (raw or `.gz`).
pub(super) fn detect(dir: &Path) -> bool {
    NAMES
        .iter()
        .any(|n| dir.join(n).is_file() || dir.join(format!("{n}.gz")).is_file())
}

/// An images file and its labels file, headers checked against each other.
pub(super) struct Pair {
    images: Payload,
    labels: Payload,
    shape: Shape,
    /// Images (= labels) in the pair.
    pub n: usize,
}

/// The IDX files of a dataset directory, headers read and checked.
pub(super) struct Files {
    /// Shape of one image (1 channel).
    pub shape: Shape,
    /// The training pair, when asked for.
    pub train: Option<Pair>,
    /// The test pair.
    pub test: Pair,
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

/// Reads and checks the headers of the IDX files in `dir` (those of the test split only for
/// [`Which::Test`]), counting each file's claim against `budget` as soon as its header is
/// read; raw files are then checked against their size on disk.
pub(super) fn describe(dir: &Path, which: Which, budget: &mut Budget) -> Result<Files, DataError> {
    let names = match which {
        Which::Both => &NAMES[..],
        Which::Test => &NAMES[2..],
    };
    let paths = names
        .iter()
        .map(|n| resolve(dir, n))
        .collect::<Result<Vec<_>, _>>()?;
    let (train, test_paths) = match which {
        Which::Both => (Some(pair(&paths[0], &paths[1], budget)?), &paths[2..]),
        Which::Test => (None, &paths[..]),
    };
    let test = pair(&test_paths[0], &test_paths[1], budget)?;
    if let Some(train) = &train {
        if test.shape != train.shape {
            return Err(DataError::new(
                &test.images.path,
                format!(
                    "images are {}x{} but the training images ({}) are {}x{}",
                    test.shape.h,
                    test.shape.w,
                    file_name(&train.images.path),
                    train.shape.h,
                    train.shape.w
                ),
            ));
        }
    }
    Ok(Files {
        shape: test.shape,
        train,
        test,
    })
}

/// The headers of an images file and its labels file, counts agreeing.
fn pair(images: &Path, labels: &Path, budget: &mut Budget) -> Result<Pair, DataError> {
    let (images, shape, n) = images_header(images, budget)?;
    let (labels, n_labels) = labels_header(labels, budget)?;
    if n_labels != n {
        return Err(DataError::new(
            &labels.path,
            format!(
                "holds {n_labels} labels but {} holds {n} images",
                file_name(&images.path)
            ),
        ));
    }
    Ok(Pair {
        images,
        labels,
        shape,
        n,
    })
}

/// Reads the payloads of `pair`: pixels and validated labels.
pub(super) fn load(pair: &Pair) -> Result<Raw, DataError> {
    let pixels = read_images(pair)?;
    let labels = read_labels(&pair.labels)?;
    Ok(Raw { pixels, labels })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads `header.len()` bytes of header and checks the magic; returns whether it is gzipped.
fn read_header(path: &Path, header: &mut [u8], magic: u32, what: &str) -> Result<bool, DataError> {
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
    Ok(gz)
}

/// Reads an image file's header: payload, shape (1 channel) and image count, counted against
/// `budget`. A raw file's size must match the header.
fn images_header(path: &Path, budget: &mut Budget) -> Result<(Payload, Shape, usize), DataError> {
    let mut h = [0u8; 16];
    let gz = read_header(path, &mut h, IMAGES_MAGIC, "images")?;
    let (n, rows, cols) = (be32(&h[4..8]), be32(&h[8..12]), be32(&h[12..16]));
    // At most the sides `--input` accepts, which keep every planned size far from overflow.
    let side = MAX_INPUT_SIDE as u32;
    if rows == 0 || cols == 0 || rows > side || cols > side {
        return Err(DataError::new(
            path,
            format!("bad dimensions: images of {rows}x{cols} pixels (1 to {side} a side)"),
        ));
    }
    if n == 0 {
        return Err(DataError::new(path, "holds no images (header count is 0)"));
    }
    let claim = u64::from(rows)
        .checked_mul(u64::from(cols))
        .and_then(|p| p.checked_mul(u64::from(n)))
        .filter(|&b| b < isize::MAX as u64)
        .ok_or_else(|| {
            DataError::new(
                path,
                format!("bad dimensions: {n} images of {rows}x{cols} is too large"),
            )
        })?;
    budget.add(path, &format!("{n} images of {rows}x{cols}"), claim)?;
    let payload = Payload {
        path: path.to_path_buf(),
        gz,
        header: 16,
        claim,
    };
    let shape = Shape::new(1, rows as usize, cols as usize);
    if !gz {
        images_length(&payload, shape, payload.measure()?)?;
    }
    Ok((payload, shape, n as usize))
}

/// `Ok` for [`Length::Exact`], else the truncated / over-long error of an images file.
fn images_length(p: &Payload, shape: Shape, len: Length) -> Result<(), DataError> {
    let (rows, cols) = (shape.h, shape.w);
    let per_image = (rows * cols) as u64;
    let n = p.claim / per_image;
    let problem = match len {
        Length::Exact => return Ok(()),
        Length::Short(got) => format!(
            "truncated: header says {n} images of {rows}x{cols} but the file holds {} whole \
             images ({got} of {} pixel bytes)",
            got / per_image,
            p.claim
        ),
        Length::Long => format!(
            "over-long: header says {n} images of {rows}x{cols} ({} bytes) but more data \
             follows them",
            p.claim
        ),
    };
    Err(DataError::new(&p.path, problem))
}

/// Reads a label file's header: payload and label count, counted against `budget` (2 bytes a
/// label). A raw file's size must match.
fn labels_header(path: &Path, budget: &mut Budget) -> Result<(Payload, usize), DataError> {
    let mut h = [0u8; 8];
    let gz = read_header(path, &mut h, LABELS_MAGIC, "labels")?;
    let n = be32(&h[4..8]);
    if n == 0 {
        return Err(DataError::new(path, "holds no labels (header count is 0)"));
    }
    budget.add(path, &format!("{n} labels"), 2 * u64::from(n))?;
    let payload = Payload {
        path: path.to_path_buf(),
        gz,
        header: 8,
        claim: u64::from(n),
    };
    if !gz {
        labels_length(&payload, payload.measure()?)?;
    }
    Ok((payload, n as usize))
}

/// `Ok` for [`Length::Exact`], else the truncated / over-long error of a labels file.
fn labels_length(p: &Payload, len: Length) -> Result<(), DataError> {
    let n = p.claim;
    let problem = match len {
        Length::Exact => return Ok(()),
        Length::Short(got) => {
            format!("truncated: header says {n} labels but the file holds {got}")
        }
        Length::Long => format!("over-long: header says {n} labels but more data follows them"),
    };
    Err(DataError::new(&p.path, problem))
}

/// The pixels of an images file: measured, then read into a buffer of exactly the claim.
fn read_images(pair: &Pair) -> Result<Vec<u8>, DataError> {
    let p = &pair.images;
    images_length(p, pair.shape, p.measure()?)?;
    let mut pixels = alloc::<u8>(&p.path, p.claim as usize, "the images")?;
    let len = p.stream(&mut |b| {
        pixels.extend_from_slice(b);
        Ok(())
    })?;
    images_length(p, pair.shape, len)?;
    Ok(pixels)
}

/// The labels of a label file, each checked to be in `0..CLASSES`.
fn read_labels(p: &Payload) -> Result<Vec<u16>, DataError> {
    labels_length(p, p.measure()?)?;
    let mut labels = alloc::<u16>(&p.path, p.claim as usize, "the labels")?;
    let len = p.stream(&mut |b| {
        if let Some(k) = b.iter().position(|&l| usize::from(l) >= CLASSES) {
            return Err(DataError::new(
                &p.path,
                format!(
                    "label {} outside 0..{CLASSES} at record {}",
                    b[k],
                    labels.len() + k
                ),
            ));
        }
        labels.extend(b.iter().map(|&l| u16::from(l)));
        Ok(())
    })?;
    labels_length(p, len)?;
    Ok(labels)
}
