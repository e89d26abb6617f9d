//! Models described on the command line, end to end through `nf`: a description equal to a
//! zoo entry trains bit for bit like it; three architectures not in the zoo (residual blocks,
//! a non-square input, 3-channel 64x64 images) train within their planned memory (peak RSS)
//! and `nf eval` rebuilds them from the model file alone; a JSON description with layers the
//! compact form cannot say; malformed descriptions are one line, exit 2.
use std::fs;
use std::path::Path;

use serde_json::Value;

mod cli_common;
use cli_common::{assert_one_line_error, nf, nf_ok, report, s};

/// What the planned total may not cover: the binary, the runtime, thread stacks.
const OVERHEAD: u64 = 16 << 20;

fn tmp(name: &str) -> std::path::PathBuf {
    cli_common::tmp("architectures", name)
}

fn train(out: &Path, model: &str, extra: &[&str]) -> Value {
    let mut a = vec!["train", "--model", model, "--out", s(out), "--epochs", "1"];
    a.extend_from_slice(extra);
    nf_ok(&a);
    report(out)
}

/// `nf eval --json` of a run directory's full and exit models (with `data`, the run's data
/// arguments): the test accuracies.
fn eval_accuracies(out: &Path, data: &[&str]) -> Vec<f64> {
    let mut a = vec!["eval", "--model", s(out), "--json", "--threads", "2"];
    a.extend_from_slice(data);
    let v: Value = serde_json::from_str(&nf_ok(&a)).unwrap();
    let models = v["models"].as_array().expect("models");
    models
        .iter()
        .map(|m| m["test_acc"].as_f64().expect("test_acc"))
        .collect()
}

