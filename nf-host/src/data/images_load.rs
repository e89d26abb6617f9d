//! Decoding an image folder's files on worker threads into the stored `C x H x W` bytes.
//!
//! The set's buffer is allocated once at its final size; the threads take blocks of images
//! from a shared queue and write each image into its own slice of it, so nothing is copied
//! twice and the threads hold only their working memory ([`images::decode_bytes`]).
//! Conversion: grey images to RGB by repeating the grey value, colour to grey by the `image`
//! crate's luma weights (ITU-R BT.709); alpha is dropped; 16-bit samples are scaled to 8 bits.
//! Resizing: the `image` crate's `Triangle` filter (bilinear), to exactly `--size` (the aspect
//! ratio is not kept).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use image::imageops::{resize, FilterType};
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nf_core::model::Shape;

use super::images::{self, Entry, Files};
use super::read::alloc;
use super::{DataError, Raw};

/// Images a thread takes from the queue at a time.
const BLOCK: usize = 16;

impl Files {
    /// Decodes the training split (`test` false) or the test split.
    pub fn load(&self, test: bool) -> Result<Raw, DataError> {
        let set = if test { &self.test } else { &self.train };
        let sample = self.shape.len();
        let mut pixels = alloc::<u8>(&self.dir, set.len() * sample, "the images")?;
        pixels.resize(set.len() * sample, 0);
        let mut labels = alloc::<u16>(&self.dir, set.len(), "the labels")?;
        labels.extend(set.iter().map(|e| e.class));
        let bar = progress(set.len() as u64, if test { "test" } else { "training" });
        let queue = Mutex::new(
            set.chunks(BLOCK)
                .zip(pixels.chunks_mut(BLOCK * sample))
                .enumerate(),
        );
        let stop = AtomicBool::new(false);
        let first_error = Mutex::new(None::<(usize, DataError)>);
        std::thread::scope(|s| {
            for _ in 0..self.threads {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let Some((b, (entries, out))) =
                            queue.lock().ok().and_then(|mut q| q.next())
                        else {
                            break;
                        };
                        let items = entries.iter().zip(out.chunks_exact_mut(sample));
                        for (j, (e, dst)) in items.enumerate() {
                            if let Err(err) = decode(e, self.shape, dst) {
                                stop.store(true, Ordering::Relaxed);
                                let i = b * BLOCK + j;
                                if let Ok(mut f) = first_error.lock() {
                                    if f.as_ref().is_none_or(|(j, _)| i < *j) {
                                        *f = Some((i, err));
                                    }
                                }
                                return;
                            }
                        }
                        bar.inc(entries.len() as u64);
                    }
                });
            }
        });
        bar.finish_and_clear();
        if let Some((_, e)) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(Raw { pixels, labels })
    }
}

/// A bar on stderr when it is a terminal (the output of `nf eval --json` stays clean).
fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "decoding {what} images {{bar:30}} {{pos}}/{{len}} {{per_sec}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// Decodes `e` into `dst` (`shape`, `C x H x W`), under the memory limit planned for it.
fn decode(e: &Entry, shape: Shape, dst: &mut [u8]) -> Result<(), DataError> {
    let mut r = images::reader(e)?;
    r.limits(images::decoder_limits(e));
    let img = r
        .decode()
        .map_err(|err| DataError::new(&e.path, format!("corrupt or truncated image: {err}")))?;
    if (img.width(), img.height()) != (e.width, e.height) {
        return Err(DataError::new(
            &e.path,
            "changed while being read (its size is not the one its header had)",
        ));
    }
    let (w, h) = (shape.w as u32, shape.h as u32);
    let same = (img.width(), img.height()) == (w, h);
    if shape.c == 1 {
        let g = grey(img);
        let g = if same {
            g
        } else {
            resize(&g, w, h, FilterType::Triangle)
        };
        dst.copy_from_slice(g.as_raw());
    } else {
        let rgb = img.into_rgb8();
        let rgb = if same {
            rgb
        } else {
            resize(&rgb, w, h, FilterType::Triangle)
        };
        let plane = shape.h * shape.w;
        let (r, rest) = dst.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (k, px) in rgb.as_raw().chunks_exact(3).enumerate() {
            (r[k], g[k], b[k]) = (px[0], px[1], px[2]);
        }
    }
    Ok(())
}

/// The image as 8-bit grey (no copy when it already is).
fn grey(img: DynamicImage) -> image::GrayImage {
    img.into_luma8()
}
