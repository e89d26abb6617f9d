//! Dataset loading for `nf train --data`: the bundled fixture, IDX raw and gzipped, CIFAR-10/100
//! binary batches, synthetic data, the validation split, and every bad-input case.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use nf_core::model::Shape;
use nf_host::data::{default_dir, load, load_dir, synthetic, DataError, Dataset, Splits};

/// A fresh, empty directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("nf-data-test-{}-{k}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0000_0803u32, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0000_0801u32, labels.len() as u32] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

/// Pixels of `n` images of 4x4 that vary with image and position.
fn pixels(n: usize, salt: usize) -> Vec<u8> {
    (0..n * 16)
        .map(|k| ((k * 37 + salt * 11) % 256) as u8)
        .collect()
}

const TRAIN_N: usize = 20;
const TEST_N: usize = 5;

fn train_labels() -> Vec<u8> {
    (0..TRAIN_N).map(|i| ((i * 3) % 10) as u8).collect()
}
fn test_labels() -> Vec<u8> {
    (0..TEST_N).map(|i| ((i * 7 + 1) % 10) as u8).collect()
}

/// The four files of a small valid IDX set (4x4 images), by base name.
fn idx_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "train-images-idx3-ubyte",
            idx_images(TRAIN_N as u32, 4, 4, &pixels(TRAIN_N, 0)),
        ),
        ("train-labels-idx1-ubyte", idx_labels(&train_labels())),
        (
            "t10k-images-idx3-ubyte",
            idx_images(TEST_N as u32, 4, 4, &pixels(TEST_N, 1)),
        ),
        ("t10k-labels-idx1-ubyte", idx_labels(&test_labels())),
    ]
}

/// Writes the small IDX set, raw or gzipped (with a `.gz` name when `gz_name`).
fn write_idx(dir: &TempDir, gzip: bool, gz_name: bool) {
    for (name, bytes) in idx_files() {
        let bytes = if gzip { gz(&bytes) } else { bytes };
        let name = if gz_name {
            format!("{name}.gz")
        } else {
            name.to_string()
        };
        dir.write(&name, &bytes);
    }
}

