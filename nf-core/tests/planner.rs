//! Planner invariants over the whole zoo, every mode and budgets from the smallest feasible one
//! to 8 GiB: blocks fit, batch sizes are maximal, the smallest feasible budget is exact, and
//! the training step runs inside an arena of exactly the planned bytes (and is refused with
//! less).
use nf_core::backend::Backend;
use nf_core::dryrun::DryRun;
use nf_core::layout::{BlockLayout, ELEM_BYTES};
use nf_core::model::{ModelSpec, Shape, MAX_UNITS};
use nf_core::optim::Sgd;
use nf_core::plan::{next_batch, plan, step_cap, BatchLimit, Mode, Plan, PlanError, PlanOptions};
use nf_core::reference::ReferenceBackend;
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats, StepError};
use nf_core::zoo;

mod common;

const MODES: [Mode; 3] = [Mode::NeuroFlux, Mode::Ll, Mode::Bp];
const GIB: u64 = 1 << 30;

fn needed(m: &ModelSpec, input: Shape, mode: Mode) -> u64 {
    match plan(m, input, 10, 1, mode, &PlanOptions::DEFAULT) {
        Err(PlanError::BudgetTooSmall { needed }) => needed,
        other => panic!("{}: a 1-byte budget planned: {other:?}", m.name),
    }
}

/// A dozen budgets from `lo` to 8 GiB, geometrically spaced.
fn budgets(lo: u64) -> Vec<u64> {
    let hi = 8 * GIB;
    let r = (hi as f64 / lo as f64).powf(1.0 / 11.0);
    (0..12)
        .map(|i| ((lo as f64) * r.powi(i)).round() as u64)
        .map(|b| b.clamp(lo, hi))
        .collect()
}

/// The zoo's units are never cheaper than their smallest head: no NeuroFlux block of a zoo
/// model trains at a smaller batch than BP would.
fn check_zoo_batches(p: &Plan) {
    if p.mode == Mode::NeuroFlux {
        let smallest = p.blocks().iter().map(|b| b.batch).min().unwrap();
        assert!(
            smallest >= p.bp_batch,
            "{}: NeuroFlux batch {smallest} < BP batch {}",
            p.model.name,
            p.bp_batch
        );
    }
}

/// Run one whole training step (every segment) of every block over the dry-run backend with
/// an arena of exactly the planned bytes: no region may leave the arena or overlap another of
/// the same op, and the highest region handed to a kernel must end at the last element planned.
/// One element less is refused before any work. (This checks the regions' bounds at every
/// budget quickly; that the kernels use every element of them, and no other, is shown element
/// by element in `tests/exact.rs`.)
fn check_dry_run(p: &Plan) {
    for i in 0..p.n_blocks {
        let l = p.layout(i);
        assert_eq!(l.bytes(), p.blocks[i].bytes);
        let floats = (p.blocks[i].bytes / ELEM_BYTES) as usize;
        let mut be = DryRun::new(floats);
        step::init_block(&mut be, &l, &mut Rng::new(1)).unwrap();
        step::train_step(&mut be, &l, l.batch, &Sgd::default(), 0.1, &mut []).unwrap();
        step::eval_step(&mut be, &l, l.batch, &mut []).unwrap();
        assert_eq!(
            be.high_water, floats,
            "{} block {i}: planned memory is not all used",
            p.model.name
        );
        let mut short = DryRun::new(floats - 1);
        let err =
            step::train_step(&mut short, &l, l.batch, &Sgd::default(), 0.1, &mut []).unwrap_err();
        assert!(matches!(err, StepError::ArenaTooSmall { .. }));
        assert_eq!(short.ops, 0, "work was done before the refusal");
    }
}

