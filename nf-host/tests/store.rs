//! Model files and checkpoints: named tensors of a block, safetensors round trips, corrupt
//! files, atomic writes.
use std::path::{Path, PathBuf};

use nf_core::layout::{BlockLayout, SegMode};
use nf_core::plan::{adaptive_heads, plan, Mode, PlanOptions};
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_core::step::init_block;
use nf_core::tensors::{visit, Kind};
use nf_core::zoo::{RESNET18, VGG_SMALL};
use nf_host::store::{
    atomic_write, read_block, tensor_name, write_block, StoreError, Tensor, TensorStore,
};

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("store-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn vgg_plan(mode: Mode) -> nf_core::plan::Plan<'static> {
    plan(
        &VGG_SMALL,
        VGG_SMALL.input,
        10,
        64 << 20,
        mode,
        &PlanOptions::DEFAULT,
    )
    .unwrap()
}

/// Units 2..=4 of ResNet-18 (unit 3 is a strided basic block with a projection shortcut).
fn resnet_layout() -> BlockLayout<'static> {
    let heads = adaptive_heads(&RESNET18, RESNET18.input, &PlanOptions::DEFAULT);
    BlockLayout::new(
        &RESNET18,
        RESNET18.input,
        10,
        SegMode::Local,
        2,
        4,
        &heads,
        2,
    )
}

/// The persistent areas of a block: parameters, momentum and BN state of every segment.
fn persistent(layout: &BlockLayout) -> Vec<Region> {
    (0..layout.n_segments())
        .flat_map(|k| {
            [
                layout.seg_params[k],
                layout.seg_moms[k],
                layout.seg_state[k],
            ]
        })
        .collect()
}

/// An initialised arena whose momentum and state hold arbitrary bits (init leaves momentum at
/// zero), including NaN payloads, infinities, -0.0 and subnormals.
fn trained_like_arena(layout: &BlockLayout, seed: u64) -> Vec<f32> {
    let mut arena = vec![0.0; layout.floats];
    let mut be = ReferenceBackend::new(&mut arena);
    init_block(&mut be, layout, &mut Rng::new(seed)).unwrap();
    let mut rng = Rng::new(seed ^ 0x5eed);
    for k in 0..layout.n_segments() {
        for r in [layout.seg_moms[k], layout.seg_state[k]] {
            for v in &mut arena[r.offset..r.end()] {
                *v = rng.normal();
            }
        }
    }
    let p = layout.seg_params[0];
    let special = [
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        f32::from_bits(1),
    ];
    arena[p.offset..p.offset + special.len()].copy_from_slice(&special);
    arena
}

