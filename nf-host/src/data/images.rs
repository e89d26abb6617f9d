//! Image folders: one folder per class of PNG and JPEG files, the layout of torchvision's
//! `ImageFolder` and Keras' `image_dataset_from_directory`.
//!
//! # Layout
//! `DIR/<class>/...` or `DIR/train/<class>/...` with an optional `DIR/test/<class>/...`. The
//! classes are the folder names, sorted (by bytes, as Python sorts them); a test folder may
//! hold only classes the training folder has. Without a test folder, a fixed share of the
//! images ([`DataOptions::test_split`], chosen by a fixed seed, so `nf train` and `nf eval`
//! pick the same ones) is the test split. Each class folder is walked recursively, following
//! symbolic links (a link back to a folder above it is refused); names starting with `.` are
//! skipped. Every other file must be a PNG or JPEG image, told by its first bytes: one bad
//! file stops the run with an error naming it (none is skipped).
//!
//! # Planned before read
//! [`describe`] lists the folders and reads every image's header (no pixels): size, colour
//! type. The images become `--channels` channels (default: 1 when every image is grey, 3 when
//! every image is colour; a mix is refused) of `--size` (default: the size all images share;
//! differing sizes are refused), stored once as `u8`, `C x H x W`. Beside the set, loading
//! holds the file list and, on each decoding thread, the working memory of one image, planned
//! per image from its header ([`decode_bytes`]) and enforced with the `image` crate's limits;
//! an image over [`MAX_SOURCE_PIXELS`] is refused before any pixel buffer exists.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use image::{ColorType, ImageDecoder, ImageFormat, ImageReader, Limits};
use nf_core::model::Shape;
use nf_core::rng::Rng;

use super::{Budget, DataError, DataOptions, Which};
use crate::limits::{MAX_CLASSES, MAX_INPUT_SIDE};

/// Largest width or height of an image file.
pub const MAX_SOURCE_SIDE: u32 = 16384;
/// Most pixels an image file may have (64 Mi, e.g. 8192x8192).
pub const MAX_SOURCE_PIXELS: u64 = 1 << 26;
/// Memory the header pass lets a decoder take (PNG ancillary chunks, row buffers).
const HEADER_ALLOC: u64 = 4 << 20;
/// A decoder's working memory beyond what [`decode_bytes`] counts from the header.
const DECODE_SLACK: u64 = 256 << 10;
/// Folder depth at which the walk stops (beyond any real data set).
const MAX_DEPTH: usize = 64;
/// Seed of the held-out test split (fixed: the same images whatever `--seed`).
const TEST_SEED: u64 = 0x7E57_5EED;

/// The image formats read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Png,
    Jpeg,
}

/// One image file, its header read.
pub(super) struct Entry {
    pub path: PathBuf,
    pub class: u16,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub color: ColorType,
    /// File size in bytes (the JPEG decoder reads the whole file into memory).
    pub len: u64,
}

/// An image folder, listed and its headers read.
pub(super) struct Files {
    /// The folder (errors about the whole set name it).
    pub dir: PathBuf,
    /// Shape of one stored image.
    pub shape: Shape,
    /// Class names, sorted; a label is an index into them.
    pub classes: Vec<String>,
    /// Training images (none for [`Which::Test`]).
    pub train: Vec<Entry>,
    /// Test images.
    pub test: Vec<Entry>,
    /// Decoding threads.
    pub threads: usize,
    /// Bytes the loader holds beside the set: the file list and every thread's working memory.
    pub loader_bytes: u64,
}

/// `true` when `dir` holds a folder (not starting with `.`): an image folder, since no other
/// format was found in it.
pub(super) fn detect(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            !e.file_name().to_string_lossy().starts_with('.')
                && fs::metadata(e.path()).is_ok_and(|m| m.is_dir())
        })
    })
}

