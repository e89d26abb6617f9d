//! `nf train --augment` and `--pad`: deterministic under `--seed` in every mode, with the
//! activation cache and with recomputation; augmentation changes what is trained; a run
//! killed and resumed ends as an uninterrupted one; `nf eval` pads as the model was trained;
//! bad combinations are one line.
mod cli_common;

use std::fs;
use std::path::{Path, PathBuf};

use cli_common::{assert_one_line_error, kill_at_checkpoint, nf, nf_ok, report, s, tmp};

fn dir(name: &str) -> PathBuf {
    tmp("augment", name)
}

/// `nf train` on 400 bundled images into `out`, one epoch per block, with `extra`.
fn train(out: &Path, extra: &[&str]) -> Vec<u8> {
    let mut a = vec![
        "train",
        "--limit",
        "400",
        "--epochs",
        "1",
        "--threads",
        "2",
        "--out",
        s(out),
    ];
    a.extend_from_slice(extra);
    nf_ok(&a);
    fs::read(out.join("model.safetensors")).unwrap()
}

#[test]
fn augmentation_is_deterministic_in_every_mode_and_changes_training() {
    for (name, extra) in [
        ("neuroflux-cache", &["--mode", "neuroflux"][..]),
        (
            "neuroflux-recompute",
            &["--mode", "neuroflux", "--cache-budget", "0"][..],
        ),
        ("ll", &["--mode", "ll"][..]),
        ("bp", &["--mode", "bp"][..]),
    ] {
        // `dir` empties the directory: one call per run.
        let [da, db, dplain, dnone] =
            ["a", "b", "plain", "none"].map(|d| dir(&format!("{name}-{d}")));
        let mut aug = extra.to_vec();
        aug.push("--augment");
        let a = train(&da, &aug);
        let b = train(&db, &aug);
        assert!(a == b, "{name}: two runs with the same seed differ");
        let plain = train(&dplain, extra);
        assert!(a != plain, "{name}: --augment changed nothing");
        let r = report(&da);
        assert_eq!(r["augment"]["crop_pad"], 3, "an eighth of 28 pixels");
        assert_eq!(r["augment"]["flip"], true);
        // No flip and no crop: the images as they are, so the plain run's model.
        let mut none = extra.to_vec();
        none.extend_from_slice(&["--augment", "--crop-pad", "0", "--no-flip"]);
        assert!(
            train(&dnone, &none) == plain,
            "{name}: an augmentation that does nothing changed the model"
        );
        for d in [da, db, dplain, dnone] {
            let _ = fs::remove_dir_all(d);
        }
    }
}

#[test]
fn an_augmented_run_killed_and_resumed_ends_as_an_uninterrupted_one() {
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--augment",
            "--epochs",
            "2",
            "--limit",
            "800",
            "--threads",
            "1",
            "--out",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([s(out).to_string()])
        .collect()
    };
    let whole = dir("whole");
    let whole_args = args(&whole);
    nf_ok(&whole_args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = dir("killed");
    assert!(
        kill_at_checkpoint(&args(&out), &out, 0, 1),
        "no checkpoint after block 0's first epoch"
    );
    nf_ok(&["train", "--resume", s(&out)]);
    let (a, b) = (report(&whole), report(&out));
    assert_eq!(
        a["heads"], b["heads"],
        "the resumed run ends as the whole one"
    );
    assert_eq!(
        fs::read(whole.join("model.safetensors")).unwrap(),
        fs::read(out.join("model.safetensors")).unwrap()
    );
    for d in [whole, out] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn padding_makes_the_input_larger_and_eval_pads_alike() {
    let out = dir("pad");
    train(
        &out,
        &["--pad", "2", "--model", "vgg11", "--budget", "256MiB"],
    );
    let r = report(&out);
    assert_eq!(r["input"], serde_json::json!([1, 32, 32]));
    assert_eq!(r["pad"], 2);
    // nf eval reads the padding from the model file: the test accuracy training reported on
    // the same test images (`train` uses the first 400).
    let e: serde_json::Value = serde_json::from_str(&nf_ok(&[
        "eval",
        "--model",
        s(&out),
        "--limit",
        "400",
        "--budget",
        "256MiB",
        "--threads",
        "2",
        "--json",
    ]))
    .unwrap();
    assert_eq!(e["models"][0]["test_acc"], r["test_acc"]);
    assert_eq!(e["models"][1]["test_acc"], r["exit"]["test_acc"]);
    let _ = fs::remove_dir_all(&out);
}

#[test]
fn bad_combinations_are_one_line() {
    let out = dir("bad");
    for (args, needle) in [
        (&["--crop-pad", "2"][..], "--crop-pad changes --augment"),
        (&["--no-flip"][..], "--no-flip changes --augment"),
        (&["--pad", "65"][..], "--pad"),
        (&["--augment", "--crop-pad", "99"][..], "--crop-pad"),
    ] {
        let mut a = vec!["train", "--limit", "100", "--out", s(&out)];
        a.extend_from_slice(args);
        assert_one_line_error(&nf(&a), needle);
        assert!(!out.exists());
    }
    // A model too deep for the unpadded image is refused by the planner in one line.
    let o = nf(&[
        "train",
        "--model",
        "vgg11",
        "--limit",
        "100",
        "--out",
        s(&out),
    ]);
    assert_one_line_error(&o, "too small");
}
