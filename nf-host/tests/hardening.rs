//! Regressions for the hardening issue: every file and flag a user can give ends in one line
//! `error: ...` naming it, exit 2, without a panic, an abort or an allocation beyond the
//! memory contract; interrupted runs lose at most the epoch in progress.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nf_host::store::TensorStore;
use serde_json::Value;

mod cli_common;
use cli_common::{assert_one_line_error, kill_at_checkpoint, nf, s};

fn tmp(name: &str) -> PathBuf {
    cli_common::tmp("hardening", name)
}

/// A quick finished run on 600 bundled images.
fn quick_run(name: &str) -> PathBuf {
    let out = tmp(name);
    let o = nf(&[
        "train",
        "--out",
        s(&out),
        "--epochs",
        "1",
        "--limit",
        "600",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Item 1: A gzip file whose header claims more than the host budget is refused from its header.
#[test]
fn gzip_bomb_is_refused_from_its_header() {
    let d = tmp("bomb");
    fs::create_dir_all(&d).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fashion-mnist");
    for f in [
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        fs::copy(fixtures.join(f), d.join(f)).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(d.join("train-images-idx3-ubyte.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&[0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28])
        .unwrap();
    gz.write_all(&vec![0u8; 64 << 20]).unwrap();
    gz.finish().unwrap();
    let t0 = Instant::now();
    let o = nf(&[
        "train",
        "--data",
        s(&d),
        "--host-budget",
        "64MiB",
        "--out",
        s(&tmp("bomb-out")),
    ]);
    assert_one_line_error(&o, "train-images-idx3-ubyte.gz");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let _ = fs::remove_dir_all(&d);
}

/// Item 2: Synthetic data is planned before it is generated: a huge shape is refused by the planner.
#[test]
fn huge_synthetic_data_is_refused_before_it_is_generated() {
    let o = nf(&[
        "train",
        "--data",
        "synthetic:1x8192x8192:25",
        "--out",
        s(&tmp("huge")),
    ]);
    assert_one_line_error(&o, "--budget");
}

/// Item 3: `nf eval --batch` is an upper bound: the batch is planned from --budget.
#[test]
fn eval_batch_is_planned_from_the_budget() {
    let out = quick_run("evalbatch");
    let o = nf(&[
        "eval",
        "--model",
        s(&out),
        "--batch",
        "65536",
        "--budget",
        "8MiB",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for m in v["models"].as_array().unwrap() {
        let b = m["batch_size"].as_u64().unwrap();
        assert!((1..65536).contains(&b), "{v}");
    }
    assert!(v["planned_total_bytes"].as_u64().is_some());
    assert_one_line_error(
        &nf(&["eval", "--model", s(&out), "--budget", "1KiB"]),
        "--budget",
    );
    let _ = fs::remove_dir_all(&out);
}

/// Rewrite the metadata entry `key` of the model file `path` (checksums stay valid).
fn edit_metadata(path: &Path, key: &str, value: &str) {
    let mut st = TensorStore::load(path).unwrap();
    st.metadata.insert(key.into(), value.into());
    st.save(path).unwrap();
}

/// Item 4: Model-file metadata that would size memory is checked.
#[test]
fn model_file_metadata_is_validated() {
    let out = quick_run("meta");
    for (key, value) in [
        ("heads", "[18446744073709551615,32,16,0]"),
        ("heads", "[1000000000000,32,16,0]"),
        ("heads", "[16,32,16]"),
        ("classes", "100000000"),
        ("input", "1x99999x28"),
        ("exit", "7"),
        ("mean", "[1e40]"),
    ] {
        let m = out.join(format!("bad-{key}.safetensors"));
        fs::copy(out.join("exit.safetensors"), &m).unwrap();
        edit_metadata(&m, key, value);
        assert_one_line_error(&nf(&["eval", "--model", s(&m)]), "not an nf model file");
    }
    let _ = fs::remove_dir_all(&out);
}

/// Rewrite the checkpoint's run state with `f`.
fn edit_state(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("checkpoint.safetensors");
    let mut st = TensorStore::load(&p).unwrap();
    let mut v: Value = serde_json::from_str(&st.metadata["state"]).unwrap();
    f(&mut v);
    st.metadata.insert("state".into(), v.to_string());
    st.save(&p).unwrap();
}

/// Items 5, 7 and 10: a checkpoint's run state is checked against the plan, stale temporary
/// files of an interrupted write are removed on resume, flipped bytes fail the checksums.
#[test]
fn checkpoints_are_validated_and_cleaned_up() {
    let out = quick_run("ckpt");
    let ck = out.join("checkpoint.safetensors");
    let pristine = fs::read(&ck).unwrap();
    fs::remove_file(out.join("report.json")).unwrap();
    for edit in [
        (|v: &mut Value| v["heads"] = serde_json::json!([])) as fn(&mut Value),
        |v| v["heads"][0][0] = serde_json::json!(99),
        |v| v["heads"][0][2] = serde_json::json!(7.5),
        |v| v["block"] = serde_json::json!(1),
        |v| v["epoch"] = serde_json::json!(5),
    ] {
        fs::write(&ck, &pristine).unwrap();
        edit_state(&out, edit);
        assert_one_line_error(&nf(&["train", "--resume", s(&out)]), "corrupt run state");
    }
    // A checkpoint whose plan is not the one this machine makes is refused.
    fs::write(&ck, &pristine).unwrap();
    let mut st = TensorStore::load(&ck).unwrap();
    let mut plan: Value = serde_json::from_str(&st.metadata["plan"]).unwrap();
    let planned = plan["blocks"][0]["batch_size"].as_u64().unwrap();
    plan["blocks"][0]["batch_size"] = serde_json::json!(planned + 8);
    st.metadata.insert("plan".into(), plan.to_string());
    st.save(&ck).unwrap();
    assert_one_line_error(
        &nf(&["train", "--resume", s(&out)]),
        "plans the run differently",
    );
    // A flipped byte in the tensor data.
    let mut bytes = pristine.clone();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    fs::write(&ck, &bytes).unwrap();
    assert_one_line_error(&nf(&["train", "--resume", s(&out)]), "checksum");
    let mut m = fs::read(out.join("exit.safetensors")).unwrap();
    let n = m.len();
    m[n - 3] ^= 1;
    fs::write(out.join("flipped.safetensors"), &m).unwrap();
    assert_one_line_error(
        &nf(&["eval", "--model", s(&out.join("flipped.safetensors"))]),
        "checksum",
    );
    // A killed write's temporary file goes away when the run resumes.
    fs::write(&ck, &pristine).unwrap();
    let stale = out.join(".checkpoint.safetensors.tmp-4242");
    fs::write(&stale, b"partial").unwrap();
    let o = nf(&["train", "--resume", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stale.exists(), "the stale temporary file was left behind");
    let _ = fs::remove_dir_all(&out);
}

/// Item 8: the last epoch of a block is checkpointed before the block's evaluation pass; a
/// run killed right after it resumes without training that block again, and ends where an
/// uninterrupted run ends.
#[test]
fn a_block_s_last_epoch_survives_a_kill_during_its_evaluation_pass() {
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--out",
            s(out),
            "--epochs",
            "1",
            "--limit",
            "1200",
            "--threads",
            "1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let whole = tmp("whole");
    let o = Command::new(env!("CARGO_BIN_EXE_nf"))
        .args(args(&whole))
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = tmp("killed");
    let seen = kill_at_checkpoint(&args(&out), &out, 0, 1);
    assert!(seen, "no checkpoint after block 0's last epoch");
    let o = nf(&["train", "--resume", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = |d: &Path| -> Value {
        serde_json::from_str(&fs::read_to_string(d.join("report.json")).unwrap()).unwrap()
    };
    let (a, b) = (report(&whole), report(&out));
    assert_eq!(
        a["heads"], b["heads"],
        "the resumed run ends as the whole one"
    );
    assert_eq!(b["blocks"][0]["epochs"].as_array().unwrap().len(), 1);
    for d in [whole, out] {
        let _ = fs::remove_dir_all(d);
    }
}

/// Item 6: a negative number for a flag reaches that flag's check (one line naming it), for
/// every command, instead of clap's usage for an unknown argument `-1`.
#[test]
fn negative_numbers_name_their_flag() {
    for (args, flag) in [
        (&["train", "--lr", "-1"][..], "--lr"),
        (&["train", "--momentum", "-0.5"], "--momentum"),
        (&["train", "--epochs", "-1"], "--epochs"),
        (&["train", "--seed", "-3"], "--seed"),
        (&["train", "--limit", "-10"], "--limit"),
        (&["train", "--val", "-0.1"], "--val"),
        (&["train", "--exit-tolerance", "-1"], "--exit-tolerance"),
        (&["train", "--budget", "-5"], "--budget"),
        (&["plan", "--threads", "-2"], "--threads"),
        (&["plan", "--head-pool", "-4"], "--head-pool"),
        (&["eval", "--model", "x", "--batch", "-1"], "--batch"),
    ] {
        assert_one_line_error(&nf(args), flag);
    }
}

/// Issue 27 item 3: a budget the process cannot get (here over its address-space limit,
/// `ulimit -v`) is one line naming --budget, exit 2, before anything is allocated or written:
/// no abort, no --out directory left behind (the BP variant left one).
#[test]
fn a_budget_over_the_address_space_limit_is_refused() {
    for mode in ["neuroflux", "bp"] {
        let out = tmp(&format!("as-limit-{mode}"));
        let o = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 1048576 && exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_nf"))
            .args([
                "train",
                "--model",
                "512,512,512,512",
                "--budget",
                "2GiB",
                "--batch-max",
                "65536",
                "--threads",
                "1",
                "--limit",
                "600",
                "--mode",
                mode,
                "--out",
                s(&out),
            ])
            .output()
            .expect("sh");
        assert_one_line_error(&o, "--budget 2.0 GiB: the run plans");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("address-space limit"), "{err}");
        assert!(!out.exists(), "--out left behind");
    }
}

/// Issue 27 item 7: a JSON description with a key twice, and a layer that cannot follow
/// `flatten`, are refused in one line naming them; so is a report.json with a key twice.
#[test]
fn duplicate_keys_and_layers_after_flatten_are_refused() {
    let dir = tmp("item7");
    fs::create_dir_all(&dir).unwrap();
    let net = dir.join("net.json");
    let plan = |text: &str| {
        fs::write(&net, text).unwrap();
        nf(&["plan", "--model", s(&net), "--input", "1x28x28"])
    };
    let o = plan(r#"{"name": "net", "units": [[{"op": "conv", "out": 8, "out": 16}]]}"#);
    assert_one_line_error(&o, "duplicate key \"out\"");
    let o = plan(r#"{"name": "a", "name": "b", "units": ["8"]}"#);
    assert_one_line_error(&o, "duplicate key \"name\"");
    for (units, layer) in [
        (
            r#"["8", [{"op": "flatten"}, {"op": "conv", "out": 4}]]"#,
            "unit 1 layer 1 (3x3 conv",
        ),
        (
            r#"["8", [{"op": "flatten"}, {"op": "basicblock", "out": 4}]]"#,
            "unit 1 layer 1 (residual",
        ),
        (
            r#"["8", [{"op": "conv", "out": 4}, {"op": "flatten"}, {"op": "maxpool2"}]]"#,
            "unit 1 layer 2 (2x2 max-pool",
        ),
    ] {
        let o = plan(&format!(r#"{{"name": "net", "units": {units}}}"#));
        assert_one_line_error(&o, layer);
        assert!(String::from_utf8_lossy(&o.stderr).contains("cannot follow the flatten"));
    }
    // Linear layers after flatten still plan.
    let o = plan(
        r#"{"name": "net", "units": ["8", [{"op": "conv", "out": 4}, {"op": "flatten"}, {"op": "linear", "out": 16}, {"op": "relu"}]]}"#,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A report.json with a key twice.
    let report = dir.join("report.json");
    fs::write(
        &report,
        r#"{"model": "a", "test_acc": 0.5, "test_acc": 0.9}"#,
    )
    .unwrap();
    let o = nf(&["report", s(&report), "--out", s(&dir.join("r.html"))]);
    assert_one_line_error(&o, "duplicate key \"test_acc\"");
    let _ = fs::remove_dir_all(&dir);
}
