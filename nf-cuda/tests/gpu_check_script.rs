//! The GPU check (`scripts/gpu-check.sh`, `scripts/gpu_check.py`, `scripts/gpu_check_table.py`)
//! run dry on this machine: a bundle whose `nf` and test executables are fakes (shell scripts in
//! `tests/gpu_check/` that write what the real ones write: a run of 37 files with two 39 MB
//! model files, libtest output), a fake PyTorch python, and a fake `nvidia-smi` and `getconf`
//! first on the PATH. It proves what no GPU run can afford to get wrong:
//! - the output folder receives three small files (table, results, log bundle) and nothing of
//!   the runs, and the work folder is removed; a SIGTERM in the middle still leaves the three
//!   files, with what finished;
//! - the CUDA 13 libraries are linked into one folder first on the path of nf and the tests: a
//!   CUDA 12 folder earlier on LD_LIBRARY_PATH and a `stubs` folder are never used; python does
//!   not get that path;
//! - a GPU test that skips (or fails) fails the check, and a failure is rerun with
//!   `NF_CUDA_SYNC_EACH=1`; so is the first `nf train` that fails, once, short;
//! - `[N/A]` from nvidia-smi is recorded as no number, not a failed run;
//! - a machine whose glibc is older than the bundle's says so in the table's first lines;
//! - the table has the training-only and end-to-end ratios, the memory checks, and the speed
//!   targets as findings;
//! - VGG-11 runs in both precisions (`--precision f32` and `bf16`), each in its own row with its
//!   memory check, and the bf16/f32 ratios and accuracies.
//!
//! Needs bash, python3 and coreutils (`timeout`, `truncate`); without them it says it was
//! skipped, unless `NF_REQUIRE_TOOLS=1`.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A dry run's folders: the bundle, the fakes' PATH folder, the output and work folders, and
/// the fake library folders.
struct Dry {
    base: PathBuf,
    out: PathBuf,
    work: PathBuf,
}

fn write_file(p: &Path, text: &str, executable: bool) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
    if executable {
        let ok = Command::new("chmod").arg("+x").arg(p).status().unwrap();
        assert!(ok.success());
    }
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