fn bits(arena: &[f32], r: Region) -> Vec<u32> {
    arena[r.offset..r.end()]
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// read_block -> save -> load -> write_block into a zeroed arena: the persistent areas come
/// back bit for bit, and nothing else is written.
fn round_trip(layout: &BlockLayout, dir: &Path) -> TensorStore {
    let mut arena = trained_like_arena(layout, 7);
    let mut store = TensorStore::new();
    store.metadata.insert("block".into(), "0".into());
    read_block(
        &mut ReferenceBackend::new(&mut arena),
        layout,
        &mut store,
        true,
    );
    let path = dir.join("ckpt.safetensors");
    store.save(&path).unwrap();
    let loaded = TensorStore::load(&path).unwrap();
    assert_eq!(loaded.metadata, store.metadata);
    assert_eq!(loaded.tensors.len(), store.tensors.len());
    for (name, t) in &store.tensors {
        let l = loaded.get(name).unwrap();
        assert_eq!(l.shape, t.shape, "{name}");
        let a: Vec<u32> = t.data.iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> = l.data.iter().map(|v| v.to_bits()).collect();
        assert_eq!(a, b, "{name}");
    }
    let mut fresh = vec![0.0; layout.floats];
    write_block(
        &mut ReferenceBackend::new(&mut fresh),
        layout,
        &loaded,
        true,
    )
    .unwrap();
    let areas = persistent(layout);
    for r in &areas {
        assert_eq!(bits(&arena, *r), bits(&fresh, *r), "area {r:?}");
    }
    let written: usize = areas.iter().map(|r| r.len()).sum();
    let nonzero_outside = fresh
        .iter()
        .enumerate()
        .filter(|(i, v)| v.to_bits() != 0 && !areas.iter().any(|r| r.offset <= *i && *i < r.end()))
        .count();
    assert_eq!(
        nonzero_outside, 0,
        "write_block wrote outside the persistent areas"
    );
    assert!(written > 0);
    loaded
}

/// Every parameter, momentum and state element of the block is named exactly once.
fn check_coverage(layout: &BlockLayout) {
    let mut count = vec![0u8; layout.floats];
    let mut n = 0;
    let mut names = std::collections::BTreeSet::new();
    visit(layout, |t| {
        n += 1;
        names.insert(tensor_name(&t));
        assert_eq!(
            t.region.len(),
            t.shape[..t.ndim()].iter().product::<usize>()
        );
        let regions = match t.kind {
            Kind::Param => {
                assert_eq!(t.momentum.len(), t.region.len());
                vec![t.region, t.momentum]
            }
            Kind::State => {
                assert!(t.momentum.is_empty());
                vec![t.region]
            }
        };
        for r in regions {
            for c in &mut count[r.offset..r.end()] {
                *c += 1;
            }
        }
    });
    assert_eq!(names.len(), n, "tensor names are not unique");
    let areas = persistent(layout);
    for r in &areas {
        assert!(
            count[r.offset..r.end()].iter().all(|&c| c == 1),
            "area {r:?} not covered exactly once"
        );
    }
    let total: usize = areas.iter().map(|r| r.len()).sum();
    assert_eq!(count.iter().map(|&c| c as usize).sum::<usize>(), total);
    // Parameter tensors alone add up to the segments' parameter regions.
    let mut params = 0;
    visit(layout, |t| {
        if t.kind == Kind::Param {
            params += t.region.len();
        }
    });
    let seg_params: usize = (0..layout.n_segments())
        .map(|k| layout.seg_params[k].len())
        .sum();
    assert_eq!(params, seg_params);
}

fn shape(store: &TensorStore, name: &str) -> Vec<usize> {
    store
        .get(name)
        .unwrap_or_else(|| panic!("no tensor {name}; have {:?}", store.tensors.keys()))
        .shape
        .clone()
}

#[test]
fn vgg_small_first_block_round_trips_with_pytorch_names() {
    let p = vgg_plan(Mode::NeuroFlux);
    let layout = p.layout(0);
    check_coverage(&layout);
    let store = round_trip(&layout, &test_dir("vgg-first"));
    let f = p.heads[0];
    assert_eq!(shape(&store, "units.0.0.weight"), [32, 1, 3, 3]);
    assert_eq!(shape(&store, "units.0.1.weight"), [32]);
    assert_eq!(shape(&store, "units.0.1.running_var"), [32]);
    assert_eq!(shape(&store, "units.0.1.running_mean"), [32]);
    assert_eq!(shape(&store, "heads.0.0.weight"), [f, 32, 3, 3]);
    assert_eq!(shape(&store, "heads.0.1.running_var"), [f]);
    assert_eq!(shape(&store, "heads.0.5.weight"), [10, 4 * f]);
    assert_eq!(shape(&store, "heads.0.5.bias"), [10]);
    assert_eq!(shape(&store, "momentum.units.0.0.weight"), [32, 1, 3, 3]);
    assert!(store.get("momentum.units.0.1.running_var").is_none());
    assert!(store.get("classifier.2.weight").is_none());
}

#[test]
fn vgg_small_last_block_has_the_classifier() {
    let p = vgg_plan(Mode::NeuroFlux);
    let layout = p.layout(p.n_blocks - 1);
    assert_eq!(layout.last, VGG_SMALL.units.len() - 1);
    check_coverage(&layout);
    let store = round_trip(&layout, &test_dir("vgg-last"));
    assert_eq!(shape(&store, "classifier.2.weight"), [10, 128]);
    assert_eq!(shape(&store, "classifier.2.bias"), [10]);
    assert_eq!(shape(&store, "units.3.0.weight"), [128, 128, 3, 3]);
    let last = VGG_SMALL.units.len() - 1;
    assert!(store
        .tensors
        .keys()
        .all(|n| !n.contains(&format!("heads.{last}."))));
}

#[test]
fn vgg_small_bp_block_round_trips() {
    let p = vgg_plan(Mode::Bp);
    assert_eq!(p.n_blocks, 1);
    let layout = p.layout(0);
    assert_eq!(layout.mode, SegMode::Global);
    check_coverage(&layout);
    let store = round_trip(&layout, &test_dir("vgg-bp"));
    assert_eq!(shape(&store, "units.0.0.weight"), [32, 1, 3, 3]);
    assert_eq!(shape(&store, "units.1.0.weight"), [64, 32, 3, 3]);
    assert_eq!(shape(&store, "units.3.1.running_var"), [128]);
    assert_eq!(shape(&store, "classifier.2.weight"), [10, 128]);
    assert!(store.tensors.keys().all(|n| !n.contains("heads.")));
    // Parameters of the model, without momentum: the conv, BN and linear weights of the spec.
    let params = store.param_count(|n| !n.starts_with("momentum.") && !n.contains("running_"));
    let expected = (9 * 32 + 2 * 32)
        + (32 * 9 * 64 + 2 * 64)
        + (64 * 9 * 128 + 2 * 128)
        + (128 * 9 * 128 + 2 * 128)
        + (128 * 10 + 10);
    assert_eq!(params, expected);
}

#[test]
fn resnet_projection_block_round_trips() {
    let layout = resnet_layout();
    check_coverage(&layout);
    let store = round_trip(&layout, &test_dir("resnet"));
    assert_eq!(shape(&store, "units.3.0.conv1.weight"), [128, 64, 3, 3]);
    assert_eq!(shape(&store, "units.3.0.conv2.weight"), [128, 128, 3, 3]);
    assert_eq!(shape(&store, "units.3.0.bn2.running_var"), [128]);
    assert_eq!(
        shape(&store, "units.3.0.shortcut.0.weight"),
        [128, 64, 1, 1]
    );
    assert_eq!(shape(&store, "units.3.0.shortcut.1.weight"), [128]);
    assert_eq!(shape(&store, "units.3.0.shortcut.1.running_mean"), [128]);
    assert!(store.get("units.2.0.shortcut.0.weight").is_none());
    assert!(store.get("units.4.0.shortcut.0.weight").is_none());
    assert_eq!(shape(&store, "heads.3.0.weight")[1], 128);
}

#[test]
fn write_block_rejects_missing_and_misshapen_tensors() {
    let p = vgg_plan(Mode::NeuroFlux);
    let layout = p.layout(0);
    let mut arena = trained_like_arena(&layout, 3);
    let mut store = TensorStore::new();
    read_block(
        &mut ReferenceBackend::new(&mut arena),
        &layout,
        &mut store,
        false,
    );
    let mut fresh = vec![0.0; layout.floats];

    // Without momentum in the store, a momentum restore fails and names the buffer.
    let e = write_block(
        &mut ReferenceBackend::new(&mut fresh),
        &layout,
        &store,
        true,
    )
    .unwrap_err();
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("momentum.units.0.0.weight"), "{e}");
    assert!(
        fresh.iter().all(|v| v.to_bits() == 0),
        "arena touched on error"
    );
    write_block(
        &mut ReferenceBackend::new(&mut fresh),
        &layout,
        &store,
        false,
    )
    .unwrap();

    let mut missing = store.clone();
    missing.tensors.remove("heads.0.5.bias");
    let e = write_block(
        &mut ReferenceBackend::new(&mut fresh),
        &layout,
        &missing,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("heads.0.5.bias"), "{e}");

    let mut bad = store.clone();
    bad.insert("units.0.0.weight", vec![32, 1, 9], vec![0.0; 288]);
    let e = write_block(&mut ReferenceBackend::new(&mut fresh), &layout, &bad, false).unwrap_err();
    assert!(matches!(e, StoreError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("units.0.0.weight"), "{e}");

    let mut short = store.clone();
    short.tensors.insert(
        "units.0.1.bias".into(),
        Tensor {
            shape: vec![32],
            data: vec![0.0; 31],
        },
    );
    let e = write_block(
        &mut ReferenceBackend::new(&mut fresh),
        &layout,
        &short,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("units.0.1.bias"), "{e}");
}

fn small_store() -> TensorStore {
    let mut s = TensorStore::new();
    s.insert(
        "a.weight",
        vec![2, 3],
        (0..6).map(|i| i as f32 * 0.5).collect(),
    );
    s.insert("b", vec![1], vec![-1.0]);
    s.insert("scalar", vec![], vec![42.0]);
    s.insert("empty", vec![0, 4], vec![]);
    s.metadata.insert("model".into(), "vgg-small".into());
    s
}

#[test]
fn small_store_round_trips_and_counts_params() {
    let dir = test_dir("small");
    let path = dir.join("m.safetensors");
    let s = small_store();
    s.save(&path).unwrap();
    let l = TensorStore::load(&path).unwrap();
    assert_eq!(l.tensors, s.tensors);
    assert_eq!(l.metadata, s.metadata);
    assert_eq!(l.param_count(|_| true), 8);
    assert_eq!(l.param_count(|n| n.starts_with("a.")), 6);
    // The header is plain safetensors: 8-byte length, JSON with dtype F32 and __metadata__.
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["a.weight"]["dtype"], "F32");
    assert_eq!(header["a.weight"]["shape"], serde_json::json!([2, 3]));
    assert_eq!(header["__metadata__"]["model"], "vgg-small");
}