/// Lists `dir`'s class folders and reads every image's header, refusing what cannot be loaded;
/// the set's pixels and labels are counted against `budget` (training split first).
pub(super) fn describe(
    dir: &Path,
    which: Which,
    opts: &DataOptions,
    budget: &mut Budget,
) -> Result<Files, DataError> {
    let (classes_dir, test_dir, class_names) = class_folders(dir)?;
    let mut all = list_classes(&classes_dir, &class_names, &class_names)?;
    let mut test = match &test_dir {
        Some(t) => {
            let names = class_dirs(t)?;
            let test = list_classes(t, &names, &class_names)?;
            if test.is_empty() {
                return Err(DataError::new(t, "holds no images"));
            }
            test
        }
        None => hold_out(&mut all, opts.test_split, &classes_dir)?,
    };
    for e in all.iter_mut().chain(test.iter_mut()) {
        read_header(e)?;
    }
    let shape = stored_shape(dir, &all, &test, opts)?;
    let train = if which == Which::Both {
        std::mem::take(&mut all)
    } else {
        Vec::new()
    };
    drop(all);
    for (set, what) in [(&train, "training"), (&test, "test")] {
        if set.is_empty() {
            continue;
        }
        let n = set.len() as u64;
        let what = format!("{n} {what} images of {}x{}x{}", shape.c, shape.h, shape.w);
        budget.add(
            &classes_dir,
            &what,
            n.saturating_mul(shape.len() as u64 + 2),
        )?;
    }
    let threads = opts.threads.clamp(1, (train.len() + test.len()).max(1));
    let work = train
        .iter()
        .chain(&test)
        .map(|e| decode_bytes(e, shape))
        .max()
        .unwrap_or(0);
    let listing: u64 = train
        .iter()
        .chain(&test)
        .map(|e| e.path.as_os_str().len() as u64 + std::mem::size_of::<Entry>() as u64)
        .sum();
    Ok(Files {
        dir: dir.to_path_buf(),
        shape,
        classes: class_names,
        train,
        test,
        threads,
        loader_bytes: listing.saturating_add(work.saturating_mul(threads as u64)),
    })
}

/// The folder of the class folders (`dir/train` when it holds class folders, else `dir`), the
/// test folder (`dir/test` beside `dir/train`, if any) and the class names; 2 to
/// [`MAX_CLASSES`] classes.
fn class_folders(dir: &Path) -> Result<(PathBuf, Option<PathBuf>, Vec<String>), DataError> {
    let train_dir = dir.join("train");
    let split = train_dir.is_dir() && !class_dirs(&train_dir)?.is_empty();
    let (classes_dir, test_dir) = if split {
        let t = dir.join("test");
        (train_dir, t.is_dir().then_some(t))
    } else {
        (dir.to_path_buf(), None)
    };
    let class_names = class_dirs(&classes_dir)?;
    if class_names.len() < 2 {
        return Err(DataError::new(
            &classes_dir,
            format!(
                "{} class folder{}: a classifier needs at least 2 (one folder of images per class)",
                class_names.len(),
                if class_names.len() == 1 { "" } else { "s" }
            ),
        ));
    }
    if class_names.len() > MAX_CLASSES {
        return Err(DataError::new(
            &classes_dir,
            format!(
                "{} class folders: more classes than a classifier may have ({MAX_CLASSES})",
                class_names.len()
            ),
        ));
    }
    Ok((classes_dir, test_dir, class_names))
}

/// The shape every image is stored in: `--channels` and `--size` when given, else those of the
/// images, which must then all agree (the first image of `all` then `test` names the rule).
fn stored_shape(
    dir: &Path,
    all: &[Entry],
    test: &[Entry],
    opts: &DataOptions,
) -> Result<Shape, DataError> {
    let first = all.first().or(test.first()).expect("at least one image");
    let channels = match opts.channels {
        Some(c) => c,
        None => {
            let c = channels_of(first.color);
            if let Some(e) = all.iter().chain(test).find(|e| channels_of(e.color) != c) {
                return Err(DataError::new(
                    &e.path,
                    format!(
                        "is {} but {} is {}: images of mixed channel counts (pass --channels 1 \
                         or 3 to convert them all)",
                        color_name(e.color),
                        first.path.display(),
                        color_name(first.color)
                    ),
                ));
            }
            c
        }
    };
    let (h, w) = match opts.size {
        Some(s) => s,
        None => {
            let (fw, fh) = (first.width, first.height);
            if let Some(e) = all
                .iter()
                .chain(test)
                .find(|e| (e.width, e.height) != (fw, fh))
            {
                return Err(DataError::new(
                    &e.path,
                    format!(
                        "is {}x{} (HxW) but {} is {fh}x{fw}: images of different sizes (pass \
                         --size HxW to resize them all)",
                        e.height,
                        e.width,
                        first.path.display()
                    ),
                ));
            }
            (fh as usize, fw as usize)
        }
    };
    if h == 0 || w == 0 || h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
        return Err(DataError::new(
            dir,
            format!("images of {h}x{w} pixels (1 to {MAX_INPUT_SIDE} a side)"),
        ));
    }
    Ok(Shape::new(channels, h, w))
}

