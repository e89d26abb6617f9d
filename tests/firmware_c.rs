//! The C ABI of nf-core, from C: builds `tests/firmware-c/` with its Makefile (the static library
//! `libneuroflux_c.a` of the `nf-capi` crate for the host and for `thumbv7em-none-eabihf`, a host
//! program that plans the firmware's memory into `build/nf_memory.h`, the host ABI test, and the
//! C firmware built with `arm-none-eabi-gcc` and newlib), checks that the committed cbindgen
//! header is up to date, runs the host ABI test (error codes on bad input, a small CNN trained
//! on synthetic data, twice, bit for bit), and runs the C firmware under `qemu-system-arm`
//! (`mps2-an386`, 128 KiB of RAM), where it trains the Rust firmware's model on the raw
//! Fashion-MNIST files in `fixtures/fashion-mnist-mcu/` through semihosting. The test parses the
//! firmware's `NFRESULT` line and checks the data sizes, the held-out accuracy of the exit head
//! (at least 60%) and the memory (`.data` + `.bss` + heap + the measured stack high-water mark
//! within 128 KiB). A third test runs the firmware's training on the host (`host/save_model.c`,
//! the host build of the library), saves the model through `nf_export_model` and evaluates the
//! bytes with `nf eval --model`: the same class as `nf_predict` for every held-out image.
//!
//! Without a tool (`make`, `cc`, `arm-none-eabi-gcc` with newlib, `qemu-system-arm`, `cbindgen`,
//! the `thumbv7em-none-eabihf` target) the test skips with a message; it fails instead when
//! `NF_REQUIRE_TOOLS=1` (`scripts/test.sh` installs them all).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod firmware_common;
use firmware_common::{missing_target, result_fields, root, run_qemu, runs, tools_present};

const RAM_BYTES: u64 = 128 * 1024;

fn dir() -> PathBuf {
    root().join("tests").join("firmware-c")
}

/// Why the test cannot run here, if it cannot.
fn missing_tool() -> Option<String> {
    for (cmd, arg, pkg) in [
        ("make", "--version", "apt-get install make"),
        ("cc", "--version", "apt-get install gcc"),
        (
            "arm-none-eabi-gcc",
            "--version",
            "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
        ),
        (
            "qemu-system-arm",
            "--version",
            "apt-get install qemu-system-arm",
        ),
        ("cbindgen", "--version", "cargo install cbindgen --locked"),
    ] {
        if !runs(cmd, &[arg]) {
            return Some(format!("{cmd} not found ({pkg})"));
        }
    }
    // newlib-nano's specs (libnewlib-arm-none-eabi): the firmware links its memset/strchr.
    let specs = Command::new("arm-none-eabi-gcc")
        .arg("-print-file-name=nano.specs")
        .output();
    match specs {
        Ok(o) if Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_file() => {}
        _ => {
            return Some(
                "newlib's nano.specs not found (apt-get install libnewlib-arm-none-eabi)".into(),
            )
        }
    }
    missing_target()
}

