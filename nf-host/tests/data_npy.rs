//! NumPy `.npy` data sets (`--data DIR` holding x_train.npy, y_train.npy, x_test.npy,
//! y_test.npy): the three image layouts give the same set, label dtypes, the memory budget,
//! every bad input as one line naming the file, and the bundled Fashion-MNIST as `.npy` trains
//! to model files identical to its IDX form.
mod cli_common;
mod data_common;

use std::fs;
use std::path::Path;

use cli_common::{assert_one_line_error, nf, s};
use data_common::{TempDir, BIG};
use nf_host::data::{default_dir, describe, load, load_dir, load_test, Dataset};

/// A `.npy` file (format 1.0) of `descr` and `shape` holding `data`, as `numpy.save` writes it:
/// the header padded with spaces to a multiple of 64 bytes, ending in a newline.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(data);
    v
}

/// `labels` as little-endian `int64`, NumPy's default integer.
fn i64_labels(labels: &[u16]) -> Vec<u8> {
    labels
        .iter()
        .flat_map(|&l| i64::from(l).to_le_bytes())
        .collect()
}

/// The `N x C x H x W` pixels of a set, sample after sample.
fn pixels(d: &Dataset) -> Vec<u8> {
    (0..d.len()).flat_map(|i| d.raw(i).to_vec()).collect()
}

/// `N x C x H x W` pixels reordered to `N x H x W x C`.
fn to_channels_last(p: &[u8], c: usize, plane: usize) -> Vec<u8> {
    let mut out = vec![0u8; p.len()];
    for (n, img) in p.chunks_exact(c * plane).enumerate() {
        for ch in 0..c {
            for k in 0..plane {
                out[n * c * plane + k * c + ch] = img[ch * plane + k];
            }
        }
    }
    out
}

/// A small 3-channel set: 12 training and 4 test images of 3x4x5, labels 0..3.
struct Small {
    x_train: Vec<u8>,
    y_train: Vec<u16>,
    x_test: Vec<u8>,
    y_test: Vec<u16>,
}

const C: usize = 3;
const H: usize = 4;
const W: usize = 5;

fn small() -> Small {
    let img = |n: usize, salt: usize| -> Vec<u8> {
        (0..n * C * H * W)
            .map(|k| ((k * 31 + salt * 7) % 251) as u8)
            .collect()
    };
    Small {
        x_train: img(12, 0),
        y_train: (0..12).map(|i| (i % 3) as u16).collect(),
        x_test: img(4, 1),
        y_test: vec![2, 0, 1, 1],
    }
}

/// Writes `s` into `dir` in `layout` ("nchw" or "nhwc"), labels as int64.
fn write_small(dir: &TempDir, s: &Small, layout: &str) {
    for (name, x, n) in [
        ("x_train.npy", &s.x_train, 12),
        ("x_test.npy", &s.x_test, 4),
    ] {
        let bytes = match layout {
            "nchw" => npy("|u1", &[n, C, H, W], x),
            _ => npy("|u1", &[n, H, W, C], &to_channels_last(x, C, H * W)),
        };
        dir.write(name, &bytes);
    }
    dir.write("y_train.npy", &npy("<i8", &[12], &i64_labels(&s.y_train)));
    dir.write("y_test.npy", &npy("<i8", &[4], &i64_labels(&s.y_test)));
}

#[test]
fn channels_first_and_channels_last_arrays_give_the_same_set() {
    let s = small();
    let mut sets = Vec::new();
    for layout in ["nchw", "nhwc"] {
        let d = TempDir::new(layout);
        write_small(&d, &s, layout);
        let info = describe(d.path()).unwrap();
        assert_eq!(
            (info.shape.c, info.shape.h, info.shape.w, info.classes),
            (C, H, W, 3)
        );
        assert_eq!((info.train, info.test), (12, 4));
        let sp = load(d.path(), BIG).unwrap();
        assert_eq!(pixels(&sp.train), s.x_train, "{layout}");
        assert_eq!(pixels(&sp.test), s.x_test, "{layout}");
        assert_eq!(sp.train.labels(), &s.y_train[..]);
        assert_eq!(sp.test.labels(), &s.y_test[..]);
        // Exactly the bytes planned.
        assert_eq!(sp.train.bytes() + sp.test.bytes(), info.bytes());
        sets.push(sp);
    }
    assert_eq!(sets[0], sets[1]);
}

