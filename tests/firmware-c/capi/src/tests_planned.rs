//! `nf_init_planned`: a plan made by `nf_plan` (on another device, say) trains exactly as
//! `nf_init` with the budget; pointers are checked as everywhere; a plan that is not one of this
//! model and options is refused with `NF_E_PLAN` and leaves the trainer uninitialised.
use super::tests_predict::{model, new_trainer, predictions_of, read, N_TEST};
use super::*;

const N_TRAIN: u32 = 48;

fn options(mode: u32, cis: u32) -> nf_options {
    // SAFETY: a zeroed nf_options is plain integers; then the defaults.
    let mut o: nf_options = unsafe { core::mem::zeroed() };
    // SAFETY: a valid, writable nf_options.
    unsafe { nf_options_default(&mut o) };
    o.mode = mode;
    o.b_max = 8;
    o.chain_in_scratch = cis;
    o
}

fn schedule() -> nf_schedule {
    // SAFETY: a zeroed nf_schedule is plain numbers; then the defaults.
    let mut s: nf_schedule = unsafe { core::mem::zeroed() };
    // SAFETY: a valid, writable nf_schedule.
    unsafe { nf_schedule_default(&mut s) };
    s.epochs = 2;
    s.base_lr = 0.4;
    s
}

fn data(n_train: u32) -> nf_data {
    nf_data {
        read: Some(read),
        on_epoch: None,
        user: core::ptr::null_mut(),
        n_train,
        n_val: 0,
        n_test: N_TEST,
    }
}

/// The plan of `model()` under a budget that splits NeuroFlux into blocks.
fn plan_of(o: &nf_options) -> (u64, nf_plan_info) {
    let m = model();
    let mut info = nf_plan_info::default();
    let mut budget = 40_000;
    // SAFETY: valid structs.
    unsafe {
        if nf_plan(&m, o, budget, N_TRAIN, &mut info) == NF_E_BUDGET {
            budget = info.needed_bytes;
        }
        assert_eq!(nf_plan(&m, o, budget, N_TRAIN, &mut info), NF_OK);
    }
    (budget, info)
}

/// Train a set-up trainer; its results and predictions (exit and full model) as bits.
fn trained(t: &mut nf_trainer) -> Vec<u32> {
    let mut r = nf_result::default();
    // SAFETY: a trainer set up by nf_init(_planned) whose memory outlives this call.
    unsafe {
        assert_eq!(nf_train(t), NF_OK);
        assert_eq!(nf_get_result(t, &mut r), NF_OK);
    }
    let mut out: Vec<u32> = r
        .val_acc
        .iter()
        .chain(&r.test_acc)
        .map(|v| v.to_bits())
        .collect();
    out.extend(predictions_of(t, &[NF_UNIT_EXIT, NF_UNIT_FULL]));
    out
}

#[test]
fn a_plan_made_before_trains_as_the_budget_does() {
    assert_eq!(nf_trainer_bytes(), core::mem::size_of::<nf_trainer>());
    let m = model();
    let (d, s) = (data(N_TRAIN), schedule());
    for (mode, cis) in [
        (NF_MODE_NEUROFLUX, 0),
        (NF_MODE_NEUROFLUX, 1),
        (NF_MODE_LL, 0),
        (NF_MODE_BP, 0),
    ] {
        let o = options(mode, cis);
        let (budget, info) = plan_of(&o);
        let n = info.memory_bytes as usize / 4;
        let (mut a, mut b) = (vec![f32::NAN; n], vec![0f32; n]);
        let (mut ta, mut tb) = (new_trainer(), new_trainer());
        // SAFETY: valid structs; the memories outlive their trainers' use.
        unsafe {
            let rc = nf_init(&mut ta, &m, &o, budget, a.as_mut_ptr(), n * 4, &d, &s);
            assert_eq!(rc, NF_OK);
            let rc = nf_init_planned(&mut tb, &m, &o, &info, b.as_mut_ptr(), n * 4, &d, &s);
            assert_eq!(rc, NF_OK, "mode {mode}");
        }
        assert_eq!(trained(&mut ta), trained(&mut tb), "mode {mode} cis {cis}");
    }
}

