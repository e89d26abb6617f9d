//! The GPU check (`scripts/gpu-check.sh` and `scripts/gpu_check.py`) run dry on this machine:
//! a bundle whose `nf` and test executables are fakes (shell scripts that write what the real
//! ones write: a run of 37 files with two 39 MB model files, libtest output) and a fake
//! PyTorch python. It proves what no GPU run can afford to get wrong:
//! - the output folder receives three small files (table, results, log bundle) and nothing of
//!   the runs, and the work folder is removed;
//! - a GPU test that skips (or fails) fails the check, and a failure is rerun with
//!   `NF_CUDA_SYNC_EACH=1`;
//! - the library path goes to nf and the tests only, not to python;
//! - the table has the training-only and end-to-end ratios and the memory checks.
//!
//! Needs bash, python3 and coreutils (`timeout`, `truncate`); without python3 it says it was
//! skipped, unless `NF_REQUIRE_TOOLS=1`.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn tools_present() -> bool {
    let ok = ["python3", "bash", "timeout", "truncate"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(
            !std::env::var("NF_REQUIRE_TOOLS").is_ok_and(|v| v == "1"),
            "NF_REQUIRE_TOOLS=1 but bash, python3, timeout or truncate is missing"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the GPU check's dry run needs bash, python3, timeout and truncate"
        );
    }
    ok
}

/// A fake `nf train`: a run folder like the real one (35 small files, two 39 MB model files,
/// sparse) and a report whose figures pass the checks; it records the library path it saw.
const FAKE_NF: &str = r#"#!/usr/bin/env bash
out="" mode="" budget=""
while (($#)); do
    case "$1" in
    --out) out="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    *) shift ;;
    esac
done
mkdir -p "$out"
for i in $(seq 1 35); do echo "part $i" >"$out/part-$i.txt"; done
truncate -s 39M "$out/model.safetensors" "$out/exit.safetensors"
echo "block 1/1 epoch 1/1 ... (a progress line)"
python3 - "$out/report.json" "$mode" "$((${budget%MiB} << 20))" <<'EOF'
import json, os, sys
out, mode, b = sys.argv[1], sys.argv[2], int(sys.argv[3])
speed = 9000.0 if mode == "neuroflux" else 2500.0
json.dump({
    "samples": {"train": 900, "val": 100, "test": 200}, "epochs_per_block": 1,
    "blocks": [{"batch_size": 232, "train_seconds": 900 / speed, "seconds": 1.2 * 900 / speed,
                "images_per_sec": speed}],
    "memory": {"budget_used_bytes": b - 4096}, "device_allocation_bytes": b - 8192,
    "device_peak_bytes": b + (12 << 20), "device_libraries": "preflight: fake",
    "seconds_total": 1.0, "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
}, open(out, "w"))
EOF
echo "done in 1.0s"
"#;

/// A fake nf-cuda-gpu-tests; `SCENARIO` is replaced by `pass`, `skip` or `fail`.
const FAKE_GPU_TESTS: &str = r#"#!/usr/bin/env bash
scenario=SCENARIO
if [[ "$*" == *gpu_preflight* ]]; then
    echo "running 1 test"
    echo "preflight: Fake GPU (sm_90, 132 SMs, 139.8 GiB); CUDA driver API 13.0, NVRTC 13.2, cuBLAS 13.4.1; files: /fake/libcuda.so.1"
    echo "test gpu_preflight ... ok"
    exit 0
fi
echo "GPU fake: NF_REQUIRE_GPU=${NF_REQUIRE_GPU:-} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
case "$scenario" in
pass)
    echo "test gpu_ops_match_the_reference ... ok"
    echo "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
    ;;
skip)
    # What libtest prints when a test skips: the skip line after the test's name.
    echo "test gpu_ops_match_the_reference ... skipped: no CUDA device (fake)"
    echo "ok"
    echo "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
    ;;
