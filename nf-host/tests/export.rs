//! `nf export --onnx`: the exported full and exit models of three short runs (vgg-small, the
//! same on a padded input with pooling heads, a model with residual blocks), run by
//! onnxruntime on the bundled test set, score what `nf eval` scores (within 0.1 points) and
//! predict the same class for at least 99.5% of the images, with logits within 1e-3 (relative)
//! of nf's; a zoo model file with random weights (ResNet-18's stem and first two blocks, ending
//! in a head) gives nf's logits too; the file is valid protobuf with the declared graph; bad input is one
//! line `error: ...` with exit code 2 and writes nothing.
//!
//! onnxruntime runs in `scripts/onnx_check.py`, under the Python of `NF_ONNX_PYTHON`
//! (`scripts/test.sh` installs numpy and onnxruntime into `target/pyenv` and sets it), else
//! `target/pyenv/bin/python3` when present. Without one that imports both, the onnxruntime
//! checks are skipped with a message, except under `NF_REQUIRE_TOOLS=1` (set by
//! `scripts/test.sh`), where the test fails.
mod cli_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cli_common::{assert_one_line_error, nf, nf_ok, s, tmp};
use nf_core::infer::InferLayout;
use nf_core::layout::{Kernels, Workspace};
use nf_core::model::{ModelSpec, Shape, MAX_UNITS};
use nf_core::region::Region;
use nf_core::tensors::{visit_chain, Kind};
use nf_host::export::proto::ModelProto;
use nf_host::store::{tensor_name, TensorStore};
use prost::Message;
use serde_json::Value;

fn require_tools() -> bool {
    std::env::var_os("NF_REQUIRE_TOOLS").is_some_and(|v| v == "1")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python that imports numpy and onnxruntime, or why there is none (then the test fails
/// under `NF_REQUIRE_TOOLS=1` and is skipped otherwise).
fn python() -> Option<PathBuf> {
    let py = std::env::var_os("NF_ONNX_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/pyenv/bin/python3"));
    let ok = Command::new(&py)
        .args(["-c", "import numpy, onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let why = format!(
        "{} cannot import numpy and onnxruntime (scripts/test.sh installs them into \
         target/pyenv and sets NF_ONNX_PYTHON)",
        py.display()
    );
    assert!(
        !require_tools(),
        "NF_REQUIRE_TOOLS=1 (scripts/test.sh): the onnxruntime check must run, but {why}"
    );
    eprintln!("skipped the onnxruntime check: {why}");
    None
}

/// `nf eval --json --predictions` of `model` (a file or a run directory) on `data`.
fn eval(model: &Path, data: &Path, predictions: &Path) -> Value {
    let out = nf_ok(&[
        "eval",
        "--model",
        s(model),
        "--data",
        s(data),
        "--threads",
        "2",
        "--json",
        "--predictions",
        s(predictions),
    ]);
    serde_json::from_str(&out).expect("JSON")
}

/// The test accuracy of `file` in `nf eval --json` output.
fn nf_acc(eval: &Value, file: &Path) -> f64 {
    eval["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["file"] == s(file))
        .unwrap_or_else(|| panic!("no {} in {eval}", file.display()))["test_acc"]
        .as_f64()
        .unwrap()
}

/// The ONNX file's graph checked against its model file: IR 7, opset 13, input `image`,
/// output `logits`, every initializer a tensor of the file (or the input constants), the op
/// types used, and the parameter count `nf export` prints.
fn check_structure(onnx: &Path, model: &Path, must_have: &[&str]) {
    let m = ModelProto::decode(fs::read(onnx).unwrap().as_slice()).expect("valid protobuf");
    assert_eq!(m.ir_version, 7);
    assert_eq!(m.opset_import[0].version, 13);
    let g = m.graph.expect("a graph");
    assert_eq!(g.input[0].name, "image");
    assert_eq!(g.output[0].name, "logits");
    let store = TensorStore::load(model).unwrap();
    for t in &g.initializer {
        assert!(
            t.name.starts_with("input.") || store.get(&t.name).is_some(),
            "initializer {} is not in {}",
            t.name,
            model.display()
        );
    }
    for op in must_have {
        assert!(
            g.node.iter().any(|n| n.op_type == *op),
            "no {op} in {}",
            onnx.display()
        );
    }
    let allowed = [
        "Pad",
        "Sub",
        "Div",
        "Conv",
        "BatchNormalization",
        "Relu",
        "MaxPool",
        "GlobalAveragePool",
        "AveragePool",
        "Flatten",
        "Gemm",
        "Add",
        "Reshape",
    ];
    for n in &g.node {
        assert!(allowed.contains(&n.op_type.as_str()), "{}", n.op_type);
    }
    let meta: std::collections::HashMap<_, _> = m
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(meta["nf.mean"], store.metadata["mean"]);
    assert_eq!(meta["exit_unit"], store.metadata["exit"]);
}

/// Export `file` to `onnx` and, with `py`, check it with onnxruntime against nf's predictions
/// (the `model` column `file`'s name) and accuracy `acc`; the script's JSON result.
fn export_and_check(
    py: Option<&Path>,
    args: &[&str],
    onnx: &Path,
    data: &Path,
    predictions: &Path,
    file: &Path,
    acc: Option<f64>,
) -> Option<Value> {
    let mut a = vec!["export", "--onnx", s(onnx)];
    a.extend_from_slice(args);
    let line = nf_ok(&a);
    assert!(line.starts_with(&format!("wrote {}", s(onnx))), "{line}");
    let py = py?;
    let name = file.file_name().unwrap().to_str().unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("scripts/onnx_check.py"))
        .arg(onnx)
        .args(["--data", s(data), "--predictions", s(predictions)])
        .args(["--model-name", name]);
    if let Some(acc) = acc {
        cmd.args(["--nf-acc", &acc.to_string()]);
    }
    let o = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "onnx_check.py {}: {stdout}{}",
        onnx.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).expect("JSON"))
}

