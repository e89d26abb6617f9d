//! What the firmware tests (`firmware.rs`, `firmware_c.rs`) share: the tool checks (skip with a
//! message, or fail under `NF_REQUIRE_TOOLS=1`), running a firmware under QEMU with its output
//! streamed and a time limit, and the `NFRESULT` line read back.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The microcontroller target both firmwares are built for.
pub const TARGET: &str = "thumbv7em-none-eabihf";

/// The repository root (the root package's directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `cmd args` runs and succeeds.
pub fn runs(cmd: &str, args: &[&str]) -> bool {
    matches!(
        Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status(),
        Ok(s) if s.success()
    )
}

/// Why [`TARGET`] cannot be built for here (its standard library is not installed), if so.
pub fn missing_target() -> Option<String> {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
    let has_target = match sysroot {
        Ok(o) if o.status.success() => Path::new(String::from_utf8_lossy(&o.stdout).trim())
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir(),
        _ => false,
    };
    (!has_target)
        .then(|| format!("the {TARGET} target is not installed (rustup target add {TARGET})"))
}

/// Whether the test `what` may run: with a tool `missing`, skip it (with a visible message) or,
/// under `NF_REQUIRE_TOOLS=1` (the test command), fail.
pub fn tools_present(what: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    if std::env::var_os("NF_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("NF_REQUIRE_TOOLS=1 (scripts/test.sh): the {what} must run, but {why}");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr(), "skipped: {what}: {why}");
    false
}

/// Run the ELF under QEMU's `mps2-an386` from the repository root, its semihosting command line
/// `PROGRAM DATA`; returns (exit success, output lines, wall time). Kills QEMU at the time limit.
pub fn run_qemu(
    elf: &Path,
    program: &str,
    data: &Path,
    timeout: Duration,
) -> (bool, Vec<String>, Duration) {
    let data = data.to_str().expect("a UTF-8 data path");
    assert!(
        !data.contains([',', ' ']),
        "QEMU's -semihosting-config cannot take a path with a comma or a space: {data}"
    );
    let t = Instant::now();
    let mut child = Command::new("qemu-system-arm")
        .args(["-M", "mps2-an386", "-nographic", "-semihosting-config"])
        .arg(format!("enable=on,target=native,arg={program},arg={data}"))
        .arg("-kernel")
        .arg(elf)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-arm");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        }),
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        }),
    ];
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            eprintln!("  | {line}");
            lines.push(line);
        }
        if let Some(st) = child.try_wait().expect("wait for qemu") {
            break Some(st);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let wall = t.elapsed();
    for r in readers {
        let _ = r.join();
    }
    while let Ok(line) = rx.try_recv() {
        eprintln!("  | {line}");
        lines.push(line);
    }
    let Some(status) = status else {
        panic!(
            "QEMU did not finish within {} s; output:\n{}",
            timeout.as_secs(),
            lines.join("\n")
        );
    };
    (status.success(), lines, wall)
}

/// The `key=value` fields of the `NFRESULT` line.
pub fn result_fields(lines: &[String]) -> Option<BTreeMap<String, String>> {
    let line = lines.iter().find(|l| l.starts_with("NFRESULT "))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}