#[test]
fn a_description_equal_to_a_zoo_entry_trains_bit_identically() {
    let args = ["--limit", "1200", "--threads", "2", "--seed", "5"];
    let zoo = tmp("zoo");
    let described = tmp("described");
    let a = train(&zoo, "vgg-small", &args);
    let b = train(&described, "vgg-small:32,M,64,M,128,128,M", &args);
    for file in ["model.safetensors", "exit.safetensors"] {
        assert!(
            fs::read(zoo.join(file)).unwrap() == fs::read(described.join(file)).unwrap(),
            "{file} differs"
        );
    }
    for key in ["test_acc", "heads", "exit", "architecture", "memory"] {
        if key == "memory" {
            assert_eq!(
                a[key]["planned_total_bytes"], b[key]["planned_total_bytes"],
                "{key}"
            );
        } else {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
    let plan = |m: &str| {
        nf_ok(&[
            "plan",
            "--model",
            m,
            "--input",
            "1x28x28",
            "--json",
            "--threads",
            "2",
        ])
    };
    assert_eq!(plan("vgg-small"), plan("vgg-small:32,M,64,M,128,128,M"));
    let _ = (fs::remove_dir_all(zoo), fs::remove_dir_all(described));
}

#[test]
fn architectures_not_in_the_zoo_train_within_their_plan() {
    let cases = [
        // Residual blocks (with a projection) on the bundled Fashion-MNIST.
        (
            "res:16,R16,R32s2,R32",
            &["--limit", "1500"][..],
            [1, 28, 28],
        ),
        // A non-square input: 20x36, a 5x5 stem with a bias-free strided conv after it.
        (
            "wide:8k5,M,16k3s2,32,A2",
            &["--data", "synthetic:1x20x36:600"][..],
            [1, 20, 36],
        ),
        // 3-channel 64x64 images.
        (
            "c64:16k5s2,M,32,M,R64s2",
            &["--data", "synthetic:3x64x64:600"][..],
            [3, 64, 64],
        ),
    ];
    for (i, (model, data, input)) in cases.into_iter().enumerate() {
        let out = tmp(&format!("case{i}"));
        let mut args = vec!["--threads", "2", "--budget", "24MiB"];
        args.extend_from_slice(data);
        let r = train(&out, model, &args);
        assert_eq!(r["input"], serde_json::json!(input), "{model}");
        let planned = r["memory"]["planned_total_bytes"].as_u64().unwrap();
        let rss = r["memory"]["peak_rss_bytes"].as_u64().unwrap();
        println!(
            "{model}: {} units, planned {:.1} MiB, peak RSS {:.1} MiB, test {:.2}%",
            r["heads"].as_array().unwrap().len(),
            planned as f64 / 1048576.0,
            rss as f64 / 1048576.0,
            100.0 * r["test_acc"].as_f64().unwrap()
        );
        assert!(rss <= planned + OVERHEAD, "{model}: RSS {rss} > {planned}");
        // nf eval rebuilds both models from their files alone and scores what the run did.
        let accs = eval_accuracies(&out, data);
        let exit_acc = r["exit"]["test_acc"].as_f64().unwrap();
        assert!(
            (accs[0] - r["test_acc"].as_f64().unwrap()).abs() < 1e-6,
            "{model}"
        );
        assert!((accs[1] - exit_acc).abs() < 1e-6, "{model}");
        let _ = fs::remove_dir_all(&out);
    }
}

#[test]
fn a_json_description_says_what_the_compact_form_cannot() {
    let dir = tmp("json");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("net.json");
    fs::write(
        &file,
        r#"{"name": "plain-bias",
            "units": [
              [{"op": "conv", "out": 8, "k": 3, "bias": true}, {"op": "relu"}, {"op": "maxpool2"}],
              "16,M",
              [{"op": "conv", "out": 16, "k": 1, "pad": 0}, {"op": "batchnorm"}, {"op": "relu"},
               {"op": "avgpool", "size": 3}]
            ]}"#,
    )
    .unwrap();
    let out = dir.join("run");
    let r = train(&out, s(&file), &["--limit", "1200", "--threads", "2"]);
    assert_eq!(r["model"], "plain-bias");
    let units = r["architecture"]["units"].as_array().unwrap();
    assert_eq!(units.len(), 3);
    assert_eq!(units[0][0]["bias"], true);
    assert_eq!(units[2][3], serde_json::json!({"op": "avgpool", "size": 3}));
    // The model file carries the architecture: evaluating it needs nothing else.
    fs::remove_file(&file).unwrap();
    let accs = eval_accuracies(&out, &[]);
    assert!((accs[0] - r["test_acc"].as_f64().unwrap()).abs() < 1e-6);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn malformed_descriptions_are_one_line_errors() {
    let dir = tmp("bad");
    fs::create_dir_all(&dir).unwrap();
    let json = |name: &str, text: &str| {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let typo = json(
        "typo.json",
        r#"{"units": [[{"op": "conv", "out": 8, "strid": 2}]]}"#,
    );
    let not_json = json("broken.json", "{\"units\": [");
    let missing = dir.join("absent.json").to_str().unwrap().to_string();
    let flat = json(
        "flat.json",
        r#"{"units": [[{"op": "conv", "out": 8}, {"op": "flatten"}, {"op": "linear", "out": 10}], "16"]}"#,
    );
    let many = vec!["8"; 25].join(",");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["plan", "--model", "32,X,64"],
            "layer 2 'X': unknown layer",
        ),
        (vec!["plan", "--model", "0,M"], "channels 0"),
        (
            vec!["plan", "--model", &many],
            "25 units is more than the 24",
        ),
        (vec!["plan", "--model", "32k3k5"], "kernel given twice"),
        (vec!["plan", "--model", "vgg-tiny"], "neither a zoo model"),
        (
            vec!["plan", "--model", "8,M,M,M,M,M", "--input", "1x28x28"],
            "unit 0 layer 7 (2x2 max-pool) cannot run on its 8x1x1 input",
        ),
        (
            vec!["plan", "--model", "8,16"],
            "takes its input shape from the data",
        ),
        (
            vec!["plan", "--model", &typo],
            "unknown field \"strid\" in a conv op",
        ),
        (vec!["plan", "--model", &not_json], "not JSON"),
        (
            vec!["plan", "--model", &flat, "--input", "1x28x28"],
            "unit 0 flattens its output",
        ),
        (vec!["plan", "--model", &missing], "absent.json"),
        (
            vec![
                "train",
                "--model",
                "8,M,M,M,M,M",
                "--epochs",
                "1",
                "--out",
                s(&dir),
            ],
            "cannot run on",
        ),
    ];
    for (args, needle) in cases {
        assert_one_line_error(&nf(&args), needle);
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_diverging_unit_is_named_on_the_console() {
    let out = tmp("diverge");
    // The largest batch the budget allows (--min-steps 0) makes --lr 100 diverge in one epoch.
    let args = [
        "train",
        "--model",
        "8|R8",
        "--lr",
        "100",
        "--min-steps",
        "0",
        "--epochs",
        "1",
        "--limit",
        "600",
        "--out",
    ];
    let mut a = args.to_vec();
    a.push(s(&out));
    let log = nf_ok(&a);
    assert!(
        log.contains("warning: unit 1 diverged in epoch 1") && log.contains("--lr (now 100)"),
        "{log}"
    );
    // A healthy run prints no such line.
    let _ = fs::remove_dir_all(&out);
    let log = nf_ok(&["train", "--epochs", "1", "--limit", "600", "--out", s(&out)]);
    assert!(!log.contains("diverged"), "{log}");
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn resuming_after_the_json_description_moved_names_it() {
    let dir = tmp("moved");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("net.json");
    fs::write(&file, r#"{"units": ["8,M", "16"]}"#).unwrap();
    let out = dir.join("run");
    let args: Vec<String> = [
        "train",
        "--model",
        s(&file),
        "--epochs",
        "40",
        "--limit",
        "2000",
        "--threads",
        "1",
        "--out",
        s(&out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    assert!(cli_common::kill_at_checkpoint(&args, &out, 0, 1));
    fs::remove_file(&file).unwrap();
    assert_one_line_error(
        &nf(&["train", "--resume", s(&out)]),
        "the saved command line no longer parses: invalid value",
    );
    let _ = fs::remove_dir_all(&dir);
}
