//! `nf train` and `nf eval` end to end on the bundled Fashion-MNIST subset: the report's
//! fields, the model files, resuming a killed run, and every bad-input case (one line, exit 2,
//! no panic, nothing in --out damaged).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod cli_common;
use cli_common::{assert_one_line_error, nf, report, s};

fn tmp(name: &str) -> PathBuf {
    cli_common::tmp("cli-train", name)
}

/// The quick run every test uses: 1 epoch per block (on 600 images unless a test says).
const QUICK: [&str; 4] = ["--epochs", "1", "--budget", "32MiB"];

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["train", "--out", s(out)];
    a.extend_from_slice(&QUICK);
    if !extra.contains(&"--limit") {
        a.extend_from_slice(&["--limit", "600"]);
    }
    a.extend_from_slice(extra);
    nf(&a)
}

#[test]
fn neuroflux_run_writes_report_and_models_that_evaluate_to_the_reported_accuracy() {
    let out = tmp("nf");
    let o = train(&out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    for k in [
        "mode",
        "model",
        "budget_bytes",
        "plan",
        "blocks",
        "heads",
        "exit",
        "full_params",
        "test_acc",
        "seconds_total",
        "peak_arena_bytes",
    ] {
        assert!(!r[k].is_null(), "report lacks {k}");
    }
    assert_eq!(r["mode"], "neuroflux");
    assert_eq!(r["model"], "vgg-small");
    assert!(r["peak_arena_bytes"].as_u64().unwrap() <= r["budget_bytes"].as_u64().unwrap());
    for b in r["blocks"].as_array().unwrap() {
        assert!(b["batch_size"].as_u64().unwrap() >= 8);
        assert!(
            b["seconds"].as_f64().unwrap() > 0.0 && b["images_per_sec"].as_f64().unwrap() > 0.0
        );
    }
    let heads = r["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 4, "one result per unit");
    for (u, h) in heads.iter().enumerate() {
        assert_eq!(h["unit"], u);
        let (v, t) = (
            h["val_acc"].as_f64().unwrap(),
            h["test_acc"].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&v) && (0.0..=1.0).contains(&t));
    }
    assert!(heads[0]["filters"].as_u64().unwrap() >= 4 && heads[3]["filters"].is_null());
    let exit = &r["exit"];
    assert!(exit["params"].as_u64().unwrap() <= r["full_params"].as_u64().unwrap());
    // The exit model file evaluates to the reported accuracy (same test images).
    let o = nf(&[
        "eval",
        "--model",
        s(&out.join("exit.safetensors")),
        "--limit-check-unused",
    ]);
    assert_eq!(o.status.code(), Some(2), "unknown flags are usage errors");
    let o = nf(&["eval", "--model", s(&out), "--json", "--limit", "600"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    let models = e["models"].as_array().unwrap();
    let (full, ex) = (&models[0], &models[1]);
    assert_eq!(ex["exit_unit"], exit["unit"]);
    assert_eq!(ex["params"], exit["params"]);
    assert_eq!(full["params"], r["full_params"]);
    let close = |a: &Value, b: &Value| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-6;
    assert!(close(&ex["test_acc"], &exit["test_acc"]), "{ex} vs {exit}");
    assert!(
        close(&full["test_acc"], &r["test_acc"]),
        "{full} vs {}",
        r["test_acc"]
    );
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn baselines_run_on_the_same_engine() {
    for mode in ["bp", "ll"] {
        let out = tmp(mode);
        let o = train(&out, &["--mode", mode]);
        assert!(
            o.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r = report(&out);
        assert_eq!(r["mode"], mode);
        assert_eq!(
            r["blocks"].as_array().unwrap().len(),
            1,
            "{mode} trains one block"
        );
        let n_heads = r["heads"].as_array().unwrap().len();
        assert_eq!(n_heads, if mode == "bp" { 1 } else { 4 });
        let _ = fs::remove_dir_all(&out);
    }
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint() {
    let out = tmp("resume");
    let mut a = vec![
        "train",
        "--out",
        s(&out),
        "--limit",
        "1200",
        "--epochs",
        "3",
    ];
    a.extend_from_slice(&["--budget", "32MiB"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nf"))
        .args(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let t0 = Instant::now();
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ckpt.exists(), "no checkpoint within 2 minutes");
    assert!(
        !out.join("report.json").exists(),
        "the run finished before it was killed"
    );
    // Starting over in the same --out is refused; --resume continues.
    assert_one_line_error(&nf(&["train", "--out", s(&out)]), "--resume");
    let o = nf(&["train", "--resume", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    assert_eq!(r["heads"].as_array().unwrap().len(), 4);
    for b in r["blocks"].as_array().unwrap() {
        assert_eq!(
            b["epochs"].as_array().unwrap().len(),
            3,
            "every block has its 3 epochs"
        );
    }
    let o = nf(&[
        "eval",
        "--model",
        s(&out.join("exit.safetensors")),
        "--limit",
        "1200",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = fs::remove_dir_all(&out);
}

/// Copy the bundled fixture into a temp dir so a test can damage one file.
fn fixture_copy(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fashion-mnist");
    let dst = tmp(name);
    fs::create_dir_all(&dst).unwrap();
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

fn gunzip(p: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(p).unwrap())
        .read_to_end(&mut v)
        .unwrap();
    v
}

#[test]
fn bad_input_is_one_line_exit_2_and_leaves_out_intact() {
    // A previous run's files in --out must survive every failed attempt untouched.
    let out = tmp("guard");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("model.safetensors"), b"precious").unwrap();
    let check_out = || {
        assert_eq!(
            fs::read(out.join("model.safetensors")).unwrap(),
            b"precious"
        )
    };

    let missing = tmp("missing");
    assert_one_line_error(&train(&out, &["--data", s(&missing)]), "--data");
    check_out();

    // Truncated image file.
    let d = fixture_copy("trunc");
    let mut raw = gunzip(&d.join("train-images-idx3-ubyte.gz"));
    raw.truncate(raw.len() - 100);
    fs::remove_file(d.join("train-images-idx3-ubyte.gz")).unwrap();
    fs::write(d.join("train-images-idx3-ubyte"), &raw).unwrap();
    assert_one_line_error(&train(&out, &["--data", s(&d)]), "train-images-idx3-ubyte");
    check_out();

    // Wrong magic.
    let d2 = fixture_copy("magic");
    let mut raw = gunzip(&d2.join("t10k-images-idx3-ubyte.gz"));
    raw[3] = 0x01;
    fs::remove_file(d2.join("t10k-images-idx3-ubyte.gz")).unwrap();
    fs::write(d2.join("t10k-images-idx3-ubyte"), &raw).unwrap();
    assert_one_line_error(&train(&out, &["--data", s(&d2)]), "magic");
    check_out();

    // Label outside the class range.
    let d3 = fixture_copy("label");
    let mut lab = gunzip(&d3.join("train-labels-idx1-ubyte.gz"));
    lab[8 + 5] = 12;
    fs::remove_file(d3.join("train-labels-idx1-ubyte.gz")).unwrap();
    fs::write(d3.join("train-labels-idx1-ubyte"), &lab).unwrap();
    assert_one_line_error(&train(&out, &["--data", s(&d3)]), "train-labels-idx1-ubyte");
    check_out();

    // Budget too small, unknown model.
    assert_one_line_error(
        &nf(&["train", "--out", s(&out), "--budget", "100KiB"]),
        "--budget",
    );
    assert_one_line_error(
        &nf(&["train", "--out", s(&out), "--model", "vgg12"]),
        "--model",
    );
    check_out();

    // Corrupt checkpoint.
    let bad = tmp("badckpt");
    fs::create_dir_all(&bad).unwrap();
    fs::write(
        bad.join("checkpoint.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
    )
    .unwrap();
    assert_one_line_error(
        &nf(&["train", "--resume", s(&bad)]),
        "checkpoint.safetensors",
    );
    assert_eq!(
        fs::read(bad.join("checkpoint.safetensors")).unwrap().len(),
        18,
        "the checkpoint was not touched"
    );
    for p in [out, missing, d, d2, d3, bad] {
        let _ = fs::remove_dir_all(p);
    }
}

/// The activation cache (f32), recomputation from the frozen blocks (cache budget too small)
/// and an f16 or bf16 cache feed the later blocks the same inputs: the first two bit for bit,
/// the 16-bit caches to within rounding.
#[test]
fn cache_recompute_and_f16_cache_agree() {
    let accs = |extra: &[&str]| -> Vec<f64> {
        let out = tmp(&format!("cache{}", extra.len()));
        let mut a = vec!["--limit", "300", "--seed", "3"];
        a.extend_from_slice(extra);
        let o = train(&out, &a);
        assert!(
            o.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r = report(&out);
        let _ = fs::remove_dir_all(&out);
        r["heads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["val_acc"].as_f64().unwrap())
            .collect()
    };
    let cached = accs(&[]);
    let recomputed = accs(&["--cache-budget", "1KiB"]);
    assert_eq!(
        cached, recomputed,
        "recomputation must reproduce the cached inputs exactly"
    );
    let half = accs(&["--cache-dtype", "f16", "--cache-budget", "1GiB"]);
    let brain = accs(&["--cache-dtype", "bf16"]);
    for (dtype, accs) in [("f16", &half), ("bf16", &brain)] {
        for (a, b) in cached.iter().zip(accs) {
            assert!(
                (a - b).abs() <= 0.05,
                "{dtype} cache changed accuracy too much: {cached:?} vs {accs:?}"
            );
        }
    }
}

/// The CUDA backend's logic (kernels compiled for the CPU through the host shim) trains
/// through the same CLI path as a GPU would, and its exit model evaluates on the CPU to the
/// accuracy it reported.
#[test]
fn cuda_backend_logic_trains_end_to_end_on_the_emulated_device() {
    let out = tmp("cuda-emu");
    let o = train(&out, &["--device", "cuda-emu", "--limit", "200"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    assert_eq!(r["device"], "cuda-emu");
    // Planned for the CUDA backend's chunked convolutions: one workspace per block, sized by
    // what its calls need (nf_host::run_plan::cuda_plan).
    assert_eq!(r["workers"], 1);
    assert_eq!(
        r["plan"]["options"]["workspace"],
        "sized by the kernels for each block"
    );
    // Regions aligned for cuBLAS (issue 31): the padding is part of every block's bytes.
    assert_eq!(r["plan"]["options"]["region_align_bytes"], 128);
    for b in r["plan"]["blocks"].as_array().unwrap() {
        let parts = b["breakdown"].as_object().unwrap();
        assert!(parts["padding"].as_u64().unwrap() > 0, "{b}");
        let sum: u64 = parts.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(sum, b["bytes"].as_u64().unwrap(), "{b}");
    }
    let exit = &r["exit"];
    let o = nf(&[
        "eval",
        "--model",
        s(&out.join("exit.safetensors")),
        "--limit",
        "200",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    let got = e["models"][0]["test_acc"].as_f64().unwrap();
    let want = exit["test_acc"].as_f64().unwrap();
    // Different summation orders may flip a borderline sample: allow one of 200.
    assert!(
        (got - want).abs() <= 0.0051,
        "CPU eval {got} vs device {want}"
    );
    let _ = fs::remove_dir_all(&out);
}