/// Bytes one thread holds while it decodes `e` into `shape`: the file (JPEG, read whole), the
/// decoded image, the JPEG decoder's coefficients or the PNG decoder's row buffers, the image
/// converted to the stored channels, when resizing the `image` crate's intermediate
/// (`f32` RGBA, the source's width by the new height) and the resized copy, and
/// [`DECODE_SLACK`].
pub(super) fn decode_bytes(e: &Entry, shape: Shape) -> u64 {
    let px = u64::from(e.width) * u64::from(e.height);
    let bpp = u64::from(e.color.bytes_per_pixel());
    let decoder = match e.format {
        Format::Jpeg => e.len + 6 * px,
        Format::Png => 2 * u64::from(e.width) * bpp,
    };
    let resize = if (e.height as usize, e.width as usize) == (shape.h, shape.w) {
        0
    } else {
        16 * u64::from(e.width) * shape.h as u64 + shape.len() as u64
    };
    px * bpp + decoder + px * shape.c as u64 + resize + shape.len() as u64 + DECODE_SLACK
}

/// The memory limit the decoder of `e` runs under: the decoded image and its own buffers.
pub(super) fn decoder_limits(e: &Entry) -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(e.width);
    l.max_image_height = Some(e.height);
    let px = u64::from(e.width) * u64::from(e.height);
    l.max_alloc = Some(px * u64::from(e.color.bytes_per_pixel()) + 6 * px + DECODE_SLACK);
    l
}

/// 1 for grey images, 3 for colour ones (alpha is dropped).
fn channels_of(c: ColorType) -> usize {
    if c.has_color() {
        3
    } else {
        1
    }
}

fn color_name(c: ColorType) -> &'static str {
    if c.has_color() {
        "colour"
    } else {
        "grey"
    }
}

/// The sub-folders of `dir` (not starting with `.`), sorted by name.
fn class_dirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for name in sorted_names(dir)? {
        let p = dir.join(&name);
        if fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The names in `dir`, not starting with `.`, sorted; names must be UTF-8.
fn sorted_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let rd = fs::read_dir(dir).map_err(|e| DataError::new(dir, format!("cannot list: {e}")))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::new(dir, format!("cannot list: {e}")))?;
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| DataError::new(dir.join(&n), "file name is not UTF-8 text"))?;
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The image files of the class folders `names` in `dir`, labelled by their index in
/// `classes` (a name not there is refused); every folder must hold an image.
fn list_classes(dir: &Path, names: &[String], classes: &[String]) -> Result<Vec<Entry>, DataError> {
    let mut out = Vec::new();
    for name in names {
        let folder = dir.join(name);
        let class = classes.binary_search(name).map_err(|_| {
            DataError::new(
                &folder,
                "class folder not among the training classes (the training folder has none of \
                 this name)",
            )
        })?;
        let before = out.len();
        walk(&folder, class as u16, &mut Vec::new(), &mut out)?;
        if out.len() == before {
            return Err(DataError::new(
                &folder,
                "empty class folder (no image files in it)",
            ));
        }
    }
    Ok(out)
}

/// Appends the files under `dir` (recursively, following links, in name order) to `out`;
/// `stack` holds the (device, inode) of the folders above, to refuse a link back to one.
fn walk(
    dir: &Path,
    class: u16,
    stack: &mut Vec<(u64, u64)>,
    out: &mut Vec<Entry>,
) -> Result<(), DataError> {
    let md = fs::metadata(dir).map_err(|e| DataError::new(dir, format!("cannot read: {e}")))?;
    let id = (md.dev(), md.ino());
    if stack.contains(&id) {
        return Err(DataError::new(
            dir,
            "symlink loop: this folder is a link back to a folder above it",
        ));
    }
    if stack.len() == MAX_DEPTH {
        return Err(DataError::new(
            dir,
            format!("folders nested more than {MAX_DEPTH} deep"),
        ));
    }
    stack.push(id);
    for name in sorted_names(dir)? {
        let p = dir.join(&name);
        let md = fs::metadata(&p).map_err(|e| DataError::new(&p, format!("cannot read: {e}")))?;
        if md.is_dir() {
            walk(&p, class, stack, out)?;
        } else {
            out.push(Entry {
                path: p,
                class,
                format: Format::Png,
                width: 0,
                height: 0,
                color: ColorType::L8,
                len: md.len(),
            });
        }
    }
    stack.pop();
    Ok(())
}