fail)
    if [[ "${NF_CUDA_SYNC_EACH:-}" == 1 && "${CUDA_LAUNCH_BLOCKING:-}" == 1 ]]; then
        echo "thread 'gpu_ops_match_the_reference' panicked at nf-cuda/tests/common/mod.rs:1:1:"
        echo "conv forward: backend error Failed(\"kernel nf_im2col (4096 threads) failed (NF_CUDA_SYNC_EACH=1): cuStreamSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS\")"
    else
        echo "thread 'gpu_ops_match_the_reference' panicked at nf-cuda/tests/common/mod.rs:1:1:"
        echo "sgd: backend error Failed(\"cuStreamSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS\")"
    fi
    echo "test gpu_ops_match_the_reference ... FAILED"
    echo "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
    exit 101
    ;;
esac
"#;

const FAKE_NVRTC_TESTS: &str = r#"#!/usr/bin/env bash
echo "NVRTC 13.2: all 24 kernels compiled for sm_90 (NF_REQUIRE_NVRTC=${NF_REQUIRE_NVRTC:-})"
echo "test every_kernel_compiles_for_sm_90 ... ok"
echo "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
"#;

/// A fake python for the PyTorch baseline (`gpu_check.py torch ...`); anything else (the
/// library search) finds nothing. It records the library path it saw.
const FAKE_TORCH_PYTHON: &str = r#"#!/usr/bin/env bash
[[ "${2:-}" == torch ]] || exit 1
shift 2
budget="" out=""
while (($#)); do
    case "$1" in
    --budget) budget="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) shift 2 ;;
    esac
done
cat >"$out" <<EOF
{"kind": "torch", "mode": "bp", "budget_bytes": $budget, "batch_size": 120,
 "train_images_per_sec": 3000.0, "steady_images_per_sec": 3300.0, "e2e_images_per_sec": 2600.0,
 "max_memory_allocated_timed": $((budget - 1)), "driver_peak_bytes": $((budget + 300000000)),
 "ld_library_path": "${LD_LIBRARY_PATH:-}"}
EOF
echo "torch bp, budget: batch 120, 3000 images/s"
"#;

/// Run the check in a fresh folder with the GPU tests behaving as `scenario`; returns the
/// output, the output folder and the work folder.
fn run_check(scenario: &str) -> (Output, PathBuf, PathBuf) {
    let base = std::env::temp_dir().join(format!(
        "nf-gpu-check-dry-{}-{scenario}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let bundle = base.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    for f in ["gpu-check.sh", "gpu_check.py"] {
        std::fs::copy(root().join("scripts").join(f), bundle.join(f)).unwrap();
    }
    let fakes = [
        ("nf", FAKE_NF.to_string()),
        (
            "nf-cuda-gpu-tests",
            FAKE_GPU_TESTS.replace("SCENARIO", scenario),
        ),
        ("nf-cuda-nvrtc-tests", FAKE_NVRTC_TESTS.to_string()),
        ("fake-python", FAKE_TORCH_PYTHON.to_string()),
    ];
    for (name, text) in fakes {
        let p = bundle.join(name);
        std::fs::write(&p, text).unwrap();
        let ok = Command::new("chmod").arg("+x").arg(&p).status().unwrap();
        assert!(ok.success());
    }
    let (out, work) = (base.join("out"), base.join("work"));
    let output = Command::new("bash")
        .arg(bundle.join("gpu-check.sh"))
        .args(["--out", out.to_str().unwrap()])
        .args(["--work", work.to_str().unwrap()])
        .args(["--images", "1000", "--lib-dir", "/nf-fake-lib-dir"])
        .args([
            "--torch-python",
            bundle.join("fake-python").to_str().unwrap(),
        ])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("bash runs");
    (output, out, work)
}

fn results(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// Every string inside `v`, one per line.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join("\n"),
        Value::Object(o) => o.values().map(text).collect::<Vec<_>>().join("\n"),
        other => other.to_string(),
    }
}

/// The output folder holds the three small files only.
fn assert_small(out: &Path) {
    let mut names: Vec<(String, u64)> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    names.sort();
    let files: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        files,
        ["logs.tgz", "results.json", "table.txt"],
        "{names:?}"
    );
    let total: u64 = names.iter().map(|(_, s)| s).sum();
    assert!(
        total < (1 << 20),
        "output folder of {total} bytes: {names:?}"
    );
}

