//! On-device training: builds the firmware in `tests/firmware/` for `thumbv7em-none-eabihf` and
//! runs it under `qemu-system-arm` (machine `mps2-an386`: a Cortex-M4 with FPU; the firmware's
//! linker script gives it 128 KiB of RAM), where it trains a small CNN with NeuroFlux, block by
//! block, on the raw Fashion-MNIST files in `fixtures/fashion-mnist-mcu/` (read through
//! semihosting, a few images at a time). The test parses the firmware's `NFRESULT` line and
//! checks the data sizes, the held-out accuracy of the exit head, that the exit's predictions
//! after training (nf-core's `predict`, in the trained arena) reproduce its evaluation, and the memory: `.data` +
//! `.bss` + the measured stack high-water mark within 128 KiB, the stack within its reserve,
//! cross-checked against the ELF's program headers (which also give the flash size).
//!
//! Without `qemu-system-arm` or the `thumbv7em-none-eabihf` target the test skips with a message
//! (it fails instead when `CI` is set: `scripts/test.sh` installs both).
//!
//! `NF_FIRMWARE_LONG=1` runs the longer configuration instead (`--features long`: 4000 training
//! and 1000 held-out images, written by `fixtures/make-fashion-mcu.py` into
//! `tests/firmware/target/`), and checks for at least 80% accuracy. `NF_RAM_BUDGET` (bytes)
//! builds and checks the firmware for another RAM size instead of 128 KiB.
//!
//! A second test builds the smallest configuration (units of 4, 16 and 16 channels:
//! `NF_FIRMWARE_WIDTHS=4,16,16`) into `tests/firmware/target/small/` and checks it the same way
//! in 64 KiB of RAM.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod firmware_common;
use firmware_common::{missing_target, result_fields, root, run_qemu, runs, tools_present, TARGET};

const RAM_ORIGIN: u64 = 0x2000_0000;
/// The firmware's default RAM.
const RAM_BYTES: u64 = 128 * 1024;

/// The smallest configuration (README, "Toward 64 KiB"): units of 4, 16 and 16 channels.
const SMALL_WIDTHS: &str = "4,16,16";
/// Its RAM: 64 KiB.
const SMALL_RAM: u64 = 64 * 1024;

/// The run being checked: data, feature, limits.
struct Config {
    long: bool,
    /// RAM given to the firmware (linker script and plan).
    ram: u64,
    /// The units' widths (`NF_FIRMWARE_WIDTHS`), or the firmware's default (8, 16, 32; the
    /// variable is passed on when set).
    widths: Option<&'static str>,
    /// Where it is built, under `tests/firmware/target` (one directory per configuration:
    /// the tests run at the same time).
    target_sub: &'static str,
    min_train: u64,
    min_test: u64,
    min_acc: f64,
    timeout: Duration,
}

