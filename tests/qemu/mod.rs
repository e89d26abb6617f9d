//! Running a firmware under QEMU for the firmware tests (`firmware.rs`, `firmware_c.rs`): the
//! emulator with its output streamed and a time limit, and the `NFRESULT` line read back.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root (the root package's directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
