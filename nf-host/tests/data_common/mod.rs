//! Helpers shared by the data tests (`data.rs`, `data_memory.rs`): temporary directories and
//! small data files in the real formats.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use nf_host::data::Dataset;

/// A limit no test data set comes near (1 TiB).
pub const BIG: u64 = 1 << 40;

/// A fresh, empty directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("nf-data-test-{}-{k}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
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

/// Sample `i` of `d`, normalised.
pub fn normalised(d: &Dataset, i: usize) -> Vec<f32> {
    let mut x = vec![0f32; d.shape().len()];
    d.write_normalised(i, &mut x);
    x
}

pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// A gzip stream of `head` followed by `zeros` zero bytes, compressed a MiB at a time.
pub fn gz_bomb(head: &[u8], zeros: usize) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(head).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let k = left.min(block.len());
        e.write_all(&block[..k]).unwrap();
        left -= k;
    }
    e.finish().unwrap()
}

pub fn idx_header(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0000_0803u32, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

pub fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = idx_header(n, rows, cols);
    v.extend_from_slice(pixels);
    v
}

pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0000_0801u32, labels.len() as u32] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

/// Pixels of `n` images of 4x4 that vary with image and position.
pub fn pixels(n: usize, salt: usize) -> Vec<u8> {
    (0..n * 16)
        .map(|k| ((k * 37 + salt * 11) % 256) as u8)
        .collect()
}

pub const TRAIN_N: usize = 20;
pub const TEST_N: usize = 5;

pub fn train_labels() -> Vec<u8> {
    (0..TRAIN_N).map(|i| ((i * 3) % 10) as u8).collect()
}
pub fn test_labels() -> Vec<u8> {
    (0..TEST_N).map(|i| ((i * 7 + 1) % 10) as u8).collect()
}

/// The four files of a small valid IDX set (4x4 images), by base name.
pub fn idx_files() -> Vec<(&'static str, Vec<u8>)> {
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
pub fn write_idx(dir: &TempDir, gzip: bool, gz_name: bool) {
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

/// A CIFAR record: `labels` then 3072 pixels, channel `c` pixel `k` = `(5 seed + 70c + k) % 256`.
pub fn cifar_record(labels: &[u8], seed: usize) -> Vec<u8> {
    let mut v = labels.to_vec();
    for c in 0..3 {
        v.extend((0..1024).map(|k| ((seed * 5 + c * 70 + k) % 256) as u8));
    }
    v
}

/// Five CIFAR-10 training batches of 2 records and a test batch of 2 under `d/sub`, one file
/// optionally replaced; returns the training labels.
pub fn write_cifar10(d: &TempDir, sub: &str, bad: Option<(&str, Vec<u8>)>) -> Vec<u16> {
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
