//! NumPy arrays: `x_train.npy`, `y_train.npy`, `x_test.npy`, `y_test.npy`, as `numpy.save`
//! writes them.
//!
//! Images are `uint8`, in one of three layouts, told apart by the shape alone:
//! - 3 dimensions: `N x H x W`, one channel;
//! - 4 dimensions, last one 1 or 3: `N x H x W x C` (channels last, as Keras and PIL have it);
//! - 4 dimensions, last one neither 1 nor 3 but the second 1 or 3: `N x C x H x W` (channels
//!   first, as PyTorch has it).
//!
//! Any other shape is refused with a message naming it. Labels are integers of any NumPy
//! integer dtype (1 to 8 bytes, either byte order), shape `(N,)` or `(N, 1)`; the classes are
//! `0 ..= max` of the training labels (the test labels when only the test split is read and no
//! training labels exist), so a test label above every training label is refused.
//!
//! [`describe`] reads the four headers (at most [`npy_header::MAX_HEADER`] bytes each) and compares each
//! claim with the file size, counting the claims against the memory budget in reading order,
//! then streams the label files once to find the classes (memory: one read buffer). [`load`]
//! reads the payloads into buffers of exactly the claimed size; channels-last images are
//! reordered to the stored `C x H x W` as they stream, with no second copy.

use std::path::{Path, PathBuf};

use nf_core::model::Shape;

use super::npy_header::{self, Header};
use super::read::{alloc, Length, Payload, CHUNK};
use super::{Budget, DataError, Raw, Which};
use crate::limits::{MAX_CLASSES, MAX_INPUT_SIDE};

/// The four files: training images and labels, test images and labels.
const NAMES: [&str; 4] = ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"];

/// `true` when `dir` holds at least one of the four files.
pub(super) fn detect(dir: &Path) -> bool {
    NAMES.iter().any(|n| dir.join(n).is_file())
}

/// How the image array's axes are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `N x H x W` or `N x C x H x W`: already as stored.
    Planar,
    /// `N x H x W x C` with `C > 1`: reordered as read.
    ChannelsLast,
}

/// An images file: its payload, the shape of one image and the layout.
struct Images {
    payload: Payload,
    shape: Shape,
    layout: Layout,
    n: usize,
}

/// A labels file: its payload and element type.
struct Labels {
    payload: Payload,
    size: usize,
    signed: bool,
    big: bool,
}

/// An images file and its labels file, counts agreeing.
pub(super) struct Pair {
    images: Images,
    labels: Labels,
    /// Images (= labels) in the pair.
    pub n: usize,
}

/// The `.npy` files of a dataset directory, headers read and checked, classes known.
pub(super) struct Files {
    /// Shape of one image.
    pub shape: Shape,
    /// `max label + 1` of the training labels.
    pub classes: usize,
    /// The training pair, when asked for.
    pub train: Option<Pair>,
    /// The test pair.
    pub test: Pair,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The file `name` in `dir`, or an error naming it.
fn resolve(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(DataError::new(
            p,
            "missing file (a NumPy dataset needs x_train.npy, y_train.npy, x_test.npy and \
             y_test.npy)",
        ))
    }
}

/// Reads and checks the headers of the `.npy` files in `dir` (the test split's only for
/// [`Which::Test`]), counting each claim against `budget` as its header is read, then finds
/// the classes from the labels.
pub(super) fn describe(dir: &Path, which: Which, budget: &mut Budget) -> Result<Files, DataError> {
    let train = match which {
        Which::Both => Some(pair(
            &resolve(dir, NAMES[0])?,
            &resolve(dir, NAMES[1])?,
            budget,
        )?),
        Which::Test => None,
    };
    let test = pair(&resolve(dir, NAMES[2])?, &resolve(dir, NAMES[3])?, budget)?;
    if let Some(train) = &train {
        if test.images.shape != train.images.shape {
            let (a, b) = (test.images.shape, train.images.shape);
            return Err(DataError::new(
                &test.images.payload.path,
                format!(
                    "images are {}x{}x{} (CxHxW) but those of {} are {}x{}x{}",
                    a.c,
                    a.h,
                    a.w,
                    file_name(&train.images.payload.path),
                    b.c,
                    b.h,
                    b.w
                ),
            ));
        }
    }
    // The classes: from the training labels, read here only for their largest value when
    // just the test split is loaded.
    let train_labels = match &train {
        Some(t) => Some(scan(&t.labels, None)?),
        None => match dir.join(NAMES[1]) {
            p if p.is_file() => Some(scan(&labels_header(&p, None)?.0, None)?),
            _ => None,
        },
    };
    let (max, from) = match train_labels {
        Some(max) => (max, dir.join(NAMES[1])),
        None => (scan(&test.labels, None)?, test.labels.payload.path.clone()),
    };
    if max == 0 {
        return Err(DataError::new(
            from,
            "every label is 0: a classifier needs at least 2 classes",
        ));
    }
    let classes = usize::from(max) + 1;
    if train_labels.is_some() {
        scan(&test.labels, Some((classes, NAMES[1])))?;
    }
    Ok(Files {
        shape: test.images.shape,
        classes,
        train,
        test,
    })
}

