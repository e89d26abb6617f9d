//! `nf train` and `nf eval` on an image folder: the bundled Fashion-MNIST written as 2,500 PNG
//! and JPEG files (one folder per class, train/ and test/) trains, and the model's accuracy on
//! the folder's test split is within 1 point of its accuracy on the same images as IDX; the
//! run's peak RSS stays within its planned total + 16 MiB.
mod cli_common;

use std::fs;
use std::path::Path;

use cli_common::{nf, report, s, tmp};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, GrayImage, ImageFormat};
use nf_host::data::{default_dir, load_dir, Dataset};
use serde_json::Value;

/// Fashion-MNIST's classes, numbered so that sorted folder names keep the label order.
const CLASSES: [&str; 10] = [
    "0-tshirt",
    "1-trouser",
    "2-pullover",
    "3-dress",
    "4-coat",
    "5-sandal",
    "6-shirt",
    "7-sneaker",
    "8-bag",
    "9-boot",
];

/// Writes the first `n` images of `set` under `dir/<class>/`, even ones as PNG, odd ones as
/// JPEG (quality 95), at their own 28x28.
fn write_folder(set: &Dataset, n: usize, dir: &Path) {
    for c in CLASSES {
        fs::create_dir_all(dir.join(c)).unwrap();
    }
    for i in 0..n {
        let img = GrayImage::from_raw(28, 28, set.raw(i).to_vec()).unwrap();
        let img = DynamicImage::ImageLuma8(img);
        let class = CLASSES[usize::from(set.label(i))];
        if i % 2 == 0 {
            img.save_with_format(dir.join(format!("{class}/{i:05}.png")), ImageFormat::Png)
                .unwrap();
        } else {
            let mut bytes = Vec::new();
            img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 95))
                .unwrap();
            fs::write(dir.join(format!("{class}/{i:05}.jpg")), bytes).unwrap();
        }
    }
}

