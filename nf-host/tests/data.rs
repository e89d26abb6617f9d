//! Dataset loading for `nf train --data`: the bundled fixture, IDX raw and gzipped, CIFAR-10/100
//! binary batches, `describe`, the memory budget's refusals, `load_test`, bit-identical
//! normalisation, and every bad-input case. (`Dataset` in memory and synthetic data are tested in
//! `data_sets.rs`, bounds measured with a counting allocator in `data_memory.rs`.)

mod data_common;

use std::path::Path;

use data_common::*;
use nf_core::model::Shape;
use nf_host::data::{
    default_dir, describe, load, load_dir, load_test, DataError, DataInfo, Dataset, Splits,
};

/// The error of loading `dir`, checked to be one line naming `file`.
fn load_err(dir: &Path, file: &str) -> String {
    let e: DataError = match load_dir(dir, BIG) {
        Ok(_) => panic!("{} loaded, expected an error about {file}", dir.display()),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "message not one line: {msg:?}");
    assert!(msg.contains(file), "message {msg:?} does not name {file}");
    assert!(
        msg.starts_with(&dir.display().to_string()),
        "message {msg:?} does not give the full path"
    );
    msg
}

/// An IDX set with one file replaced by `bytes`.
fn idx_with(name: &str, bytes: &[u8]) -> TempDir {
    let d = TempDir::new(name);
    write_idx(&d, false, false);
    d.write(name, bytes);
    d
}

/// The old normalisation, applied to a whole split in advance (the reference that
/// `write_normalised` must match bit for bit).
fn old_normalise(pixels: &[u8], shape: Shape, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let plane = shape.h * shape.w;
    let sample = shape.len();
    pixels
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            let c = (k % sample) / plane;
            (f32::from(p) / 255.0 - mean[c]) / std[c]
        })
        .collect()
}

/// Checks every sample of `d` against [`old_normalise`] of its stored pixels, bit for bit.
fn assert_bit_identical(d: &Dataset) {
    let s = d.shape().len();
    let mut x = vec![0f32; s];
    for i in 0..d.len() {
        d.write_normalised(i, &mut x);
        let want = old_normalise(d.raw(i), d.shape(), d.mean(), d.std());
        for (k, (a, b)) in x.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "sample {i} pixel {k}: {a} vs {b}");
        }
    }
}

#[test]
fn bundled_fixture_loads() {
    let dir = default_dir();
    let Splits { train, test, .. } = load_dir(&dir, BIG).unwrap();
    assert_eq!((train.len(), test.len()), (4000, 1000));
    assert_eq!(train.shape(), Shape::new(1, 28, 28));
    assert_eq!(test.shape(), Shape::new(1, 28, 28));
    assert_eq!((train.classes(), test.classes()), (10, 10));
    // Held as stored: a byte a pixel, 2 bytes a label.
    assert_eq!(train.bytes(), 4000 * (784 + 2));
    assert_eq!(test.bytes(), 1000 * (784 + 2));
    assert!(train.labels().iter().chain(test.labels()).all(|&l| l < 10));
    // Labels and pixels as in the raw files (headers of 8 and 16 bytes).
    let raw = gunzip(&std::fs::read(dir.join("train-labels-idx1-ubyte.gz")).unwrap());
    let raw_l: Vec<u16> = raw[8..].iter().map(|&b| u16::from(b)).collect();
    assert_eq!(train.labels(), raw_l);
    assert_eq!(train.label(0), u16::from(raw[8]));
    let raw_t = gunzip(&std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap());
    assert_eq!(test.label(0), u16::from(raw_t[8]));
    let raw_i = gunzip(&std::fs::read(dir.join("train-images-idx3-ubyte.gz")).unwrap());
    for i in [0, 1, 3999] {
        assert_eq!(train.raw(i), &raw_i[16 + i * 784..16 + (i + 1) * 784]);
    }
    // First pixel of the first image, through the normalisation.
    let want = (f32::from(raw_i[16]) / 255.0 - train.mean()[0]) / train.std()[0];
    assert_eq!(normalised(&train, 0)[0], want);
    // Standardised with the training split's constants: mean 0, std 1 there; near the
    // published Fashion-MNIST constants.
    let all: Vec<f64> = (0..train.len())
        .flat_map(|i| normalised(&train, i))
        .map(f64::from)
        .collect();
    let n = all.len() as f64;
    let m = all.iter().sum::<f64>() / n;
    let var = all.iter().map(|&v| (v - m).powi(2)).sum::<f64>() / n;
    assert!(m.abs() < 1e-4, "mean {m}");
    assert!((var.sqrt() - 1.0).abs() < 1e-4, "std {}", var.sqrt());
    assert!(
        (train.mean()[0] - 0.2860).abs() < 0.01,
        "{:?}",
        train.mean()
    );
    assert!((train.std()[0] - 0.3530).abs() < 0.01, "{:?}", train.std());
    assert_eq!(test.mean(), train.mean());
    assert_eq!(test.std(), train.std());
    // The same through `load`, with a &str and with a path.
    let again = load(dir.to_str().unwrap(), BIG).unwrap();
    assert_eq!(again.train, train);
    assert_eq!(load(&dir, BIG).unwrap().test, test);
}