/// `load` on `bytes` written to a file: never panics; an error is one line naming the file.
fn load_bytes(path: &Path, bytes: &[u8]) -> Result<TensorStore, String> {
    std::fs::write(path, bytes).unwrap();
    TensorStore::load(path).map_err(|e| {
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'), "multi-line: {msg}");
        msg
    })
}

/// A hand-made safetensors file.
fn raw_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(vec![0u8; data_len]);
    b
}

#[test]
fn bad_files_give_one_line_errors_naming_the_file() {
    let dir = test_dir("bad");
    let path = dir.join("bad.safetensors");

    let missing = dir.join("nope.safetensors");
    let e = TensorStore::load(&missing).unwrap_err().to_string();
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("cannot read"),
        "{e}"
    );

    let e = load_bytes(&path, b"").unwrap_err();
    assert!(e.contains("not a safetensors file"), "{e}");
    let e = load_bytes(&path, b"\x89PNG\r\n\x1a\n0000000000000000").unwrap_err();
    assert!(e.contains("not a safetensors file"), "{e}");
    let e = load_bytes(&path, &raw_file("{not json", 0)).unwrap_err();
    assert!(e.contains("corrupt header"), "{e}");

    let good = small_store().to_bytes().unwrap();
    let e = load_bytes(&path, &good[..good.len() - 3]).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let e = load_bytes(&path, &good[..20]).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let mut long = good.clone();
    long.extend([0u8; 5]);
    let e = load_bytes(&path, &long).unwrap_err();
    assert!(e.contains("5 unexpected bytes"), "{e}");

    let f64_file = raw_file(
        r#"{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#,
        16,
    );
    let e = load_bytes(&path, &f64_file).unwrap_err();
    assert!(e.contains("dtype F64") && e.contains("`x`"), "{e}");

    let mismatch = raw_file(
        r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        8,
    );
    let e = load_bytes(&path, &mismatch).unwrap_err();
    assert!(e.contains("corrupt"), "{e}");

    let overflow = raw_file(
        r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        8,
    );
    load_bytes(&path, &overflow).unwrap_err();

    let e = load_bytes(&path, &u64::MAX.to_le_bytes()).unwrap_err();
    assert!(e.contains("not a safetensors file"), "{e}");
}

