//! The block-local step end to end on the CPU reference backend: gradients of whole segments
//! against finite differences, and bit-reproducibility.
use nf_core::layout::{BlockLayout, SegMode};
use nf_core::model::{conv3, ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::optim::Sgd;
use nf_core::reference::ReferenceBackend;
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};

mod common;

/// A tiny VGG-like model: two conv units (the first pooled) on 2x10x9 inputs.
const TINY_U0: [Op; 4] = [conv3(4), Op::BatchNorm, Op::Relu, Op::MaxPool2];
const TINY_U1: [Op; 3] = [conv3(6), Op::BatchNorm, Op::Relu];
const TINY: ModelSpec = ModelSpec {
    name: "tiny",
    about: "test model",
    input: Shape::new(2, 10, 9),
    units: &[&TINY_U0, &TINY_U1],
    head_pool: 0,
};

/// A tiny ResNet: a stem and a strided basic block with a projection, then an identity block.
const RES_U0: [Op; 3] = [conv3(4), Op::BatchNorm, Op::Relu];
const RES_U1: [Op; 1] = [Op::BasicBlock { out: 6, stride: 2 }];
const RES_U2: [Op; 1] = [Op::BasicBlock { out: 6, stride: 1 }];
const TINY_RES: ModelSpec = ModelSpec {
    name: "tiny-res",
    about: "test model",
    input: Shape::new(3, 8, 8),
    units: &[&RES_U0, &RES_U1, &RES_U2],
    head_pool: 0,
};

const CLASSES: usize = 3;

fn heads(f: usize) -> [usize; MAX_UNITS] {
    [f; MAX_UNITS]
}

/// Fill the layout's input and labels with a seeded batch of `n` samples.
fn load_batch(be: &mut ReferenceBackend, l: &BlockLayout, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let s = l.model.unit_input(l.input_shape, l.first);
    let x: Vec<f32> = (0..n * s.len()).map(|_| rng.normal()).collect();
    let y: Vec<f32> = (0..n).map(|i| (i % CLASSES) as f32).collect();
    let arena = be.arena();
    arena[l.input.offset..l.input.offset + x.len()].copy_from_slice(&x);
    arena[l.labels.offset..l.labels.offset + n].copy_from_slice(&y);
}

/// Check the analytic gradient of segment `k` against central differences on a sample of
/// parameters spread over every op of the segment.
///
/// Tolerance: the loss is computed in f32 (about 7 significant digits) and is about 1, so with
/// eps = 1e-3 the rounding error of one difference quotient is about 1e-7 / 1e-3 = 1e-4 while
/// typical gradients are 1e-3..1e-1. ReLU and max-pool kinks crossed within +-eps add an error
/// that shrinks with eps (observed: 1e-2 at eps = 1e-2, 1e-3 at eps = 1e-3). A relative error of
/// the whole sampled vector below 1e-2 therefore means the backward pass is right (a wrong
/// transpose, missing term or mis-placed buffer gives errors of order 1). A parameter whose
/// forward and backward one-sided differences disagree (by more than 5e-3 and 20%) sits on a
/// kink, where no derivative exists: it is left out, and at most a quarter may be.
fn check_segment(model: &ModelSpec, mode: SegMode, first: usize, last: usize, k: usize) {
    check_segment_at(model, mode, first, last, k, 1e-3)
}

/// [`check_segment`] with differences of `eps`.
fn check_segment_at(
    model: &ModelSpec,
    mode: SegMode,
    first: usize,
    last: usize,
    k: usize,
    eps: f32,
) {
    let n = 5;
    let l = BlockLayout::new(model, model.input, CLASSES, mode, first, last, &heads(5), n);
    let mut arena = vec![0.0f32; l.floats];
    let mut be = ReferenceBackend::new(&mut arena);
    step::init_block(&mut be, &l, &mut Rng::new(7)).unwrap();
    // Run the earlier segments (local mode) so segment k's input carry holds real data.
    load_batch(&mut be, &l, n, 11);
    let mut st = [SegStats::default(); MAX_UNITS];
    step::eval_step(&mut be, &l, n, &mut st).unwrap();
    let seg = l.segment(k);
    step::gradients(&mut be, &l, k, n).unwrap();
    let analytic: Vec<f32> = be.arena()[seg.param_grads.offset..seg.param_grads.end()].to_vec();

    let mut rng = Rng::new(3);
    let mut picks = Vec::new();
    for slot in &seg.ops[..seg.n_ops] {
        for _ in 0..slot.param.len().min(12) {
            let i =
                slot.param.offset - seg.params.offset + rng.below(slot.param.len() as u32) as usize;
            picks.push(i);
        }
    }
    let mut num = Vec::new();
    let mut ana = Vec::new();
    let l0 = step::gradients(&mut be, &l, k, n).unwrap().loss as f64 / n as f64;
    for &i in &picks {
        let at = seg.params.offset + i;
        let orig = be.arena()[at];
        let loss_at = |v: f32, be: &mut ReferenceBackend| {
            be.arena()[at] = v;
            step::gradients(be, &l, k, n).unwrap().loss as f64 / n as f64
        };
        let lp = loss_at(orig + eps, &mut be);
        let lm = loss_at(orig - eps, &mut be);
        be.arena()[at] = orig;
        let (fwd, bwd) = ((lp - l0) / eps as f64, (l0 - lm) / eps as f64);
        if (fwd - bwd).abs() > 5e-3 && (fwd - bwd).abs() > 0.2 * fwd.abs().max(bwd.abs()) {
            continue; // a kink between orig - eps and orig + eps
        }
        num.push(((lp - lm) / (2.0 * eps as f64)) as f32);
        ana.push(analytic[i]);
    }
    assert!(
        4 * num.len() >= 3 * picks.len(),
        "{} of {} parameters sit on kinks",
        picks.len() - num.len(),
        picks.len()
    );
    let diff: f64 = num
        .iter()
        .zip(&ana)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let na: f64 = ana.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let nn: f64 = num.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let rel = diff / (na + nn);
    println!(
        "{} {:?} units {first}..={last} segment {k}: {} params checked ({} on kinks left \
         out), relative error {rel:.2e}",
        model.name,
        mode,
        num.len(),
        picks.len() - num.len()
    );
    assert!(na > 1e-4, "gradient is suspiciously zero");
    assert!(
        rel < 1e-2,
        "relative error {rel:.3e}: analytic {ana:?} numeric {num:?}"
    );
}

