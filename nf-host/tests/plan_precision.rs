//! `nf plan --precision` (memory model): the element size per kind of region, the smallest budget in f32 and
//! bf16, a bf16 plan that is never larger than the f32 one, and the default plan unchanged.
use serde_json::Value;

mod cli_common;
use cli_common::{nf, nf_ok};

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan", "--json", "--threads", "1"];
    all.extend_from_slice(args);
    serde_json::from_str(&nf_ok(&all)).expect("valid JSON")
}

#[test]
fn bf16_lists_element_sizes_and_needs_a_smaller_budget() {
    for mode in ["neuroflux", "bp"] {
        let v = plan_json(&["--mode", mode, "--budget", "16MiB", "--precision", "bf16"]);
        let p = &v["precision"];
        assert_eq!(p["precision"], "bf16");
        for (kind, bytes) in [
            ("activations", 2),
            ("carry", 2),
            ("input", 2),
            ("act_grads", 2),
            ("im2col", 2),
            ("params", 4),
            ("momentum", 4),
            ("grads", 4),
            ("bn_state", 4),
            ("logits", 4),
        ] {
            assert_eq!(p["elem_bytes"][kind], bytes, "{kind}: {p}");
        }
        let small = |k: &str| p["smallest_budget"][k].as_u64().expect("a budget");
        let (f, b) = (small("f32"), small("bf16"));
        assert!(b < f, "{mode}: bf16 {b} vs f32 {f}");
        // The f32 figure is what the plain plan asks for; the bf16 one plans, a byte less not.
        let err = nf(&[
            "plan",
            "--threads",
            "1",
            "--mode",
            mode,
            "--budget",
            &(f - 1).to_string(),
        ]);
        let text = String::from_utf8_lossy(&err.stderr).into_owned();
        assert_eq!(err.status.code(), Some(2), "{text}");
        assert!(text.contains(&format!("({f} bytes)")), "{text}");
        let at = |n: u64| {
            nf(&[
                "plan",
                "--threads",
                "1",
                "--mode",
                mode,
                "--precision",
                "bf16",
                "--budget",
                &n.to_string(),
            ])
        };
        assert!(at(b).status.success());
        assert_eq!(at(b - 1).status.code(), Some(2));
        // Under the same budget, every block gets at least the f32 plan's batch.
        let f32_plan = plan_json(&["--mode", mode, "--budget", "16MiB"]);
        assert!(f32_plan.get("precision").is_none(), "{f32_plan}");
        let batches = |v: &Value| -> Vec<u64> {
            let blocks = v["blocks"].as_array().expect("blocks");
            blocks
                .iter()
                .map(|b| b["batch_size"].as_u64().unwrap())
                .collect()
        };
        let (b32, b16) = (batches(&f32_plan), batches(&v));
        assert!(b16.iter().min() >= b32.iter().min(), "{b16:?} vs {b32:?}");
    }
}

#[test]
fn f32_precision_is_the_default_plan_and_the_table_says_what_bf16_means() {
    let plain = nf_ok(&["plan", "--threads", "1", "--budget", "8MiB"]);
    let f32_table = nf_ok(&[
        "plan",
        "--threads",
        "1",
        "--budget",
        "8MiB",
        "--precision",
        "f32",
    ]);
    assert!(f32_table.starts_with(&plain), "{plain}\n---\n{f32_table}");
    assert!(f32_table.contains("precision f32: element size per region kind"));
    assert!(!f32_table.contains("note:"));
    let bf16 = nf_ok(&[
        "plan",
        "--threads",
        "1",
        "--budget",
        "8MiB",
        "--precision",
        "bf16",
    ]);
    assert!(bf16.contains("  activations      bf16 (2 bytes)"), "{bf16}");
    assert!(bf16.contains("  params            f32 (4 bytes)"), "{bf16}");
    assert!(
        bf16.contains("smallest budget that plans (neuroflux mode): f32 "),
        "{bf16}"
    );
    assert!(!bf16.contains("note:"), "{bf16}");
    let o = nf(&["plan", "--precision", "f16"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--precision"), "{err}");
}

/// `--precision bf16` plans bf16 storage where it fits and keeps f32 storage at budgets that
/// only f32 storage fits (bf16 storage stages part of a batch in f32): vgg-small NF on 2
/// threads needs 4,330,636 bytes in f32 and 4,693,132 in bf16 storage.
#[test]
fn bf16_falls_back_to_f32_storage_where_only_that_fits() {
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["plan", "--json", "--threads", "2"];
        all.extend_from_slice(args);
        serde_json::from_str(&nf_ok(&all)).expect("valid JSON")
    };
    let at = |budget: &str| {
        let v = json(&["--budget", budget, "--precision", "bf16"]);
        let batches: Vec<u64> = v["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["batch_size"].as_u64().unwrap())
            .collect();
        (
            v["options"]["storage"].as_str().unwrap().to_string(),
            batches,
        )
    };
    let (tight, _) = at("4.2MiB");
    assert_eq!(tight, "f32");
    let (roomy, b16) = at("16MiB");
    assert_eq!(roomy, "bf16");
    // At the same budget f32 storage gets smaller batches.
    let v = json(&["--budget", "16MiB"]);
    assert_eq!(v["options"]["storage"], "f32");
    let b32: Vec<u64> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap())
        .collect();
    assert!(
        b16.iter().zip(&b32).all(|(a, b)| a >= b),
        "{b16:?} vs {b32:?}"
    );
    assert!(
        b16.iter().zip(&b32).any(|(a, b)| a > b),
        "{b16:?} vs {b32:?}"
    );
}
