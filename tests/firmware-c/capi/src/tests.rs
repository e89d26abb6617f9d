//! Unit tests of the C ABI from Rust: random (mostly invalid) descriptions through `nf_plan`,
//! and the valid ones through a short training run, must give a code, never a panic.
use core::ffi::c_void;

use super::*;

/// A small seeded generator (SplitMix64).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u32 {
        (self.next() % n) as u32
    }
    /// Mostly small values, sometimes 0 or huge.
    fn field(&mut self, small: u64) -> u32 {
        match self.below(20) {
            0 => 0,
            1 => u32::MAX - self.below(3),
            2 => 1 << self.below(31),
            _ => self.below(small) + 1,
        }
    }
}

unsafe extern "C" fn read(
    _user: *mut c_void,
    _split: u32,
    index: u32,
    values: *mut f32,
    n_values: u32,
    label: *mut u32,
) -> i32 {
    // SAFETY: the library passes `n_values` writable floats and a writable label.
    let v = unsafe { core::slice::from_raw_parts_mut(values, n_values as usize) };
    for (i, x) in v.iter_mut().enumerate() {
        *x = ((i as u32 ^ index) % 7) as f32 - 3.0;
    }
    // SAFETY: as above.
    unsafe { *label = index % 2 };
    0
}

const CODES: &[i32] = &[
    NF_OK,
    NF_E_MODEL,
    NF_E_CAPACITY,
    NF_E_OPTIONS,
    NF_E_BUDGET,
    NF_E_TOO_LARGE,
];

#[test]
fn trainer_fits_its_c_struct() {
    assert!(core::mem::size_of::<train::Trainer>() + 8 <= NF_TRAINER_WORDS * 8);
}

/// Bits of what a trained run gives: every epoch's losses and accuracies, the logits of every
/// evaluated head on a few inputs (the weights), and every head's held-out accuracy.
type Trained = (Vec<u32>, Vec<u32>);

unsafe extern "C" fn on_epoch(user: *mut c_void, st: *const nf_epoch_stats) {
    // SAFETY: `user` is the `Vec<u32>` of `train_from_fill`; `st` is valid during the call.
    let (log, st) = unsafe { (&mut *user.cast::<Vec<u32>>(), &*st) };
    let n = st.n as usize;
    log.extend(st.loss[..n].iter().chain(&st.acc[..n]).map(|v| v.to_bits()));
}

/// Train `model` (planned as `info`) for one epoch per block on 8 samples, 3 held out, in
/// memory whose every byte is `fill` before `nf_init`.
fn train_from_fill(
    model: &nf_model,
    o: &nf_options,
    budget: u64,
    info: &nf_plan_info,
    fill: u8,
) -> Trained {
    let word = u32::from_ne_bytes([fill; 4]);
    let mut mem = vec![f32::from_bits(word); info.memory_bytes as usize / 4];
    let mut t = nf_trainer {
        opaque: [0; NF_TRAINER_WORDS],
    };
    let mut log: Vec<u32> = Vec::new();
    let data = nf_data {
        read: Some(read),
        on_epoch: Some(on_epoch),
        user: (&raw mut log).cast(),
        n_train: 8,
        n_val: 0,
        n_test: 3,
    };
    // SAFETY: a valid, writable nf_schedule.
    let mut s = unsafe {
        let mut s = core::mem::zeroed();
        nf_schedule_default(&mut s);
        s
    };
    s.epochs = 1;
    let mut r = nf_result::default();
    // SAFETY: valid pointers; `mem` holds `memory_bytes`, the trainer outlives its use.
    unsafe {
        let rc = nf_init(
            &mut t,
            model,
            o,
            budget,
            mem.as_mut_ptr(),
            mem.len() * 4,
            &data,
            &s,
        );
        assert_eq!(rc, NF_OK);
        assert_eq!(nf_train(&mut t), NF_OK);
        assert_eq!(nf_get_result(&mut t, &mut r), NF_OK);
    }
    assert_eq!(r.blocks_done, info.n_blocks);
    assert!(r.exit >= 0);
    // The trained weights, through the logits of every evaluated head (the full model's
    // included) on a few inputs.
    let n_in = (model.in_c * model.in_h * model.in_w) as usize;
    let mut z = vec![0f32; model.classes as usize];
    for u in (0..r.n_units).filter(|&u| r.test_acc[u as usize] >= 0.0) {
        for i in 0..3 {
            let x: Vec<f32> = (0..n_in).map(|j| ((i + j) % 5) as f32 - 2.0).collect();
            let mut c = 0;
            // SAFETY: a trained trainer; `x` holds the input size, `z` the classes.
            let rc = unsafe { nf_predict_unit(&mut t, u, x.as_ptr(), &mut c, z.as_mut_ptr()) };
            assert_eq!(rc, NF_OK);
            log.extend(z.iter().map(|v| v.to_bits()));
        }
    }
    let acc = r.val_acc.iter().chain(&r.test_acc);
    (log, acc.map(|v| v.to_bits()).collect())
}