#[test]
fn exported_models_match_nf_eval() {
    let py = python();
    let data = repo().join("fixtures/fashion-mnist");
    let root = tmp("export", "runs");
    // vgg-small; vgg-small on a padded input with pooling heads (Pad, AveragePool); a model
    // with residual blocks (identity and projection shortcuts) described on the command line.
    let vgg = ["Conv", "BatchNormalization", "Relu", "MaxPool", "Gemm"];
    for (name, extra, full_ops) in [
        ("vgg-small", &[][..], &vgg[..]),
        ("padded", &["--pad", "2", "--head-pool", "4"][..], &vgg[..]),
        (
            "residual",
            &["--model", "16,R16,R32s2"][..],
            &[
                "Conv",
                "BatchNormalization",
                "Relu",
                "Add",
                "GlobalAveragePool",
                "Gemm",
            ][..],
        ),
    ] {
        let run = root.join(name);
        let mut a = vec!["train", "--epochs", "2", "--limit", "2000"];
        a.extend_from_slice(&["--threads", "2"]);
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--out", s(&run)]);
        nf_ok(&a);
        let predictions = run.join("predictions.csv");
        let ev = eval(&run, &data, &predictions);
        let last_unit = TensorStore::load(&run.join("model.safetensors"))
            .unwrap()
            .metadata["exit"]
            .clone();
        for (which, file) in [("full", "model.safetensors"), ("exit", "exit.safetensors")] {
            let file = run.join(file);
            let onnx = run.join(format!("{which}.onnx"));
            let acc = nf_acc(&ev, &file);
            let r = export_and_check(
                py.as_deref(),
                &[s(&run), "--which", which],
                &onnx,
                &data,
                &predictions,
                &file,
                Some(acc),
            );
            let exit = TensorStore::load(&file).unwrap().metadata["exit"].clone();
            let mut ops = if which == "full" {
                full_ops.to_vec()
            } else {
                vec!["Conv", "BatchNormalization", "Relu", "Gemm"]
            };
            if name == "padded" {
                ops.push("Pad");
                // A head on a unit output of 16x16 or 8x8 pools it to 4x4 first.
                if exit != last_unit {
                    ops.push("AveragePool");
                }
            }
            check_structure(&onnx, &file, &ops);
            if let Some(r) = r {
                eprintln!("{name} {which} (exit unit {exit}): {r}");
                assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");
                assert!((r["accuracy"].as_f64().unwrap() - acc).abs() <= 0.001 + 1e-9);
                assert!(r["agreement"].as_f64().unwrap() >= 0.995, "{r}");
            }
        }
        cuts_at_every_unit(&run, &last_unit);
    }
    let _ = fs::remove_dir_all(&root);
}