#[test]
fn a_passing_check_brings_back_three_small_files() {
    if !tools_present() {
        return;
    }
    let (o, out, work) = run_check("pass");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        o.status
    );
    assert_small(&out);
    assert!(
        !work.exists(),
        "the work folder (320 MB on a GPU) is left behind"
    );
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    // The table is the end of stdout (what survives when nothing else comes back).
    assert!(
        stdout.trim_end().ends_with(table.trim_end()),
        "stdout does not end with the table:\n{stdout}"
    );
    for want in [
        "preflight: Fake GPU",
        "nvrtc-tests: passed",
        "gpu-tests: passed",
        "training only 3.00x, end to end 2.88x",
        "PASS nf neuroflux 256 MiB: allocation",
        "PASS speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, training only",
        "PASS speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, end to end",
        "PASS logs.tgz written, under 15 MiB",
    ] {
        assert!(table.contains(want), "no `{want}` in the table:\n{table}");
    }
    assert!(!table.contains("FAIL"), "{table}");
    let r = results(&out);
    for run in [
        "nf-neuroflux-256MiB",
        "nf-bp-256MiB",
        "nf-neuroflux-1024MiB",
        "nf-bp-1024MiB",
    ] {
        let rep = &r["runs"][run]["report"];
        assert!(rep.is_object(), "{run}: no report in results.json");
        // nf got the library path, python did not.
        let ld = rep["ld_library_path"].as_str().unwrap();
        assert!(ld.contains("/nf-fake-lib-dir"), "{run}: {ld}");
    }
    for run in ["torch-bp-256MiB", "torch-bp-1024MiB"] {
        let ld = r["runs"][run]["ld_library_path"].as_str().unwrap();
        assert!(!ld.contains("/nf-fake-lib-dir"), "{run}: python saw {ld}");
    }
    let evidence = text(&r["tests"]["gpu-tests"]["evidence"]);
    assert!(evidence.contains("NF_REQUIRE_GPU=1"), "{evidence}");
    let evidence = text(&r["tests"]["nvrtc-tests"]["evidence"]);
    assert!(evidence.contains("NF_REQUIRE_NVRTC=1"), "{evidence}");
    // The log bundle holds the logs, not the runs.
    let list = Command::new("tar")
        .args(["tzf", out.join("logs.tgz").to_str().unwrap()])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("gpu-tests.txt") && list.contains("nf-bp-256MiB.log"));
    assert!(!list.contains("safetensors"), "{list}");
}

#[test]
fn a_skipped_gpu_test_fails_the_check() {
    if !tools_present() {
        return;
    }
    let (o, out, _) = run_check("skip");
    assert_eq!(o.status.code(), Some(1), "a skip must fail the check");
    assert_small(&out);
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    assert!(table.contains("gpu-tests: SKIPPED"), "{table}");
    assert!(
        table.contains("FAIL gpu-tests ran, none skipped or failed"),
        "{table}"
    );
}

#[test]
fn failing_gpu_tests_run_again_with_sync_each() {
    if !tools_present() {
        return;
    }
    let (o, out, _) = run_check("fail");
    assert_eq!(o.status.code(), Some(1));
    assert_small(&out);
    let r = results(&out);
    let rerun = text(&r["tests"]["gpu-tests-sync-each"]["sync_each"]);
    assert!(rerun.contains("kernel nf_im2col"), "{rerun}");
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    assert!(table.contains("gpu-tests: FAILED (exit 101)"), "{table}");
    assert!(table.contains("nf_im2col"), "{table}");
}