/// Run `make TARGETS` in tests/firmware-c (the cargo builds run inside it, one at a time:
/// both tests of this file call it, and cargo's lock on the target directory serialises them).
fn make(targets: &[&str]) {
    let t = Instant::now();
    let out = Command::new("make")
        .arg("-C")
        .arg(dir())
        .args(targets)
        .env(
            "CARGO",
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        )
        // The builds of the library choose their own targets and flags.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make {} failed:\n{}\n{}",
        targets.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "firmware-c: make {} in {:.1} s",
        targets.join(" "),
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn c_abi_header_is_current_and_host_test_passes() {
    if !tools_present("C ABI host test", missing_tool()) {
        return;
    }
    // The committed header is what cbindgen makes of the crate today.
    make(&["check-header"]);
    make(&["abi-test"]);
    let out = Command::new(dir().join("build").join("abi_test"))
        .output()
        .expect("run build/abi_test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the C ABI host test failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("checks passed"), "{text}");
    eprintln!("firmware-c: {}", text.lines().last().unwrap_or(""));
}

#[test]
fn c_firmware_trains_in_128k_under_qemu() {
    if !tools_present("C firmware test", missing_tool()) {
        return;
    }
    make(&["firmware"]);
    let elf = dir().join("build").join("nf-firmware-c.elf");
    let (ok, lines, wall) = run_qemu(
        &elf,
        "nf-firmware-c",
        Path::new("fixtures/fashion-mnist-mcu"),
        Duration::from_secs(6 * 60),
    );
    let f = result_fields(&lines)
        .unwrap_or_else(|| panic!("no NFRESULT line; output:\n{}", lines.join("\n")));
    assert!(ok, "the firmware reported failure:\n{}", lines.join("\n"));
    let num = |k: &str| -> f64 {
        f.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("NFRESULT has no number {k}: {f:?}"))
    };
    let int = |k: &str| num(k) as u64;
    assert_eq!(int("train"), 1000);
    assert_eq!(int("test"), 200);
    let exit = int("exit");
    let acc = num(&format!("acc_unit{exit}"));
    assert!(
        acc >= 0.60,
        "held-out accuracy of the exit head (unit {exit}) is {acc}, below 0.60"
    );
    // The held-out images classified one by one through nf_predict (the exit) give the
    // trainer's own evaluation of the exit, bit for bit (checked on the device as floats).
    assert_eq!(
        int("predict_exact"),
        1,
        "nf_predict's accuracy differs: {f:?}"
    );
    assert_eq!(
        num("predict_acc"),
        acc,
        "nf_predict's accuracy differs: {f:?}"
    );
    // The model saved to flash (nf_export_model) and loaded back after a simulated reset (RAM
    // wiped, nf_init again, nf_load_model) classifies every held-out image the same.
    assert_eq!(int("reload_exact"), 1, "the reloaded model differs: {f:?}");
    assert!(int("model_bytes") > int("store"), "{f:?}");
    assert_eq!(
        int("ram"),
        RAM_BYTES,
        "the linker script's RAM is not 128 KiB"
    );
    // The planned buffers are in .bss, and everything used fits the RAM.
    assert_eq!(int("memory"), int("arena") + int("store") + int("order"));
    assert!(int("memory") + int("trainer") <= int("bss"));
    // The stack of each phase (painted again before each: nf_init_planned, epochs, finishing
    // blocks, predictions, the reset) is part of the whole run's.
    for k in [
        "stack_init",
        "stack_train",
        "stack_epoch",
        "stack_finish",
        "stack_predict",
        "stack_reload",
    ] {
        assert!(int(k) <= int("stack"), "{k}: {f:?}");
    }
    let used = int("data") + int("bss") + int("heap") + int("stack");
    assert!(used <= RAM_BYTES, "{used} B used of {RAM_BYTES}");
    eprintln!(
        "firmware-c: held-out accuracy {}, exit unit {exit} ({acc}); RAM {used} of {RAM_BYTES} B \
         (.data {} + .bss {} [training memory {}: arena {} + store {} + order {}; trainer {}] + \
         heap {} + stack high-water {}); flash {} B; emulated in {:.1} s wall",
        (0..)
            .map_while(|u| f.get(&format!("acc_unit{u}")).cloned())
            .collect::<Vec<_>>()
            .join("/"),
        int("data"),
        int("bss"),
        int("memory"),
        int("arena"),
        int("store"),
        int("order"),
        int("trainer"),
        int("heap"),
        int("stack"),
        int("flash"),
        wall.as_secs_f64()
    );
}

/// The fields `k=v` of a line.
fn fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `nf ARGS...` through nf-host's command line, in this process: its output, or its error line.
fn nf(args: &[&std::ffi::OsStr]) -> Result<String, String> {
    use clap::Parser;
    let cli = nf_host::cli::Cli::try_parse_from(
        std::iter::once(std::ffi::OsStr::new("nf")).chain(args.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    nf_host::cli::run(&cli, &mut out).map_err(|e| format!("error: {e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn a_model_saved_through_the_c_abi_evaluates_in_nf_eval() {
    if !tools_present("C ABI saved-model test", missing_tool()) {
        return;
    }
    // The firmware's run on the host (the host build of the C ABI): trained, each held-out
    // image classified by nf_predict, the model saved by nf_export_model.
    make(&["save-model"]);
    let data = root().join("fixtures").join("fashion-mnist-mcu");
    let work = dir().join("build").join("saved-model");
    std::fs::create_dir_all(&work).expect("create build/saved-model");
    let (model, classes, csv) = (
        work.join("model.nfmd"),
        work.join("classes.txt"),
        work.join("predictions.csv"),
    );
    let out = Command::new(dir().join("build").join("save_model"))
        .args([&data, &model, &classes])
        .output()
        .expect("run build/save_model");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "save_model failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = fields(&text);
    let num = |k: &str| -> f64 { f[k].parse().unwrap_or_else(|_| panic!("{k} in {text}")) };
    let n = num("test") as usize;
    let device: Vec<(u32, u32)> = std::fs::read_to_string(&classes)
        .expect("read classes.txt")
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').expect("label class");
            (a.parse().expect("label"), b.parse().expect("class"))
        })
        .collect();
    assert_eq!(device.len(), n);
    assert_eq!(
        num("predict_correct") / n as f64,
        num("trainer_acc"),
        "nf_predict disagrees with the trainer's evaluation: {text}"
    );

    // nf eval reads the saved bytes (the exit model) and classifies the same test split.
    let arg = |s: &'static str| std::ffi::OsStr::new(s);
    let report = nf(&[
        arg("eval"),
        arg("--model"),
        model.as_os_str(),
        arg("--data"),
        data.as_os_str(),
        arg("--predictions"),
        csv.as_os_str(),
        arg("--threads"),
        arg("1"),
    ])
    .unwrap_or_else(|e| panic!("nf eval of the saved model failed: {e}"));
    let rows: Vec<Vec<String>> = std::fs::read_to_string(&csv)
        .expect("read predictions.csv")
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), n, "{report}");
    let mut same = 0;
    let mut correct = 0;
    for (row, &(label, class)) in rows.iter().zip(&device) {
        let (l, p): (u32, u32) = (row[2].parse().unwrap(), row[3].parse().unwrap());
        assert_eq!(l, label, "image {}: labels differ", row[1]);
        same += usize::from(p == class);
        correct += usize::from(p == l);
    }
    assert_eq!(
        same, n,
        "nf eval and nf_predict classify {same} of {n} images alike"
    );
    assert_eq!(correct as f64, num("predict_correct"), "{report}");
    eprintln!(
        "firmware-c: the saved model ({} B, exit unit {}) in nf eval: {correct}/{n} right, the \
         same class as nf_predict for every image\n{report}",
        num("model_bytes"),
        num("exit")
    );

    // A damaged or cut file is one line naming --model.
    let bytes = std::fs::read(&model).expect("read the model");
    let bad = work.join("bad.nfmd");
    for (what, b) in [
        ("checksum", {
            let mut b = bytes.clone();
            b[bytes.len() / 2] ^= 1;
            b
        }),
        ("length", bytes[..bytes.len() - 8].to_vec()),
    ] {
        std::fs::write(&bad, &b).expect("write bad.nfmd");
        let e = nf(&[
            arg("eval"),
            arg("--model"),
            bad.as_os_str(),
            arg("--data"),
            data.as_os_str(),
        ])
        .expect_err("a damaged device model is refused");
        assert!(
            e.starts_with("error: --model ") && e.contains(what) && !e.contains('\n'),
            "{e}"
        );
    }
}