#[test]
fn gradcheck_conv_unit_with_aux_head() {
    check_segment(&TINY, SegMode::Local, 0, 1, 0);
}

#[test]
fn gradcheck_last_unit_with_classifier() {
    check_segment(&TINY, SegMode::Local, 0, 1, 1);
}

#[test]
fn gradcheck_basic_block_unit_with_aux_head() {
    check_segment(&TINY_RES, SegMode::Local, 1, 1, 0);
}

#[test]
fn gradcheck_backprop_through_whole_models() {
    check_segment(&TINY, SegMode::Global, 0, 1, 0);
    check_segment(&TINY_RES, SegMode::Global, 0, 2, 0);
}

/// Gradients of every segment of seeded random architectures (see `common`), local and
/// backpropagated, against finite differences. Thin random layers put many ReLU kinks within
/// +-1e-3 of a parameter (the error falls with eps: 1.1e-2, 9.1e-3, 4.4e-3, 1.2e-3 at eps 3e-3,
/// 1e-3, 3e-4, 1e-4 for the worst of these models), so eps is 3e-4 here.
#[test]
fn gradcheck_random_architectures() {
    let mut rng = Rng::new(151);
    for _ in 0..8 {
        let m = common::random_model(&mut rng, "random");
        let n = m.units.len();
        for k in 0..n {
            check_segment_at(&m, SegMode::Local, 0, n - 1, k, 3e-4);
        }
        check_segment_at(&m, SegMode::Global, 0, n - 1, 0, 3e-4);
    }
}

fn train_20_steps(seed: u64) -> Vec<f32> {
    let n = 6;
    let l = BlockLayout::new(
        &TINY_RES,
        TINY_RES.input,
        CLASSES,
        SegMode::Local,
        0,
        2,
        &heads(4),
        n,
    );
    let mut arena = vec![0.0f32; l.floats];
    let mut be = ReferenceBackend::new(&mut arena);
    let mut rng = Rng::new(seed);
    step::init_block(&mut be, &l, &mut rng).unwrap();
    let opt = Sgd {
        nesterov: true,
        ..Sgd::default()
    };
    let mut st = [SegStats::default(); MAX_UNITS];
    for s in 0..20 {
        load_batch(&mut be, &l, n, seed * 100 + s);
        step::train_step(&mut be, &l, n, &opt, 0.05, &mut st).unwrap();
    }
    be.arena()[..l.grads.offset].to_vec()
}

#[test]
fn same_seed_gives_identical_weights_after_20_steps() {
    let a = train_20_steps(5);
    let b = train_20_steps(5);
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "weights differ between runs"
    );
    let c = train_20_steps(6);
    assert_ne!(a, c, "a different seed should give different weights");
}

#[test]
fn local_training_lowers_the_loss() {
    let n = 12;
    let l = BlockLayout::new(
        &TINY,
        TINY.input,
        CLASSES,
        SegMode::Local,
        0,
        1,
        &heads(8),
        n,
    );
    let mut arena = vec![0.0f32; l.floats];
    let mut be = ReferenceBackend::new(&mut arena);
    step::init_block(&mut be, &l, &mut Rng::new(1)).unwrap();
    load_batch(&mut be, &l, n, 4);
    let mut first = [SegStats::default(); 2];
    let mut st = [SegStats::default(); 2];
    let opt = Sgd::default();
    step::train_step(&mut be, &l, n, &opt, 0.05, &mut first).unwrap();
    for _ in 0..60 {
        step::train_step(&mut be, &l, n, &opt, 0.05, &mut st).unwrap();
    }
    println!("first step {first:?}, step 61 {st:?}");
    for k in 0..2 {
        let better =
            st[k].mean_loss() < 0.75 * first[k].mean_loss() && st[k].correct > first[k].correct;
        assert!(better, "segment {k}: {:?} -> {:?}", first[k], st[k]);
    }
}

#[test]
fn step_refuses_an_arena_one_element_short() {
    let l = BlockLayout::new(
        &TINY,
        TINY.input,
        CLASSES,
        SegMode::Local,
        0,
        1,
        &heads(4),
        4,
    );
    let mut arena = vec![0.0f32; l.floats - 1];
    let mut be = ReferenceBackend::new(&mut arena);
    let err = step::train_step(&mut be, &l, 4, &Sgd::default(), 0.1, &mut []).unwrap_err();
    assert_eq!(
        err,
        step::StepError::ArenaTooSmall {
            needed: l.bytes(),
            got: l.bytes() - 4
        }
    );
    // Nothing was written.
    assert!(arena.iter().all(|&v| v == 0.0));
}
