//! Whole training steps against the reference in every mode, and the planned arena used in
//! full, on plans whose workspace is what the subject asks for.
use nf_core::backend::Backend;
use nf_core::model::{conv3, ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::optim::Sgd;
use nf_core::plan::{plan, BlockWorkspace, Mode, Plan, PlanError, PlanOptions};
use nf_core::probe::{block_workspace, chain_workspace, KernelCall};
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo;

use crate::case::SENTINEL;
use crate::Subject;

/// Tiny models: a VGG-like chain (the first unit pooled), and a ResNet-like chain with a
/// strided basic block (projection shortcut) and an identity block.
const TINY_U0: [Op; 4] = [conv3(4), Op::BatchNorm, Op::Relu, Op::MaxPool2];
const TINY_U1: [Op; 3] = [conv3(6), Op::BatchNorm, Op::Relu];
/// A two-unit VGG-like test model.
pub const TINY: ModelSpec = ModelSpec {
    name: "tiny",
    about: "test model",
    input: Shape::new(2, 10, 9),
    units: &[&TINY_U0, &TINY_U1],
    head_pool: 0,
};
const RES_U0: [Op; 3] = [conv3(4), Op::BatchNorm, Op::Relu];
const RES_U1: [Op; 1] = [Op::BasicBlock { out: 6, stride: 2 }];
const RES_U2: [Op; 1] = [Op::BasicBlock { out: 6, stride: 1 }];
/// A three-unit ResNet-like test model.
pub const TINY_RES: ModelSpec = ModelSpec {
    name: "tiny-res",
    about: "test model",
    input: Shape::new(3, 8, 8),
    units: &[&RES_U0, &RES_U1, &RES_U2],
    head_pool: 0,
};

/// The training cases: model, mode, and the most samples a step trains on. The tiny models
/// in every mode; Small VGG, ResNet-18 (basic blocks with projections) and VGG-11 (its 2x2
/// and 1x1 stages) at real sizes.
pub const TRAINING: [(&ModelSpec, Mode, usize); 10] = [
    (&TINY, Mode::NeuroFlux, 6),
    (&TINY, Mode::Ll, 6),
    (&TINY, Mode::Bp, 6),
    (&TINY_RES, Mode::NeuroFlux, 6),
    (&TINY_RES, Mode::Ll, 6),
    (&TINY_RES, Mode::Bp, 6),
    (&zoo::VGG_SMALL, Mode::NeuroFlux, 6),
    (&zoo::VGG_SMALL, Mode::Bp, 6),
    (&zoo::RESNET18, Mode::NeuroFlux, 3),
    (&zoo::VGG11, Mode::Ll, 4),
];

const CLASSES: usize = 10;

/// `m` planned in `mode` for `workers` workers with each block's workspace what its calls
/// (its steps and its recompute chain) need as `need` sizes them; at `budget` bytes, or at the
/// smallest budget that plans when `budget` is `None`.
pub fn settled_plan<'a>(
    m: &ModelSpec<'a>,
    mode: Mode,
    budget: Option<u64>,
    o: &PlanOptions,
    need: impl Fn(&KernelCall) -> usize + Copy,
) -> Plan<'a> {
    let mut ws = [0usize; MAX_UNITS];
    for _ in 0..32 {
        let o = PlanOptions {
            workspace: BlockWorkspace::Fixed(ws),
            ..*o
        };
        let p = match budget {
            Some(b) => plan(m, m.input, CLASSES, b, mode, &o),
            None => match plan(m, m.input, CLASSES, 1, mode, &o) {
                Err(PlanError::BudgetTooSmall { needed }) => {
                    plan(m, m.input, CLASSES, needed, mode, &o)
                }
                other => other,
            },
        }
        .unwrap_or_else(|e| panic!("{} {mode:?} does not plan: {e}", m.name));
        let mut covered = true;
        for (i, b) in p.blocks().iter().enumerate() {
            let chain = p.chain(i).map_or(0, |c| chain_workspace(&c, need));
            let n = block_workspace(&p.layout(i), need).max(chain);
            if n > ws[b.first] {
                ws[b.first] = n;
                covered = false;
            }
        }
        if covered {
            return p;
        }
    }
    panic!("{} {mode:?}: the workspace does not settle", m.name);
}