fn eval(model: &Path, data: &Path) -> Value {
    let o = nf(&["eval", "--model", s(model), "--data", s(data), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn fashion_mnist_as_png_and_jpeg_files_trains_and_evaluates_like_its_idx_form() {
    let root = tmp("cli-images", "fashion");
    let data = root.join("data");
    let bundled = load_dir(&default_dir(), u64::MAX).unwrap();
    write_folder(&bundled.train, 1500, &data.join("train"));
    write_folder(&bundled.test, bundled.test.len(), &data.join("test"));
    let mut files = 0;
    for sp in ["train", "test"] {
        for c in CLASSES {
            files += fs::read_dir(data.join(sp).join(c)).unwrap().count();
        }
    }
    assert!(files >= 2000, "{files} files");

    let out = root.join("run");
    let o = nf(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--epochs",
        "1",
        "--budget",
        "32MiB",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let (planned, rss) = (
        r["planned_total_bytes"].as_u64().unwrap(),
        r["peak_rss_bytes"].as_u64().unwrap(),
    );
    assert!(
        rss <= planned + (16 << 20),
        "peak RSS {rss} over the planned total {planned} + 16 MiB"
    );

    // The class names (the folder names) travel: report.json, both model files, the ONNX
    // file's metadata, nf eval --predictions and nf report.
    let names: Vec<Value> = CLASSES.iter().map(|c| Value::from(*c)).collect();
    assert_eq!(r["class_names"], Value::Array(names.clone()));
    for f in ["model.safetensors", "exit.safetensors"] {
        let st = nf_host::store::TensorStore::load(&out.join(f)).unwrap();
        let md: Value = serde_json::from_str(&st.metadata["class_names"]).unwrap();
        assert_eq!(md, Value::Array(names.clone()), "{f}");
    }
    let onnx = root.join("exit.onnx");
    let o = nf(&["export", s(&out), "--onnx", s(&onnx)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = fs::read(&onnx).unwrap();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"nf.class_names") && has(b"9-boot"), "ONNX metadata");
    let csv = root.join("pred.csv");
    let o = nf(&[
        "eval",
        "--model",
        s(&out),
        "--data",
        s(&data),
        "--limit",
        "20",
        "--predictions",
        s(&csv),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("model,image,label,predicted,label_name,predicted_name,logit_0"));
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (label, pred): (usize, usize) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert_eq!((f[4], f[5]), (CLASSES[label], CLASSES[pred]), "{line}");
    }
    let html = root.join("report.html");
    let o = nf(&["report", s(&out), "--out", s(&html)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fs::read_to_string(&html)
        .unwrap()
        .contains("10 classes: 0-tshirt, 1-trouser"));

    let folder = eval(&out, &data);
    let idx = eval(&out, &default_dir());
    assert_eq!(folder["test_samples"], idx["test_samples"]);
    for m in 0..2 {
        let a = folder["models"][m]["test_acc"].as_f64().unwrap();
        let b = idx["models"][m]["test_acc"].as_f64().unwrap();
        eprintln!("model {m}: image folder {a:.4}, IDX {b:.4}");
        assert!(b > 0.6, "the model learned: {b}");
        assert!((a - b).abs() <= 0.01, "image folder {a} vs IDX {b}");
    }
    let _ = fs::remove_dir_all(root);
}

/// A grey image of `w`x`h` (HxW order in names) whose pixels depend on its class.
fn class_image(class: usize, k: usize, w: u32, h: u32) -> DynamicImage {
    let img = GrayImage::from_fn(w, h, |x, y| {
        let stripe = if class == 0 { x } else { y };
        image::Luma([((stripe * 40 + k as u32) % 256) as u8])
    });
    DynamicImage::ImageLuma8(img)
}

#[test]
fn a_folder_of_two_sizes_needs_size_then_trains_and_evaluates_resized() {
    let root = tmp("cli-images", "sizes");
    let data = root.join("data");
    for (class, name) in ["across", "down"].iter().enumerate() {
        fs::create_dir_all(data.join(name)).unwrap();
        for k in 0..30 {
            let (w, h) = if k % 2 == 0 { (16, 16) } else { (20, 12) };
            class_image(class, k, w, h)
                .save_with_format(data.join(format!("{name}/{k}.png")), ImageFormat::Png)
                .unwrap();
        }
    }
    let out = root.join("run");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("model.safetensors"), b"precious").unwrap();
    let quick = [
        "--epochs",
        "1",
        "--budget",
        "32MiB",
        "--min-steps",
        "1",
        "--threads",
        "2",
    ];
    let train = |extra: &[&str]| {
        let mut a = vec!["train", "--data", s(&data), "--out", s(&out)];
        a.extend_from_slice(&quick);
        a.extend_from_slice(extra);
        nf(&a)
    };
    cli_common::assert_one_line_error(&train(&[]), "--size");
    // nf plan reads the same headers and takes the same flags.
    cli_common::assert_one_line_error(&nf(&["plan", "--data", s(&data)]), "--size");
    let o = nf(&[
        "plan",
        "--data",
        s(&data),
        "--size",
        "14x14",
        "--channels",
        "3",
        "--min-steps",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("on 3x14x14, 2 classes"), "{text}");
    cli_common::assert_one_line_error(&train(&["--test-split", "1.5"]), "--test-split");
    cli_common::assert_one_line_error(&train(&["--channels", "2"]), "--channels");
    assert_eq!(
        fs::read(out.join("model.safetensors")).unwrap(),
        b"precious"
    );
    // --size on data that is not an image folder.
    let o = nf(&[
        "eval",
        "--model",
        s(&out),
        "--size",
        "8x8",
        "--data",
        s(&default_dir()),
    ]);
    cli_common::assert_one_line_error(&o, "--size applies to image folders only");

    fs::remove_dir_all(&out).unwrap();
    let o = train(&["--size", "14x14", "--channels", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    assert_eq!(r["input"], serde_json::json!([3, 14, 14]));
    let o = nf(&[
        "eval",
        "--model",
        s(&out),
        "--data",
        s(&data),
        "--size",
        "14x14",
        "--channels",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // The held-out 20% of 60 images.
    assert_eq!(v["test_samples"], 12);
    let _ = fs::remove_dir_all(root);
}