/// `nf export --unit K` (issue 25): the full model cut at every unit is a model file `nf eval`
/// reads, its ONNX export has the same accuracy, and the cut at the unit `nf train` chose is
/// exit.safetensors byte for byte (same tensors, metadata and checksums).
fn cuts_at_every_unit(run: &Path, last_unit: &str) {
    let exit = TensorStore::load(&run.join("exit.safetensors"))
        .unwrap()
        .metadata["exit"]
        .clone();
    let units: usize = last_unit.parse::<usize>().unwrap() + 1;
    for k in 0..units {
        let cut = run.join(format!("cut{k}.safetensors"));
        let onnx = run.join(format!("cut{k}.onnx"));
        let ks = k.to_string();
        let line = nf_ok(&[
            "export",
            "--unit",
            &ks,
            "--safetensors",
            s(&cut),
            "--onnx",
            s(&onnx),
            s(run),
        ]);
        assert!(line.contains(&format!("units 0..={k}")), "{line}");
        let store = TensorStore::load(&cut).unwrap();
        assert_eq!(store.metadata["exit"], ks);
        let ending = if k + 1 == units {
            "classifier.".to_string()
        } else {
            format!("heads.{k}.")
        };
        assert!(store.tensors.keys().any(|n| n.starts_with(&ending)), "{k}");
        assert!(!store
            .tensors
            .keys()
            .any(|n| n.starts_with(&format!("units.{}.", k + 1))));
        let ev = nf_ok(&["eval", "--model", s(&cut)]);
        assert!(ev.contains('%'), "{ev}");
        if ks == exit {
            assert_eq!(
                fs::read(&cut).unwrap(),
                fs::read(run.join("exit.safetensors")).unwrap(),
                "--unit {k} is not exit.safetensors"
            );
        }
        let _ = fs::remove_file(&cut);
        let _ = fs::remove_file(&onnx);
    }
    // One line, exit 2: a unit past the model, a cut past an exit file's units, --which with it.
    let past = units.to_string();
    let out = run.join("never.safetensors");
    for (args, needle) in [
        (
            vec!["export", "--unit", &past, "--safetensors", s(&out), s(run)],
            "--unit",
        ),
        (
            vec![
                "export",
                "--unit",
                "0",
                "--which",
                "full",
                "--onnx",
                s(&out),
                s(run),
            ],
            "--which",
        ),
        (vec!["export", s(run)], "nothing to write"),
    ] {
        assert_one_line_error(&nf(&args), needle);
    }
    if exit != last_unit {
        let after = (exit.parse::<usize>().unwrap() + 1).to_string();
        let file = run.join("exit.safetensors");
        assert_one_line_error(
            &nf(&[
                "export",
                "--unit",
                &after,
                "--safetensors",
                s(&out),
                s(&file),
            ]),
            "exit file",
        );
    }
    assert!(!out.exists());
}

/// A small deterministic generator for the random model and data.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// An IDX file: big-endian magic (u8 data, `dims.len()` dimensions), dimensions, bytes.
fn write_idx(path: &Path, dims: &[u32], bytes: &[u8]) {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(bytes);
    fs::write(path, v).unwrap();
}