#[test]
fn write_normalised_is_bit_identical_to_normalising_in_advance() {
    let s = load_dir(&default_dir(), BIG).unwrap();
    assert_bit_identical(&s.train);
    assert_bit_identical(&s.test);
    // Three channels.
    let d = TempDir::new("cifar-bits");
    write_cifar10(&d, "", None);
    let s = load_dir(d.path(), BIG).unwrap();
    assert_bit_identical(&s.train);
    assert_bit_identical(&s.test);
    // Three channels, each with its own constants.
    let s = load("synthetic:3x5x7:40", BIG).unwrap();
    let (m, sd) = (s.train.mean(), s.train.std());
    assert!(
        m[0] != m[1] && m[1] != m[2] && sd[0] != sd[1],
        "{m:?} {sd:?}"
    );
    assert_bit_identical(&s.train);
    assert_bit_identical(&s.test);
}

#[test]
fn idx_values_and_normalisation() {
    let d = TempDir::new("idx-values");
    write_idx(&d, false, false);
    let s = load_dir(d.path(), BIG).unwrap();
    assert_eq!(s.train.shape(), Shape::new(1, 4, 4));
    assert_eq!((s.train.len(), s.test.len()), (TRAIN_N, TEST_N));
    let tl: Vec<u16> = train_labels().into_iter().map(u16::from).collect();
    assert_eq!(s.train.labels(), tl);
    let raw = pixels(TRAIN_N, 0);
    let scaled: Vec<f64> = raw.iter().map(|&p| f64::from(p) / 255.0).collect();
    let mean = scaled.iter().sum::<f64>() / scaled.len() as f64;
    let std = (scaled.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / scaled.len() as f64).sqrt();
    assert!((f64::from(s.train.mean()[0]) - mean).abs() < 1e-6);
    assert!((f64::from(s.train.std()[0]) - std).abs() < 1e-6);
    for (k, &p) in raw.iter().enumerate() {
        assert_eq!(s.train.raw(k / 16)[k % 16], p);
        let want = (f64::from(p) / 255.0 - mean) / std;
        assert!((f64::from(normalised(&s.train, k / 16)[k % 16]) - want).abs() < 1e-5);
    }
    let test_raw = pixels(TEST_N, 1);
    let want = (f64::from(test_raw[16 + 3]) / 255.0 - mean) / std;
    assert!((f64::from(normalised(&s.test, 1)[3]) - want).abs() < 1e-5);
}

#[test]
fn raw_and_gz_give_identical_data() {
    let raw = TempDir::new("raw");
    write_idx(&raw, false, false);
    let gzd = TempDir::new("gz");
    write_idx(&gzd, true, true);
    // Gzip told apart by its magic bytes, not its name: gzipped data under raw names, and raw
    // data under .gz names.
    let gz_plain_names = TempDir::new("gz-plain-names");
    write_idx(&gz_plain_names, true, false);
    let raw_gz_names = TempDir::new("raw-gz-names");
    write_idx(&raw_gz_names, false, true);
    let a = load_dir(raw.path(), BIG).unwrap();
    assert_eq!(load_dir(gzd.path(), BIG).unwrap(), a);
    assert_eq!(load_dir(gz_plain_names.path(), BIG).unwrap(), a);
    assert_eq!(load_dir(raw_gz_names.path(), BIG).unwrap(), a);
}