#[test]
fn grey_arrays_and_every_integer_label_dtype_load() {
    let (n, h, w) = (6usize, 3usize, 2usize);
    let x: Vec<u8> = (0..n * h * w).map(|k| (k * 13 % 256) as u8).collect();
    let labels: [u16; 6] = [0, 1, 2, 3, 1, 0];
    for (shape, descr, bytes) in [
        (
            vec![n, h, w],
            "|u1",
            labels.iter().map(|&l| l as u8).collect::<Vec<u8>>(),
        ),
        (
            vec![n, h, w, 1],
            "<u2",
            labels.iter().flat_map(|&l| l.to_le_bytes()).collect(),
        ),
        (
            vec![n, 1, h, w],
            ">i4",
            labels
                .iter()
                .flat_map(|&l| i32::from(l).to_be_bytes())
                .collect(),
        ),
        (vec![n, h, w], "<i8", i64_labels(&labels)),
    ] {
        let d = TempDir::new("grey");
        d.write("x_train.npy", &npy("|u1", &shape, &x));
        d.write("x_test.npy", &npy("|u1", &shape, &x));
        // (N,) and, for the wider types, Keras' (N, 1).
        let lshape: &[usize] = if descr == "|u1" { &[n] } else { &[n, 1] };
        d.write("y_train.npy", &npy(descr, lshape, &bytes));
        d.write("y_test.npy", &npy(descr, lshape, &bytes));
        let sp = load(d.path(), BIG).unwrap_or_else(|e| panic!("{descr} {shape:?}: {e}"));
        assert_eq!(sp.train.stored_shape().len(), h * w);
        assert_eq!(sp.train.classes(), 4);
        assert_eq!(pixels(&sp.train), x);
        assert_eq!(sp.test.labels(), &labels[..]);
        // The test split alone knows the classes from y_train.npy.
        assert_eq!(load_test(d.path(), BIG).unwrap().classes(), 4);
    }
}

#[test]
fn the_memory_budget_refuses_the_file_that_goes_over_it() {
    let s = small();
    let d = TempDir::new("budget");
    write_small(&d, &s, "nhwc");
    let need = describe(d.path()).unwrap().bytes();
    assert!(load(d.path(), need).is_ok());
    let e = load(d.path(), need - 1).unwrap_err().to_string();
    assert!(e.contains("y_test.npy") && e.contains("budget"), "{e}");
    let e = load(d.path(), 100).unwrap_err().to_string();
    assert!(e.contains("x_train.npy") && e.contains("budget"), "{e}");
}

/// Every bad input: an error naming the file, one line, from `describe` and `load` alike.
#[test]
fn bad_arrays_are_refused_naming_the_file() {
    let s = small();
    let x_nchw = |n: usize, x: &[u8]| npy("|u1", &[n, C, H, W], x);
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("empty", "x_train.npy", Vec::new(), "empty file"),
        (
            "magic",
            "x_test.npy",
            b"PK\x03\x04 a zip".to_vec(),
            "not a NumPy .npy file",
        ),
        (
            "truncated",
            "x_train.npy",
            {
                let mut v = x_nchw(12, &s.x_train);
                v.truncate(v.len() - 7);
                v
            },
            "truncated",
        ),
        (
            "claims more",
            "x_train.npy",
            npy("|u1", &[1_000_000, C, H, W], &s.x_train),
            "truncated",
        ),
        (
            "over-long",
            "x_test.npy",
            {
                let mut v = x_nchw(4, &s.x_test);
                v.push(0);
                v
            },
            "over-long",
        ),
        (
            "float images",
            "x_train.npy",
            npy("<f4", &[3, C, H, W], &[0u8; 3 * C * H * W * 4]),
            "uint8",
        ),
        (
            "float labels",
            "y_train.npy",
            npy("<f8", &[12], &[0u8; 96]),
            "integers",
        ),
        (
            "negative label",
            "y_train.npy",
            {
                let mut l = i64_labels(&s.y_train);
                l[8 * 5..8 * 6].copy_from_slice(&(-1i64).to_le_bytes());
                npy("<i8", &[12], &l)
            },
            "label -1 out of range at record 5",
        ),
        (
            "huge label",
            "y_train.npy",
            {
                let mut l = i64_labels(&s.y_train);
                l[..8].copy_from_slice(&70_000i64.to_le_bytes());
                npy("<i8", &[12], &l)
            },
            "label 70000 out of range",
        ),
        (
            "test label unseen",
            "y_test.npy",
            npy("<i8", &[4], &i64_labels(&[0, 1, 7, 2])),
            "label 7 out of range at record 2",
        ),
        (
            "count mismatch",
            "y_test.npy",
            npy("<i8", &[3], &i64_labels(&[0, 1, 2])),
            "holds 3 labels",
        ),
        (
            "ambiguous layout",
            "x_train.npy",
            npy("|u1", &[2, 4, 5, 6], &[0u8; 240]),
            "channel axis",
        ),
        (
            "two dimensions",
            "x_train.npy",
            npy("|u1", &[12, 60], &s.x_train),
            "is not N x H x W",
        ),
        (
            "fortran",
            "x_train.npy",
            {
                let mut v = x_nchw(12, &s.x_train);
                let at = v.windows(5).position(|w| w == b"False").unwrap();
                v[at..at + 5].copy_from_slice(b"True ");
                v
            },
            "Fortran order",
        ),
        (
            "header too long",
            "x_train.npy",
            {
                let mut v = b"\x93NUMPY\x02\x00".to_vec();
                v.extend_from_slice(&u32::MAX.to_le_bytes());
                v.extend_from_slice(b"{'descr'");
                v
            },
            "more than the 65536",
        ),
        (
            "version",
            "x_train.npy",
            b"\x93NUMPY\x09\x00\x10\x00{}".to_vec(),
            "version 9.0",
        ),
        (
            "structured",
            "x_train.npy",
            npy_raw("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (1,), }"),
            "structured",
        ),
        (
            "all zero labels",
            "y_train.npy",
            npy("<i8", &[12], &[0u8; 96]),
            "at least 2 classes",
        ),
    ];
    for (what, file, bytes, needle) in cases {
        let d = TempDir::new("bad");
        write_small(&d, &s, "nchw");
        d.write(file, &bytes);
        let e = describe(d.path())
            .map(|_| ())
            .and_then(|()| load(d.path(), BIG).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(file), "{what}: error names {file}: {e}");
        assert!(e.contains(needle), "{what}: {needle:?} in {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
    }
}

