//! A `Dataset` in memory (construction, the validation split, truncation) and synthetic data
//! (`synthetic:CxHxW:N`: parsing, learnability, the memory budget).

mod data_common;

use data_common::*;
use nf_core::model::Shape;
use nf_core::rng::Rng;
use nf_host::data::{default_dir, describe, load, load_dir, load_test, Dataset};

/// `n` samples of 1x2x2 whose first two pixels encode the sample's index.
fn indexed(n: usize) -> Dataset {
    let pixels = (0..n)
        .flat_map(|i| [(i % 256) as u8, (i / 256) as u8, 7, 200])
        .collect();
    let labels = (0..n).map(|i| (i % 10) as u16).collect();
    Dataset::new(pixels, labels, Shape::new(1, 2, 2), 10).unwrap()
}

fn ids(d: &Dataset) -> Vec<usize> {
    (0..d.len())
        .map(|i| usize::from(d.raw(i)[0]) + 256 * usize::from(d.raw(i)[1]))
        .collect()
}

/// The split as it was when `split` copied the whole set: indices of the training and the
/// validation samples.
fn old_split(n: usize, val_fraction: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let f = if val_fraction.is_nan() {
        0.0
    } else {
        f64::from(val_fraction).clamp(0.0, 1.0)
    };
    let n_val = ((n as f64 * f).round() as usize).min(n);
    let mut perm: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut perm);
    let (val_idx, train_idx) = perm.split_at_mut(n_val);
    val_idx.sort_unstable();
    train_idx.sort_unstable();
    (train_idx.to_vec(), val_idx.to_vec())
}

#[test]
fn split_chooses_the_same_samples_as_before() {
    for (n, f, seed) in [
        (1000, 0.1, 7),
        (1000, 0.1, 8),
        (777, 0.33, 1),
        (10, 0.25, 1),
        (10, 1.0, 3),
        (10, 0.0, 3),
        (1, 0.5, 9),
        (0, 0.5, 1),
        (300, f32::NAN, 2),
        (300, -3.0, 2),
        (300, 7.0, 2),
    ] {
        let (train, val) = indexed(n).split(f, seed);
        let (want_t, want_v) = old_split(n, f, seed);
        assert_eq!(ids(&train), want_t, "train of ({n}, {f}, {seed})");
        assert_eq!(ids(&val), want_v, "val of ({n}, {f}, {seed})");
        // Labels and pixels travel with their sample.
        for (d, want) in [(&train, &want_t), (&val, &want_v)] {
            for (k, &i) in want.iter().enumerate() {
                assert_eq!(d.label(k), (i % 10) as u16);
                assert_eq!(d.raw(k)[2..], [7, 200]);
            }
            assert_eq!(d.bytes(), want.len() as u64 * 6, "no spare capacity");
        }
    }
    // On real data too: the fixture's training split.
    let set = load_dir(&default_dir(), BIG).unwrap().train;
    let (train, val) = set.clone().split(0.1, 42);
    let (want_t, want_v) = old_split(set.len(), 0.1, 42);
    assert_eq!(val.len(), 400);
    for (d, want) in [(&train, &want_t), (&val, &want_v)] {
        for (k, &i) in want.iter().enumerate() {
            assert_eq!((d.raw(k), d.label(k)), (set.raw(i), set.label(i)));
        }
        assert_eq!((d.mean(), d.std()), (set.mean(), set.std()));
    }
}

#[test]
fn split_is_deterministic_disjoint_and_sized() {
    let (train, val) = indexed(1000).split(0.1, 7);
    assert_eq!((train.len(), val.len()), (900, 100));
    let (a, b) = (ids(&train), ids(&val));
    let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>(), "not a partition");
    // Not just the tail: a random subset.
    assert_ne!(b, (900..1000).collect::<Vec<_>>());
    // Same seed, same split; another seed, another split.
    let (train2, val2) = indexed(1000).split(0.1, 7);
    assert_eq!((train2, &val2), (train, &val));
    let (_, val3) = indexed(1000).split(0.1, 8);
    assert_ne!(ids(&val3), b);
    let (t, v) = indexed(10).split(0.5, 1);
    assert_eq!((t.mean(), t.std()), (v.mean(), v.std()));
    assert_eq!((v.shape(), v.classes()), (Shape::new(1, 2, 2), 10));
}

#[test]
fn truncate_keeps_the_first_samples() {
    let mut d = indexed(50);
    d.truncate(60);
    assert_eq!(d.len(), 50);
    d.truncate(20);
    assert_eq!(ids(&d), (0..20).collect::<Vec<_>>());
    assert_eq!(d.bytes(), 20 * 6);
    d.truncate(0);
    assert!(d.is_empty() && d.bytes() == 0);
}

