//! Image folders (`--data DIR` of one folder of PNG/JPEG files per class): layouts, colour
//! types and bit depths, the held-out test split, resizing, every bad input as one line naming
//! the file, a decompression bomb refused with bounded memory.
mod data_common;
mod peak_alloc;

use std::fs;
use std::path::Path;

use data_common::{TempDir, BIG};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
use nf_host::data::{describe, describe_with, load, load_test, load_with, DataOptions, Dataset};
use peak_alloc::{peak_during, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A grey image of `w`x`h` whose pixels vary with position and `salt`.
fn grey(w: u32, h: u32, salt: u32) -> GrayImage {
    ImageBuffer::from_fn(w, h, |x, y| {
        Luma([((x * 7 + y * 13 + salt * 29) % 256) as u8])
    })
}

fn save_png(img: &DynamicImage, path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_with_format(path, ImageFormat::Png).unwrap();
}

fn save_jpeg(img: &DynamicImage, path: &Path, quality: u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = Vec::new();
    // Through write_with_encoder, which keeps the image's own colour type (grey stays grey).
    img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, quality))
        .unwrap();
    fs::write(path, bytes).unwrap();
}

/// Pixels of sample `i` as stored.
fn raw(d: &Dataset, i: usize) -> Vec<u8> {
    d.raw(i).to_vec()
}

/// Images with their labels.
type Labelled = Vec<(u16, GrayImage)>;

/// `train/` and `test/` of three classes (`cat`, `ant`, `bee`: sorted to ant, bee, cat) of
/// grey 6x4 PNGs; returns the images written per split, in (class, name) order.
fn split_folder(d: &TempDir) -> (Labelled, Labelled) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (class, name) in [(2u16, "cat"), (0, "ant"), (1, "bee")] {
        for k in 0..3u32 {
            let img = grey(6, 4, u32::from(class) * 10 + k);
            save_png(
                &DynamicImage::ImageLuma8(img.clone()),
                &d.path().join(format!("train/{name}/img{k}.png")),
            );
            train.push((class, img));
        }
        let img = grey(6, 4, 100 + u32::from(class));
        save_png(
            &DynamicImage::ImageLuma8(img.clone()),
            &d.path().join(format!("test/{name}/t.png")),
        );
        test.push((class, img));
    }
    train.sort_by_key(|(c, _)| *c);
    test.sort_by_key(|(c, _)| *c);
    (train, test)
}

#[test]
fn a_train_and_test_folder_loads_its_pixels_with_sorted_class_names() {
    let d = TempDir::new("split");
    let (train, test) = split_folder(&d);
    let info = describe(d.path()).unwrap();
    assert_eq!((info.shape.c, info.shape.h, info.shape.w), (1, 4, 6));
    assert_eq!((info.classes, info.train, info.test), (3, 9, 3));
    let s = load(d.path(), BIG).unwrap();
    for (set, want) in [(&s.train, &train), (&s.test, &test)] {
        assert_eq!(set.len(), want.len());
        for (i, (class, img)) in want.iter().enumerate() {
            assert_eq!(set.label(i), *class);
            assert_eq!(raw(set, i), img.as_raw().clone());
        }
    }
    assert_eq!(s.train.bytes() + s.test.bytes(), info.bytes());
    assert!(info.load_overhead() > info.loader && info.loader > 0);
}

