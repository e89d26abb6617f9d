//! Unit tests of `nf_predict`: after training, classifying the test split one sample at a time
//! gives exactly the trainer's own accuracy of every evaluated head; bad calls get codes.
use core::ffi::c_void;

use super::*;

const IN: usize = 10 * 10;

/// Sample `index` of a split: a noisy pattern that depends on its class (`index % 3`).
pub(crate) fn sample(split: u32, index: u32) -> ([f32; IN], u32) {
    let class = index % 3;
    let mut x = [0f32; IN];
    let mut h = (split * 7919 + index).wrapping_mul(2_654_435_761);
    for (i, v) in x.iter_mut().enumerate() {
        h ^= h << 13;
        h ^= h >> 17;
        h ^= h << 5;
        let noise = (h % 1000) as f32 / 1000.0 - 0.5;
        let signal = if (i / 10) as u32 % 3 == class {
            1.0
        } else {
            -0.5
        };
        *v = signal + noise;
    }
    (x, class)
}

pub(crate) unsafe extern "C" fn read(
    _user: *mut c_void,
    split: u32,
    index: u32,
    values: *mut f32,
    n_values: u32,
    label: *mut u32,
) -> i32 {
    if n_values as usize != IN {
        return 1;
    }
    let (x, c) = sample(split, index);
    // SAFETY: the library passes `n_values` writable floats and a writable label.
    unsafe {
        core::slice::from_raw_parts_mut(values, IN).copy_from_slice(&x);
        *label = c;
    }
    0
}

const fn op(kind: u32, out: u32, k: u32, stride: u32, pad: u32) -> nf_op {
    nf_op {
        kind,
        out,
        k,
        stride,
        pad,
        bias: 0,
    }
}

const OPS: [nf_op; 10] = [
    op(NF_OP_CONV, 4, 3, 1, 1),
    op(NF_OP_BATCHNORM, 0, 0, 0, 0),
    op(NF_OP_RELU, 0, 0, 0, 0),
    op(NF_OP_MAXPOOL2, 0, 0, 0, 0),
    op(NF_OP_CONV, 6, 3, 1, 1),
    op(NF_OP_BATCHNORM, 0, 0, 0, 0),
    op(NF_OP_RELU, 0, 0, 0, 0),
    op(NF_OP_CONV, 8, 3, 1, 1),
    op(NF_OP_BATCHNORM, 0, 0, 0, 0),
    op(NF_OP_RELU, 0, 0, 0, 0),
];
const UNIT_OPS: [u32; 3] = [4, 3, 3];
pub(crate) const N_TEST: u32 = 30;

pub(crate) fn model() -> nf_model {
    nf_model {
        ops: OPS.as_ptr(),
        n_ops: OPS.len() as u32,
        unit_ops: UNIT_OPS.as_ptr(),
        n_units: 3,
        in_c: 1,
        in_h: 10,
        in_w: 10,
        classes: 3,
        head_pool: 0,
        in_mean: 0.25,
        in_std: 0.5,
    }
}

/// A trainer of `model()` in `mode` set up in `mem` (not trained).
fn trainer(mode: u32, cis: u32, mem: &mut Vec<f32>, t: &mut nf_trainer) -> nf_plan_info {
    let m = model();
    // SAFETY: valid, writable structs; `mem` outlives the trainer's use in each test.
    unsafe {
        let mut o: nf_options = core::mem::zeroed();
        nf_options_default(&mut o);
        o.mode = mode;
        o.b_max = 8;
        o.chain_in_scratch = cis;
        let mut info = nf_plan_info::default();
        // A budget that makes NeuroFlux split the model into blocks.
        let mut budget = 40_000;
        if nf_plan(&m, &o, budget, 48, &mut info) == NF_E_BUDGET {
            budget = info.needed_bytes;
        }
        assert_eq!(nf_plan(&m, &o, budget, 48, &mut info), NF_OK, "mode {mode}");
        let mut s: nf_schedule = core::mem::zeroed();
        nf_schedule_default(&mut s);
        s.epochs = 2;
        s.base_lr = 0.4;
        let data = nf_data {
            read: Some(read),
            on_epoch: None,
            user: core::ptr::null_mut(),
            n_train: 48,
            n_val: 0,
            n_test: N_TEST,
        };
        mem.clear();
        mem.resize(info.memory_bytes as usize / 4, f32::NAN);
        let rc = nf_init(
            t,
            &m,
            &o,
            budget,
            mem.as_mut_ptr(),
            mem.len() * 4,
            &data,
            &s,
        );
        assert_eq!(rc, NF_OK);
        info
    }
}