fn check_invariants(p: &Plan) {
    let o = &p.options;
    let name = p.model.name;
    assert!(p.n_blocks >= 1);
    // Blocks cover the units in order.
    assert_eq!(p.blocks[0].first, 0);
    assert_eq!(p.blocks[p.n_blocks - 1].last, p.model.units.len() - 1);
    for w in p.blocks().windows(2) {
        assert_eq!(w[0].last + 1, w[1].first);
    }
    for (i, b) in p.blocks().iter().enumerate() {
        assert!(
            b.bytes <= p.budget,
            "{name}: block {i} needs {} > budget {}",
            b.bytes,
            p.budget
        );
        assert!(b.batch >= o.b_min && b.batch <= o.b_max);
        assert!(b.batch < 16 || b.batch % 8 == 0);
        // Never above the step cap, and the block says what set its batch.
        let cap = step_cap(o);
        assert!(
            b.batch <= cap,
            "{name}: block {i} batch {} > cap {cap}",
            b.batch
        );
        match b.limit {
            BatchLimit::Steps => assert!(b.batch == cap && cap < o.b_max),
            BatchLimit::BatchMax => assert_eq!(b.batch, o.b_max),
            BatchLimit::Budget => assert!(b.batch < cap || cap == o.b_max),
        }
        // Maximal: the next allowed batch size would not fit (or pass the cap).
        let nb = next_batch(o, b.batch);
        if nb != 0 && nb <= cap {
            let l = p.layout(i);
            let bigger = BlockLayout::new(
                &p.model, p.input, p.classes, l.mode, b.first, b.last, &p.heads, nb,
            );
            assert!(
                bigger.bytes() > p.budget,
                "{name}: block {i} could use batch {nb}"
            );
        }
    }
    if p.mode == Mode::NeuroFlux {
        // No block trains at a smaller batch than BP would, unless it is already one unit with
        // the smallest head (a unit whose head costs more per sample than the whole model
        // under BP: thin units at a high resolution, as random architectures have).
        for (i, b) in p.blocks().iter().enumerate() {
            assert!(
                b.batch >= p.bp_batch
                    || (b.first == b.last && p.heads[b.first] == nf_core::plan::MIN_HEAD),
                "{name}: NeuroFlux block {i} batch {} < BP batch {} and could split or shrink",
                b.batch,
                p.bp_batch
            );
        }
    }
    if p.mode == Mode::Bp {
        assert_eq!(p.blocks[0].batch, p.bp_batch);
    }
    assert!(p.peak_bytes() <= p.budget);
}

#[test]
fn zoo_plans_fit_are_maximal_and_run_in_exactly_their_bytes() {
    for m in zoo::ALL {
        for mode in MODES {
            let need = needed(m, m.input, mode);
            // The smallest feasible budget is exact.
            let p =
                plan(m, m.input, 10, need, mode, &PlanOptions::DEFAULT).expect("needed must plan");
            check_invariants(&p);
            check_zoo_batches(&p);
            assert!(plan(m, m.input, 10, need - 1, mode, &PlanOptions::DEFAULT).is_err());
            for budget in budgets(need) {
                let p = plan(m, m.input, 10, budget, mode, &PlanOptions::DEFAULT).unwrap();
                check_invariants(&p);
                check_zoo_batches(&p);
                check_dry_run(&p);
            }
        }
    }
}

/// A real training step on the CPU reference backend inside an arena of exactly the planned
/// bytes, for every zoo model and mode at its smallest feasible budget, then refused with one
/// byte less. (Steps use up to 8 samples of each block's batch so that the test stays quick; the
/// dry run above covers full batches.)
#[test]
fn real_cpu_step_in_exact_arena_for_every_zoo_model() {
    for m in zoo::ALL {
        for mode in MODES {
            real_step_at_smallest_budget(m, mode);
        }
    }
}

/// One real step of every block of `m` in `mode` at its smallest feasible budget, in an arena
/// of exactly the planned bytes; one element less is refused.
fn real_step_at_smallest_budget(m: &ModelSpec, mode: Mode) {
    let need = needed(m, m.input, mode);
    let p = plan(m, m.input, 10, need, mode, &PlanOptions::DEFAULT).unwrap();
    let mut arena = vec![0.0f32; p.peak_floats()];
    let mut input_for_next: Option<Vec<f32>> = None;
    for i in 0..p.n_blocks {
        let l = p.layout(i);
        let n = l.batch.min(8);
        let mut be = ReferenceBackend::new(&mut arena);
        step::init_block(&mut be, &l, &mut Rng::new(2)).unwrap();
        let s = m.unit_input(p.input, l.first);
        let mut rng = Rng::new(i as u64);
        let x: Vec<f32> = input_for_next
            .take()
            .unwrap_or_else(|| (0..n * s.len()).map(|_| rng.normal()).collect());
        let labels: Vec<f32> = (0..n).map(|j| (j % 10) as f32).collect();
        use nf_core::backend::Backend;
        be.write(l.input.prefix(n * s.len()), &x[..n * s.len()]);
        be.write(l.labels.prefix(n), &labels);
        let mut st = [SegStats::default(); MAX_UNITS];
        step::train_step(&mut be, &l, n, &Sgd::default(), 0.01, &mut st).unwrap();
        for (k, s) in st[..l.n_segments()].iter().enumerate() {
            assert!(
                s.loss.is_finite() && s.samples == n as u32,
                "{} {mode:?} block {i} seg {k}: {s:?}",
                m.name
            );
        }
        step::eval_step(&mut be, &l, n, &mut st).unwrap();
        if !l.output().is_empty() {
            let mut out = vec![0.0; n * l.output_shape().len()];
            be.read(l.output().prefix(out.len()), &mut out);
            assert!(out.iter().all(|v| v.is_finite()));
            input_for_next = Some(out);
        }
        // One byte less (one element less) is refused.
        let short = (l.bytes() - 1) / ELEM_BYTES;
        let mut be = ReferenceBackend::new(&mut arena[..short as usize]);
        let err = step::train_step(&mut be, &l, n, &Sgd::default(), 0.01, &mut []).unwrap_err();
        assert!(matches!(err, StepError::ArenaTooSmall { .. }));
    }
}