#[test]
fn colour_types_and_bit_depths_become_the_stored_channels() {
    let d = TempDir::new("colours");
    let rgb = ImageBuffer::from_fn(5, 3, |x, y| Rgb([(x * 40) as u8, (y * 60) as u8, 200u8]));
    let rgba: ImageBuffer<Rgba<u8>, _> =
        ImageBuffer::from_fn(5, 3, |x, y| Rgba([(x * 40) as u8, (y * 60) as u8, 200, 7]));
    let rgb16: ImageBuffer<Rgb<u16>, _> = ImageBuffer::from_fn(5, 3, |x, y| {
        Rgb([(x * 40) as u16 * 257, (y * 60) as u16 * 257, 200 * 257])
    });
    save_png(
        &DynamicImage::ImageRgb8(rgb.clone()),
        &d.path().join("a/rgb.png"),
    );
    save_png(
        &DynamicImage::ImageRgba8(rgba),
        &d.path().join("a/rgba.png"),
    );
    save_png(
        &DynamicImage::ImageRgb16(rgb16),
        &d.path().join("b/rgb16.png"),
    );
    save_png(
        &DynamicImage::ImageRgb8(rgb.clone()),
        &d.path().join("b/z.png"),
    );
    let opts = DataOptions {
        test_split: 0.25,
        ..DataOptions::default()
    };
    let s = load_with(d.path(), BIG, &opts).unwrap();
    assert_eq!(s.train.stored_shape().c, 3);
    // Every image is the same RGB picture: planes R, G, B.
    let mut want = Vec::new();
    for ch in 0..3 {
        want.extend(rgb.pixels().map(|p| p[ch]));
    }
    for set in [&s.train, &s.test] {
        for i in 0..set.len() {
            assert_eq!(raw(set, i), want, "sample {i}");
        }
    }
    // 16-bit grey and 8-bit grey JPEG to grey; the same pictures forced to RGB repeat it.
    let g = TempDir::new("grey16");
    let g16: ImageBuffer<Luma<u16>, _> =
        ImageBuffer::from_fn(4, 4, |x, y| Luma([((x * 50 + y * 10) as u16) * 257]));
    save_png(
        &DynamicImage::ImageLuma16(g16),
        &g.path().join("train/a/x.png"),
    );
    save_jpeg(
        &DynamicImage::ImageLuma8(grey(4, 4, 1)),
        &g.path().join("train/b/y.jpg"),
        95,
    );
    save_png(
        &DynamicImage::ImageLuma8(grey(4, 4, 2)),
        &g.path().join("test/a/z.png"),
    );
    let s = load(g.path(), BIG).unwrap();
    assert_eq!(s.train.stored_shape().c, 1);
    let want: Vec<u8> = (0..16)
        .map(|k| ((k % 4) * 50 + (k / 4) * 10) as u8)
        .collect();
    assert_eq!(raw(&s.train, 0), want);
    let jpeg = raw(&s.train, 1);
    let close = grey(4, 4, 1)
        .as_raw()
        .iter()
        .zip(&jpeg)
        .all(|(&a, &b)| a.abs_diff(b) <= 12);
    assert!(close, "JPEG decodes near its source: {jpeg:?}");
    let rgb = load_with(
        g.path(),
        BIG,
        &DataOptions {
            channels: Some(3),
            ..DataOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        raw(&rgb.train, 0),
        [want.clone(), want.clone(), want].concat()
    );
}

#[test]
fn without_a_test_folder_a_fixed_share_is_held_out_the_same_way_each_time() {
    let d = TempDir::new("holdout");
    for (c, name) in ["x", "y"].iter().enumerate() {
        for k in 0..10u32 {
            let img = grey(3, 3, c as u32 * 100 + k);
            save_png(
                &DynamicImage::ImageLuma8(img),
                &d.path().join(format!("{name}/{k:02}.png")),
            );
        }
    }
    let info = describe(d.path()).unwrap();
    assert_eq!((info.train, info.test), (16, 4));
    let a = load(d.path(), BIG).unwrap();
    let t = load_test(d.path(), BIG).unwrap();
    assert_eq!(a.test.labels(), t.labels());
    for i in 0..t.len() {
        assert_eq!(raw(&a.test, i), raw(&t, i));
    }
    // No training image is a test image.
    for i in 0..a.train.len() {
        assert!((0..t.len()).all(|j| raw(&a.train, i) != raw(&t, j)));
    }
    let half = DataOptions {
        test_split: 0.5,
        ..DataOptions::default()
    };
    assert_eq!(describe_with(d.path(), &half).unwrap().test, 10);
}

#[test]
fn images_of_two_sizes_are_refused_then_resized_with_size() {
    let d = TempDir::new("sizes");
    for (k, (w, h)) in [(8u32, 8u32), (12, 10), (8, 8), (12, 10)]
        .iter()
        .enumerate()
    {
        let flat = GrayImage::from_pixel(*w, *h, Luma([(40 + 50 * k) as u8]));
        let split = if k < 2 { "train" } else { "test" };
        let class = ["p", "q"][k % 2];
        save_png(
            &DynamicImage::ImageLuma8(flat),
            &d.path().join(format!("{split}/{class}/{k}.png")),
        );
    }
    let e = describe(d.path()).unwrap_err().to_string();
    assert!(e.contains("1.png") && e.contains("--size"), "{e}");
    let opts = DataOptions {
        size: Some((6, 7)),
        ..DataOptions::default()
    };
    let info = describe_with(d.path(), &opts).unwrap();
    assert_eq!((info.shape.h, info.shape.w), (6, 7));
    let s = load_with(d.path(), BIG, &opts).unwrap();
    // A flat image stays flat at its value whatever the filter.
    for (set, ks) in [(&s.train, [0usize, 1]), (&s.test, [2, 3])] {
        for (i, k) in ks.iter().enumerate() {
            assert_eq!(raw(set, i), vec![(40 + 50 * k) as u8; 42], "image {k}");
        }
    }
}

/// A PNG of just a signature and an IHDR chunk claiming `w`x`h` 8-bit RGBA.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let crc = crc32fast::hash(&ihdr);
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc.to_be_bytes());
    // An IDAT chunk of a few bytes and IEND, so the file looks whole.
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    v.extend_from_slice(&8u32.to_be_bytes());
    v.extend_from_slice(&idat);
    v.extend_from_slice(&crc32fast::hash(&idat).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(b"IEND");
    v.extend_from_slice(&crc32fast::hash(b"IEND").to_be_bytes());
    v
}

