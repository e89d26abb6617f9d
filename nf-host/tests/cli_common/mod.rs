//! Running the built `nf` binary in tests: the command, a fresh temporary directory, and the
//! check that an error is one line `error: ...` with exit code 2.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Run `nf` with `args` and wait for it (no colours in its output).
pub fn nf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nf"))
        .args(args)
        .env_remove("CLICOLOR_FORCE")
        .env("NO_COLOR", "1")
        .output()
        .expect("run nf")
}

/// Run `nf` with `args`, which must succeed; its standard output.
pub fn nf_ok(args: &[&str]) -> String {
    let o = nf(args);
    assert!(
        o.status.success(),
        "nf {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A path for directory `name` of test file `file` in the temporary directory, removed if it
/// exists (unique per process).
pub fn tmp(file: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nf-{file}-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

/// `p` as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The report.json of the run in `dir`.
pub fn report(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("report.json")).expect("report.json"))
        .expect("JSON")
}

/// The run state in the checkpoint of `dir`, if one is there and readable.
pub fn saved_state(dir: &Path) -> Option<Value> {
    let st = nf_host::store::TensorStore::load(&dir.join("checkpoint.safetensors")).ok()?;
    serde_json::from_str(st.metadata.get("state")?).ok()
}

/// Start `nf` with `args`, wait until its checkpoint holds block `block` and epoch `epoch`
/// (at most two minutes), and kill it there; whether that state was seen.
pub fn kill_at_checkpoint(args: &[String], out: &Path, block: u64, epoch: u64) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nf"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nf");
    let t0 = std::time::Instant::now();
    let mut seen = false;
    while t0.elapsed() < std::time::Duration::from_secs(120) {
        if let Some(v) = saved_state(out) {
            if v["block"] == block && v["epoch"] == epoch {
                seen = true;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// `o` failed with exit code 2 and one line `error: ...` containing `needle`, no panic.
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error:") && err.contains(needle),
        "{needle}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