const fn op(kind: u32, out: u32, k: u32, stride: u32, pad: u32) -> nf_op {
    nf_op {
        kind,
        out,
        k,
        stride,
        pad,
        bias: 1,
    }
}

/// Units without parameters (a ReLU alone, a pool alone) and a 5×5 "same" convolution on a
/// 1×1 map: every mode trains, and from memory filled with 0x00 or 0xFF to the same bits.
#[test]
fn parameter_free_units_and_wide_kernels_train_the_same_from_any_memory() {
    let ops = [
        op(NF_OP_CONV, 4, 3, 1, 1),
        op(NF_OP_BATCHNORM, 0, 0, 0, 0),
        op(NF_OP_RELU, 0, 0, 0, 0),
        op(NF_OP_RELU, 0, 0, 0, 0),
        op(NF_OP_MAXPOOL2, 0, 0, 0, 0),
        op(NF_OP_AVGPOOL, 2, 0, 0, 0),
        op(NF_OP_CONV, 6, 7, 1, 3),
        op(NF_OP_RELU, 0, 0, 0, 0),
        op(NF_OP_AVGPOOL, 1, 0, 0, 0),
        op(NF_OP_CONV, 8, 5, 1, 2),
        op(NF_OP_RELU, 0, 0, 0, 0),
    ];
    // conv+bn+relu (8x8) | relu | max-pool (4x4) | avg-pool to 2x2 + 7x7 pad 3 | relu |
    // avg-pool to 1x1 + 5x5 pad 2 + relu
    let all = [3u32, 1, 1, 2, 1, 3];
    let model = nf_model {
        ops: ops.as_ptr(),
        n_ops: ops.len() as u32,
        unit_ops: all.as_ptr(),
        n_units: all.len() as u32,
        in_c: 1,
        in_h: 8,
        in_w: 8,
        classes: 2,
        head_pool: 0,
        in_mean: 0.0,
        in_std: 0.0,
    };
    for mode in [NF_MODE_NEUROFLUX, NF_MODE_LL, NF_MODE_BP] {
        let mut o = nf_options {
            mode,
            f_max: 0,
            f_min: 0,
            ll_filters: 0,
            b_min: 0,
            b_max: 0,
            homogeneity: 0,
            chain_in_scratch: 0,
        };
        // SAFETY: a valid, writable nf_options.
        unsafe { nf_options_default(&mut o) };
        o.mode = mode;
        o.b_max = 4;
        let mut info = nf_plan_info::default();
        // SAFETY: pointers to valid structs with `n_ops` / `n_units` entries.
        let rc = unsafe { nf_plan(&model, &o, 1 << 22, 8, &mut info) };
        assert_eq!(rc, NF_OK, "mode {mode}");
        let a = train_from_fill(&model, &o, 1 << 22, &info, 0x00);
        let b = train_from_fill(&model, &o, 1 << 22, &info, 0xFF);
        assert_eq!(
            a, b,
            "mode {mode}: training depends on the memory's previous contents"
        );
    }
}

/// The epoch order is `u16` (2 bytes a sample) when batches are at most 32, else `u32`: the
/// same plan trains to the same bits either way.
#[test]
fn u16_and_u32_epoch_orders_train_alike() {
    let ops = [
        op(NF_OP_CONV, 4, 3, 1, 1),
        op(NF_OP_RELU, 0, 0, 0, 0),
        op(NF_OP_MAXPOOL2, 0, 0, 0, 0),
        op(NF_OP_CONV, 8, 3, 1, 1),
        op(NF_OP_RELU, 0, 0, 0, 0),
    ];
    let units = [3u32, 2];
    let model = nf_model {
        ops: ops.as_ptr(),
        n_ops: ops.len() as u32,
        unit_ops: units.as_ptr(),
        n_units: units.len() as u32,
        in_c: 1,
        in_h: 8,
        in_w: 8,
        classes: 2,
        head_pool: 0,
        in_mean: 0.0,
        in_std: 0.0,
    };
    // SAFETY: a zeroed nf_options is plain integers; then the defaults.
    let mut o: nf_options = unsafe { core::mem::zeroed() };
    // SAFETY: a valid, writable nf_options.
    unsafe { nf_options_default(&mut o) };
    let mut info = nf_plan_info::default();
    // The smallest budget (batches set by the budget, not by b_max), for 8 samples.
    // SAFETY: pointers to valid structs with `n_ops` / `n_units` entries.
    let rc = unsafe { nf_plan(&model, &o, 1, 8, &mut info) };
    assert_eq!(rc, NF_E_BUDGET);
    let budget = info.needed_bytes + 4096;
    // SAFETY: as above.
    assert_eq!(unsafe { nf_plan(&model, &o, budget, 8, &mut info) }, NF_OK);
    assert_eq!(info.order_bytes, 16, "8 u16 indices");
    let mut o32 = o;
    o32.b_max = 33;
    let mut info32 = nf_plan_info::default();
    // The same arena budget: 16 bytes more for the u32 order.
    // SAFETY: as above.
    let rc = unsafe { nf_plan(&model, &o32, budget + 16, 8, &mut info32) };
    assert_eq!(rc, NF_OK);
    assert_eq!(info32.order_bytes, 32, "8 u32 indices");
    assert_eq!(info32.arena_bytes, info.arena_bytes);
    for (a, b) in info.blocks.iter().zip(&info32.blocks) {
        assert_eq!(
            (a.first, a.last, a.batch, a.chunk),
            (b.first, b.last, b.batch, b.chunk)
        );
    }
    assert!(info.blocks[0].batch < 32);
    assert_eq!(
        train_from_fill(&model, &o, budget, &info, 0),
        train_from_fill(&model, &o32, budget + 16, &info32, 0)
    );
}

