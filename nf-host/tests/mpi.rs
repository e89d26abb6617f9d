//! `nf train` under a real `mpirun` (Open MPI; the `mpi` feature: `cargo test -p nf-host
//! --features mpi --test mpi`). These tests fail, not skip, when `mpirun` is missing: the test
//! command (scripts/test.sh) installs it.
//!
//! - two ranks give model files bit-identical to the single-process reference that trains the
//!   same two shards as threads and sums in rank order (`--virtual-ranks 2`), every rank's
//!   peak resident memory within its planned total + 16 MiB;
//! - on a model without batch norm, two ranks agree with one process at the same global batch
//!   within 1e-5 relative (one step per epoch, so that both see the same global batches), with
//!   and without `--augment` (keyed by the global sample index, so ranks augment as one
//!   process does); `--augment` under two ranks is bit-identical to `--virtual-ranks 2`;
//! - three ranks (an uneven split) and four run, every rank holding the same weights (rank 0
//!   checks a hash of every rank's before it writes anything);
//! - a rank killed with SIGKILL ends the job within 30 s with a non-zero exit, and `--resume`
//!   under mpirun then finishes with the model files of an uninterrupted run;
//! - `--ranks` that is not the world's size: one line, exit 2.
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod cli_common;
use cli_common::{nf_ok, report, s, saved_state};

/// The bundled data, small and quick: 1 epoch per block, one worker thread per rank.
const QUICK: &[&str] = &["--limit", "200", "--epochs", "1", "--threads", "1"];

fn tmp(name: &str) -> std::path::PathBuf {
    cli_common::tmp("mpi", name)
}

fn mpirun_command(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
        "-np",
    ])
    .arg(np.to_string())
    .arg(env!("CARGO_BIN_EXE_nf"))
    .args(args)
    .env("NO_COLOR", "1")
    // Open MPI refuses to run as root without both of these (CI runs as root).
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

/// `nf` with `args` under `mpirun -np np`; its output. Panics when mpirun is missing.
fn mpirun(np: usize, args: &[&str]) -> Output {
    mpirun_command(np, args)
        .output()
        .expect("run mpirun (install openmpi-bin: scripts/test.sh does)")
}

fn mpirun_ok(np: usize, args: &[&str]) {
    let o = mpirun(np, args);
    assert!(
        o.status.success(),
        "mpirun -np {np} nf {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
}

fn args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", "--out", s(out)];
    a.extend_from_slice(QUICK);
    a.extend_from_slice(extra);
    a
}

fn same_files(a: &Path, b: &Path) {
    for f in ["model.safetensors", "exit.safetensors"] {
        let (x, y) = (fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} of {} and {} differ", a.display(), b.display());
    }
}

#[test]
fn two_ranks_are_bit_identical_to_the_virtual_ranks_reference() {
    let (mpi, reference) = (tmp("np2"), tmp("virtual2"));
    mpirun_ok(2, &args(&mpi, &[]));
    nf_ok(&args(&reference, &["--virtual-ranks", "2"]));
    same_files(&mpi, &reference);
    let r = report(&mpi);
    assert_eq!(r["world"], 2);
    for b in r["blocks"].as_array().unwrap() {
        assert_eq!(
            b["global_batch_size"],
            b["batch_size"].as_u64().unwrap() * 2
        );
    }
    // Every rank's peak resident memory within its planned total + 16 MiB (the planned total
    // names MPI's own memory and the reduction buffers).
    let planned = r["planned_total_bytes"].as_u64().unwrap();
    let m = &r["memory"];
    assert!(m["mpi_bytes"].as_u64().unwrap() > 0, "{m}");
    assert!(m["reduce_bytes"].as_u64().unwrap() > 0, "{m}");
    let peaks = r["rank_peak_rss_bytes"].as_array().unwrap();
    assert_eq!(peaks.len(), 2);
    for (k, p) in peaks.iter().enumerate() {
        let p = p.as_u64().unwrap();
        println!("rank {k}: planned {planned}, peak RSS {p}");
        assert!(
            p > 0 && p <= planned + (16 << 20),
            "rank {k}: {p} > {planned} + 16 MiB"
        );
    }
}

/// A model without batch norm: two convolutions with bias, trained by backpropagation (no
/// auxiliary heads, whose batch norm would make the batch statistics per rank).
const NO_BN: &str = r#"{"name": "no-bn", "units": [
    [{"op": "conv", "out": 8, "bias": true}, {"op": "relu"}, {"op": "maxpool2"}],
    [{"op": "conv", "out": 16, "bias": true}, {"op": "relu"}, {"op": "maxpool2"}]]}"#;

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let st = nf_host::store::TensorStore::load(&dir.join("model.safetensors")).unwrap();
    st.tensors.into_iter().map(|(k, t)| (k, t.data)).collect()
}

#[test]
fn two_ranks_agree_with_one_process_at_the_same_global_batch() {
    agree_with_one_process("nobn", &[]);
}