pub(crate) fn new_trainer() -> nf_trainer {
    nf_trainer {
        opaque: [0; NF_TRAINER_WORDS],
    }
}

#[test]
fn predictions_reproduce_the_trainers_evaluation_exactly() {
    // NeuroFlux with its recompute chain after each block's scratch and over it.
    for (mode, cis) in [
        (NF_MODE_NEUROFLUX, 0),
        (NF_MODE_NEUROFLUX, 1),
        (NF_MODE_LL, 0),
        (NF_MODE_BP, 0),
    ] {
        let mut mem = Vec::new();
        let mut t = new_trainer();
        let info = trainer(mode, cis, &mut mem, &mut t);
        let mut r = nf_result::default();
        // SAFETY: a trainer set up by nf_init, its memory alive; valid pointers.
        unsafe {
            assert_eq!(nf_train(&mut t), NF_OK);
            assert_eq!(nf_get_result(&mut t, &mut r), NF_OK);
        }
        if mode == NF_MODE_NEUROFLUX {
            let chain = info.blocks[1].chunk > 0;
            assert!(
                info.n_blocks >= 2 && chain,
                "the test wants several blocks and a chain"
            );
        }
        let evaluated: Vec<u32> = (0..3).filter(|&u| r.test_acc[u as usize] >= 0.0).collect();
        assert!(evaluated.contains(&2) && r.exit >= 0);
        for unit in evaluated
            .iter()
            .copied()
            .chain([NF_UNIT_EXIT, NF_UNIT_FULL])
        {
            let u = match unit {
                NF_UNIT_EXIT => r.exit as usize,
                NF_UNIT_FULL => 2,
                u => u as usize,
            };
            let mut correct = 0u32;
            for i in 0..N_TEST {
                let (x, label) = sample(NF_SPLIT_TEST, i);
                let (mut c, mut z) = (u32::MAX, [f32::NAN; 3]);
                // SAFETY: as above; `x` holds the input size, `z` the classes.
                let rc =
                    unsafe { nf_predict_unit(&mut t, unit, x.as_ptr(), &mut c, z.as_mut_ptr()) };
                assert_eq!(rc, NF_OK, "mode {mode} unit {unit}");
                assert!(c < 3 && z.iter().all(|v| v.is_finite()));
                assert!(z.iter().all(|&v| v <= z[c as usize]));
                correct += u32::from(c == label);
            }
            let acc = correct as f32 / N_TEST as f32;
            assert_eq!(
                acc.to_bits(),
                r.test_acc[u].to_bits(),
                "mode {mode} unit {u}: predictions give {acc}, the trainer's evaluation {}",
                r.test_acc[u]
            );
        }
        // nf_predict is the exit, and gives the same class as nf_predict_unit with NF_UNIT_EXIT.
        let (x, _) = sample(NF_SPLIT_TEST, 4);
        let (mut a, mut b) = (0u32, 0u32);
        // SAFETY: as above; NULL logits are allowed.
        unsafe {
            assert_eq!(
                nf_predict(&mut t, x.as_ptr(), &mut a, core::ptr::null_mut()),
                NF_OK
            );
            let u = r.exit as u32;
            assert_eq!(
                nf_predict_unit(&mut t, u, x.as_ptr(), &mut b, core::ptr::null_mut()),
                NF_OK
            );
        }
        assert_eq!(a, b);
    }
}