/// Seeded property test over random architectures (any conv kernel, stride, padding and bias,
/// with and without batch norm, pools, residual blocks, non-square inputs): in every mode the
/// smallest feasible budget is exact, plans keep every invariant and run in exactly their bytes
/// on the dry-run backend, and a real step runs in an arena of exactly the planned bytes.
#[test]
fn random_architectures_plan_exactly_and_step_in_their_bytes() {
    let mut rng = Rng::new(15);
    for case in 0..24 {
        let m = common::random_model(&mut rng, "random");
        for mode in MODES {
            let need = needed(&m, m.input, mode);
            assert!(plan(&m, m.input, 10, need - 1, mode, &PlanOptions::DEFAULT).is_err());
            for budget in [need, need * 3 / 2, need * 8] {
                let p = plan(&m, m.input, 10, budget, mode, &PlanOptions::DEFAULT)
                    .unwrap_or_else(|e| panic!("case {case} {m:?} {mode:?}: {e:?}"));
                check_invariants(&p);
                check_dry_run(&p);
            }
            real_step_at_smallest_budget(&m, mode);
        }
    }
}

/// Seeded property test: random budgets and input sizes keep every invariant.
#[test]
fn random_budgets_and_input_sizes_keep_invariants() {
    let mut rng = Rng::new(2024);
    let mut planned = 0;
    for case in 0..300 {
        let m = zoo::ALL[rng.below(zoo::ALL.len() as u32) as usize];
        let mode = MODES[rng.below(3) as usize];
        let side = m.input.h + rng.below(m.input.h as u32 + 1) as usize;
        let input = Shape::new(m.input.c, side, side + rng.below(9) as usize);
        let need = needed(m, input, mode);
        let budget = ((need as f64) * (0.5 + 64.0f64.powf(rng.uniform() as f64)))
            .min((8 * GIB) as f64) as u64;
        match plan(m, input, 10, budget, mode, &PlanOptions::DEFAULT) {
            Ok(p) => {
                check_invariants(&p);
                check_zoo_batches(&p);
                if case % 10 == 0 {
                    check_dry_run(&p);
                }
                planned += 1;
            }
            Err(PlanError::BudgetTooSmall { needed }) => {
                assert!(
                    budget < need && needed == need,
                    "{} {mode:?} {input:?} budget {budget}",
                    m.name
                )
            }
            Err(e) => panic!("{} {input:?}: {e:?}", m.name),
        }
    }
    assert!(planned > 200, "too few cases planned: {planned}");
}

#[test]
fn compile_time_plan_for_a_firmware_arena() {
    // A firmware author sizes a static arena from the planner at compile time; a budget that
    // does not fit makes this constant fail to evaluate, which fails the build.
    const BUDGET: u64 = 4 << 20;
    const PLAN: Plan = match plan(
        &zoo::VGG_SMALL,
        zoo::VGG_SMALL.input,
        10,
        BUDGET,
        Mode::NeuroFlux,
        &PlanOptions::DEFAULT,
    ) {
        Ok(p) => p,
        Err(_) => panic!("the model does not fit the budget"),
    };
    const ARENA_FLOATS: usize = PLAN.peak_floats();
    static ARENA: std::sync::Mutex<[f32; ARENA_FLOATS]> =
        std::sync::Mutex::new([0.0; ARENA_FLOATS]);
    let mut arena = ARENA.lock().unwrap();
    let l = PLAN.layout(0);
    let mut be = ReferenceBackend::new(&mut arena[..]);
    step::init_block(&mut be, &l, &mut Rng::new(0)).unwrap();
    step::train_step(&mut be, &l, 2, &Sgd::default(), 0.01, &mut []).unwrap();
    assert!(ARENA_FLOATS as u64 * ELEM_BYTES <= BUDGET);
}