impl Dry {
    /// A fresh folder `name` with a bundle of fakes and library folders: a CUDA 12 toolkit's
    /// (with the unversioned names cudarc tries first), a CUDA 13 one, and a `stubs` folder
    /// holding a decoy `libnvrtc.so.13`.
    fn new(name: &str) -> Dry {
        let base =
            std::env::temp_dir().join(format!("nf-gpu-check-dry-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let bundle = base.join("bundle");
        for f in ["gpu-check.sh", "gpu_check.py", "gpu_check_table.py"] {
            let text = std::fs::read_to_string(root().join("scripts").join(f)).unwrap();
            write_file(&bundle.join(f), &text, f.ends_with(".sh"));
        }
        write_file(&bundle.join("bundle-glibc.txt"), "2.28\n", false);
        let fakes = root().join("nf-cuda/tests/gpu_check");
        for (from, to) in [
            ("fake-nf", "bundle/nf"),
            ("fake-gpu-tests", "bundle/nf-cuda-gpu-tests"),
            ("fake-nvrtc-tests", "bundle/nf-cuda-nvrtc-tests"),
            ("fake-python", "bundle/fake-python"),
            ("nvidia-smi", "bin/nvidia-smi"),
            ("getconf", "bin/getconf"),
        ] {
            let text = std::fs::read_to_string(fakes.join(from)).unwrap();
            write_file(&base.join(to), &text, true);
        }
        let cuda12 = base.join("cuda12/lib64");
        for f in ["libnvrtc.so.12", "libcublas.so.12", "libcublasLt.so.12"] {
            write_file(&cuda12.join(f), "CUDA 12", false);
        }
        symlink("libnvrtc.so.12", &cuda12.join("libnvrtc.so"));
        symlink("libcublas.so.12", &cuda12.join("libcublas.so"));
        let cuda13 = base.join("cuda13/lib");
        for f in [
            "libnvrtc.so.13.0.88",
            "libnvrtc-builtins.so.13.0",
            "libcublas.so.13.1.0.3",
            "libcublasLt.so.13.1.0.3",
            "libnccl.so.2.27.3",
            "stubs/libcuda.so",
            "stubs/libnvrtc.so.13",
        ] {
            write_file(&cuda13.join(f), "CUDA 13", false);
        }
        symlink("libnvrtc.so.13.0.88", &cuda13.join("libnvrtc.so.13"));
        symlink("libcublas.so.13.1.0.3", &cuda13.join("libcublas.so.13"));
        symlink("libcublasLt.so.13.1.0.3", &cuda13.join("libcublasLt.so.13"));
        // NCCL's runtime name only (no libnccl.so): the check links it under the name cudarc
        // opens.
        symlink("libnccl.so.2.27.3", &cuda13.join("libnccl.so.2"));
        Dry {
            out: base.join("out"),
            work: base.join("work"),
            base,
        }
    }

    /// The check's command, the fakes behaving as `scenario`: CUDA 12 first on
    /// LD_LIBRARY_PATH, then the stubs, then CUDA 13; the fakes' folder first on the PATH.
    fn command(&self, scenario: &str) -> Command {
        let ld = ["cuda12/lib64", "cuda13/lib/stubs", "cuda13/lib"]
            .map(|d| self.base.join(d).display().to_string())
            .join(":");
        let path = format!(
            "{}:{}",
            self.base.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("bash");
        c.arg(self.base.join("bundle/gpu-check.sh"))
            .args(["--out", self.out.to_str().unwrap()])
            .args(["--work", self.work.to_str().unwrap()])
            .args(["--images", "2000"])
            .args([
                "--torch-python",
                self.base.join("bundle/fake-python").to_str().unwrap(),
            ])
            .env("LD_LIBRARY_PATH", ld)
            .env("PATH", path)
            .env("NF_FAKE_SCENARIO", scenario)
            .env("NF_FAKE_BASE", &self.base)
            .env_remove("NF_FAKE_GLIBC");
        c
    }

    fn results(&self) -> Value {
        let text = std::fs::read_to_string(self.out.join("results.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn table(&self) -> String {
        std::fs::read_to_string(self.out.join("table.txt")).unwrap()
    }

    /// The command lines the fake nf was called with.
    fn nf_calls(&self) -> String {
        std::fs::read_to_string(self.base.join("nf-calls.txt")).unwrap_or_default()
    }

    /// The output folder holds the three small files only.
    fn assert_small(&self) {
        let mut names: Vec<(String, u64)> = std::fs::read_dir(&self.out)
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
}

impl Drop for Dry {
    /// The folder goes when the test passed (it stays for a look when it failed).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

/// Run the check to its end in a fresh folder `name` with the fakes behaving as `scenario`.
fn run_check(name: &str, scenario: &str) -> (Output, Dry) {
    let dry = Dry::new(name);
    let output = dry.command(scenario).output().expect("bash runs");
    (output, dry)
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

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_passing_check_brings_back_three_small_files() {
    if !tools_present() {
        return;
    }
    let (o, dry) = run_check("pass", "pass");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    dry.assert_small();
    assert!(
        !dry.work.exists(),
        "the work folder (320 MB on a GPU) is left behind"
    );
    let table = dry.table();
    // The table is the end of stdout (what survives when nothing else comes back).
    assert!(
        stdout.trim_end().ends_with(table.trim_end()),
        "stdout does not end with the table:\n{stdout}"
    );
    let second = table.lines().nth(1).unwrap();
    assert!(second.starts_with("This machine ran everything"), "{table}");
    for want in [
        "preflight: Fake GPU",
        "nvrtc-tests: passed",
        "gpu-tests: passed",
        "nccl-smoke: passed",
        "training only 3.00x, end to end 2.88x",
        "PASS nf neuroflux 256 MiB: allocation",
        "PASS nf neuroflux bf16 256 MiB: allocation",
        "PASS nf bp bf16 1024 MiB: allocation",
        "256 MiB: NeuroFlux bf16 / f32: training only 1.50x, end to end 1.50x; test accuracy 49.90% vs 50.00%",
        "1024 MiB: nf BP bf16 / f32: training only 1.50x",
        "cuBLAS workspace 32.0 MiB",
        "MET speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, training only",
        "MET speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, end to end",
        "PASS logs.tgz written, under 15 MiB",
    ] {
        assert!(table.contains(want), "no `{want}` in the table:\n{table}");
    }
    assert!(
        !table.contains("FAIL") && !table.contains("MISSED"),
        "{table}"
    );
    let r = dry.results();
    assert_eq!(r["could_run_everything"], true);
    for run in [
        "nf-neuroflux-256MiB",
        "nf-bp-256MiB",
        "nf-neuroflux-1024MiB",
        "nf-bp-1024MiB",
        "nf-neuroflux-256MiB-bf16",
        "nf-bp-256MiB-bf16",
        "nf-neuroflux-1024MiB-bf16",
        "nf-bp-1024MiB-bf16",
    ] {
        let rep = &r["runs"][run]["report"];
        assert!(rep.is_object(), "{run}: no report in results.json");
        // Each run trained in the precision its name says.
        let want = if run.ends_with("-bf16") {
            "bf16"
        } else {
            "f32"
        };
        assert_eq!(r["runs"][run]["precision"], want, "{run}");
        assert_eq!(rep["precision"], want, "{run}");
        // nf got the CUDA 13 folder first, python did not; no stubs folder for nf.
        let ld = rep["ld_library_path"].as_str().unwrap();
        assert!(
            ld.starts_with(dry.work.join("cuda13-lib").to_str().unwrap()),
            "{run}: {ld}"
        );
        assert!(!ld.contains("stubs"), "{run}: {ld}");
        // The fake nvidia-smi: 1000 MiB before, 1500 MiB at the peak.
        assert_eq!(r["runs"][run]["smi_peak_bytes"], 500 << 20, "{run}");
    }
    for run in ["torch-bp-256MiB", "torch-bp-1024MiB"] {
        let ld = r["runs"][run]["ld_library_path"].as_str().unwrap();
        assert!(!ld.contains("cuda13-lib"), "{run}: python saw {ld}");
    }
    let evidence = text(&r["tests"]["gpu-tests"]["evidence"]);
    assert!(evidence.contains("NF_REQUIRE_GPU=1"), "{evidence}");
    let evidence = text(&r["tests"]["nvrtc-tests"]["evidence"]);
    assert!(evidence.contains("NF_REQUIRE_NVRTC=1"), "{evidence}");
    // The NCCL smoke run: required, and libnccl.so (cudarc's name) is the runtime's file.
    let evidence = text(&r["tests"]["nccl-smoke"]["evidence"]);
    assert!(evidence.contains("NF_REQUIRE_NCCL=1"), "{evidence}");
    assert!(evidence.contains("libnccl.so.2.27.3"), "{evidence}");
    // The log bundle holds the logs, not the runs.
    let list = Command::new("tar")
        .args(["tzf", dry.out.join("logs.tgz").to_str().unwrap()])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("gpu-tests.txt") && list.contains("nf-bp-256MiB.log"));
    assert!(list.contains("nf-bp-256MiB-bf16.log"), "{list}");
    assert!(!list.contains("safetensors"), "{list}");
    // Every run of the four (budget, mode) pairs in both precisions, each once.
    let calls = dry.nf_calls();
    for budget in ["256MiB", "1024MiB"] {
        for mode in ["neuroflux", "bp"] {
            for precision in ["f32", "bf16"] {
                let line = format!("mode={mode} budget={budget} precision={precision} ");
                assert_eq!(calls.matches(&line).count(), 1, "{line}: {calls}");
            }
        }
    }
    assert_eq!(calls.lines().count(), 8, "{calls}");
}

/// A CUDA 12 toolkit's folder earlier on LD_LIBRARY_PATH holds `libnvrtc.so` and
/// `libcublas.so`, the names cudarc tries first: the tests must load CUDA 13's files (from the
/// folder of links the check puts first), never CUDA 12's or a `stubs` folder's.
#[test]
fn a_cuda_12_folder_earlier_on_the_path_is_not_loaded() {
    if !tools_present() {
        return;
    }
    let (o, dry) = run_check("libs", "pass");
    assert!(o.status.success(), "{}", show(&o));
    let r = dry.results();
    let nvrtc = dry.base.join("cuda13/lib/libnvrtc.so.13.0.88");
    let cublas = dry.base.join("cuda13/lib/libcublas.so.13.1.0.3");
    let evidence = text(&r["tests"]["gpu-tests"]["evidence"]);
    assert!(
        evidence.contains(&format!("nvrtc={}", nvrtc.display()))
            && evidence.contains(&format!("cublas={}", cublas.display())),
        "{evidence}"
    );
    let table = dry.table();
    let preflight = table.lines().find(|l| l.starts_with("preflight:")).unwrap();
    assert!(
        preflight.contains(nvrtc.to_str().unwrap()) && !preflight.contains("/cuda12/"),
        "{preflight}"
    );
    let libs = &r["libraries"]["chosen"];
    assert_eq!(libs["libnvrtc.so.13"], nvrtc.to_str().unwrap());
    assert_eq!(
        libs["libnvrtc-builtins.so.13.*"],
        dry.base
            .join("cuda13/lib/libnvrtc-builtins.so.13.0")
            .to_str()
            .unwrap()
    );
    assert!(text(&r["libraries"]["searched"])
        .lines()
        .all(|d| !d.contains("stubs")));
    assert!(
        table.contains("CUDA 13 libraries linked first on the path: "),
        "{table}"
    );
}

#[test]
fn a_skipped_gpu_test_fails_the_check() {
    if !tools_present() {
        return;
    }
    let (o, dry) = run_check("skip", "skip");
    assert_eq!(o.status.code(), Some(1), "a skip must fail the check");
    dry.assert_small();
    let table = dry.table();
    assert!(table.contains("gpu-tests: SKIPPED"), "{table}");
    assert!(
        table.contains("FAIL gpu-tests ran, none skipped or failed"),
        "{table}"
    );
    let second = table.lines().nth(1).unwrap();
    assert!(
        second.starts_with("This machine could NOT run everything: gpu-tests skipped"),
        "{table}"
    );
}

#[test]
fn failing_gpu_tests_run_again_with_sync_each() {
    if !tools_present() {
        return;
    }
    let (o, dry) = run_check("fail", "fail");
    assert_eq!(o.status.code(), Some(1));
    dry.assert_small();
    let r = dry.results();
    let rerun = text(&r["tests"]["gpu-tests-sync-each"]["sync_each"]);
    assert!(rerun.contains("kernel nf_im2col"), "{rerun}");
    let table = dry.table();
    assert!(table.contains("gpu-tests: FAILED (exit 101)"), "{table}");
    assert!(table.contains("nf_im2col"), "{table}");
}

/// The first `nf train` that fails runs once more, on 1000 images, with `NF_CUDA_SYNC_EACH=1`,
/// and the table shows the call it names.
#[test]
fn a_failing_nf_train_runs_once_more_with_sync_each() {
    if !tools_present() {
        return;
    }
    let (o, dry) = run_check("nf-fail", "nf-fail");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    dry.assert_small();
    let calls = dry.nf_calls();
    let bp256: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("mode=bp budget=256MiB precision=f32"))
        .collect();
    assert_eq!(
        bp256,
        [
            "mode=bp budget=256MiB precision=f32 data=synthetic:3x32x32:2000 sync_each=",
            "mode=bp budget=256MiB precision=f32 data=synthetic:3x32x32:1000 sync_each=1",
        ],
        "{calls}"
    );
    // Once only, and the other runs go on.
    assert_eq!(
        calls.lines().filter(|l| l.ends_with("sync_each=1")).count(),
        1
    );
    assert_eq!(calls.lines().count(), 9, "{calls}");
    let table = dry.table();
    assert!(
        table.contains("again on 1000 images with NF_CUDA_SYNC_EACH=1 (exit 1): error: block 1: kernel nf_im2col"),
        "{table}"
    );
    assert!(
        table.contains("FAIL nf bp 256 MiB produced a result"),
        "{table}"
    );
    assert!(table.contains("PASS nf neuroflux 256 MiB"), "{table}");
    // The bf16 run of the same pair is not affected.
    assert!(table.contains("PASS nf bp bf16 256 MiB"), "{table}");
}

/// nvidia-smi answering `[N/A]` (some drivers, containers without the permission) is no number:
/// recorded as null, and the runs still pass.
#[test]
fn nvidia_smi_without_numbers_is_null_not_a_failure() {
    if !tools_present() {
        return;
    }
    let (o, dry) = run_check("smi-na", "smi-na");
    assert!(o.status.success(), "{}", show(&o));
    let r = dry.results();
    for run in ["nf-neuroflux-256MiB", "nf-bp-1024MiB", "torch-bp-256MiB"] {
        assert_eq!(r["runs"][run]["smi_peak_bytes"], Value::Null, "{run}");
    }
    assert_eq!(r["runs"]["nf-bp-256MiB"]["status"], "ok");
    assert!(!dry.table().contains("FAIL"), "{}", dry.table());
}

/// A machine whose glibc is older than the bundle's: the table's first lines say so, nothing
/// that cannot start is started, and PyTorch still runs.
#[test]
fn an_old_glibc_is_said_in_the_first_lines() {
    if !tools_present() {
        return;
    }
    let dry = Dry::new("old-glibc");
    let o = dry
        .command("old-glibc")
        .env("NF_FAKE_GLIBC", "2.17")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    dry.assert_small();
    let table = dry.table();
    let second = table.lines().nth(1).unwrap();
    assert!(
        second.starts_with(
            "This machine could NOT run everything: this machine's glibc 2.17 is older than the 2.28 the bundle needs"
        ),
        "{table}"
    );
    assert_eq!(dry.nf_calls(), "", "nf was started");
    let r = dry.results();
    assert_eq!(r["runs"]["nf-bp-256MiB"]["status"], "skipped");
    assert!(r["runs"]["torch-bp-256MiB"]["train_images_per_sec"].is_number());
}

/// A SIGTERM in the middle of a run (an outer timeout): the run in progress is stopped, and the
/// three files still come back, with what finished and the interruption in the table.
#[test]
fn sigterm_mid_run_still_returns_the_three_files() {
    if !tools_present() {
        return;
    }
    let dry = Dry::new("hang");
    let mut child = dry
        .command("hang")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dry.base.join("hang.pid");
    let until = Instant::now() + Duration::from_secs(120);
    while !pid_file.exists() {
        assert!(
            Instant::now() < until && child.try_wait().unwrap().is_none(),
            "the hanging run never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let hung = std::fs::read_to_string(&pid_file).unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the check did not end within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(143));
    dry.assert_small();
    assert!(!dry.work.exists(), "the work folder is left behind");
    let alive = Command::new("kill")
        .args(["-0", hung.trim()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !alive.success(),
        "the hanging nf ({}) still runs",
        hung.trim()
    );
    let table = dry.table();
    assert!(table.contains("INTERRUPTED by SIGTERM"), "{table}");
    assert!(table.contains("FAIL the check ran to its end"), "{table}");
    assert!(table.contains("PASS nf neuroflux 256 MiB"), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("This machine could NOT run everything")
            && table.contains("interrupted by SIGTERM"),
        "{table}"
    );
    let list = Command::new("tar")
        .args(["tzf", dry.out.join("logs.tgz").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("nf-bp-256MiB.log"));
}

/// `gpu_check.py glibc-check`, which the bundle's build runs on its binaries: the newest
/// `GLIBC_` version among a binary's dynamic symbols (`objdump -T`), and a refusal naming the
/// symbols when it is newer than the limit (the bundle built on Debian 12 needed
/// `hypotf@GLIBC_2.35`).
#[test]
fn the_glibc_check_reads_objdump_and_refuses_newer_symbols() {
    if !tools_present() {
        return;
    }
    let base = std::env::temp_dir().join(format!("nf-glibc-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let objdump = "#!/usr/bin/env bash\n\
        echo '0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.2.5) malloc'\n\
        echo '0000000000000000      DF *UND*  0000000000000000  GLIBC_2.35  hypotf'\n\
        echo '0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.17) clock_gettime'\n";
    write_file(&base.join("bin/objdump"), objdump, true);
    let path = format!(
        "{}:{}",
        base.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let check = |limit: &str| {
        Command::new("python3")
            .arg(root().join("scripts/gpu_check.py"))
            .args(["glibc-check", limit])
            .arg(base.join("needs.txt"))
            .arg("/fake/nf")
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let o = check("2.28");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("needs GLIBC_2.35 (hypotf): NEWER THAN 2.28")
    );
    let o = check("2.35");
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        std::fs::read_to_string(base.join("needs.txt")).unwrap(),
        "2.35\n"
    );
    // The real objdump on a real binary: some GLIBC_ version is found.
    if Command::new("sh")
        .args(["-c", "command -v objdump"])
        .status()
        .is_ok_and(|s| s.success())
    {
        let o = Command::new("python3")
            .arg(root().join("scripts/gpu_check.py"))
            .args(["glibc-check", "99.0"])
            .arg(base.join("real.txt"))
            .arg(std::env::current_exe().unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let v = std::fs::read_to_string(base.join("real.txt")).unwrap();
        assert!(v.starts_with("2."), "{v}");
    }
    let _ = std::fs::remove_dir_all(&base);
}