#[test]
fn dataset_new_checks_its_parts() {
    let d = indexed(3);
    assert_eq!(
        (d.len(), d.label(2), d.raw(2)),
        (3, 2, &[2u8, 0, 7, 200][..])
    );
    assert!(!d.is_empty() && indexed(0).is_empty());
    let s = Shape::new(1, 2, 2);
    for (pixels, labels, shape, classes) in [
        (vec![0u8; 7], vec![0u16; 2], s, 10),
        (vec![0u8; 8], vec![0u16, 10], s, 10),
        (vec![], vec![], Shape::new(0, 2, 2), 10),
        (vec![], vec![], Shape::new(usize::MAX, 2, 2), 10),
        (vec![0u8; 4], vec![0u16], s, 0),
    ] {
        let e = Dataset::new(pixels, labels, shape, classes).unwrap_err();
        assert!(!e.contains('\n') && !e.is_empty(), "{e}");
    }
}

#[test]
fn synthetic_parses_and_is_learnable() {
    let s = load("synthetic:3x8x8:500", BIG).unwrap();
    assert_eq!(s.train.shape(), Shape::new(3, 8, 8));
    assert_eq!((s.train.len(), s.test.len()), (500, 100));
    assert_eq!(s.train.bytes(), 500 * (192 + 2));
    assert_eq!(s.train.classes(), 10);
    assert!(s.train.labels().iter().all(|&l| l < 10));
    for k in 0..10 {
        assert!(s.train.labels().contains(&k), "class {k} never drawn");
    }
    // Uses the range of u8 without piling up at its ends.
    let px: Vec<u8> = (0..500).flat_map(|i| s.train.raw(i).to_vec()).collect();
    let clipped = px.iter().filter(|&&p| p == 0 || p == 255).count();
    assert!(
        clipped * 100 < px.len(),
        "{clipped} of {} clipped",
        px.len()
    );
    // Deterministic.
    assert_eq!(load("synthetic:3x8x8:500", BIG).unwrap(), s);
    // Test set rounds up.
    assert_eq!(load("synthetic:1x4x4:7", BIG).unwrap().test.len(), 2);
    // Learnable: a nearest-class-mean classifier fitted on train scores well on test.
    let len = s.train.shape().len();
    let mut means = vec![vec![0f64; len]; 10];
    let mut counts = [0usize; 10];
    for i in 0..s.train.len() {
        let k = usize::from(s.train.label(i));
        counts[k] += 1;
        for (m, &v) in means[k].iter_mut().zip(&normalised(&s.train, i)) {
            *m += f64::from(v);
        }
    }
    for (m, &c) in means.iter_mut().zip(&counts) {
        m.iter_mut().for_each(|v| *v /= c as f64);
    }
    let correct = (0..s.test.len())
        .filter(|&i| {
            let x = normalised(&s.test, i);
            let dist = |m: &Vec<f64>| -> f64 {
                m.iter()
                    .zip(&x)
                    .map(|(a, &b)| (a - f64::from(b)).powi(2))
                    .sum()
            };
            let best = (0..10)
                .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
                .unwrap();
            best == usize::from(s.test.label(i))
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
        "synthetic:3x8x0:10",
        "synthetic:3x8x8:0",
        "synthetic:3x8x8:-1",
        "synthetic:axbxc:10",
        "synthetic:3x8x8:ten",
        "synthetic:99999999999999999999x1x1:1",
        "synthetic:99999999999x99999999999x99999999999:1",
        "synthetic:4294967296x4294967296x1:1",
        "synthetic:1x1x1:18446744073709551615",
        "synthetic:65536x65536x65536:65536",
    ] {
        for e in [describe(spec).unwrap_err(), load(spec, BIG).unwrap_err()] {
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{spec}: ")), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}

#[test]
fn synthetic_over_the_limit_is_refused() {
    let spec = "synthetic:1x8192x8192:25";
    let info = describe(spec).unwrap();
    assert_eq!((info.train, info.test), (25, 5));
    assert_eq!(info.bytes(), 30 * (8192 * 8192 + 2));
    for (limit, what) in [
        (64 << 20, "25 training and 5 test images"),
        (info.bytes() - 1, "25 training and 5 test images"),
    ] {
        let msg = load(spec, limit).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{spec}: {what} of 1x8192x8192 (1.9 GiB) exceed")),
            "{msg}"
        );
    }
    let msg = load_test(spec, 64 << 20).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "{spec}: 5 test images of 1x8192x8192 (320.0 MiB) exceed"
        )),
        "{msg}"
    );
}