/// The step cap: no block's batch leaves an epoch of `samples` fewer than `min_steps` steps
/// (never below the smallest allowed batch); the block says so; without the training set's
/// size the plan is the one without a cap; a cap never costs memory.
#[test]
fn a_step_cap_keeps_an_epochs_steps_and_is_off_without_the_data_size() {
    assert_eq!(step_cap(&PlanOptions::DEFAULT), 512);
    let with = |samples, min_steps| PlanOptions {
        samples,
        min_steps,
        ..PlanOptions::DEFAULT
    };
    assert_eq!(step_cap(&with(7200, 100)), 72);
    assert_eq!(step_cap(&with(7250, 100)), 72);
    assert_eq!(step_cap(&with(1200, 100)), 12);
    assert_eq!(step_cap(&with(500, 100)), 8);
    assert_eq!(step_cap(&with(54000, 100)), 512);
    assert_eq!(step_cap(&with(54000, 0)), 512);
    assert_eq!(step_cap(&with(0, 100)), 512);
    let odd = PlanOptions {
        b_min: 17,
        ..with(2000, 100)
    };
    assert_eq!(
        step_cap(&odd),
        24,
        "the smallest allowed batch from b_min 17"
    );
    for m in zoo::ALL {
        for mode in MODES {
            let need = needed(m, m.input, mode);
            for budget in [need, 4 * need, 64 * need] {
                let free = plan(m, m.input, 10, budget, mode, &PlanOptions::DEFAULT).unwrap();
                let unknown = plan(m, m.input, 10, budget, mode, &with(0, 100)).unwrap();
                assert_eq!(
                    (unknown.heads, unknown.blocks),
                    (free.heads, free.blocks),
                    "{}: a cap without the data size changed the plan",
                    m.name
                );
                for samples in [300, 2000, 7200, 54000] {
                    let p = plan(m, m.input, 10, budget, mode, &with(samples, 100)).unwrap();
                    check_invariants(&p);
                    let cap = step_cap(&p.options);
                    for b in p.blocks() {
                        assert!(b.batch <= cap);
                        assert!(b.batch * 100 <= samples || b.batch == 8, "{b:?}");
                    }
                    assert!(p.peak_bytes() <= free.peak_bytes());
                    assert!(p.bp_batch <= cap);
                }
            }
        }
    }
}

/// The smallest feasible budget of `m` under options `o` (NeuroFlux).
fn needed_with(m: &ModelSpec, o: &PlanOptions) -> u64 {
    match plan(m, m.input, 10, 1, Mode::NeuroFlux, o) {
        Err(PlanError::BudgetTooSmall { needed }) => needed,
        other => panic!("{}: a 1-byte budget planned: {other:?}", m.name),
    }
}

#[test]
fn a_recompute_chain_over_the_scratch_costs_less_and_runs_in_the_planned_bytes() {
    for m in [&zoo::VGG_SMALL, &zoo::VGG11] {
        let after = PlanOptions {
            b_min: 1,
            b_max: 2,
            recompute: true,
            ..PlanOptions::DEFAULT
        };
        let over = PlanOptions {
            chain_in_scratch: true,
            ..after
        };
        let need = needed_with(m, &over);
        assert!(need <= needed_with(m, &after), "{}", m.name);
        for budget in [need, need * 3 / 2] {
            let p = plan(m, m.input, 10, budget, Mode::NeuroFlux, &over).unwrap();
            let q = plan(m, m.input, 10, budget, Mode::NeuroFlux, &after);
            let mut arena = vec![0f32; p.peak_floats()];
            for i in 0..p.n_blocks {
                let b = p.blocks[i];
                if let Ok(q) = &q {
                    let same = q.blocks().iter().find(|c| c.first == b.first);
                    assert!(same.is_none_or(|c| c.last != b.last || c.batch <= b.batch));
                }
                let l = p.layout(i);
                let mut be = ReferenceBackend::new(&mut arena[..]);
                step::init_block(&mut be, &l, &mut Rng::new(1)).unwrap();
                if let Some(c) = p.chain(i) {
                    assert_eq!(c.start, l.scratch, "{}", m.name);
                    assert!(b.chunk >= 1 && b.chunk <= b.batch);
                    // The chain writes only the scratch: the block's weights survive it.
                    let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    let before = bits(&be.arena()[..l.scratch]);
                    step::infer(&mut be, &c, b.chunk).unwrap();
                    assert!(before == bits(&be.arena()[..l.scratch]), "{}", m.name);
                }
                be.fill(l.input, 0.5);
                be.fill(l.labels, 1.0);
                step::train_step(&mut be, &l, b.batch, &Sgd::default(), 0.01, &mut []).unwrap();
            }
        }
    }
}