#[test]
fn a_decompression_bomb_header_is_refused_before_any_pixel_buffer() {
    let d = TempDir::new("bomb");
    split_folder(&d);
    let bomb = png_header_only(65535, 65535);
    assert!(bomb.len() <= 100, "{} bytes", bomb.len());
    d.write("train/bee/bomb.png", &bomb);
    let (r, peak) = peak_during(|| describe(d.path()));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("bomb.png") && e.contains("65535x65535"), "{e}");
    assert!(peak < 8 << 20, "describe peaked at {peak} bytes");
    let (r, peak) = peak_during(|| load(d.path(), BIG));
    assert!(r.unwrap_err().to_string().contains("bomb.png"));
    assert!(peak < 8 << 20, "load peaked at {peak} bytes");
}

/// Every bad input: one line naming the file (or folder) at fault.
#[test]
fn bad_folders_are_refused_naming_the_file() {
    let jpeg = {
        let mut v = Vec::new();
        DynamicImage::ImageLuma8(grey(6, 4, 5))
            .write_with_encoder(JpegEncoder::new_with_quality(&mut v, 90))
            .unwrap();
        v
    };
    // Garbage in the entropy-coded data decodes to garbage pixels in any decoder; a broken
    // frame header is refused: the SOF0 segment's sample precision set to 3 bits.
    let mut corrupt = jpeg.clone();
    let sof = corrupt.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    corrupt[sof + 4] = 3;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "truncated jpeg",
            "train/ant/cut.jpg",
            jpeg[..jpeg.len() / 2].to_vec(),
            "cut.jpg",
        ),
        ("corrupt jpeg", "train/ant/bad.jpg", corrupt, "bad.jpg"),
        (
            "non-image",
            "train/bee/notes.txt",
            b"hello".to_vec(),
            "not a PNG or JPEG",
        ),
        ("empty file", "test/cat/t.png", Vec::new(), "empty file"),
        (
            "colour among grey",
            "train/cat/rgb.png",
            {
                let mut v = Vec::new();
                DynamicImage::ImageRgb8(ImageBuffer::from_pixel(6, 4, Rgb([1, 2, 3])))
                    .write_to(&mut std::io::Cursor::new(&mut v), ImageFormat::Png)
                    .unwrap();
                v
            },
            "mixed channel counts",
        ),
    ];
    for (what, file, bytes, needle) in cases {
        let d = TempDir::new("bad");
        split_folder(&d);
        d.write(file, &bytes);
        let e = describe(d.path())
            .map(|_| ())
            .and_then(|()| load(d.path(), BIG).map(|_| ()))
            .expect_err(what)
            .to_string();
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(e.contains(name), "{what}: names {name}: {e}");
        assert!(e.contains(needle), "{what}: {needle:?} in {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
    }
    // An empty class folder, a symlink loop, an unreadable (dangling) file, a test class the
    // training folder lacks, a single class.
    let d = TempDir::new("empty");
    split_folder(&d);
    fs::create_dir_all(d.path().join("train/dog")).unwrap();
    let e = describe(d.path()).unwrap_err().to_string();
    assert!(e.contains("dog") && e.contains("empty class folder"), "{e}");

    let d = TempDir::new("loop");
    split_folder(&d);
    std::os::unix::fs::symlink("..", d.path().join("train/ant/up")).unwrap();
    let e = describe(d.path()).unwrap_err().to_string();
    assert!(e.contains("up") && e.contains("symlink loop"), "{e}");

    let d = TempDir::new("dangling");
    split_folder(&d);
    std::os::unix::fs::symlink("nowhere.png", d.path().join("train/ant/gone.png")).unwrap();
    let e = describe(d.path()).unwrap_err().to_string();
    assert!(e.contains("gone.png") && e.contains("cannot read"), "{e}");

    let d = TempDir::new("unknown-test-class");
    split_folder(&d);
    save_png(
        &DynamicImage::ImageLuma8(grey(6, 4, 0)),
        &d.path().join("test/emu/x.png"),
    );
    let e = describe(d.path()).unwrap_err().to_string();
    assert!(e.contains("emu") && e.contains("training classes"), "{e}");

    let d = TempDir::new("one-class");
    save_png(
        &DynamicImage::ImageLuma8(grey(6, 4, 0)),
        &d.path().join("only/x.png"),
    );
    let e = describe(d.path()).unwrap_err().to_string();
    assert!(e.contains("1 class folder"), "{e}");
}

#[test]
fn more_class_folders_than_a_classifier_may_have_are_refused() {
    // 65537 folders: in memory (/dev/shm) where there is one, since on a disk their creation
    // alone can take minutes.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("nf-data-images-many-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    for k in 0..=65536u32 {
        fs::create_dir_all(d.join(format!("{k:05}"))).unwrap();
    }
    let e = describe(&d).unwrap_err().to_string();
    let _ = fs::remove_dir_all(&d);
    assert!(e.contains("65537 class folders"), "{e}");
}