/// Initialise `l`, write the batch, run two training steps and an evaluation (scores read
/// after each); the statistics of every step.
fn run_steps<B: Backend>(
    be: &mut B,
    l: &nf_core::layout::BlockLayout,
    n: usize,
    x: &[f32],
    labels: &[f32],
) -> Vec<SegStats> {
    step::init_block(be, l, &mut Rng::new(3)).unwrap_or_else(|e| panic!("init: {e}"));
    be.write(l.input.prefix(x.len()), x);
    be.write(l.labels.prefix(n), labels);
    let opt = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let mut all = Vec::new();
    for k in 0..3 {
        let mut st = [SegStats::default(); MAX_UNITS];
        let st = &mut st[..l.n_segments()];
        if k < 2 {
            step::train_step(be, l, n, &opt, 0.05, st).unwrap_or_else(|e| panic!("train: {e}"));
        } else {
            step::eval_step(be, l, n, st).unwrap_or_else(|e| panic!("eval: {e}"));
        }
        step::collect_scores(be, st);
        all.extend_from_slice(st);
    }
    all
}

/// Every case of [`TRAINING`] on the reference and on `s`: every block of the plan at the
/// smallest budget (workspace for both backends' kernels) trains two steps, then evaluates;
/// the losses, and the parameters, momentum, BN state and block output, must agree within
/// `s.tol().steps` (relative to each buffer's largest value).
/// Small VGG, ResNet-18 and VGG-11 are left out where not [`Subject::full_size`].
pub fn training_steps<S: Subject>(s: &S) {
    let tol = s.tol().steps;
    for (m, mode, n_max) in TRAINING {
        if !s.full_size() && !std::ptr::eq(m, &TINY) && !std::ptr::eq(m, &TINY_RES) {
            continue;
        }
        let need = |k: &KernelCall| {
            let reference = match *k {
                KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => g.cols_len(),
                _ => 0,
            };
            reference.max(s.workspace(k))
        };
        let o = PlanOptions {
            workers: s.workers(),
            ..PlanOptions::DEFAULT
        };
        let p = settled_plan(m, mode, None, &o, need);
        for i in 0..p.n_blocks {
            let l = p.layout(i);
            let n = l.batch.min(n_max);
            let mut rng = Rng::new(7 + i as u64);
            let x: Vec<f32> = (0..n * m.unit_input(p.input, l.first).len())
                .map(|_| rng.normal())
                .collect();
            let labels: Vec<f32> = (0..n).map(|j| (j % CLASSES) as f32).collect();
            let mut want = vec![0f32; l.floats];
            let sw = run_steps(&mut ReferenceBackend::new(&mut want), &l, n, &x, &labels);
            let mut store = vec![0f32; l.floats];
            let mut be = s.backend(&mut store);
            let sg = run_steps(&mut be, &l, n, &x, &labels);
            let what = format!("{}: {} {mode:?} block {i} n={n}", s.name(), m.name);
            for (a, b) in sw.iter().zip(&sg) {
                assert!(
                    (a.loss - b.loss).abs() <= tol * a.loss.abs().max(1.0)
                        && a.samples == b.samples,
                    "{what}: loss {} vs reference {}",
                    b.loss,
                    a.loss
                );
            }
            let mut regions: Vec<Region> = Vec::new();
            for k in 0..l.n_segments() {
                regions.extend([l.seg_params[k], l.seg_moms[k], l.seg_state[k]]);
            }
            regions.push(l.output());
            for r in regions.into_iter().filter(|r| !r.is_empty()) {
                let mut got = vec![0f32; r.len()];
                be.read(r, &mut got);
                be.sync().unwrap_or_else(|e| panic!("{what}: {e}"));
                let w = &want[r.offset..r.end()];
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = w
                    .iter()
                    .zip(&got)
                    .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
                // Two SGD steps amplify rounding differences through BN; a wrong gradient
                // changes weights by ~lr·|g|, far above the stated tolerances.
                assert!(
                    err <= tol * scale.max(1e-6),
                    "{what}: region {r:?} max error {err} (scale {scale})"
                );
            }
        }
    }
}