/// `--augment` keys a sample's crop and flip by its index in the whole training split, not in
/// its rank's shard: two ranks augment as one process does (so they agree within rounding on a
/// model without batch norm), and as the single-process reference of two ranks does.
#[test]
fn two_ranks_augment_each_sample_as_one_process_does() {
    agree_with_one_process("nobn-augment", &["--augment"]);
    let (mpi, reference) = (tmp("np2-augment"), tmp("virtual2-augment"));
    mpirun_ok(2, &args(&mpi, &["--augment"]));
    nf_ok(&args(&reference, &["--augment", "--virtual-ranks", "2"]));
    same_files(&mpi, &reference);
    assert_eq!(report(&mpi)["augment"]["flip"], true);
}

/// Two ranks of batch 16 against one process of batch 32 (one step per epoch) on the model
/// without batch norm, `extra` flags added to both: the largest relative weight difference is
/// under 1e-5.
fn agree_with_one_process(name: &str, extra: &[&str]) {
    let dir = tmp(name);
    fs::create_dir_all(&dir).unwrap();
    let model = dir.join("no-bn.json");
    fs::write(&model, NO_BN).unwrap();
    // 36 samples, 4 held out: 32 to train, one global batch of 32 (16 per rank), so every
    // epoch is the same single global batch in both runs.
    let common = |out: &Path, batch: &'static str| -> Vec<String> {
        [
            "train",
            "--out",
            s(out),
            "--model",
            s(&model),
            "--mode",
            "bp",
            "--limit",
            "36",
            "--epochs",
            "2",
            "--threads",
            "1",
            "--batch-min",
            batch,
            "--batch-max",
            batch,
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
    };
    let (mpi, one) = (dir.join("np2"), dir.join("one"));
    let a = common(&mpi, "16");
    mpirun_ok(2, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let b = common(&one, "32");
    nf_ok(&b.iter().map(String::as_str).collect::<Vec<_>>());
    let (wa, wb) = (weights(&mpi), weights(&one));
    assert_eq!(wa.len(), wb.len());
    let mut largest = 0f32;
    for ((na, a), (nb, b)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            largest = largest.max((x - y).abs() / scale);
        }
    }
    println!("largest relative weight difference: {largest:e}");
    assert!(largest < 1e-5, "{largest}");
    assert_eq!(report(&mpi)["blocks"][0]["global_batch_size"], 32);
}

#[test]
fn three_and_four_ranks_hold_the_same_weights() {
    for np in [3, 4] {
        let out = tmp(&format!("np{np}"));
        // Rank 0 writes the model files only after every rank's weights hash the same.
        mpirun_ok(np, &args(&out, &[]));
        let r = report(&out);
        assert_eq!(r["world"], np);
        assert_eq!(r["rank_peak_rss_bytes"].as_array().unwrap().len(), np);
        // 180 training samples (200 less 20 held out): 60 or 45 per rank.
        assert_eq!(r["samples"]["train"], 180);
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the comm may hold spaces, so split after its ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(1) == Some(&pid.to_string()) {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_killed_rank_ends_the_job_and_resume_finishes_it() {
    let (killed, whole) = (tmp("killed"), tmp("whole"));
    let a = |out| {
        let mut v = vec!["train", "--out", out, "--limit", "400", "--threads", "1"];
        v.extend(["--epochs", "2"]);
        v
    };
    let mut child = mpirun_command(2, &a(s(&killed)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");
    // Wait for the first checkpoint (block 1 epoch 1), then kill rank 1 outright.
    let t0 = Instant::now();
    while saved_state(&killed).is_none_or(|v| v["epoch"] != 1) {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ranks: Vec<u32> = children(child.id())
        .into_iter()
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.contains("train"))
        })
        .collect();
    assert_eq!(ranks.len(), 2, "the ranks under mpirun: {ranks:?}");
    let killed_at = Instant::now();
    Command::new("kill")
        .args(["-9", &ranks[1].to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the job did not end within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("the job ended {:?} after the kill", killed_at.elapsed());
    assert!(!status.success());
    // No model file that looks complete; the checkpoint continues the run.
    assert!(!killed.join("model.safetensors").exists());
    mpirun_ok(2, &["train", "--resume", s(&killed)]);
    mpirun_ok(2, &a(s(&whole)));
    same_files(&killed, &whole);
}

#[test]
fn a_world_of_another_size_is_refused_in_one_line() {
    // Under mpirun: the ranks agree, rank 0 says it once.
    let out = tmp("ranks");
    let o = mpirun(2, &args(&out, &["--ranks", "3"]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].starts_with("error: --ranks 3: this process is one of 2 rank(s)"),
        "{err}"
    );
    // Started without a launcher (what another MPI's launcher gives): a world of one.
    let o = cli_common::nf(&args(&out, &["--ranks", "2"]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --ranks 2: this process is one of 1 rank(s)"));
    assert!(!out.join("report.json").exists());
}