#[test]
fn predict_refuses_bad_calls() {
    let mut mem = Vec::new();
    let mut t = new_trainer();
    trainer(NF_MODE_NEUROFLUX, 1, &mut mem, &mut t);
    let (x, _) = sample(NF_SPLIT_TEST, 0);
    let mut c = 0u32;
    let mut z = [0f32; 4];
    let np = core::ptr::null_mut::<f32>();
    // SAFETY: every pointer is NULL, misaligned (refused before use) or valid.
    unsafe {
        // Not trained yet, then mid-block.
        assert_eq!(nf_predict(&mut t, x.as_ptr(), &mut c, np), NF_E_STATE);
        let mut st = nf_epoch_stats::default();
        assert_eq!(nf_train_epoch(&mut t, &mut st), NF_OK);
        assert_eq!(nf_predict(&mut t, x.as_ptr(), &mut c, np), NF_E_STATE);
        assert_eq!(
            nf_predict_unit(&mut t, 0, x.as_ptr(), &mut c, np),
            NF_E_STATE
        );
        assert_eq!(nf_train(&mut t), NF_OK);
        // Pointers.
        let zero = &mut new_trainer();
        assert_eq!(nf_predict(zero, x.as_ptr(), &mut c, np), NF_E_STATE);
        assert_eq!(
            nf_predict(core::ptr::null_mut(), x.as_ptr(), &mut c, np),
            NF_E_NULL
        );
        assert_eq!(nf_predict(&mut t, core::ptr::null(), &mut c, np), NF_E_NULL);
        assert_eq!(
            nf_predict(&mut t, x.as_ptr(), core::ptr::null_mut(), np),
            NF_E_NULL
        );
        let mis = x.as_ptr().cast::<u8>().add(2).cast::<f32>();
        assert_eq!(nf_predict(&mut t, mis, &mut c, np), NF_E_ALIGN);
        let misc = (&raw mut c).cast::<u8>().add(1).cast::<u32>();
        assert_eq!(nf_predict(&mut t, x.as_ptr(), misc, np), NF_E_ALIGN);
        let misz = z.as_mut_ptr().cast::<u8>().add(2).cast::<f32>();
        assert_eq!(nf_predict(&mut t, x.as_ptr(), &mut c, misz), NF_E_ALIGN);
        let tmis = (&raw mut t).cast::<u8>().add(4).cast::<nf_trainer>();
        assert_eq!(nf_predict(tmis, x.as_ptr(), &mut c, np), NF_E_ALIGN);
        // Units: out of range.
        assert_eq!(nf_predict_unit(&mut t, 3, x.as_ptr(), &mut c, np), NF_E_ARG);
        assert_eq!(
            nf_predict_unit(&mut t, 1000, x.as_ptr(), &mut c, np),
            NF_E_ARG
        );
        // And a good call still works.
        assert_eq!(
            nf_predict(&mut t, x.as_ptr(), &mut c, z.as_mut_ptr()),
            NF_OK
        );
    }
}

/// Every class and logit of every evaluated head on the test split, as bits.
fn predictions(t: &mut nf_trainer) -> Vec<u32> {
    predictions_of(t, &[0, 1, 2, NF_UNIT_EXIT])
}

/// Every class and logit of `units` on the test split, as bits.
pub(super) fn predictions_of(t: &mut nf_trainer, units: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for &unit in units {
        for i in 0..N_TEST {
            let (x, _) = sample(NF_SPLIT_TEST, i);
            let (mut c, mut z) = (0u32, [0f32; 3]);
            // SAFETY: a trained trainer; `x` holds the input size, `z` the classes.
            let rc = unsafe { nf_predict_unit(t, unit, x.as_ptr(), &mut c, z.as_mut_ptr()) };
            assert_eq!(rc, NF_OK);
            out.push(c);
            out.extend(z.iter().map(|v| v.to_bits()));
        }
    }
    out
}