/// The headers of an images file and its labels file, counts agreeing.
fn pair(images: &Path, labels: &Path, budget: &mut Budget) -> Result<Pair, DataError> {
    let images = images_header(images, budget)?;
    let (labels, n) = labels_header(labels, Some(budget))?;
    if n != images.n {
        return Err(DataError::new(
            &labels.payload.path,
            format!(
                "holds {n} labels but {} holds {} images",
                file_name(&images.payload.path),
                images.n
            ),
        ));
    }
    Ok(Pair { images, labels, n })
}

/// The header of `path`, its claim checked against the file's length.
fn header(path: &Path) -> Result<(Header, Payload), DataError> {
    let h = npy_header::read(path)?;
    let claim = h
        .claim()
        .filter(|&b| b < isize::MAX as u64)
        .ok_or_else(|| DataError::new(path, format!("shape {} is too large", h.shape_text())))?;
    let payload = Payload {
        path: path.to_path_buf(),
        gz: h.gz,
        header: h.offset,
        claim,
    };
    Ok((h, payload))
}

/// `Ok` for [`Length::Exact`], else the truncated / over-long error of `h`'s file.
fn length(h: &Header, p: &Payload, len: Length) -> Result<(), DataError> {
    let what = format!("shape {} of dtype '{}'", h.shape_text(), h.dtype.text);
    let problem = match len {
        Length::Exact => return Ok(()),
        Length::Short(got) => format!(
            "truncated: the header claims {} data bytes ({what}) but the file holds {got}",
            p.claim
        ),
        Length::Long => format!(
            "over-long: the header claims {} data bytes ({what}) but more data follows them",
            p.claim
        ),
    };
    Err(DataError::new(&p.path, problem))
}

/// Reads an images file's header: shape, layout and count, counted against `budget`, and
/// (uncompressed files) compared with the file size.
fn images_header(path: &Path, budget: &mut Budget) -> Result<Images, DataError> {
    let bad = |p: String| DataError::new(path, p);
    let (h, payload) = header(path)?;
    if h.dtype.kind != b'u' || h.dtype.size != 1 {
        return Err(bad(format!(
            "dtype '{}' is not supported: images must be uint8 ('|u1'; save x.astype(numpy.uint8))",
            h.dtype.text
        )));
    }
    let s = &h.shape;
    let channel = |c: u64| c == 1 || c == 3;
    let (n, c, hh, ww, layout) = match s.len() {
        3 => (s[0], 1, s[1], s[2], Layout::Planar),
        4 if channel(s[3]) => {
            let layout = if s[3] == 1 {
                Layout::Planar
            } else {
                Layout::ChannelsLast
            };
            (s[0], s[3], s[1], s[2], layout)
        }
        4 if channel(s[1]) => (s[0], s[1], s[2], s[3], Layout::Planar),
        4 => {
            return Err(bad(format!(
                "cannot tell the channel axis of shape {}: expected N x H x W x C or \
                 N x C x H x W with C 1 or 3",
                h.shape_text()
            )))
        }
        _ => {
            return Err(bad(format!(
                "shape {} is not N x H x W, N x H x W x C or N x C x H x W",
                h.shape_text()
            )))
        }
    };
    let side = MAX_INPUT_SIDE as u64;
    if hh == 0 || ww == 0 || hh > side || ww > side {
        return Err(bad(format!(
            "bad dimensions: images of {hh}x{ww} pixels (1 to {side} a side)"
        )));
    }
    if n == 0 {
        return Err(bad(format!("holds no images (shape {})", h.shape_text())));
    }
    let shape = Shape::new(c as usize, hh as usize, ww as usize);
    budget.add(path, &format!("{n} images of {c}x{hh}x{ww}"), payload.claim)?;
    length(&h, &payload, payload.measure()?)?;
    Ok(Images {
        payload,
        shape,
        layout,
        n: n as usize,
    })
}