fn firmware_dir() -> PathBuf {
    root().join("tests").join("firmware")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Why the test cannot run here, if it cannot.
fn missing_tool() -> Option<String> {
    if !runs("qemu-system-arm", &["--version"]) {
        return Some("qemu-system-arm not found (apt-get install qemu-system-arm)".into());
    }
    missing_target()
}

/// Build the firmware (release, its own target directory) and return the ELF's path.
fn build(cfg: &Config) -> PathBuf {
    let fw = firmware_dir();
    let target_dir = fw.join("target").join(cfg.target_sub);
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--release", "--manifest-path"])
        .arg(fw.join("Cargo.toml"))
        .args(["--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        // A cross build: the host's flags do not apply.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env("NF_RAM_BUDGET", cfg.ram.to_string());
    if let Some(w) = cfg.widths {
        cmd.env("NF_FIRMWARE_WIDTHS", w);
    }
    if cfg.long {
        cmd.args(["--features", "long"]);
    }
    let t = Instant::now();
    let out = cmd.output().expect("run cargo build for the firmware");
    assert!(
        out.status.success(),
        "firmware build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("firmware: built in {:.1} s", t.elapsed().as_secs_f64());
    target_dir.join(TARGET).join("release").join("nf-firmware")
}

/// The data directory of the run (written first for the long run).
fn data_dir(cfg: &Config) -> PathBuf {
    let fixtures = root().join("fixtures");
    if !cfg.long {
        return fixtures.join("fashion-mnist-mcu");
    }
    let dir = firmware_dir().join("target").join("fashion-mnist-mcu-long");
    if !dir.join("train-images-idx3-ubyte").is_file() {
        let st = Command::new("python3")
            .arg(fixtures.join("make-fashion-mcu.py"))
            .args(["--train", "4000", "--test", "1000", "--out"])
            .arg(&dir)
            .status()
            .expect("run python3 fixtures/make-fashion-mcu.py");
        assert!(st.success(), "make-fashion-mcu.py failed");
    }
    dir
}

/// Flash bytes (loadable bytes placed below RAM) and static RAM bytes (`.data` + `.bss` +
/// `.uninit`) from the ELF32 program headers.
fn elf_sizes(elf: &[u8]) -> (u64, u64) {
    assert!(elf.len() > 52 && &elf[..4] == b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 1, "not a 32-bit ELF");
    assert_eq!(elf[5], 1, "not a little-endian ELF");
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let u32_at = |o: usize| {
        u64::from(u32::from_le_bytes([
            elf[o],
            elf[o + 1],
            elf[o + 2],
            elf[o + 3],
        ]))
    };
    let (phoff, phentsize, phnum) = (u32_at(0x1c), u16_at(0x2a), u16_at(0x2c));
    let (mut flash, mut ram) = (0, 0);
    for i in 0..phnum {
        let h = (phoff + i * phentsize) as usize;
        const PT_LOAD: u64 = 1;
        if u32_at(h) != PT_LOAD {
            continue;
        }
        let (vaddr, paddr, filesz, memsz) = (
            u32_at(h + 8),
            u32_at(h + 12),
            u32_at(h + 16),
            u32_at(h + 20),
        );
        if paddr < RAM_ORIGIN {
            flash += filesz;
        }
        if vaddr >= RAM_ORIGIN {
            ram += memsz;
        }
    }
    (flash, ram)
}

fn check(cfg: &Config) {
    if !tools_present("firmware test", missing_tool()) {
        return;
    }
    let elf = build(cfg);
    let data = data_dir(cfg);
    let (ok, lines, wall) = run_qemu(&elf, "nf-firmware", &data, cfg.timeout);
    let f = result_fields(&lines)
        .unwrap_or_else(|| panic!("no NFRESULT line; output:\n{}", lines.join("\n")));
    assert!(ok, "the firmware reported failure:\n{}", lines.join("\n"));
    let num = |k: &str| -> f64 {
        f.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("NFRESULT has no number {k}: {f:?}"))
    };
    let int = |k: &str| num(k) as u64;

    // Data and accuracy.
    assert!(
        int("train") >= cfg.min_train,
        "trained on {} images",
        int("train")
    );
    assert!(
        int("test") >= cfg.min_test,
        "evaluated on {} images",
        int("test")
    );
    let exit = int("exit");
    let acc = num(&format!("acc_unit{exit}"));
    assert!(
        acc >= cfg.min_acc,
        "held-out accuracy of the exit head (unit {exit}) is {acc}, below {}",
        cfg.min_acc
    );

    // Predictions after training: the exit, through nf-core's prediction chain, classifies
    // the held-out images exactly as the block's evaluation counted them.
    assert_eq!(
        int("predict_correct"),
        int("exit_correct"),
        "predictions of the exit (unit {exit}) after training disagree with its evaluation"
    );
    assert_eq!(
        int("exit_correct") as f64 / int("test") as f64,
        acc,
        "exit_correct / test is not the exit's held-out accuracy"
    );

    // Memory: the linker's RAM, what the ELF places in it, and the measured stack.
    let elf_bytes = std::fs::read(&elf).expect("read the firmware ELF");
    let (flash, elf_ram) = elf_sizes(&elf_bytes);
    let ram = cfg.ram;
    assert_eq!(int("ram"), ram, "the linker script's RAM is not {ram} B");
    assert_eq!(
        elf_ram,
        int("data") + int("bss"),
        "the ELF's RAM segments disagree with the firmware's .data + .bss"
    );
    let statics = int("arena") + int("store") + int("order");
    assert!(
        statics <= int("bss"),
        "the planned buffers are not all in .bss"
    );
    assert!(
        int("chain") < int("arena"),
        "the recompute chain is not inside the arena"
    );
    assert!(
        int("stack") <= int("stack_reserve"),
        "stack high-water mark {} B above the reserve {} B",
        int("stack"),
        int("stack_reserve")
    );
    let used = elf_ram + int("stack");
    assert!(
        used <= ram,
        ".data + .bss ({elf_ram} B) + stack ({} B) exceed {ram} B",
        int("stack")
    );
    eprintln!(
        "firmware: held-out accuracy {}, exit unit {exit} ({acc}); RAM {used} of {ram} B: \
         arena {} (recompute chain inside: {}) + frozen store {} + order {} + other .data/.bss \
         {} + stack high-water {} (reserve {}); flash {flash} B; emulated in {:.1} s wall",
        (0..)
            .map_while(|u| f.get(&format!("acc_unit{u}")).cloned())
            .collect::<Vec<_>>()
            .join("/"),
        int("arena"),
        int("chain"),
        int("store"),
        int("order"),
        elf_ram - statics,
        int("stack"),
        int("stack_reserve"),
        wall.as_secs_f64()
    );
}

/// Whether `NF_FIRMWARE_LONG=1` asks for the longer configuration.
fn long_run() -> bool {
    std::env::var_os("NF_FIRMWARE_LONG").is_some_and(|v| v == "1")
}

#[test]
fn firmware_trains_in_128k_under_qemu() {
    let long = long_run();
    let ram = std::env::var("NF_RAM_BUDGET").map_or(RAM_BYTES, |v| {
        // Rounded down to 8 bytes, as build.rs rounds the linker script's RAM.
        v.parse::<u64>()
            .map(|b| b / 8 * 8)
            .unwrap_or_else(|_| panic!("NF_RAM_BUDGET={v}: expected a number of bytes"))
    });
    let cfg = if long {
        Config {
            long,
            ram,
            widths: None,
            target_sub: "",
            min_train: 4000,
            min_test: 1000,
            min_acc: 0.80,
            timeout: Duration::from_secs(40 * 60),
        }
    } else {
        Config {
            long,
            ram,
            widths: None,
            target_sub: "",
            min_train: 1000,
            min_test: 200,
            min_acc: 0.60,
            timeout: Duration::from_secs(8 * 60),
        }
    };
    check(&cfg);
}

/// The smallest configuration: units of 4, 16 and 16 channels in 64 KiB (the README's
/// "Toward 64 KiB"), in the CI run (77% held-out at the exit measured at 66,704 B) or, with
/// `NF_FIRMWARE_LONG=1`, the longer one (at least 80%).
#[test]
fn firmware_trains_in_64k_under_qemu() {
    let long = long_run();
    let cfg = Config {
        long,
        ram: SMALL_RAM,
        widths: Some(SMALL_WIDTHS),
        target_sub: "small",
        min_train: if long { 4000 } else { 1000 },
        min_test: if long { 1000 } else { 200 },
        min_acc: if long { 0.80 } else { 0.60 },
        timeout: Duration::from_secs(if long { 40 * 60 } else { 8 * 60 }),
    };
    check(&cfg);
}

#[test]
fn elf_sizes_reads_program_headers() {
    // A minimal ELF32 header with two PT_LOAD entries: code in flash, .data (flash LMA, RAM
    // VMA) and .bss in RAM.
    let mut e = vec![0u8; 52 + 2 * 32];
    e[..6].copy_from_slice(b"\x7fELF\x01\x01");
    e[0x1c..0x20].copy_from_slice(&52u32.to_le_bytes());
    e[0x2a..0x2c].copy_from_slice(&32u16.to_le_bytes());
    e[0x2c..0x2e].copy_from_slice(&2u16.to_le_bytes());
    let ph = |e: &mut Vec<u8>, i: usize, vaddr: u32, paddr: u32, filesz: u32, memsz: u32| {
        let h = 52 + i * 32;
        e[h..h + 4].copy_from_slice(&1u32.to_le_bytes());
        e[h + 8..h + 12].copy_from_slice(&vaddr.to_le_bytes());
        e[h + 12..h + 16].copy_from_slice(&paddr.to_le_bytes());
        e[h + 16..h + 20].copy_from_slice(&filesz.to_le_bytes());
        e[h + 20..h + 24].copy_from_slice(&memsz.to_le_bytes());
    };
    ph(&mut e, 0, 0, 0, 1000, 1000);
    ph(&mut e, 1, 0x2000_0000, 1000, 16, 116);
    assert_eq!(elf_sizes(&e), (1016, 116));
}