#[test]
fn a_plan_that_does_not_fit_is_refused() {
    let m = model();
    let (d, s) = (data(N_TRAIN), schedule());
    let o = options(NF_MODE_NEUROFLUX, 1);
    let (_, info) = plan_of(&o);
    assert!(info.n_blocks >= 2, "{info:?}");
    let n = info.memory_bytes as usize / 4;
    let mut mem = vec![0f32; n + 1];
    let mut t = new_trainer();
    let init = |t: &mut nf_trainer, p: *const nf_plan_info, mem: &mut [f32], d: &nf_data| {
        // SAFETY: valid structs (or the bad pointers under test); `mem` outlives the call.
        unsafe { nf_init_planned(t, &m, &o, p, mem.as_mut_ptr(), n * 4, d, &s) }
    };
    // Pointers: NULL, misaligned; memory overlapping the trainer.
    assert_eq!(init(&mut t, core::ptr::null(), &mut mem, &d), NF_E_NULL);
    let raw = [info; 2];
    let odd = (&raw const raw)
        .cast::<u8>()
        .wrapping_add(4)
        .cast::<nf_plan_info>();
    assert_eq!(init(&mut t, odd, &mut mem, &d), NF_E_ALIGN);
    // SAFETY: the trainer's own bytes as the memory: refused before any use.
    let rc = unsafe {
        let tp: *mut nf_trainer = &mut t;
        nf_init_planned(tp, &m, &o, &info, tp.cast(), n * 4, &d, &s)
    };
    assert_eq!(rc, NF_E_OVERLAP);
    // The plan itself, one field at a time.
    let b1 = |f: &dyn Fn(&mut nf_block_info)| {
        let mut p = info;
        f(&mut p.blocks[1]);
        p
    };
    let with = |f: &dyn Fn(&mut nf_plan_info)| {
        let mut p = info;
        f(&mut p);
        p
    };
    let bad = [
        with(&|p| p.n_units += 1),
        with(&|p| p.n_blocks = 0),
        with(&|p| p.n_blocks += 1),
        with(&|p| p.heads[0] = 2),
        with(&|p| p.heads[0] = 1000),
        with(&|p| p.heads[2] = 8),
        with(&|p| p.arena_bytes += 4),
        with(&|p| p.store_bytes -= 4),
        with(&|p| p.order_bytes += 4),
        with(&|p| p.memory_bytes += 4),
        with(&|p| p.blocks[0].chunk = 1),
        b1(&|b| b.first += 1),
        b1(&|b| b.batch = 1),
        b1(&|b| b.batch = 9),
        b1(&|b| b.chunk = 0),
        b1(&|b| b.chunk = b.batch + 1),
        b1(&|b| b.bytes += 4),
    ];
    for (i, p) in bad.iter().enumerate() {
        assert_eq!(init(&mut t, p, &mut mem, &d), NF_E_PLAN, "case {i}: {p:?}");
        // Left uninitialised.
        // SAFETY: a trainer struct (uninitialised: refused).
        assert_eq!(unsafe { nf_train(&mut t) }, NF_E_STATE, "case {i}");
    }
    // Another number of training samples than the plan's: another order size.
    assert_eq!(init(&mut t, &info, &mut mem, &data(N_TRAIN - 8)), NF_E_PLAN);
    // The memory must hold the plan.
    // SAFETY: valid structs; `mem` holds more than the size given.
    let rc = unsafe { nf_init_planned(&mut t, &m, &o, &info, mem.as_mut_ptr(), n * 4 - 4, &d, &s) };
    assert_eq!(rc, NF_E_MEMORY);
    assert_eq!(init(&mut t, &info, &mut mem, &d), NF_OK);
}