#[test]
fn exported_residual_model_matches_nf() {
    let py = python();
    let root = tmp("export", "resnet");
    fs::create_dir_all(&root).unwrap();
    // The bundled test images' centres, 12x12 (a small input keeps ResNet-18's blocks cheap).
    let data = root.join("data");
    fs::create_dir_all(&data).unwrap();
    let read_gz = |name: &str| {
        let f = fs::File::open(repo().join("fixtures/fashion-mnist").join(name)).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(f), &mut v).unwrap();
        v
    };
    let (images, labels) = (
        read_gz("t10k-images-idx3-ubyte.gz"),
        read_gz("t10k-labels-idx1-ubyte.gz"),
    );
    let n = 200;
    let mut px = Vec::with_capacity(n * 144);
    for i in 0..n {
        let img = &images[16 + i * 784..16 + (i + 1) * 784];
        for row in img.chunks_exact(28).skip(8).take(12) {
            px.extend_from_slice(&row[8..20]);
        }
    }
    for prefix in ["train", "t10k"] {
        write_idx(
            &data.join(format!("{prefix}-images-idx3-ubyte")),
            &[n as u32, 12, 12],
            &px,
        );
        write_idx(
            &data.join(format!("{prefix}-labels-idx1-ubyte")),
            &[n as u32],
            &labels[8..8 + n],
        );
    }
    let mut rng = Lcg(7);
    // ResNet-18's stem (unit 0), a block with an identity shortcut (unit 1) and one with a
    // projection (unit 2), ending in unit 2's head: the early-exit model file of such a run.
    let model: ModelSpec = nf_core::zoo::RESNET18;
    let input = Shape::new(1, 12, 12);
    let (classes, exit) = (10, 2);
    let mut heads = [0usize; MAX_UNITS];
    heads[..model.units.len() - 1].fill(8);
    let k = Kernels {
        workers: 1,
        workspace: Workspace::Fixed(0),
        ..Kernels::REFERENCE
    };
    let chain = InferLayout::new(
        &model,
        input,
        classes,
        &heads,
        exit,
        true,
        1,
        0,
        &k,
        Region::NONE,
    );
    let mut store = TensorStore::new();
    visit_chain(&chain, |t| {
        let shape: Vec<usize> = t.shape[..t.ndim()].to_vec();
        let len: usize = shape.iter().product();
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        let name = tensor_name(&t);
        let data: Vec<f32> = (0..len)
            .map(|_| {
                let r = rng.next();
                match (t.kind, name.rsplit('.').next().unwrap()) {
                    (Kind::State, "running_var") => 0.5 + r,
                    (Kind::State, _) => r - 0.5,
                    (_, "weight") if shape.len() == 1 => 0.5 + r,
                    (_, "bias") => 0.2 * (r - 0.5),
                    _ => (r - 0.5) * (12.0 / fan_in as f32).sqrt(),
                }
            })
            .collect();
        store.insert(name, shape, data);
    });
    for (k, v) in [
        ("format", "neuroflux".to_string()),
        ("model", model.name.to_string()),
        ("input", "1x12x12".into()),
        ("classes", classes.to_string()),
        ("head_pool", "0".into()),
        ("pad", "0".into()),
        ("mode", "neuroflux".into()),
        (
            "heads",
            serde_json::json!(heads[..model.units.len()]).to_string(),
        ),
        ("exit", exit.to_string()),
        ("mean", "[0.5]".into()),
        ("std", "[0.25]".into()),
    ] {
        store.metadata.insert(k.into(), v);
    }
    let file = root.join("exit.safetensors");
    store.save(&file).unwrap();

    let predictions = root.join("predictions.csv");
    let ev = eval(&file, &data, &predictions);
    let onnx = root.join("exit.onnx");
    let r = export_and_check(
        py.as_deref(),
        &[s(&file)],
        &onnx,
        &data,
        &predictions,
        &file,
        Some(nf_acc(&ev, &file)),
    );
    check_structure(&onnx, &file, &["Conv", "BatchNormalization", "Add", "Gemm"]);
    if let Some(r) = r {
        assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");
        assert!(r["agreement"].as_f64().unwrap() >= 0.995, "{r}");
        // Random weights, but not a constant prediction: the logits carry the images.
        assert!(r["classes_predicted"].as_u64().unwrap() >= 3, "{r}");
    }
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let root = tmp("export", "bad");
    fs::create_dir_all(&root).unwrap();
    let out = root.join("out.onnx");
    let missing = root.join("missing.safetensors");
    assert_one_line_error(
        &nf(&["export", "--onnx", s(&out), s(&missing)]),
        "missing.safetensors",
    );
    let not_model = root.join("report.json");
    fs::write(&not_model, "{}").unwrap();
    assert_one_line_error(
        &nf(&["export", "--onnx", s(&out), s(&not_model)]),
        "report.json",
    );
    // A safetensors file that is not an nf model.
    let mut st = TensorStore::new();
    st.insert("w", vec![2], vec![1.0, 2.0]);
    let other = root.join("other.safetensors");
    st.save(&other).unwrap();
    assert_one_line_error(
        &nf(&["export", "--onnx", s(&out), s(&other)]),
        "not an nf model file",
    );
    assert_one_line_error(
        &nf(&["export", "--onnx", s(&out), s(&other), "--which", "full"]),
        "--which",
    );
    // A run directory without model files.
    assert_one_line_error(
        &nf(&["export", "--onnx", s(&out), s(&root)]),
        "exit.safetensors",
    );
    assert!(!out.exists());
    // An unwritable output: a missing directory, or a directory.
    let run = root.join("run");
    nf_ok(&[
        "train",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--threads",
        "2",
        "--out",
        s(&run),
    ]);
    let nowhere = root.join("no/such/dir/x.onnx");
    assert_one_line_error(&nf(&["export", "--onnx", s(&nowhere), s(&run)]), "--onnx");
    assert_one_line_error(&nf(&["export", "--onnx", s(&root), s(&run)]), "--onnx");
    // Nothing half-written beside the outputs.
    let left: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let _ = fs::remove_dir_all(&root);
}
