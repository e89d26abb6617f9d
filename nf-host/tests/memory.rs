//! The memory contract, measured on the process: the peak resident set of `nf train` and
//! `nf eval` (the kernel's `VmHWM`, which they report) stays within the planned total they
//! report plus 16 MiB (binary, runtime, thread stacks), with the activation cache and with
//! recomputation, on 1, 2 and 8 threads, for the small VGG on the bundled data, VGG-11 on
//! synthetic 32x32 colour images, VGG-11 on the bundled data padded to 32x32 and augmented, and
//! the small VGG augmented in the ll and bp modes.
//! These are real runs, not the planner's arithmetic.
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod cli_common;
use cli_common::{nf_ok as nf, report};

/// What the planned total may not cover: the binary, the runtime, thread stacks.
const OVERHEAD: u64 = 16 << 20;

fn tmp(name: &str) -> PathBuf {
    cli_common::tmp("memory", name)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Check `planned_total_bytes` against `peak_rss_bytes` of a report; returns both.
fn check(what: &str, v: &Value) -> (u64, u64) {
    let planned = v["planned_total_bytes"]
        .as_u64()
        .expect("planned_total_bytes");
    let rss = v["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    println!(
        "{what}: planned {:.1} MiB, peak RSS {:.1} MiB ({:+.1} MiB)",
        mib(planned),
        mib(rss),
        mib(rss) - mib(planned)
    );
    assert!(
        rss <= planned + OVERHEAD,
        "{what}: peak RSS {rss} exceeds the planned total {planned} + 16 MiB"
    );
    (planned, rss)
}

fn train(what: &str, out: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["train", "--out", out.to_str().unwrap(), "--epochs", "1"];
    a.extend_from_slice(extra);
    nf(&a);
    let r = report(out);
    check(what, &r);
    r
}

#[test]
fn small_vgg_on_the_bundled_data_stays_within_its_plan() {
    for threads in ["1", "2", "8"] {
        for (cache, extra) in [
            ("cache", &[][..]),
            ("recompute", &["--cache-budget", "0"][..]),
            // bf16 storage of the streamed tensors (and the bf16 cache).
            ("bf16", &["--precision", "bf16"][..]),
            (
                "bf16-recompute",
                &["--precision", "bf16", "--cache-budget", "0"][..],
            ),
        ] {
            let out = tmp(&format!("vgg-small-{threads}-{cache}"));
            let mut a = vec!["--budget", "32MiB", "--threads", threads];
            a.extend_from_slice(extra);
            let r = train(&format!("vgg-small, {threads} threads, {cache}"), &out, &a);
            let recompute = !r["memory"]["recompute"].is_null();
            assert_eq!(recompute, cache.ends_with("recompute"), "{}", r["memory"]);
            let storage = if cache.starts_with("bf16") {
                "bf16"
            } else {
                "f32"
            };
            assert_eq!(r["plan"]["options"]["storage"], storage);
            if threads == "2" {
                let e: Value = serde_json::from_str(&nf(&[
                    "eval",
                    "--model",
                    out.to_str().unwrap(),
                    "--threads",
                    threads,
                    "--json",
                ]))
                .unwrap();
                check(&format!("nf eval after {cache}"), &e);
            }
            let _ = fs::remove_dir_all(&out);
        }
    }
}

/// VGG-11 at 128 MiB on 2 threads (batches of at most 32) with `data_args`, with the cache
/// and with recomputation: each run within its plan; returns the two reports.
fn vgg11_within_its_plan(what: &str, data_args: &[&str]) -> Vec<Value> {
    let mut reports = Vec::new();
    for (cache, extra) in [
        ("cache", &[][..]),
        ("recompute", &["--cache-budget", "0"][..]),
    ] {
        let key = what.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
        let out = tmp(&format!("vgg11-{key}-{cache}"));
        let mut a = vec![
            "--model",
            "vgg11",
            "--budget",
            "128MiB",
            "--threads",
            "2",
            "--batch-max",
            "32",
        ];
        a.extend_from_slice(data_args);
        a.extend_from_slice(extra);
        reports.push(train(&format!("vgg11 {what}, {cache}"), &out, &a));
        let _ = fs::remove_dir_all(&out);
    }
    reports
}

#[test]
fn vgg11_on_synthetic_colour_images_stays_within_its_plan() {
    vgg11_within_its_plan("synthetic", &["--data", "synthetic:3x32x32:320"]);
}

#[test]
fn padded_and_augmented_runs_stay_within_their_plan() {
    // Padding and augmentation act as samples are written: no copy of the data set.
    let args = ["--pad", "2", "--augment", "--limit", "800"];
    for r in vgg11_within_its_plan("on 1x32x32 (--pad 2 --augment)", &args) {
        assert_eq!(r["input"], serde_json::json!([1, 32, 32]));
    }
}

#[test]
fn augmented_ll_and_bp_runs_stay_within_their_plan() {
    // NeuroFlux is covered above (VGG-11, cache and recomputation); the baselines read every
    // image in every step.
    for mode in ["ll", "bp"] {
        let out = tmp(&format!("augment-{mode}"));
        let args = [
            "--mode",
            mode,
            "--augment",
            "--limit",
            "1500",
            "--threads",
            "2",
        ];
        train(&format!("vgg-small {mode} --augment"), &out, &args);
        let _ = fs::remove_dir_all(&out);
    }
}
