//! Every output flag of every command against the targets that must not be destroyed (issue
//! 27): an input of the same command, a directory, device nodes, a FIFO, a symbolic link to an
//! input, a read-only directory and a full disk. Each is refused in one line `error: ...`
//! naming the flag, exit 2, with the input byte-identical and the special file still what it
//! was. The rows come from the commands' own flag definitions (the flags under the `Output`
//! help heading), so an output flag added without a row here fails [`every_output_flag_has_a_row`].
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use clap::CommandFactory;
use nf_host::cli::Cli;

mod cli_common;
use cli_common::{assert_one_line_error, nf, s};

fn tmp(name: &str) -> PathBuf {
    cli_common::tmp("outputs", name)
}

/// What the rows share: a finished run and a model description.
struct Fixture {
    run: PathBuf,
    json: PathBuf,
    /// A run killed after its first checkpoint (for `--resume`).
    killed: PathBuf,
}

/// The data every training here runs on (fast).
const DATA: &str = "synthetic:1x8x8:300";

fn train_args(json: &Path) -> Vec<String> {
    [
        "train",
        "--data",
        DATA,
        "--model",
        s(json),
        "--epochs",
        "1",
        "--threads",
        "1",
        "--budget",
        "8MiB",
    ]
    .map(String::from)
    .to_vec()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tmp("fixture");
        fs::create_dir_all(&dir).unwrap();
        let json = dir.join("net.json");
        fs::write(&json, r#"{"name": "net", "units": ["8", "8,M"]}"#).unwrap();
        let run = dir.join("run");
        let mut a = train_args(&json);
        a.extend(["--out".into(), s(&run).into()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = nf(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let killed = dir.join("killed");
        let mut a = train_args(&json);
        a[6] = "50".into(); // --epochs: the run is still going when it is killed
        a.extend(["--out".into(), s(&killed).into()]);
        assert!(
            cli_common::kill_at_checkpoint(&a, &killed, 0, 1),
            "no checkpoint"
        );
        Fixture { run, json, killed }
    })
}

/// A command line and the input file it reads.
type Form = (Vec<String>, PathBuf);

/// One output flag of one command: how to run the command with `value` as that flag's value,
/// and the inputs of that command line.
struct Row {
    cmd: &'static str,
    flag: &'static str,
    /// A run directory (`nf train --out`, `--resume`), not a file.
    dir: bool,
    /// The command line with the flag set to its value, and the files it reads.
    forms: fn(&Fixture, &Path) -> Vec<Form>,
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

const ROWS: &[Row] = &[
    Row {
        cmd: "plan",
        flag: "--svg",
        dir: false,
        forms: |f, out| {
            vec![(
                v(&[
                    "plan",
                    "--model",
                    s(&f.json),
                    "--input",
                    "1x8x8",
                    "--svg",
                    s(out),
                ]),
                f.json.clone(),
            )]
        },
    },
    Row {
        cmd: "eval",
        flag: "--predictions",
        dir: false,
        forms: |f, out| {
            let exit = f.run.join("exit.safetensors");
            let common = ["--data", DATA, "--threads", "1", "--predictions", s(out)];
            let mut file = v(&["eval", "--model", s(&exit)]);
            file.extend(v(&common));
            let mut dir = v(&["eval", "--model", s(&f.run)]);
            dir.extend(v(&common));
            vec![(file, exit), (dir, f.run.join("model.safetensors"))]
        },
    },
    Row {
        cmd: "report",
        flag: "--out",
        dir: false,
        forms: |f, out| {
            vec![
                (
                    v(&["report", s(&f.run), "--out", s(out)]),
                    f.run.join("report.json"),
                ),
                (
                    v(&["report", s(&f.run.join("report.json")), "--out", s(out)]),
                    f.run.join("report.json"),
                ),
            ]
        },
    },
    Row {
        cmd: "export",
        flag: "--onnx",
        dir: false,
        forms: |f, out| {
            let exit = f.run.join("exit.safetensors");
            vec![
                (v(&["export", "--onnx", s(out), s(&exit)]), exit.clone()),
                (
                    v(&["export", "--onnx", s(out), s(&f.run), "--which", "full"]),
                    f.run.join("model.safetensors"),
                ),
                (
                    v(&["export", "--onnx", s(out), s(&f.run)]),
                    f.run.join("exit.safetensors"),
                ),
            ]
        },
    },
    Row {
        cmd: "export",
        flag: "--safetensors",
        dir: false,
        forms: |f, out| {
            let full = f.run.join("model.safetensors");
            vec![
                (
                    v(&["export", "--safetensors", s(out), s(&full), "--unit", "0"]),
                    full.clone(),
                ),
                (
                    v(&[
                        "export",
                        "--safetensors",
                        s(out),
                        s(&f.run),
                        "--which",
                        "full",
                    ]),
                    full,
                ),
            ]
        },
    },
    Row {
        cmd: "train",
        flag: "--out",
        dir: true,
        forms: |f, out| {
            let mut a = train_args(&f.json);
            a.extend(["--out".into(), s(out).into()]);
            vec![(a, f.json.clone())]
        },
    },
    Row {
        cmd: "train",
        flag: "--resume",
        dir: true,
        forms: |f, out| vec![(v(&["train", "--resume", s(out)]), f.json.clone())],
    },
];

/// The output flags the commands define (those under the `Output` help heading), as
/// (subcommand, flag).
fn output_flags() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for sub in Cli::command().get_subcommands() {
        for arg in sub.get_arguments() {
            if arg.get_help_heading() == Some(nf_host::output::OUTPUT) {
                let flag = format!("--{}", arg.get_long().expect("output flags are long"));
                found.push((sub.get_name().to_string(), flag));
            }
        }
    }
    found
}

#[test]
fn every_output_flag_has_a_row() {
    let flags = output_flags();
    assert!(flags.len() >= 7, "{flags:?}");
    for (cmd, flag) in &flags {
        assert!(
            ROWS.iter().any(|r| r.cmd == cmd && r.flag == flag),
            "nf {cmd} {flag} writes output but has no row in tests/outputs.rs"
        );
    }
    for r in ROWS {
        assert!(
            flags.iter().any(|(c, f)| c == r.cmd && f == r.flag),
            "row nf {} {} is not an output flag",
            r.cmd,
            r.flag
        );
    }
    // Every flag that takes a path is an input or under the Output heading: a new path flag
    // must be sorted into one of them.
    let inputs = [
        ("plan", "data"),
        ("plan", "model"),
        ("train", "data"),
        ("train", "model"),
        ("eval", "model"),
        ("eval", "data"),
        ("report", "runs"),
        ("export", "model"),
    ];
    for sub in Cli::command().get_subcommands() {
        for arg in sub.get_arguments() {
            let names: Vec<String> = arg
                .get_value_names()
                .unwrap_or_default()
                .iter()
                .map(|n| n.to_string())
                .collect();
            let pathlike = names.iter().any(|n| {
                ["FILE", "DIR", "RUN", "MODEL", "OUT"]
                    .iter()
                    .any(|k| n.contains(k))
            });
            if pathlike && arg.get_help_heading() != Some(nf_host::output::OUTPUT) {
                let id = arg.get_id().as_str();
                assert!(
                    inputs.contains(&(sub.get_name(), id)),
                    "nf {} {id} takes a path: an input (list it here) or an output (help \
                     heading Output, and a row)?",
                    sub.get_name()
                );
            }
        }
    }
}

/// Run `args` and check that it is refused in one line naming `flag`, with `keep` (the files
/// that must survive) byte-identical.
fn refused(args: &[String], flag: &str, keep: &[&Path]) -> Output {
    let before: Vec<Vec<u8>> = keep.iter().map(|p| fs::read(p).unwrap()).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = nf(&a);
    assert_one_line_error(&o, flag);
    for (p, b) in keep.iter().zip(before) {
        assert_eq!(
            fs::read(p).unwrap(),
            b,
            "{} changed: nf {}",
            p.display(),
            a.join(" ")
        );
    }
    o
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(st.success());
}

/// The targets every output flag is tried with; each must be refused.
#[test]
fn special_targets_are_refused_and_left_alone() {
    let f = fixture();
    let scratch = tmp("special");
    fs::create_dir_all(&scratch).unwrap();
    let fifo = scratch.join("fifo");
    mkfifo(&fifo);
    let a_dir = scratch.join("a-dir");
    fs::create_dir_all(&a_dir).unwrap();
    for row in ROWS {
        for (i, (_, input)) in (row.forms)(f, Path::new("x")).into_iter().enumerate() {
            let link = scratch.join(format!("{}-{}-{i}-link", row.cmd, &row.flag[2..]));
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&input, &link).unwrap();
            let mut targets = vec![
                ("the input", input.clone()),
                ("a symbolic link to the input", link),
                ("/dev/null", PathBuf::from("/dev/null")),
                ("/dev/zero", PathBuf::from("/dev/zero")),
                ("a FIFO", fifo.clone()),
            ];
            if !row.dir {
                targets.push(("a directory", a_dir.clone()));
            }
            for (what, target) in targets {
                let (args, input) = (row.forms)(f, &target).swap_remove(i);
                let o = refused(&args, row.flag, &[&input]);
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(!err.contains("panicked"), "{what}: {err}");
            }
            assert!(fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device());
            assert!(fs::metadata("/dev/zero")
                .unwrap()
                .file_type()
                .is_char_device());
            assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
            assert!(
                fs::read_dir(&a_dir).unwrap().next().is_none(),
                "a-dir written"
            );
        }
    }
    fs::remove_dir_all(&scratch).unwrap();
}

/// A read-only directory: refused in one line when the process may not write there, written
/// when it may (root ignores the mode bits); the inputs untouched either way.
#[test]
fn a_read_only_directory_is_refused_or_written_whole() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let ro = tmp("read-only");
    fs::create_dir_all(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let writable = fs::write(ro.join("probe"), b"x").is_ok();
    let _ = fs::remove_file(ro.join("probe"));
    for row in ROWS.iter().filter(|r| r.flag != "--resume") {
        let target = ro.join(format!("{}-{}", row.cmd, &row.flag[2..]));
        for (args, input) in (row.forms)(f, &target) {
            let before = fs::read(&input).unwrap();
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = nf(&a);
            if writable {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let _ = fs::remove_dir_all(&target);
                let _ = fs::remove_file(&target);
            } else {
                assert_one_line_error(&o, row.flag);
                assert!(!target.exists());
            }
            assert_eq!(fs::read(&input).unwrap(), before);
        }
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(&ro).unwrap();
}

/// Run `args` with files limited to 1 KiB (RLIMIT_FSIZE, the signal it raises ignored, so a
/// write fails with EFBIG as on a full disk).
fn nf_with_full_disk(args: &[String]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 2; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_nf"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("sh")
}

/// A full disk: the write fails in one line naming the flag, the previous file at the target
/// (or the run's checkpoint) is left as it was and no temporary file stays behind.
#[test]
fn a_full_disk_leaves_the_previous_file() {
    let f = fixture();
    let dir = tmp("full");
    fs::create_dir_all(&dir).unwrap();
    for row in ROWS {
        let target = if row.flag == "--resume" {
            let copy = dir.join("resumed");
            copy_dir(&f.killed, &copy);
            copy
        } else {
            dir.join(format!("{}-{}", row.cmd, &row.flag[2..]))
        };
        for (args, input) in (row.forms)(f, &target) {
            let previous = if row.dir {
                fs::create_dir_all(&target).unwrap();
                target.join("checkpoint.safetensors")
            } else {
                target.clone()
            };
            if !previous.exists() {
                fs::write(&previous, b"previous").unwrap();
            }
            let keep = [fs::read(&input).unwrap(), fs::read(&previous).unwrap()];
            let o = nf_with_full_disk(&args);
            if row.flag == "--out" && row.dir {
                // An existing checkpoint is a run to --resume, refused before anything is written.
                assert_one_line_error(&o, "--out");
                fs::remove_file(&previous).unwrap();
                let o = nf_with_full_disk(&args);
                assert_one_line_error(&o, "--out");
                assert!(!previous.exists(), "no checkpoint from a failed write");
            } else {
                assert_one_line_error(&o, row.flag);
                assert_eq!(
                    fs::read(&previous).unwrap(),
                    keep[1],
                    "nf {}",
                    args.join(" ")
                );
            }
            assert_eq!(fs::read(&input).unwrap(), keep[0]);
            let parent = if row.dir { target.clone() } else { dir.clone() };
            if parent.exists() {
                for e in fs::read_dir(&parent).unwrap().flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    assert!(!n.contains(".tmp-"), "temporary file left: {n}");
                }
            }
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// One run per `--out`: while a run writes into a directory, another `nf train --out` or
/// `--resume` on it is refused in one line; once it is killed, its lock does not block
/// `--resume`.
#[test]
fn a_run_directory_holds_one_run() {
    let f = fixture();
    let out = tmp("locked");
    let mut a = train_args(&f.json);
    a[2] = "synthetic:1x8x8:3000".into();
    a[6] = "1000".into();
    a.extend(["--out".into(), s(&out).into()]);
    let mut first = Command::new(env!("CARGO_BIN_EXE_nf"))
        .args(&a)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while cli_common::saved_state(&out).is_none() {
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = nf(&argv);
    assert_one_line_error(&o, "another nf run");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out"));
    let o = nf(&["train", "--resume", s(&out)]);
    assert_one_line_error(&o, "another nf run");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock died with its process: --resume continues (here: for one more epoch, then it
    // is killed as well; it got past the lock once it writes a newer checkpoint).
    let before = cli_common::saved_state(&out).unwrap();
    let resume = vec![
        "train".to_string(),
        "--resume".to_string(),
        s(&out).to_string(),
    ];
    let want = before["epoch"].as_u64().unwrap() + 1;
    assert!(
        cli_common::kill_at_checkpoint(&resume, &out, 0, want),
        "--resume after a kill did not continue"
    );
    fs::remove_dir_all(&out).unwrap();
}

/// Two runs started at once on one new `--out`: exactly one trains, the other is refused in
/// one line naming `--out`.
#[test]
fn two_runs_started_at_once_on_one_out() {
    let f = fixture();
    for round in 0..3 {
        let out = tmp(&format!("race-{round}"));
        let mut a = train_args(&f.json);
        a.extend(["--out".into(), s(&out).into()]);
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_nf"))
                .args(&a)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (c1, c2) = (spawn(), spawn());
        let (o1, o2) = (
            c1.wait_with_output().unwrap(),
            c2.wait_with_output().unwrap(),
        );
        let ok = [&o1, &o2].iter().filter(|o| o.status.success()).count();
        assert_eq!(ok, 1, "exactly one run trains");
        let refused = if o1.status.success() { &o2 } else { &o1 };
        assert_one_line_error(refused, "--out");
        assert!(cli_common::report(&out)["test_acc"].is_number());
        fs::remove_dir_all(&out).unwrap();
    }
}

/// Two output flags of one command naming one file are refused.
#[test]
fn two_outputs_on_one_file_are_refused() {
    let f = fixture();
    let dir = tmp("two-outputs");
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.out");
    let o = nf(&[
        "export",
        "--onnx",
        s(&out),
        "--safetensors",
        s(&out),
        s(&f.run),
    ]);
    assert_one_line_error(&o, "is also --safetensors");
    assert!(!out.exists());
    fs::remove_dir_all(&dir).unwrap();
}