/// Misaligned non-NULL pointers are `NF_E_ALIGN` (NULL ones `NF_E_NULL`) for every pointer
/// argument; memory overlapping the trainer is refused; a misaligned `stats` trains nothing.
#[test]
fn pointer_errors_are_precise() {
    let mut raw = [0u64; 64];
    let base = raw.as_mut_ptr().cast::<u8>();
    let (m2, m4) = (base.wrapping_add(2), base.wrapping_add(4));
    // SAFETY: every pointer is NULL, misaligned (refused before use) or valid.
    unsafe {
        assert_eq!(nf_options_default(m2.cast()), NF_E_ALIGN);
        assert_eq!(nf_schedule_default(m4.cast()), NF_E_ALIGN);
        let mut o: nf_options = core::mem::zeroed();
        nf_options_default(&mut o);
        let mut info = nf_plan_info::default();
        let ops = [op(NF_OP_CONV, 4, 3, 1, 1), op(NF_OP_RELU, 0, 0, 0, 0)];
        let unit_ops = [2u32];
        let model = nf_model {
            ops: ops.as_ptr(),
            n_ops: 2,
            unit_ops: unit_ops.as_ptr(),
            n_units: 1,
            in_c: 1,
            in_h: 6,
            in_w: 6,
            classes: 2,
            head_pool: 0,
            in_mean: 0.0,
            in_std: 0.0,
        };
        assert_eq!(nf_plan(m4.cast(), &o, 1 << 20, 8, &mut info), NF_E_ALIGN);
        assert_eq!(
            nf_plan(&model, m2.cast(), 1 << 20, 8, &mut info),
            NF_E_ALIGN
        );
        assert_eq!(nf_plan(&model, &o, 1 << 20, 8, m4.cast()), NF_E_ALIGN);
        assert_eq!(
            nf_plan(&model, &o, 1 << 20, 8, core::ptr::null_mut()),
            NF_E_NULL
        );
        assert_eq!(nf_plan(&model, &o, 1 << 20, 8, &mut info), NF_OK);
        let bad = nf_options {
            chain_in_scratch: 2,
            ..o
        };
        let mut junk = nf_plan_info::default();
        assert_eq!(nf_plan(&model, &bad, 1 << 20, 8, &mut junk), NF_E_OPTIONS);
        let mut s: nf_schedule = core::mem::zeroed();
        nf_schedule_default(&mut s);
        let data = nf_data {
            read: Some(read),
            on_epoch: None,
            user: core::ptr::null_mut(),
            n_train: 8,
            n_val: 0,
            n_test: 3,
        };
        let words = info.memory_bytes as usize / 8 + NF_TRAINER_WORDS + 1;
        let mut buf = vec![0u64; words];
        let (tp, fp) = (buf.as_mut_ptr(), buf.as_mut_ptr().cast::<f32>());
        let bytes = words * 8;
        let init =
            |t: *mut nf_trainer,
             m: *mut f32,
             len: usize,
             d: *const nf_data,
             s: *const nf_schedule| { nf_init(t, &model, &o, 1 << 20, m, len, d, s) };
        // Memory overlapping the trainer, at its start, end or around it.
        assert_eq!(init(tp.cast(), fp, bytes, &data, &s), NF_E_OVERLAP);
        assert_eq!(init(tp.add(4).cast(), fp, bytes, &data, &s), NF_E_OVERLAP);
        let after = fp.add(NF_TRAINER_WORDS * 2 - 1);
        assert_eq!(
            init(tp.cast(), after, bytes - NF_TRAINER_WORDS * 8, &data, &s),
            NF_E_OVERLAP
        );
        assert_eq!(init(tp.cast(), m2.cast(), 64, &data, &s), NF_E_ALIGN);
        // Right after the trainer: accepted.
        let (t, mem) = (tp.cast::<nf_trainer>(), fp.add(NF_TRAINER_WORDS * 2));
        let len = bytes - NF_TRAINER_WORDS * 8;
        assert_eq!(init(t, mem, len, m2.cast(), &s), NF_E_ALIGN);
        assert_eq!(init(t, mem, len, &data, m4.cast()), NF_E_ALIGN);
        assert_eq!(init(t, mem, len, &data, &s), NF_OK);
        // A misaligned stats pointer: an error, and no epoch is trained.
        assert_eq!(nf_train_epoch(t, m2.cast()), NF_E_ALIGN);
        let mut r = nf_result::default();
        assert_eq!(nf_get_result(t, m2.cast()), NF_E_ALIGN);
        assert_eq!(nf_get_result(t, &mut r), NF_OK);
        assert_eq!((r.epochs_done, r.blocks_done), (0, 0));
        let mut st = nf_epoch_stats::default();
        assert_eq!(nf_train_epoch(t, &mut st), NF_OK);
        assert_eq!(nf_get_result(t, &mut r), NF_OK);
        assert_eq!((r.epochs_done, st.epochs), (1, s.epochs));
        assert_eq!(nf_select_exit(t, 0.0, m2.cast()), NF_E_ALIGN);
    }
}