#[test]
fn idx_wrong_magic() {
    // A label file where the images belong.
    let d = idx_with("train-images-idx3-ubyte", &idx_labels(&[1, 2, 3]));
    let msg = load_err(d.path(), "train-images-idx3-ubyte");
    assert!(msg.contains("bad IDX magic 0x00000801"), "{msg}");
    assert!(msg.contains("expected 0x00000803"), "{msg}");
    let d = idx_with("t10k-labels-idx1-ubyte", &idx_images(1, 1, 1, &[0]));
    let msg = load_err(d.path(), "t10k-labels-idx1-ubyte");
    assert!(msg.contains("bad IDX magic 0x00000803"), "{msg}");
}

#[test]
fn idx_truncated_images() {
    let mut bytes = idx_images(TRAIN_N as u32, 4, 4, &pixels(TRAIN_N, 0));
    bytes.truncate(bytes.len() - 10);
    let d = idx_with("train-images-idx3-ubyte", &bytes);
    let msg = load_err(d.path(), "train-images-idx3-ubyte");
    assert!(msg.contains("truncated"), "{msg}");
    assert!(msg.contains("20 images"), "{msg}");
    // Header itself cut short.
    let d = idx_with("train-images-idx3-ubyte", &bytes[..10]);
    let msg = load_err(d.path(), "train-images-idx3-ubyte");
    assert!(msg.contains("truncated"), "{msg}");
    // Empty file.
    let d = idx_with("t10k-images-idx3-ubyte", &[]);
    let msg = load_err(d.path(), "t10k-images-idx3-ubyte");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn idx_dimensions_disagree_with_file_size() {
    // Over-long: more pixels than the header says.
    let mut bytes = idx_images(TRAIN_N as u32, 4, 4, &pixels(TRAIN_N, 0));
    bytes.push(0);
    let d = idx_with("train-images-idx3-ubyte", &bytes);
    let msg = load_err(d.path(), "train-images-idx3-ubyte");
    assert!(msg.contains("over-long"), "{msg}");
    // Wrong dimensions for the data present.
    let bytes = idx_images(TRAIN_N as u32, 5, 4, &pixels(TRAIN_N, 0));
    let d = idx_with("train-images-idx3-ubyte", &bytes);
    let msg = load_err(d.path(), "train-images-idx3-ubyte");
    assert!(msg.contains("truncated"), "{msg}");
    // Absurd dimensions: an error, not an allocation failure.
    let bytes = idx_images(u32::MAX, u32::MAX, u32::MAX, &[1, 2, 3]);
    let d = idx_with("train-images-idx3-ubyte", &bytes);
    load_err(d.path(), "train-images-idx3-ubyte");
    let bytes = idx_images(0x4000_0000, 0x1000, 0x1000, &[1, 2, 3]);
    let d = idx_with("train-images-idx3-ubyte", &gz(&bytes));
    load_err(d.path(), "train-images-idx3-ubyte");
    // Zero-sized images.
    let d = idx_with("train-images-idx3-ubyte", &idx_images(3, 0, 4, &[]));
    let msg = load_err(d.path(), "train-images-idx3-ubyte");
    assert!(msg.contains("bad dimensions"), "{msg}");
    // Test images of another size than the training images.
    let d = idx_with(
        "t10k-images-idx3-ubyte",
        &idx_images(TEST_N as u32, 2, 8, &pixels(TEST_N, 1)),
    );
    let msg = load_err(d.path(), "t10k-images-idx3-ubyte");
    assert!(msg.contains("2x8"), "{msg}");
}

#[test]
fn idx_truncated_labels() {
    let mut bytes = idx_labels(&train_labels());
    bytes.truncate(bytes.len() - 3);
    let d = idx_with("train-labels-idx1-ubyte", &bytes);
    let msg = load_err(d.path(), "train-labels-idx1-ubyte");
    assert!(
        msg.contains("truncated: header says 20 labels but the file holds 17"),
        "{msg}"
    );
    // And gzipped.
    let d = idx_with("train-labels-idx1-ubyte", &gz(&bytes));
    let msg = load_err(d.path(), "train-labels-idx1-ubyte");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn idx_count_mismatch() {
    let d = idx_with("t10k-labels-idx1-ubyte", &idx_labels(&[1, 2, 3, 4]));
    let msg = load_err(d.path(), "t10k-labels-idx1-ubyte");
    assert!(msg.contains("4 labels"), "{msg}");
    assert!(msg.contains("5 images"), "{msg}");
}

#[test]
fn idx_label_out_of_range() {
    let mut labels = train_labels();
    labels[17] = 10;
    let d = idx_with("train-labels-idx1-ubyte", &idx_labels(&labels));
    let msg = load_err(d.path(), "train-labels-idx1-ubyte");
    assert!(msg.contains("label 10 outside 0..10 at record 17"), "{msg}");
}

#[test]
fn idx_missing_file() {
    let d = TempDir::new("missing");
    write_idx(&d, true, true);
    std::fs::remove_file(d.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let msg = load_err(d.path(), "t10k-labels-idx1-ubyte");
    assert!(msg.contains("missing file"), "{msg}");
}

#[test]
fn idx_garbage_gzip() {
    // Gzip magic, then garbage.
    let mut bytes = vec![0x1f, 0x8b];
    bytes.extend((0..200u32).map(|i| (i * 97 % 251) as u8));
    let d = TempDir::new("garbage-gz");
    write_idx(&d, true, true);
    d.write("train-images-idx3-ubyte.gz", &bytes);
    let msg = load_err(d.path(), "train-images-idx3-ubyte.gz");
    assert!(msg.contains("gzip"), "{msg}");
    // A valid gzip stream cut in half.
    let good = gz(&idx_images(TRAIN_N as u32, 4, 4, &pixels(TRAIN_N, 0)));
    d.write("train-images-idx3-ubyte.gz", &good[..good.len() / 2]);
    let msg = load_err(d.path(), "train-images-idx3-ubyte.gz");
    assert!(msg.contains("gzip") || msg.contains("truncated"), "{msg}");
    // Just the magic bytes.
    d.write("train-images-idx3-ubyte.gz", &[0x1f, 0x8b]);
    load_err(d.path(), "train-images-idx3-ubyte.gz");
}

#[test]
fn no_dataset_found() {
    let d = TempDir::new("empty");
    d.write("README.txt", b"nothing here");
    let msg = load_err(d.path(), "");
    assert!(msg.contains("no dataset found"), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    let gone = d.path().join("does-not-exist");
    let msg = load_dir(&gone, BIG).unwrap_err().to_string();
    assert!(msg.contains("does-not-exist"), "{msg}");
    let file = d.path().join("README.txt");
    let msg = load_dir(&file, BIG).unwrap_err().to_string();
    assert!(
        msg.contains("README.txt") && msg.contains("not a directory"),
        "{msg}"
    );
}

#[test]
fn cifar10_small() {
    for sub in ["", "cifar-10-batches-bin/"] {
        let d = TempDir::new("cifar10");
        let labels = write_cifar10(&d, sub, None);
        let s = load_dir(d.path(), BIG).unwrap();
        assert_eq!(s.train.shape(), Shape::new(3, 32, 32));
        assert_eq!(s.train.classes(), 10);
        assert_eq!((s.train.len(), s.test.len()), (10, 2));
        assert_eq!(s.train.labels(), labels);
        assert_eq!(s.test.labels(), vec![9, 0]);
        assert_eq!(s.train.bytes(), 10 * (3072 + 2));
        assert_eq!((s.train.mean().len(), s.train.std().len()), (3, 3));
        // Per-channel standardisation with the training split's constants.
        for c in 0..3 {
            let vals: Vec<f64> = (0..10)
                .flat_map(|i| normalised(&s.train, i)[c * 1024..(c + 1) * 1024].to_vec())
                .map(f64::from)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let sd = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
            assert!(
                m.abs() < 1e-4 && (sd - 1.0).abs() < 1e-4,
                "channel {c}: {m} {sd}"
            );
        }
        // Pixel (channel 1, position 5) of the second record of data_batch_1 (seed 3):
        // (3 * 5 + 1 * 70 + 5) % 256.
        let p = 90.0f32;
        let want = (p / 255.0 - s.train.mean()[1]) / s.train.std()[1];
        assert_eq!(normalised(&s.train, 1)[1024 + 5], want);
        assert_eq!(s.train.raw(1)[1024 + 5], 90);
    }
}

#[test]
fn cifar100_small() {
    for sub in ["", "cifar-100-binary/"] {
        let d = TempDir::new("cifar100");
        let mut train = Vec::new();
        for (i, (coarse, fine)) in [(3u8, 99u8), (19, 0), (0, 42)].into_iter().enumerate() {
            train.extend(cifar_record(&[coarse, fine], i));
        }
        d.write(&format!("{sub}train.bin"), &train);
        d.write(&format!("{sub}test.bin"), &cifar_record(&[4, 57], 9));
        let s = load_dir(d.path(), BIG).unwrap();
        assert_eq!(s.train.classes(), 100);
        assert_eq!(s.train.shape(), Shape::new(3, 32, 32));
        assert_eq!(s.train.labels(), vec![99, 0, 42]);
        assert_eq!(s.test.labels(), vec![57]);
        assert_eq!(s.test.raw(0), &cifar_record(&[4, 57], 9)[2..]);
    }
}

#[test]
fn cifar_bad_size() {
    let d = TempDir::new("cifar-size");
    let mut bytes = cifar_record(&[1], 0);
    bytes.extend(cifar_record(&[2], 1));
    bytes.pop();
    write_cifar10(&d, "", Some(("data_batch_3.bin", bytes)));
    let msg = load_err(d.path(), "data_batch_3.bin");
    assert!(msg.contains("not a multiple of the 3073-byte"), "{msg}");
    // CIFAR-100 record size is 3074: a CIFAR-10-sized file is rejected.
    let d = TempDir::new("cifar100-size");
    d.write("train.bin", &cifar_record(&[1], 0));
    d.write("test.bin", &cifar_record(&[1, 1], 0));
    let msg = load_err(d.path(), "train.bin");
    assert!(msg.contains("3074"), "{msg}");
    // Empty batch.
    let d = TempDir::new("cifar-empty");
    write_cifar10(&d, "", Some(("test_batch.bin", Vec::new())));
    let msg = load_err(d.path(), "test_batch.bin");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn cifar_label_out_of_range() {
    let d = TempDir::new("cifar-label");
    let mut bytes = Vec::new();
    for r in 0..18 {
        bytes.extend(cifar_record(&[(r % 10) as u8], r));
    }
    bytes.extend(cifar_record(&[12], 18));
    write_cifar10(&d, "", Some(("data_batch_3.bin", bytes)));
    let msg = load_err(d.path(), "data_batch_3.bin");
    assert!(msg.contains("label 12 outside 0..10 at record 18"), "{msg}");

    let d = TempDir::new("cifar100-label");
    let mut train = cifar_record(&[3, 5], 0);
    train.extend(cifar_record(&[3, 100], 1));
    d.write("train.bin", &train);
    d.write("test.bin", &cifar_record(&[4, 57], 9));
    let msg = load_err(d.path(), "train.bin");
    assert!(
        msg.contains("label 100 outside 0..100 at record 1"),
        "{msg}"
    );

    let d = TempDir::new("cifar100-coarse");
    d.write("train.bin", &cifar_record(&[3, 5], 0));
    d.write("test.bin", &cifar_record(&[20, 57], 9));
    let msg = load_err(d.path(), "test.bin");
    assert!(msg.contains("coarse label 20"), "{msg}");
}

#[test]
fn cifar_missing_batch() {
    let d = TempDir::new("cifar-missing");
    write_cifar10(&d, "cifar-10-batches-bin/", None);
    std::fs::remove_file(d.path().join("cifar-10-batches-bin/data_batch_4.bin")).unwrap();
    let msg = load_err(d.path(), "cifar-10-batches-bin/data_batch_4.bin");
    assert!(msg.contains("missing file"), "{msg}");
    let d = TempDir::new("cifar100-missing");
    d.write("cifar-100-binary/train.bin", &cifar_record(&[3, 5], 0));
    let msg = load_err(d.path(), "cifar-100-binary/test.bin");
    assert!(msg.contains("missing file"), "{msg}");
}

#[test]
fn cifar_gzip_refused() {
    let d = TempDir::new("cifar-gz");
    let mut bytes = cifar_record(&[1], 0);
    bytes.extend(cifar_record(&[2], 1));
    write_cifar10(&d, "", Some(("data_batch_2.bin", gz(&bytes))));
    let msg = load_err(d.path(), "data_batch_2.bin");
    assert!(msg.contains("gzip"), "{msg}");
}

#[test]
fn describe_agrees_with_load() {
    let check = |arg: &Path| {
        let info = describe(arg).unwrap();
        let s = load(arg, BIG).unwrap();
        assert_eq!(
            info,
            DataInfo {
                shape: s.train.shape(),
                classes: s.train.classes(),
                train: s.train.len(),
                test: s.test.len(),
                loader: 0,
            },
            "{}",
            arg.display()
        );
        assert_eq!(info.bytes(), s.train.bytes() + s.test.bytes());
        info
    };
    let info = check(&default_dir());
    assert_eq!((info.train, info.test, info.shape.len()), (4000, 1000, 784));
    let raw = TempDir::new("describe-raw");
    write_idx(&raw, false, false);
    check(raw.path());
    let c10 = TempDir::new("describe-cifar10");
    write_cifar10(&c10, "cifar-10-batches-bin/", None);
    assert_eq!(check(c10.path()).classes, 10);
    let c100 = TempDir::new("describe-cifar100");
    c100.write("train.bin", &cifar_record(&[3, 5], 0));
    c100.write("test.bin", &cifar_record(&[4, 57], 9));
    assert_eq!(check(c100.path()).classes, 100);
    let info = check(Path::new("synthetic:2x3x4:11"));
    assert_eq!((info.train, info.test), (11, 3));
    // Describe reports what load would refuse, and refuses what load would.
    let d = idx_with("t10k-labels-idx1-ubyte", &idx_labels(&[1, 2, 3, 4]));
    assert!(describe(d.path()).is_err());
}

#[test]
fn budget_refuses_before_reading() {
    let d = TempDir::new("budget");
    write_idx(&d, true, true);
    let need = describe(d.path()).unwrap().bytes();
    assert_eq!(need, (TRAIN_N + TEST_N) as u64 * (16 + 2));
    // Exactly the need fits.
    assert!(load_dir(d.path(), need).is_ok());
    // One byte less: the last file read (the test labels) goes over, and says so.
    let msg = load_dir(d.path(), need - 1).unwrap_err().to_string();
    assert!(
        msg.contains("t10k-labels-idx1-ubyte.gz: 5 labels (10 B)"),
        "{msg}"
    );
    assert!(msg.contains("bring the data set to 450 B"), "{msg}");
    assert!(msg.contains("host memory budget (449 B)"), "{msg}");
    // The first file alone goes over.
    let msg = load_dir(d.path(), 100).unwrap_err().to_string();
    assert!(
        msg.ends_with(
            "train-images-idx3-ubyte.gz: 20 images of 4x4 (320 B) exceed the host memory \
             budget (100 B)"
        ),
        "{msg}"
    );
    // A header's claim is refused from the header alone, however little data follows.
    let mut h = idx_header(u32::MAX, 28, 28);
    h.extend([0u8; 100]);
    d.write("train-images-idx3-ubyte.gz", &gz(&h));
    let msg = load_dir(d.path(), 8 << 30).unwrap_err().to_string();
    assert!(
        msg.ends_with(
            "train-images-idx3-ubyte.gz: 4294967295 images of 28x28 (3.1 TiB) exceed the host \
             memory budget (8.0 GiB)"
        ),
        "{msg}"
    );
    // The test split alone is bounded by the limit for load_test.
    write_idx(&d, true, true);
    let test_need = (TEST_N * (16 + 2)) as u64;
    assert!(load_test(d.path(), test_need).is_ok());
    assert!(load_test(d.path(), test_need - 1).is_err());
}

#[test]
fn load_test_reads_only_the_test_split() {
    let d = TempDir::new("test-only");
    write_idx(&d, false, false);
    let full = load_dir(d.path(), BIG).unwrap();
    // The training files are not needed.
    std::fs::remove_file(d.path().join("train-images-idx3-ubyte")).unwrap();
    std::fs::remove_file(d.path().join("train-labels-idx1-ubyte")).unwrap();
    let mut t = load_test(d.path(), BIG).unwrap();
    assert_eq!((t.mean(), t.std()), (&[0.0f32][..], &[1.0f32][..]));
    assert_eq!(t.labels(), full.test.labels());
    assert_eq!(normalised(&t, 2)[5], f32::from(t.raw(2)[5]) / 255.0);
    // With the training constants it is the test split `load` gives.
    t.set_normalisation(full.train.mean(), full.train.std())
        .unwrap();
    assert_eq!(t, full.test);
    // Constants for another channel count, or unusable ones, are refused and change nothing.
    let e = t.set_normalisation(&[0.5; 3], &[0.2; 3]).unwrap_err();
    assert!(
        e.contains("3 (mean) and 3 (std) channels") && e.contains("1 channel"),
        "{e}"
    );
    assert!(t.set_normalisation(&[0.5], &[0.0]).is_err());
    assert!(t.set_normalisation(&[f32::NAN], &[1.0]).is_err());
    assert!(t.set_normalisation(&[0.5], &[f32::INFINITY]).is_err());
    assert_eq!(t, full.test);
    // CIFAR: only test_batch.bin.
    let c = TempDir::new("test-only-cifar");
    write_cifar10(&c, "", None);
    let full = load_dir(c.path(), BIG).unwrap();
    std::fs::remove_file(c.path().join("data_batch_3.bin")).unwrap();
    let mut t = load_test(c.path(), BIG).unwrap();
    t.set_normalisation(full.train.mean(), full.train.std())
        .unwrap();
    assert_eq!(t, full.test);
    assert!(load_dir(c.path(), BIG).is_err());
    // Synthetic: the same test images as `load`.
    let full = load("synthetic:2x4x4:30", BIG).unwrap();
    let mut t = load_test("synthetic:2x4x4:30", BIG).unwrap();
    t.set_normalisation(full.train.mean(), full.train.std())
        .unwrap();
    assert_eq!(t, full.test);
}

/// The full Fashion-MNIST from the Debian package `dataset-fashion-mnist` (installed by
/// `scripts/test.sh`, which sets `NF_REQUIRE_TOOLS=1`: then its absence fails the test).
#[test]
fn full_fashion_mnist() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        assert!(
            std::env::var("NF_REQUIRE_TOOLS").map_or(true, |v| v != "1"),
            "NF_REQUIRE_TOOLS=1 but {} is not installed (dataset-fashion-mnist)",
            dir.display()
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {} not installed",
            dir.display()
        );
        return;
    }
    let info = describe(dir).unwrap();
    let t = std::time::Instant::now();
    let s = load_dir(dir, info.bytes()).unwrap();
    eprintln!(
        "loaded in {:?}: {} bytes, mean {:?} std {:?}",
        t.elapsed(),
        s.train.bytes() + s.test.bytes(),
        s.train.mean(),
        s.train.std()
    );
    assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
    assert_eq!(s.train.bytes() + s.test.bytes(), info.bytes());
    assert!(
        (s.train.mean()[0] - 0.2860).abs() < 5e-4,
        "{:?}",
        s.train.mean()
    );
    assert!(
        (s.train.std()[0] - 0.3530).abs() < 5e-4,
        "{:?}",
        s.train.std()
    );
}
