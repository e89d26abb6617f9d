//! Memory bounds of the data loaders, measured: a counting global allocator records, per
//! thread, the bytes live at the peak of `load` and `split`, and the tests compare them with
//! what `describe` said the data set takes. Also the gzip bombs of the hardening issue.
//!
//! The allocator's accounting is in `peak_alloc/mod.rs`.

mod data_common;
mod peak_alloc;

use std::path::Path;
use std::time::Instant;

use data_common::*;
use nf_host::data::{default_dir, describe, load, load_dir, load_test, DataInfo};
use peak_alloc::{peak_during, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Loads `arg` with exactly the limit `describe` says it needs and checks the peak against
/// `DataInfo::bytes` + `DataInfo::load_overhead`; one byte less must be refused with no more
/// than the overhead allocated. Returns the info and the peak.
fn check_load_peak(arg: &Path) -> (DataInfo, u64) {
    let info = describe(arg).unwrap();
    let (s, peak) = peak_during(|| load(arg, info.bytes()).unwrap());
    assert_eq!(s.train.bytes() + s.test.bytes(), info.bytes());
    eprintln!(
        "{}: holds {} B, load peak {} B (+{} B)",
        arg.display(),
        info.bytes(),
        peak,
        peak as i64 - info.bytes() as i64
    );
    assert!(
        peak <= info.bytes() + info.load_overhead(),
        "{}: peak {peak} > {} + {}",
        arg.display(),
        info.bytes(),
        info.load_overhead()
    );
    drop(s);
    let (r, peak) = peak_during(|| load(arg, info.bytes() - 1).map(|_| ()));
    assert!(r.is_err(), "{}", arg.display());
    assert!(peak <= info.load_overhead(), "refusal allocated {peak} B");
    (info, peak)
}

#[test]
fn load_peak_is_the_data_set_plus_a_bounded_overhead() {
    // Gzipped IDX (the bundled fixture), raw IDX, CIFAR-10, synthetic.
    check_load_peak(&default_dir());
    let raw = TempDir::new("peak-raw");
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let bytes = std::fs::read(default_dir().join(format!("{name}.gz"))).unwrap();
        raw.write(name, &gunzip(&bytes));
    }
    check_load_peak(raw.path());
    let c = TempDir::new("peak-cifar");
    write_cifar10(&c, "", None);
    check_load_peak(c.path());
    check_load_peak(Path::new("synthetic:3x32x32:1000"));
    // The test split alone.
    let info = describe(default_dir()).unwrap();
    let need = info.test as u64 * info.sample_bytes();
    let (t, peak) = peak_during(|| load_test(default_dir(), need).unwrap());
    assert_eq!(t.bytes(), need);
    eprintln!("load_test: holds {need} B, peak {peak} B");
    assert!(peak <= need + info.load_overhead(), "peak {peak}");
}

#[test]
fn split_peak_is_the_validation_part_plus_the_permutation() {
    let set = load_dir(&default_dir(), u64::MAX).unwrap().train;
    let info = describe(default_dir()).unwrap();
    let before = set.bytes();
    for val in [0.1f32, 0.5, 0.0, 1.0] {
        let set = set.clone();
        let ((train, v), peak) = peak_during(|| set.split(val, 3));
        eprintln!(
            "split {val}: set {before} B, val {} B, peak +{peak} B (bound +{})",
            v.bytes(),
            info.split_overhead(val)
        );
        assert!(peak <= info.split_overhead(val), "peak +{peak} B");
        // The parts hold exactly the set's bytes between them, no spare capacity.
        assert_eq!(train.bytes() + v.bytes(), before);
    }
}

#[test]
fn gzip_bomb_over_the_limit_is_refused_from_its_header() {
    // The hardening issue's file: a header claiming 4294967295 images of 28x28 (3.1 TiB), then
    // a long run of zeros; here ~200 MB of them, with valid files beside it.
    let d = TempDir::new("bomb-claim");
    write_idx(&d, true, true);
    d.write(
        "train-images-idx3-ubyte.gz",
        &gz_bomb(&idx_header(u32::MAX, 28, 28), 200 << 20),
    );
    let t = Instant::now();
    let (r, peak) = peak_during(|| load_dir(d.path(), 64 << 20).map(|_| ()));
    let msg = r.unwrap_err().to_string();
    eprintln!("{msg} ({:?}, peak {peak} B)", t.elapsed());
    assert!(
        msg.ends_with(
            "train-images-idx3-ubyte.gz: 4294967295 images of 28x28 (3.1 TiB) exceed the host \
             memory budget (64.0 MiB)"
        ),
        "{msg}"
    );
    assert!(peak < 1 << 20, "peak {peak} B");
    // A claim of 10^9 images: the same, whatever the limit short of it.
    d.write(
        "train-images-idx3-ubyte.gz",
        &gz_bomb(&idx_header(1_000_000_000, 28, 28), 1 << 20),
    );
    let (r, peak) = peak_during(|| load_dir(d.path(), 8 << 30).map(|_| ()));
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("1000000000 images of 28x28 (730.2 GiB) exceed"),
        "{msg}"
    );
    assert!(peak < 1 << 20, "peak {peak} B");
}

#[test]
fn gzip_bomb_within_the_limit_stops_at_its_claim() {
    // A header claiming 20000 images of 28x28 (15 MiB, within the limit) followed by ~200 MB:
    // inflating stops one byte past the claim, before any buffer for the images exists.
    let d = TempDir::new("bomb-long");
    let n = 20_000u32;
    let mut labels = idx_labels(&vec![3u8; n as usize]);
    labels.splice(4..8, n.to_be_bytes());
    d.write("train-labels-idx1-ubyte.gz", &gz(&labels));
    d.write(
        "t10k-images-idx3-ubyte.gz",
        &gz(&idx_images(1, 28, 28, &[0; 784])),
    );
    d.write("t10k-labels-idx1-ubyte.gz", &gz(&idx_labels(&[1])));
    d.write(
        "train-images-idx3-ubyte.gz",
        &gz_bomb(&idx_header(n, 28, 28), 200 << 20),
    );
    let t = Instant::now();
    let (r, peak) = peak_during(|| load_dir(d.path(), 64 << 20).map(|_| ()));
    let msg = r.unwrap_err().to_string();
    eprintln!("{msg} ({:?}, peak {peak} B)", t.elapsed());
    assert!(
        msg.contains("train-images-idx3-ubyte.gz: over-long: header says 20000 images of 28x28"),
        "{msg}"
    );
    assert!(peak < 1 << 20, "peak {peak} B");
    // The same stream cut to exactly the claim loads, at the data set's size.
    d.write(
        "train-images-idx3-ubyte.gz",
        &gz_bomb(&idx_header(n, 28, 28), n as usize * 784),
    );
    check_load_peak(d.path());
    // And one cut short of it is truncated, again before allocating.
    d.write(
        "train-images-idx3-ubyte.gz",
        &gz_bomb(&idx_header(n, 28, 28), n as usize * 784 - 1),
    );
    let (r, peak) = peak_during(|| load_dir(d.path(), 64 << 20).map(|_| ()));
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("truncated: header says 20000 images"), "{msg}");
    assert!(peak < 1 << 20, "peak {peak} B");
}

#[test]
fn synthetic_over_the_limit_allocates_nothing() {
    let (r, peak) = peak_during(|| load("synthetic:1x8192x8192:25", 64 << 20).map(|_| ()));
    assert!(r.is_err());
    assert!(peak < 64 << 10, "peak {peak} B");
}