/// Every element of a plan made on `s`'s workspace answers is written by `s` when a block
/// trains, evaluates and propagates at its full batch, and when its recompute chain runs (the
/// arena starts full of a sentinel NaN that no kernel produces): the plan is not padded.
/// Small VGG under 24 MiB (the tiny models at their smallest budget where not
/// [`Subject::full_size`]), NeuroFlux with and without recompute, and backpropagation.
pub fn arena_used_in_full<S: Subject>(s: &S) {
    let cases: &[(&ModelSpec, Option<u64>)] = if s.full_size() {
        &[(&zoo::VGG_SMALL, Some(24 << 20))]
    } else {
        &[(&TINY, None), (&TINY_RES, None)]
    };
    for (mode, recompute) in [
        (Mode::NeuroFlux, false),
        (Mode::NeuroFlux, true),
        (Mode::Bp, false),
    ] {
        for &(m, budget) in cases {
            let o = PlanOptions {
                recompute,
                workers: s.workers(),
                ..PlanOptions::DEFAULT
            };
            let p = settled_plan(m, mode, budget, &o, |k| s.workspace(k));
            for i in 0..p.n_blocks {
                let l = p.layout(i);
                let end = p.blocks[i].bytes as usize / 4;
                let mut store = vec![0f32; end];
                let mut be = s.backend(&mut store);
                be.write(Region::new(0, end), &vec![f32::from_bits(SENTINEL); end]);
                let fill = |be: &mut S::B<'_>, r: Region| {
                    let v: Vec<f32> = (0..r.len()).map(|j| (j % 10) as f32 * 0.1 - 0.3).collect();
                    be.write(r, &v);
                };
                if let Some(c) = p.chain(i) {
                    fill(&mut be, c.params);
                    be.fill(c.state, 1.0);
                    fill(&mut be, c.input);
                    step::infer(&mut be, &c, c.batch).unwrap_or_else(|e| panic!("chain: {e}"));
                }
                step::init_block(&mut be, &l, &mut Rng::new(3))
                    .unwrap_or_else(|e| panic!("init: {e}"));
                fill(&mut be, l.input);
                let labels: Vec<f32> = (0..l.batch).map(|j| (j % CLASSES) as f32).collect();
                be.write(l.labels, &labels);
                let mut st = [SegStats::default(); MAX_UNITS];
                let st = &mut st[..l.n_segments()];
                step::train_step(&mut be, &l, l.batch, &Sgd::default(), 0.01, st)
                    .unwrap_or_else(|e| panic!("train: {e}"));
                step::eval_step(&mut be, &l, l.batch, st).unwrap_or_else(|e| panic!("eval: {e}"));
                step::infer_step(&mut be, &l, l.batch).unwrap_or_else(|e| panic!("infer: {e}"));
                step::collect_scores(&mut be, st);
                let mut arena = vec![0f32; end];
                be.read(Region::new(0, end), &mut arena);
                be.sync().unwrap_or_else(|e| panic!("{e}"));
                let missed = arena.iter().filter(|v| v.to_bits() == SENTINEL).count();
                assert_eq!(
                missed,
                0,
                "{}: {mode:?} recompute {recompute} block {i}: {missed} of {end} planned elements never written",
                s.name()
            );
            }
        }
    }
}