#[test]
fn random_descriptions_plan_or_fail_with_a_code() {
    let mut g = Gen(17);
    let (mut planned, mut trained) = (0, 0);
    for _ in 0..3000 {
        let n_units = g.below(5) + 1;
        let mut unit_ops = [0u32; 8];
        let mut ops = [nf_op::default(); NF_MAX_OPS];
        let mut n_ops = 0usize;
        for u in unit_ops.iter_mut().take(n_units as usize) {
            *u = g.below(5) + 1;
            for _ in 0..*u {
                ops[n_ops] = nf_op {
                    kind: g.below(10),
                    out: g.field(16),
                    k: g.field(5),
                    stride: g.field(3),
                    pad: if g.below(2) == 0 { 0 } else { g.field(2) },
                    bias: g.below(3),
                };
                n_ops += 1;
            }
        }
        let model = nf_model {
            ops: ops.as_ptr(),
            n_ops: n_ops as u32,
            unit_ops: unit_ops.as_ptr(),
            n_units,
            in_c: g.field(3),
            in_h: g.field(24),
            in_w: g.field(24),
            classes: g.field(10),
            head_pool: g.below(4),
            in_mean: 0.0,
            in_std: 0.0,
        };
        let mut o = nf_options {
            mode: 0,
            f_max: 0,
            f_min: 0,
            ll_filters: 0,
            b_min: 0,
            b_max: 0,
            homogeneity: 0,
            chain_in_scratch: 0,
        };
        // SAFETY: a valid, writable nf_options.
        unsafe { nf_options_default(&mut o) };
        o.mode = g.below(4);
        o.chain_in_scratch = g.below(2);
        if g.below(10) == 0 {
            o.b_min = g.field(8);
            o.f_min = g.field(8);
        }
        let budget = u64::from(g.below(1 << 22));
        let mut info = nf_plan_info::default();
        // SAFETY: pointers to valid structs with `n_ops` / `n_units` entries.
        let rc = unsafe { nf_plan(&model, &o, budget, 8, &mut info) };
        assert!(CODES.contains(&rc), "nf_plan returned {rc}");
        if rc != NF_OK {
            continue;
        }
        planned += 1;
        assert_eq!(
            info.memory_bytes,
            info.arena_bytes + info.store_bytes + info.order_bytes
        );
        assert!(info.memory_bytes <= budget);
        if info.memory_bytes > 4 << 20 || trained >= 40 {
            continue;
        }
        // Train it: one epoch per block on 8 samples, 3 held out, from memory filled with
        // 0x00 and with 0xFF: the same bits.
        assert!(
            model.classes >= 2,
            "labels 0 and 1 are needed; such a model cannot plan"
        );
        let a = train_from_fill(&model, &o, budget, &info, 0x00);
        let b = train_from_fill(&model, &o, budget, &info, 0xFF);
        assert_eq!(a, b, "training depends on the memory's previous contents");
        trained += 1;
    }
    eprintln!("{planned} of 3000 random descriptions planned, {trained} trained");
    assert!(planned > 50 && trained > 10);
}