/// Reads a labels file's header: payload and count, counted against `budget` when given (2
/// bytes a label in memory), and compared with the file size.
fn labels_header(path: &Path, budget: Option<&mut Budget>) -> Result<(Labels, usize), DataError> {
    let bad = |p: String| DataError::new(path, p);
    let (h, payload) = header(path)?;
    let t = &h.dtype;
    if !matches!(t.kind, b'u' | b'i') || ![1, 2, 4, 8].contains(&t.size) {
        return Err(bad(format!(
            "dtype '{}' is not supported: labels must be integers (int or uint, 1 to 8 bytes)",
            t.text
        )));
    }
    let n = match h.shape[..] {
        [n] | [n, 1] => n,
        _ => {
            return Err(bad(format!(
                "shape {} is not (N,) or (N, 1): one label per image",
                h.shape_text()
            )))
        }
    };
    if n == 0 {
        return Err(bad("holds no labels (shape (0,))".into()));
    }
    if let Some(budget) = budget {
        budget.add(path, &format!("{n} labels"), 2u64.saturating_mul(n))?;
    }
    length(&h, &payload, payload.measure()?)?;
    let labels = Labels {
        payload,
        size: t.size,
        signed: t.kind == b'i',
        big: t.big,
    };
    Ok((labels, n as usize))
}

impl Labels {
    /// Streams the labels, checking each: not negative, below `classes` when given (naming
    /// the file they come from), below [`MAX_CLASSES`]; `each(index, label)` sees the good ones.
    fn stream(
        &self,
        classes: Option<(usize, &str)>,
        each: &mut dyn FnMut(usize, u16),
    ) -> Result<(), DataError> {
        let path = &self.payload.path;
        let size = self.size;
        let mut i = 0usize;
        let len = self
            .payload
            .stream_in(size * (CHUNK / size), &mut |chunk| {
                for v in chunk.chunks_exact(size) {
                    let value = self.value(v);
                    let limit = classes.map_or(MAX_CLASSES, |(c, _)| c);
                    if value < 0 || value >= limit as i128 {
                        let why = match classes {
                            _ if value < 0 => "labels are class indices 0, 1, ...".to_string(),
                            Some((c, from)) => format!("the classes of {from} are 0..{c}"),
                            None => format!("at most {MAX_CLASSES} classes"),
                        };
                        return Err(DataError::new(
                            path,
                            format!("label {value} out of range at record {i} ({why})"),
                        ));
                    }
                    each(i, value as u16);
                    i += 1;
                }
                Ok(())
            })?;
        if len != Length::Exact {
            return Err(DataError::new(
                path,
                "changed while being read (its size no longer matches)",
            ));
        }
        Ok(())
    }

    /// One label from its `size` bytes.
    fn value(&self, b: &[u8]) -> i128 {
        let mut x = [0u8; 8];
        if self.big {
            x[8 - b.len()..].copy_from_slice(b);
            x.reverse();
        } else {
            x[..b.len()].copy_from_slice(b);
        }
        let u = u64::from_le_bytes(x);
        if self.signed {
            let shift = 64 - 8 * b.len() as u32;
            i128::from(((u << shift) as i64) >> shift)
        } else {
            i128::from(u)
        }
    }
}

/// The largest label of `labels`, every label checked (against `classes` when given).
fn scan(labels: &Labels, classes: Option<(usize, &str)>) -> Result<u16, DataError> {
    let mut max = 0u16;
    labels.stream(classes, &mut |_, l| max = max.max(l))?;
    Ok(max)
}

/// Reads the payloads of `pair`: pixels (as `C x H x W`) and labels, each checked against
/// `classes`.
pub(super) fn load(pair: &Pair, classes: usize) -> Result<Raw, DataError> {
    let pixels = read_images(&pair.images)?;
    let p = &pair.labels.payload;
    let mut labels = alloc::<u16>(&p.path, pair.n, "the labels")?;
    pair.labels
        .stream(Some((classes, "the data set")), &mut |_, l| labels.push(l))?;
    Ok(Raw { pixels, labels })
}

/// The pixels of an images file, reordered to `C x H x W` per image when channels-last.
fn read_images(im: &Images) -> Result<Vec<u8>, DataError> {
    let p = &im.payload;
    let changed = || {
        DataError::new(
            &p.path,
            "changed while being read (its size no longer matches)",
        )
    };
    if p.measure()? != Length::Exact {
        return Err(changed());
    }
    let mut pixels = alloc::<u8>(&p.path, p.claim as usize, "the images")?;
    let len = match im.layout {
        Layout::Planar => p.stream(&mut |b| {
            pixels.extend_from_slice(b);
            Ok(())
        })?,
        Layout::ChannelsLast => {
            pixels.resize(p.claim as usize, 0);
            let (c, plane) = (im.shape.c, im.shape.h * im.shape.w);
            // Position in the source: the image's base, the pixel within it, the channel.
            let (mut base, mut pix, mut ch) = (0usize, 0usize, 0usize);
            p.stream(&mut |b| {
                for &v in b {
                    pixels[base + ch * plane + pix] = v;
                    ch += 1;
                    if ch == c {
                        ch = 0;
                        pix += 1;
                        if pix == plane {
                            pix = 0;
                            base += c * plane;
                        }
                    }
                }
                Ok(())
            })?
        }
    };
    if len != Length::Exact {
        return Err(changed());
    }
    Ok(pixels)
}