/// A header-only `.npy` of `dict`.
fn npy_raw(dict: &str) -> Vec<u8> {
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(dict.len() as u16 + 1).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.push(b'\n');
    v
}

/// The bundled Fashion-MNIST subset written as `.npy` (28x28 images, int64 labels).
fn fashion_npy(dir: &Path, layout: &str) {
    let sp = load_dir(&default_dir(), BIG).unwrap();
    for (x, y, set) in [
        ("x_train.npy", "y_train.npy", &sp.train),
        ("x_test.npy", "y_test.npy", &sp.test),
    ] {
        let shape: &[usize] = match layout {
            "nhw" => &[set.len(), 28, 28],
            _ => &[set.len(), 28, 28, 1],
        };
        fs::write(dir.join(x), npy("|u1", shape, &pixels(set))).unwrap();
        fs::write(
            dir.join(y),
            npy("<i8", &[set.len()], &i64_labels(set.labels())),
        )
        .unwrap();
    }
}

#[test]
fn fashion_mnist_as_npy_trains_to_the_same_model_files_as_its_idx_form() {
    let d = TempDir::new("fashion");
    fashion_npy(d.path(), "nhwc");
    let (idx_out, npy_out) = (d.path().join("idx-run"), d.path().join("npy-run"));
    let data = d.path().join("npy");
    fs::create_dir_all(&data).unwrap();
    fashion_npy(&data, "nhw");
    let idx_dir = default_dir();
    for (src, out) in [(&idx_dir, &idx_out), (&data, &npy_out)] {
        let o = nf(&[
            "train",
            "--data",
            s(src),
            "--out",
            s(out),
            "--epochs",
            "1",
            "--budget",
            "32MiB",
            "--limit",
            "600",
            "--threads",
            "2",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for f in ["model.safetensors", "exit.safetensors"] {
        assert!(
            fs::read(idx_out.join(f)).unwrap() == fs::read(npy_out.join(f)).unwrap(),
            "{f} differs between the IDX and the .npy form"
        );
    }
    // nf eval reads the .npy test split (N x H x W x 1 here) as it reads the IDX one.
    let eval = |dir: &Path| {
        let o = nf(&[
            "eval",
            "--model",
            s(&npy_out),
            "--data",
            s(dir),
            "--json",
            "--limit",
            "300",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["models"][0]["test_acc"].as_f64().unwrap()
    };
    assert_eq!(eval(d.path()), eval(&idx_dir));
}

#[test]
fn bad_npy_is_one_line_exit_2_from_nf_and_leaves_out_intact() {
    let d = TempDir::new("cli");
    write_small(&d, &small(), "nhwc");
    d.write("y_train.npy", &npy("<f4", &[12], &[0u8; 48]));
    // Beside the data, not inside it: nf refuses an --out inside --data (the data directory
    // is only read).
    let runs = TempDir::new("cli-runs");
    let out = runs.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("model.safetensors"), b"precious").unwrap();
    let o = nf(&[
        "train",
        "--data",
        s(d.path()),
        "--out",
        s(&out),
        "--epochs",
        "1",
    ]);
    assert_one_line_error(&o, "y_train.npy");
    assert_eq!(
        fs::read(out.join("model.safetensors")).unwrap(),
        b"precious"
    );
    // nf plan reads the same headers.
    d.write(
        "y_train.npy",
        &npy("<i8", &[12], &i64_labels(&small().y_train)),
    );
    d.write("x_test.npy", &[]);
    assert_one_line_error(&nf(&["plan", "--data", s(d.path())]), "x_test.npy");
}