/// Moves `round(n * fraction)` images, chosen by [`TEST_SEED`], from `all` to the returned
/// test split (both keep their order).
fn hold_out(all: &mut Vec<Entry>, fraction: f32, dir: &Path) -> Result<Vec<Entry>, DataError> {
    let n = all.len();
    let k = super::val_count(n, fraction);
    if k == 0 || k == n {
        return Err(DataError::new(
            dir,
            format!(
                "no test/ folder, and a test share of {fraction} of {n} images leaves {} test \
                 and {} training images (add a test/ folder or change --test-split)",
                k,
                n - k
            ),
        ));
    }
    let mut perm: Vec<usize> = (0..n).collect();
    Rng::new(TEST_SEED).shuffle(&mut perm);
    let mut is_test = vec![false; n];
    for &i in &perm[..k] {
        is_test[i] = true;
    }
    let (mut train, mut test) = (Vec::with_capacity(n - k), Vec::with_capacity(k));
    for (e, t) in std::mem::take(all).into_iter().zip(is_test) {
        if t {
            test.push(e);
        } else {
            train.push(e);
        }
    }
    *all = train;
    Ok(test)
}

/// The format told by the first bytes of `path`.
fn sniff(path: &Path) -> Result<Format, DataError> {
    let mut f =
        fs::File::open(path).map_err(|e| DataError::new(path, format!("cannot open: {e}")))?;
    let mut head = [0u8; 8];
    let got = super::read::read_up_to(&mut f, &mut head)
        .map_err(|e| DataError::new(path, format!("read error: {e}")))?;
    if got == 0 {
        return Err(DataError::new(
            path,
            "empty file (expected a PNG or JPEG image)",
        ));
    }
    if head[..got].starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else if head[..got].starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else {
        Err(DataError::new(
            path,
            "not a PNG or JPEG image (an image folder holds only PNG and JPEG files)",
        ))
    }
}

/// A reader of `e`'s file as its format.
pub(super) fn reader(e: &Entry) -> Result<ImageReader<std::io::BufReader<fs::File>>, DataError> {
    let f = fs::File::open(&e.path)
        .map_err(|err| DataError::new(&e.path, format!("cannot open: {err}")))?;
    let format = match e.format {
        Format::Png => ImageFormat::Png,
        Format::Jpeg => ImageFormat::Jpeg,
    };
    Ok(ImageReader::with_format(std::io::BufReader::new(f), format))
}

/// Reads `e`'s header: format, size, colour type; refuses an image over the size limits
/// before any pixel buffer exists.
fn read_header(e: &mut Entry) -> Result<(), DataError> {
    e.format = sniff(&e.path)?;
    let mut r = reader(e)?;
    let mut l = Limits::default();
    l.max_alloc = Some(HEADER_ALLOC);
    r.limits(l);
    let d = r
        .into_decoder()
        .map_err(|err| DataError::new(&e.path, format!("corrupt or unsupported image: {err}")))?;
    let (w, h) = d.dimensions();
    let px = u64::from(w) * u64::from(h);
    if w == 0 || h == 0 || w > MAX_SOURCE_SIDE || h > MAX_SOURCE_SIDE || px > MAX_SOURCE_PIXELS {
        return Err(DataError::new(
            &e.path,
            format!(
                "the header claims {w}x{h} pixels: an image may have 1 to {MAX_SOURCE_SIDE} a \
                 side and {MAX_SOURCE_PIXELS} in all"
            ),
        ));
    }
    let color = d.color_type();
    if !matches!(
        color,
        ColorType::L8
            | ColorType::La8
            | ColorType::Rgb8
            | ColorType::Rgba8
            | ColorType::L16
            | ColorType::La16
            | ColorType::Rgb16
            | ColorType::Rgba16
    ) {
        return Err(DataError::new(
            &e.path,
            format!("unsupported colour type {color:?}"),
        ));
    }
    (e.width, e.height, e.color) = (w, h, color);
    Ok(())
}