#[test]
fn truncated_and_bit_flipped_files_never_panic() {
    let dir = test_dir("fuzz");
    let path = dir.join("fuzz.safetensors");
    let good = small_store().to_bytes().unwrap();
    for cut in 0..good.len() {
        load_bytes(&path, &good[..cut]).unwrap_err();
    }
    let mut rng = Rng::new(11);
    let mut accepted = 0;
    for byte in 0..good.len() {
        for bit in [0u8, 3, 7] {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            accepted += load_bytes(&path, &b).is_ok() as usize;
        }
        // A few multi-byte corruptions too.
        let mut b = good.clone();
        for _ in 0..4 {
            let i = rng.below(b.len() as u32) as usize;
            b[i] = rng.next_u32() as u8;
        }
        let _ = load_bytes(&path, &b);
    }
    // Flips inside the tensor data are (correctly) still valid files.
    assert!(accepted > 0);
}

#[test]
fn atomic_write_replaces_content_and_leaves_no_temp_file() {
    let dir = test_dir("atomic");
    let path = dir.join("report.json");
    atomic_write(&path, b"old").unwrap();
    // A stale temp file from a crashed run does not get in the way.
    let tmp = dir.join(format!(".report.json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, b"garbage from a crash").unwrap();
    atomic_write(&path, b"new contents").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["report.json"]);

    // A failed write leaves the target alone and cleans up.
    let blocker = dir.join("sub");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep"), b"x").unwrap();
    atomic_write(&blocker, b"data").unwrap_err();
    assert!(blocker.join("keep").exists());
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp-")));
    atomic_write(&dir.join("missing-dir/x"), b"data").unwrap_err();

    // save goes through the same path: a failed save names the file.
    let e = small_store().save(&blocker).unwrap_err().to_string();
    assert!(
        e.contains(&blocker.display().to_string()) && e.contains("cannot write"),
        "{e}"
    );
}