/// A model saved after training and loaded into a fresh trainer (memory full of NaN: as after a
/// reset) predicts identically and reports the same results; damaged bytes are refused.
#[test]
fn a_saved_model_predicts_identically_after_loading() {
    let mut mem = Vec::new();
    let mut t = new_trainer();
    let info = trainer(NF_MODE_NEUROFLUX, 1, &mut mem, &mut t);
    assert!(info.n_blocks >= 2 && info.store_bytes > 0);
    let (mut r, mut r2) = (nf_result::default(), nf_result::default());
    let mut size = 0usize;
    // SAFETY: trainers set up by nf_init, their memory alive; valid pointers and lengths.
    unsafe {
        let np = core::ptr::null_mut();
        assert_eq!(nf_export_model(&mut t, np, 0, &mut size), NF_OK);
        let mut early = vec![0u8; size];
        assert_eq!(
            nf_export_model(&mut t, early.as_mut_ptr(), size, &mut size),
            NF_E_STATE
        );
        assert_eq!(nf_train(&mut t), NF_OK);
        assert_eq!(nf_get_result(&mut t, &mut r), NF_OK);
        let want = predictions(&mut t);
        let mut bytes = vec![0u8; size + 3];
        assert_eq!(
            nf_export_model(&mut t, bytes.as_mut_ptr(), size - 1, &mut size),
            NF_E_ARG
        );
        // Any alignment of the buffer.
        let buf = bytes.as_mut_ptr().add(3);
        assert_eq!(nf_export_model(&mut t, buf, size, &mut size), NF_OK);
        let saved = bytes[3..].to_vec();
        assert_eq!(saved.len(), size);
        assert_eq!(&saved[..4], b"NFMD");
        // Version 3 (2 with the store in f32) describes the model: input shape, head pooling,
        // normalisation, ...
        let word = |i: usize| u32::from_le_bytes(saved[4 * i..4 * i + 4].try_into().unwrap());
        let d = 9 + 2 * NF_MAX_UNITS;
        assert_eq!(word(1), 3);
        assert_eq!(
            [word(d), word(d + 1), word(d + 2), word(d + 3)],
            [1, 10, 10, 0]
        );
        assert_eq!(
            [word(d + 4), word(d + 5)],
            [0.25f32.to_bits(), 0.5f32.to_bits()]
        );
        // ... the ops of each unit, and the ops as nf_op words.
        let ops = d + 9 + 2 * NF_MAX_UNITS;
        assert_eq!(word(ops - NF_MAX_UNITS), UNIT_OPS[0]);
        assert_eq!(word(ops), OPS.len() as u32);
        for (i, o) in OPS.iter().enumerate() {
            let w: Vec<u32> = (0..6).map(|j| word(ops + 1 + 6 * i + j)).collect();
            assert_eq!(w, [o.kind, o.out, o.k, o.stride, o.pad, o.bias], "op {i}");
        }

        // A reset: a new trainer in new memory, never trained.
        let mut mem2 = Vec::new();
        let mut t2 = new_trainer();
        trainer(NF_MODE_NEUROFLUX, 1, &mut mem2, &mut t2);
        let x = [0f32; IN];
        let mut c = 0u32;
        assert_eq!(
            nf_predict(&mut t2, x.as_ptr(), &mut c, np.cast()),
            NF_E_STATE
        );
        // Damaged, short or foreign bytes change nothing.
        for i in [0, 7, 40, size / 2, size - 1] {
            let mut bad = saved.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                nf_load_model(&mut t2, bad.as_ptr(), size),
                NF_E_FORMAT,
                "byte {i}"
            );
        }
        assert_eq!(
            nf_load_model(&mut t2, saved.as_ptr(), size - 1),
            NF_E_FORMAT
        );
        assert_eq!(nf_load_model(&mut t2, core::ptr::null(), size), NF_E_NULL);
        assert_eq!(
            nf_predict(&mut t2, x.as_ptr(), &mut c, np.cast()),
            NF_E_STATE
        );
        // The saved bytes.
        assert_eq!(nf_load_model(&mut t2, saved.as_ptr(), size), NF_OK);
        assert_eq!(nf_get_result(&mut t2, &mut r2), NF_OK);
        assert_eq!(predictions(&mut t2), want);
        // Training is over for the loaded trainer too.
        assert_eq!(nf_train_epoch(&mut t2, core::ptr::null_mut()), NF_DONE);
    }
    assert_eq!((r.exit, r.blocks_done), (r2.exit, r2.blocks_done));
    assert_eq!(r.test_acc.map(f32::to_bits), r2.test_acc.map(f32::to_bits));
}

#[test]
fn the_input_normalisation_is_recorded_or_zero() {
    let mut info = nf_plan_info::default();
    // SAFETY: valid structs; the model's arrays are statics.
    unsafe {
        let mut o: nf_options = core::mem::zeroed();
        nf_options_default(&mut o);
        for (mean, std, rc) in [
            (0.25, 0.5, NF_OK),
            (0.0, 0.0, NF_OK),
            (-3.0, 1e-3, NF_OK),
            (0.25, 0.0, NF_E_MODEL),
            (0.0, -1.0, NF_E_MODEL),
            (f32::NAN, 1.0, NF_E_MODEL),
            (0.0, f32::INFINITY, NF_E_MODEL),
        ] {
            let m = nf_model {
                in_mean: mean,
                in_std: std,
                ..model()
            };
            let got = nf_plan(&m, &o, 1 << 20, 48, &mut info);
            assert_eq!(got, rc, "mean {mean} std {std}");
        }
    }
}
