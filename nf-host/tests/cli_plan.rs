//! `nf plan` end to end: runs the built `nf` binary and checks its help, its JSON and table
//! output, and its one-line errors.
use std::process::Output;

use serde_json::Value;

mod cli_common;
use cli_common::{nf, nf_ok};

const ZOO: [&str; 5] = ["vgg-small", "vgg11", "vgg16", "vgg19", "resnet18"];

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan", "--json"];
    all.extend_from_slice(args);
    let o = nf(&all);
    assert!(o.status.success(), "nf {all:?} failed: {}", stderr(&o));
    assert!(stderr(&o).is_empty(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.trim_end().lines().count(), 1, "one JSON object: {out}");
    serde_json::from_str(&out).expect("valid JSON")
}

#[test]
fn help_lists_the_zoo_with_descriptions() {
    let o = nf(&["plan", "--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for name in ZOO {
        let spec = nf_core::zoo::by_name(name).expect("zoo model");
        // `  NAME  NAME:DESCRIPTION`, then its one-line summary.
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{help}"));
        assert!(line.contains(&format!("{name}:")), "{line}");
        assert!(help.contains(spec.about), "{}: {help}", spec.about);
    }
    for flag in [
        "--model",
        "--budget",
        "--mode",
        "--input",
        "--classes",
        "--json",
        "--f-max",
        "--f-min",
        "--ll-filters",
        "--batch-min",
        "--batch-max",
        "KiB",
        "GiB",
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
    // The short help lists the names too.
    let short = stdout(&nf(&["plan", "-h"]));
    for name in ZOO {
        assert!(short.contains(name), "{name} missing from -h:\n{short}");
    }
}

#[test]
fn json_for_vgg11_in_every_mode() {
    let budget: u64 = 256 << 20;
    for mode in ["neuroflux", "ll", "bp"] {
        let v = plan_json(&[
            "--model", "vgg11", "--budget", "256MiB", "--mode", mode, "--input", "3x32x32",
        ]);
        assert_eq!(v["mode"], mode);
        assert_eq!(v["model"], "vgg11");
        assert_eq!(v["input"], serde_json::json!([3, 32, 32]));
        assert_eq!(v["classes"], 10);
        assert_eq!(v["budget_bytes"], budget);
        let peak = v["peak_bytes"].as_u64().expect("peak_bytes");
        assert!(peak > 0 && peak <= budget, "{mode}: peak {peak}");
        let blocks = v["blocks"].as_array().expect("blocks");
        assert!(!blocks.is_empty());
        if mode != "neuroflux" {
            assert_eq!(blocks.len(), 1, "{mode} trains all units as one block");
        }
        let mut next_unit = 0;
        let mut max_bytes = 0;
        for b in blocks {
            let units = b["units"].as_array().expect("units");
            let (first, last) = (units[0].as_u64().unwrap(), units[1].as_u64().unwrap());
            assert_eq!(first, next_unit, "blocks cover the units in order");
            assert!(last >= first);
            next_unit = last + 1;
            let heads = b["head_filters"].as_array().expect("head_filters");
            assert_eq!(heads.len() as u64, last - first + 1);
            let batch = b["batch_size"].as_u64().expect("batch_size");
            assert!((8..=512).contains(&batch), "{mode}: batch {batch}");
            assert!(batch < 16 || batch % 8 == 0, "{mode}: batch {batch}");
            let bytes = b["bytes"].as_u64().expect("bytes");
            assert!(
                bytes <= budget,
                "{mode}: block of {bytes} bytes over budget"
            );
            let parts: u64 = b["breakdown"]
                .as_object()
                .expect("breakdown")
                .values()
                .map(|x| x.as_u64().unwrap())
                .sum();
            assert_eq!(parts, bytes, "{mode}: the breakdown adds up");
            max_bytes = max_bytes.max(bytes);
        }
        assert_eq!(next_unit, 8, "vgg11 has 8 units");
        assert_eq!(peak, max_bytes);
        let bp = &v["bp_batch_size"];
        assert!(bp.is_null() || bp.as_u64().is_some(), "{bp}");
        if mode == "bp" {
            assert_eq!(bp, &blocks[0]["batch_size"]);
        }
    }
}

#[test]
fn bp_batch_is_null_when_bp_cannot_train() {
    // Find the smallest NeuroFlux budget from the error, then plan with it.
    let o = nf(&["plan", "--model", "vgg11", "--budget", "1KiB"]);
    let err = stderr(&o);
    let needed = err
        .split(" (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no byte count in {err}"));
    let v = plan_json(&["--model", "vgg11", "--budget", &needed.to_string()]);
    // The arena and what is kept beside it (the feed's staging buffer) fit the budget, and
    // one byte less does not plan.
    let reserve = v["options"]["reserve_bytes"].as_u64().unwrap();
    assert!(v["peak_bytes"].as_u64().unwrap() + reserve <= needed);
    let o = nf(&[
        "plan",
        "--model",
        "vgg11",
        "--budget",
        &(needed - 1).to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(v["bp_batch_size"].is_null(), "{v}");
    assert!(v["bp_min_bytes"].as_u64().unwrap() > needed);
    let o = nf(&["plan", "--model", "vgg11", "--budget", &needed.to_string()]);
    assert!(stdout(&o).contains("BP cannot train under this budget (needs "));
}

#[test]
fn table_shows_blocks_and_total() {
    for (mode, budget) in [("neuroflux", "64MiB"), ("ll", "256MiB"), ("bp", "256MiB")] {
        let args = ["--model", "vgg11", "--budget", budget, "--mode", mode];
        let v = plan_json(&args);
        let mut all = vec!["plan"];
        all.extend_from_slice(&args);
        let o = nf(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        let t = stdout(&o);
        let peak = v["peak_bytes"].as_u64().unwrap();
        let total = t
            .lines()
            .find(|l| l.starts_with("total:"))
            .unwrap_or_else(|| panic!("no total line:\n{t}"));
        assert!(total.contains(&format!("({peak} bytes)")), "{total}");
        let budget_bytes = v["budget_bytes"].as_u64().unwrap();
        assert!(
            t.contains(&format!(
                "budget: {} ({budget_bytes} bytes)",
                nf_host::size::format_size(budget_bytes)
            )),
            "{t}"
        );
        assert!(t.contains("BP "), "{t}");
        assert!(t.lines().any(|l| l.starts_with("block")), "{t}");
        let n_blocks = v["blocks"].as_array().unwrap().len();
        for i in 0..n_blocks {
            assert!(
                t.lines()
                    .any(|l| l.split_whitespace().next() == Some(i.to_string().as_str())),
                "no row for block {i}:\n{t}"
            );
        }
        assert!(t.contains("cls"), "the last unit uses the classifier:\n{t}");
    }
}

#[test]
fn defaults_plan_vgg_small_on_its_own_input() {
    let v = plan_json(&["--budget", "64MiB"]);
    assert_eq!(v["model"], "vgg-small");
    assert_eq!(v["mode"], "neuroflux");
    assert_eq!(v["input"], serde_json::json!([1, 28, 28]));
    assert_eq!(v["classes"], 10);
}

fn assert_one_line_error(args: &[&str], must_contain: &str) {
    let o = nf(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "nf {args:?}: {err}");
    assert!(stdout(&o).is_empty(), "nf {args:?} printed {}", stdout(&o));
    assert_eq!(err.lines().count(), 1, "nf {args:?}: not one line:\n{err}");
    assert!(err.starts_with("error:"), "nf {args:?}: {err}");
    assert!(!err.contains("panicked"), "nf {args:?}: {err}");
    assert!(err.contains(must_contain), "nf {args:?}: {err}");
}

/// `nf plan --threads N` plans what `nf train --threads N` trains: each worker has its own
/// im2col workspace, so more workers mean more workspace bytes and never a larger batch.
#[test]
fn threads_size_the_workspace_as_in_training() {
    let one = plan_json(&["--budget", "32MiB", "--threads", "1"]);
    let two = plan_json(&["--budget", "32MiB", "--threads", "2"]);
    assert_eq!(one["options"]["workers"], 1);
    assert_eq!(two["options"]["workers"], 2);
    let blocks = |v: &Value| v["blocks"].as_array().expect("blocks").clone();
    let (b1, b2) = (blocks(&one), blocks(&two));
    assert_eq!(b1.len(), b2.len());
    let mut smaller = false;
    for (x, y) in b1.iter().zip(&b2) {
        let (bx, by) = (x["batch_size"].as_u64(), y["batch_size"].as_u64());
        assert!(by <= bx, "2 workers: batch {by:?} > 1 worker's {bx:?}");
        smaller |= by < bx;
    }
    assert!(
        smaller,
        "a second worker's workspace changes no batch: {one} {two}"
    );
}

#[test]
fn errors_are_one_line_with_exit_code_2() {
    assert_one_line_error(
        &["plan", "--model", "vgg12", "--budget", "64MiB"],
        "--model",
    );
    assert_one_line_error(&["plan", "--threads", "0"], "--threads");
    assert_one_line_error(&["plan", "--model", "vgg11", "--budget", "abc"], "--budget");
    assert_one_line_error(
        &["plan", "--model", "vgg11", "--budget", "1KiB"],
        "--budget 1.0 KiB is too small for vgg11 in neuroflux mode: at least ",
    );
    assert_one_line_error(
        &[
            "plan", "--model", "vgg11", "--budget", "64MiB", "--input", "3x32",
        ],
        "--input",
    );
    for (args, flag) in [
        (&["--budget", "0"][..], "--budget"),
        (&["--budget", "-5MiB"], "negative"),
        (&["--budget=-5MiB"], "negative"),
        (&["--budget", "99999999999GiB"], "--budget"),
        (&["--budget", "1KiB", "--mode", "bp"], "in bp mode"),
        (&["--budget", "1KiB", "--mode", "ll"], "in ll mode"),
        (&["--budget", "64MiB", "--mode", "sgd"], "--mode"),
        (
            &["--budget", "64MiB", "--input", "3x2x2"],
            "--input 3x2x2 is too small",
        ),
        (&["--budget", "64MiB", "--input", "3x32x32x3"], "--input"),
        (&["--budget", "64MiB", "--classes", "1"], "--classes"),
        (&["--budget", "64MiB", "--f-min", "80"], "--f-min"),
        (&["--budget", "64MiB", "--batch-min", "0"], "--batch-min"),
        (
            &[
                "--budget",
                "64MiB",
                "--batch-min",
                "17",
                "--batch-max",
                "23",
            ],
            "--batch-max",
        ),
    ] {
        let mut all = vec!["plan", "--model", "vgg11"];
        all.extend_from_slice(args);
        assert_one_line_error(&all, flag);
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = nf(&["plan", "--budget"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--budget"));
    let o = nf(&["plan", "--budget", "64MiB", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("panicked"));
}

/// The step cap (`--min-steps`, issue 24): with `--data`, no block trains at a batch above the
/// training split divided by the steps, rounded down to an allowed size; `--limit` and `--val`
/// size that split as in `nf train`; an explicit `--batch-max` replaces the cap, `--min-steps 0`
/// turns it off, and without `--data` the planner has no split to cap.
#[test]
fn the_step_cap_follows_the_training_split() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/fashion-mnist");
    let blocks = |v: &Value| v["blocks"].as_array().expect("blocks").clone();
    let batches = |v: &Value| {
        blocks(v)
            .iter()
            .map(|b| b["batch_size"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let free = plan_json(&["--budget", "32MiB", "--threads", "2"]);
    assert!(free["options"]["step_cap"].is_null(), "{free}");
    assert!(blocks(&free).iter().all(|b| b["batch_limit"] == "budget"));
    let largest = *batches(&free).iter().max().unwrap();
    // 2,000 images, 10% held out: 1,800 / 200 steps = 9 (allowed: every size below 16).
    let small = [
        "--budget",
        "32MiB",
        "--threads",
        "2",
        "--data",
        data,
        "--limit",
        "2000",
    ];
    let v = plan_json(&small);
    assert_eq!(v["options"]["train_samples"], 1800, "{v}");
    assert_eq!(v["options"]["step_cap"], 9, "{v}");
    assert!(batches(&v).iter().all(|&b| b <= 9), "{v}");
    assert!(
        blocks(&v).iter().all(|b| b["batch_limit"] == "steps"),
        "{v}"
    );
    // --val 0.3: 1,400 / 200 = 7, below the smallest allowed batch (--batch-min, 8): 8.
    let mut held = small.to_vec();
    held.extend(["--val", "0.3"]);
    let v = plan_json(&held);
    assert_eq!(v["options"]["train_samples"], 1400, "{v}");
    assert_eq!(v["options"]["step_cap"], 8, "{v}");
    // 100 steps: 1,800 / 100 = 18, rounded down to 16 (multiples of 8 from 16 up).
    let mut hundred = small.to_vec();
    hundred.extend(["--min-steps", "100"]);
    assert_eq!(plan_json(&hundred)["options"]["step_cap"], 16);
    // The user's --batch-max wins; --min-steps 0 gives the budget's plan.
    let mut user = small.to_vec();
    user.extend(["--batch-max", "64"]);
    let v = plan_json(&user);
    assert!(v["options"]["step_cap"].is_null(), "{v}");
    assert!(
        batches(&v).iter().all(|&b| b <= 64) && batches(&v).contains(&64),
        "{v}"
    );
    let mut off = small.to_vec();
    off.extend(["--min-steps", "0"]);
    let v = plan_json(&off);
    assert_eq!(batches(&v), batches(&free), "{v}");
    assert!(largest > 9);
    // The table says so too.
    let o = nf(&[
        "plan", "--budget", "32MiB", "--data", data, "--limit", "2000",
    ]);
    assert!(stdout(&o).contains("step cap"), "{}", stdout(&o));
    // --limit and --val size the split of --data: alone they are a usage error.
    assert_one_line_error(&["plan", "--limit", "2000"], "--data");
    assert_one_line_error(&["plan", "--val", "0.2"], "--val");
    assert_one_line_error(&["plan", "--data", data, "--val", "0.95"], "--val 0.95");
}

/// Issue 27 item 6: when BP cannot train under the budget, the BP line of a plan in another
/// mode says the budget `--mode bp` says it needs, on the same kernels (the CPU workspace
/// included), at every thread count.
#[test]
fn the_bp_line_agrees_with_mode_bp() {
    let bytes_in = |text: &str, after: &str| -> u64 {
        let rest = &text[text
            .find(after)
            .unwrap_or_else(|| panic!("{after}: {text}"))
            + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    for threads in ["1", "4"] {
        let table = nf_ok(&[
            "plan",
            "--model",
            "vgg11",
            "--budget",
            "100MiB",
            "--threads",
            threads,
            "--mode",
            "neuroflux",
        ]);
        let line = table.lines().find(|l| l.starts_with("BP ")).unwrap();
        let needs = bytes_in(line, " = ");
        let o = nf(&[
            "plan",
            "--model",
            "vgg11",
            "--budget",
            "100MiB",
            "--threads",
            threads,
            "--mode",
            "bp",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(needs, bytes_in(&err, " ("), "{line} / {err}");
    }
}