/// The error of loading `dir`, checked to be one line naming `file`.
fn load_err(dir: &Path, file: &str) -> String {
    let e: DataError = match load_dir(dir) {
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

#[test]
fn bundled_fixture_loads() {
    let dir = default_dir();
    let Splits { train, test } = load_dir(&dir).unwrap();
    assert_eq!((train.n, test.n), (4000, 1000));
    assert_eq!((train.len(), test.len()), (4000, 1000));
    assert_eq!(train.shape, Shape::new(1, 28, 28));
    assert_eq!(test.shape, Shape::new(1, 28, 28));
    assert_eq!((train.classes, test.classes), (10, 10));
    assert_eq!(train.images.len(), 4000 * 784);
    assert_eq!(test.images.len(), 1000 * 784);
    assert_eq!(train.labels.len(), 4000);
    assert!(train.labels.iter().chain(&test.labels).all(|&l| l < 10));
    // Labels as in the raw files (header 8 bytes).
    let raw = gunzip(&std::fs::read(dir.join("train-labels-idx1-ubyte.gz")).unwrap());
    assert_eq!(train.labels[0], u16::from(raw[8]));
    let raw_l: Vec<u16> = raw[8..].iter().map(|&b| u16::from(b)).collect();
    assert_eq!(train.labels, raw_l);
    let raw_t = gunzip(&std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap());
    assert_eq!(test.labels[0], u16::from(raw_t[8]));
    // First pixel of the first image, through the normalisation.
    let raw_i = gunzip(&std::fs::read(dir.join("train-images-idx3-ubyte.gz")).unwrap());
    let want = (f32::from(raw_i[16]) / 255.0 - train.mean[0]) / train.std[0];
    assert_eq!(train.sample(0)[0], want);
    // Standardised with the training split's constants: mean 0, std 1 there; near the
    // published Fashion-MNIST constants.
    let n = train.images.len() as f64;
    let m = train.images.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = train
        .images
        .iter()
        .map(|&v| (f64::from(v) - m).powi(2))
        .sum::<f64>()
        / n;
    assert!(m.abs() < 1e-4, "mean {m}");
    assert!((var.sqrt() - 1.0).abs() < 1e-4, "std {}", var.sqrt());
    assert!((train.mean[0] - 0.2860).abs() < 0.01, "{:?}", train.mean);
    assert!((train.std[0] - 0.3530).abs() < 0.01, "{:?}", train.std);
    assert_eq!(test.mean, train.mean);
    assert_eq!(test.std, train.std);
    // The same through `load`.
    let again = load(dir.to_str().unwrap()).unwrap();
    assert_eq!(again.train.labels, train.labels);
}

#[test]
fn idx_values_and_normalisation() {
    let d = TempDir::new("idx-values");
    write_idx(&d, false, false);
    let s = load_dir(d.path()).unwrap();
    assert_eq!(s.train.shape, Shape::new(1, 4, 4));
    assert_eq!((s.train.n, s.test.n), (TRAIN_N, TEST_N));
    let tl: Vec<u16> = train_labels().into_iter().map(u16::from).collect();
    assert_eq!(s.train.labels, tl);
    let raw = pixels(TRAIN_N, 0);
    let scaled: Vec<f64> = raw.iter().map(|&p| f64::from(p) / 255.0).collect();
    let mean = scaled.iter().sum::<f64>() / scaled.len() as f64;
    let std = (scaled.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / scaled.len() as f64).sqrt();
    assert!((f64::from(s.train.mean[0]) - mean).abs() < 1e-6);
    assert!((f64::from(s.train.std[0]) - std).abs() < 1e-6);
    for (k, &p) in raw.iter().enumerate() {
        let want = (f64::from(p) / 255.0 - mean) / std;
        assert!((f64::from(s.train.images[k]) - want).abs() < 1e-5);
    }
    let test_raw = pixels(TEST_N, 1);
    let want = (f64::from(test_raw[16 + 3]) / 255.0 - mean) / std;
    assert!((f64::from(s.test.sample(1)[3]) - want).abs() < 1e-5);
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
    let a = load_dir(raw.path()).unwrap();
    assert_eq!(load_dir(gzd.path()).unwrap(), a);
    assert_eq!(load_dir(gz_plain_names.path()).unwrap(), a);
    assert_eq!(load_dir(raw_gz_names.path()).unwrap(), a);
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
    let msg = load_dir(&gone).unwrap_err().to_string();
    assert!(msg.contains("does-not-exist"), "{msg}");
    let file = d.path().join("README.txt");
    let msg = load_dir(&file).unwrap_err().to_string();
    assert!(
        msg.contains("README.txt") && msg.contains("not a directory"),
        "{msg}"
    );
}

/// A CIFAR record: `labels` then 3072 pixels, channel `c` pixel `k` = `(seed + 3c + k) % 256`.
fn cifar_record(labels: &[u8], seed: usize) -> Vec<u8> {
    let mut v = labels.to_vec();
    for c in 0..3 {
        v.extend((0..1024).map(|k| ((seed * 5 + c * 70 + k) % 256) as u8));
    }
    v
}

fn write_cifar10(d: &TempDir, sub: &str, bad: Option<(&str, Vec<u8>)>) -> Vec<u16> {
    let mut labels = Vec::new();
    for b in 1..=5 {
        let name = format!("{sub}data_batch_{b}.bin");
        let mut bytes = Vec::new();
        for r in 0..2 {
            let l = ((b * 2 + r) % 10) as u8;
            labels.push(u16::from(l));
            bytes.extend(cifar_record(&[l], b * 2 + r));
        }
        d.write(&name, &bytes);
    }
    let mut test = cifar_record(&[9], 100);
    test.extend(cifar_record(&[0], 101));
    d.write(&format!("{sub}test_batch.bin"), &test);
    if let Some((name, bytes)) = bad {
        d.write(&format!("{sub}{name}"), &bytes);
    }
    labels
}

#[test]
fn cifar10_small() {
    for sub in ["", "cifar-10-batches-bin/"] {
        let d = TempDir::new("cifar10");
        let labels = write_cifar10(&d, sub, None);
        let s = load_dir(d.path()).unwrap();
        assert_eq!(s.train.shape, Shape::new(3, 32, 32));
        assert_eq!(s.train.classes, 10);
        assert_eq!((s.train.n, s.test.n), (10, 2));
        assert_eq!(s.train.labels, labels);
        assert_eq!(s.test.labels, vec![9, 0]);
        assert_eq!(s.train.images.len(), 10 * 3072);
        assert_eq!((s.train.mean.len(), s.train.std.len()), (3, 3));
        // Per-channel standardisation with the training split's constants.
        for c in 0..3 {
            let vals: Vec<f64> = (0..10)
                .flat_map(|i| s.train.sample(i)[c * 1024..(c + 1) * 1024].to_vec())
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
        let want = (p / 255.0 - s.train.mean[1]) / s.train.std[1];
        assert_eq!(s.train.sample(1)[1024 + 5], want);
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
        let s = load_dir(d.path()).unwrap();
        assert_eq!(s.train.classes, 100);
        assert_eq!(s.train.shape, Shape::new(3, 32, 32));
        assert_eq!(s.train.labels, vec![99, 0, 42]);
        assert_eq!(s.test.labels, vec![57]);
        assert_eq!(s.test.images.len(), 3072);
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

/// `n` samples of 1x2x2 whose first pixel is the sample's index.
fn indexed(n: usize) -> Dataset {
    Dataset {
        images: (0..n).flat_map(|i| [i as f32, 0.5, -0.5, 1.0]).collect(),
        labels: (0..n).map(|i| (i % 10) as u16).collect(),
        shape: Shape::new(1, 2, 2),
        classes: 10,
        n,
        mean: vec![0.0],
        std: vec![1.0],
    }
}

fn ids(d: &Dataset) -> Vec<usize> {
    (0..d.len()).map(|i| d.sample(i)[0] as usize).collect()
}

#[test]
fn split_is_deterministic_disjoint_and_sized() {
    let (train, val) = indexed(1000).split(0.1, 7);
    assert_eq!((train.len(), val.len()), (900, 100));
    assert_eq!((train.n, val.n), (900, 100));
    assert_eq!(train.images.len(), 900 * 4);
    let (a, b) = (ids(&train), ids(&val));
    let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>(), "not a partition");
    // Labels and pixels travel with their sample.
    for (k, &i) in b.iter().enumerate() {
        assert_eq!(val.labels[k], (i % 10) as u16);
        assert_eq!(val.sample(k), &[i as f32, 0.5, -0.5, 1.0]);
    }
    // Not just the tail: a random subset.
    assert_ne!(b, (900..1000).collect::<Vec<_>>());
    // Same seed, same split; another seed, another split.
    let (train2, val2) = indexed(1000).split(0.1, 7);
    assert_eq!((train2, &val2), (train, &val));
    let (_, val3) = indexed(1000).split(0.1, 8);
    assert_ne!(ids(&val3), b);
    // Rounding and the extremes.
    assert_eq!(indexed(10).split(0.25, 1).1.len(), 3);
    assert_eq!(indexed(10).split(0.0, 1).1.len(), 0);
    assert_eq!(indexed(10).split(1.0, 1).0.len(), 0);
    assert_eq!(indexed(10).split(f32::NAN, 1).1.len(), 0);
    assert_eq!(indexed(10).split(-3.0, 1).1.len(), 0);
    assert_eq!(indexed(0).split(0.5, 1).1.len(), 0);
    let (t, v) = indexed(10).split(0.5, 1);
    assert_eq!(
        (t.mean, t.std, v.shape, v.classes),
        (vec![0.0], vec![1.0], Shape::new(1, 2, 2), 10)
    );
}

#[test]
fn subset_and_gather() {
    let d = indexed(5);
    let s = d.subset(&[4, 1, 1]);
    assert_eq!(ids(&s), vec![4, 1, 1]);
    assert_eq!(s.label(0), 4);
    let mut img = vec![0f32; 8];
    let mut lab = vec![0f32; 2];
    d.gather(&[3, 0], &mut img, &mut lab);
    assert_eq!(img, vec![3.0, 0.5, -0.5, 1.0, 0.0, 0.5, -0.5, 1.0]);
    assert_eq!(lab, vec![3.0, 0.0]);
    assert!(!d.is_empty() && indexed(0).is_empty());
}

#[test]
fn synthetic_parses_and_is_learnable() {
    let s = synthetic("synthetic:3x8x8:500").unwrap();
    assert_eq!(s.train.shape, Shape::new(3, 8, 8));
    assert_eq!((s.train.n, s.test.n), (500, 100));
    assert_eq!(s.train.images.len(), 500 * 192);
    assert_eq!(s.test.images.len(), 100 * 192);
    assert_eq!(s.train.classes, 10);
    assert!(s.train.labels.iter().all(|&l| l < 10));
    for k in 0..10 {
        assert!(s.train.labels.contains(&k), "class {k} never drawn");
    }
    assert!(s.train.images.iter().all(|v| v.is_finite()));
    // Deterministic, also through `load` and without the prefix.
    assert_eq!(synthetic("synthetic:3x8x8:500").unwrap(), s);
    assert_eq!(load("synthetic:3x8x8:500").unwrap(), s);
    assert_eq!(synthetic("3x8x8:500").unwrap(), s);
    // Test set rounds up.
    assert_eq!(synthetic("synthetic:1x4x4:7").unwrap().test.n, 2);
    // Learnable: a nearest-class-mean classifier fitted on train scores well on test.
    let len = s.train.shape.len();
    let mut means = vec![vec![0f64; len]; 10];
    let mut counts = [0usize; 10];
    for i in 0..s.train.n {
        let k = usize::from(s.train.labels[i]);
        counts[k] += 1;
        for (m, &v) in means[k].iter_mut().zip(s.train.sample(i)) {
            *m += f64::from(v);
        }
    }
    for (m, &c) in means.iter_mut().zip(&counts) {
        m.iter_mut().for_each(|v| *v /= c as f64);
    }
    let correct = (0..s.test.n)
        .filter(|&i| {
            let x = s.test.sample(i);
            let dist = |m: &Vec<f64>| -> f64 {
                m.iter()
                    .zip(x)
                    .map(|(a, &b)| (a - f64::from(b)).powi(2))
                    .sum()
            };
            let best = (0..10)
                .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
                .unwrap();
            best == usize::from(s.test.labels[i])
        })
        .count();
    assert!(correct >= 90, "nearest-mean accuracy {correct}/100");
}

#[test]
fn synthetic_rejects_bad_specs() {
    for spec in [
        "synthetic:",
        "synthetic:3x8x8",
        "synthetic:3x8:10",
        "synthetic:3x8x8x8:10",
        "synthetic:0x8x8:10",
        "synthetic:3x0x8:10",
        "synthetic:3x8x8:0",
        "synthetic:3x8x8:-1",
        "synthetic:axbxc:10",
        "synthetic:3x8x8:ten",
        "synthetic:99999999999x99999999999x99999999999:1",
        "synthetic:3x1024x1024:100000",
    ] {
        let e = synthetic(spec).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(spec), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(load(spec).is_err());
    }
}

/// The full Fashion-MNIST from the Debian package `dataset-fashion-mnist`, when installed
/// (`cargo test -p nf-host --test data -- --ignored`).
#[test]
#[ignore = "needs /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)"]
fn full_fashion_mnist() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        eprintln!("skipped: {} not installed", dir.display());
        return;
    }
    let t = std::time::Instant::now();
    let s = load_dir(dir).unwrap();
    eprintln!(
        "loaded in {:?}: mean {:?} std {:?}",
        t.elapsed(),
        s.train.mean,
        s.train.std
    );
    assert_eq!((s.train.n, s.test.n), (60_000, 10_000));
    assert!(
        (s.train.mean[0] - 0.2860).abs() < 5e-4,
        "{:?}",
        s.train.mean
    );
    assert!((s.train.std[0] - 0.3530).abs() < 5e-4, "{:?}", s.train.std);
}
