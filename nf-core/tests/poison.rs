//! No step reads an element of the arena that it did not write first, except what a step is
//! given (the input batch and labels) and what a block keeps between steps (parameters, their
//! momentum, BN running statistics).
//!
//! Before each step (a training step, an evaluation pass, the units-only pass, a forward-only
//! chain) every other element of the arena is poisoned, with all bits 0, all bits 1 (a NaN),
//! a large finite value and seeded random finite values; the step must then give bit-identical
//! results from every poison: the kept state after it, its statistics and the block's output.
//! NaN alone would not do: ReLU and max-pool turn NaN into numbers. So results never depend on
//! what the memory held before, and a trainer restarted in a used buffer trains exactly as one
//! started in fresh memory.
use nf_core::infer::InferLayout;
use nf_core::layout::BlockLayout;
use nf_core::model::{ModelSpec, Op, Shape};
use nf_core::optim::Sgd;
use nf_core::plan::{plan, Mode, PlanOptions};
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo;

mod common;

/// A fill of the elements a step must not read before writing them.
#[derive(Clone, Copy, Debug)]
enum Poison {
    Bits(u32),
    Random(u64),
}

const POISONS: [Poison; 5] = [
    Poison::Bits(0),
    Poison::Bits(u32::MAX),
    Poison::Bits(0x7f7f_ffff), // f32::MAX
    Poison::Random(1),
    Poison::Random(2),
];

/// `arena` with every element outside `keep` replaced by `p`.
fn poisoned(arena: &[f32], keep: &[Region], p: Poison) -> Vec<f32> {
    let mut mask = vec![false; arena.len()];
    for r in keep {
        mask[r.offset..r.end()].fill(true);
    }
    let mut rng = Rng::new(match p {
        Poison::Random(s) => s,
        Poison::Bits(_) => 0,
    });
    arena
        .iter()
        .zip(&mask)
        .map(|(&v, &m)| match (m, p) {
            (true, _) => v,
            (false, Poison::Bits(b)) => f32::from_bits(b),
            (false, Poison::Random(_)) => rng.normal() * 100.0,
        })
        .collect()
}

/// The bits of `regions` of `arena`, one after another.
fn bits(arena: &[f32], regions: &[Region]) -> Vec<u32> {
    regions
        .iter()
        .flat_map(|r| arena[r.offset..r.end()].iter().map(|v| v.to_bits()))
        .collect()
}

fn stat_bits(st: &[SegStats]) -> Vec<u32> {
    st.iter()
        .flat_map(|s| [s.loss.to_bits(), s.correct, s.samples])
        .collect()
}

/// Run `f` from every poison of the elements outside `keep`; all must agree on `observe` (the
/// regions read after the step) and on what `f` returns.
fn same_from_every_poison(
    what: &str,
    arena: &[f32],
    keep: &[Region],
    observe: &[Region],
    f: impl Fn(&mut ReferenceBackend) -> Vec<u32>,
) {
    let mut first: Option<(Vec<u32>, Vec<u32>)> = None;
    for p in POISONS {
        let mut a = poisoned(arena, keep, p);
        let r = f(&mut ReferenceBackend::new(&mut a));
        let got = (bits(&a, observe), r);
        match &first {
            None => first = Some(got),
            Some(want) => {
                if let Some(i) = want.0.iter().zip(&got.0).position(|(a, b)| a != b) {
                    panic!("{what}: element {i} of the kept state or output depends on memory not yet written in the step (poison {p:?})");
                }
                assert_eq!(
                    want.1, got.1,
                    "{what}: statistics depend on memory not yet written in the step (poison {p:?})"
                );
            }
        }
    }
}

/// What a block keeps between steps: every segment's parameters, momentum and BN state.
fn kept(l: &BlockLayout) -> Vec<Region> {
    (0..l.n_segments())
        .flat_map(|k| [l.seg_params[k], l.seg_moms[k], l.seg_state[k]])
        .collect()
}

/// Every step of block `l` at batch `n`, from an initialised block with a fed batch.
fn check_block(name: &str, l: &BlockLayout, n: usize) {
    let mut arena = vec![0.0f32; l.floats];
    let mut rng = Rng::new(11);
    {
        let mut be = ReferenceBackend::new(&mut arena);
        step::init_block(&mut be, l, &mut rng).unwrap();
    }
    let per = l.model.unit_input(l.input_shape, l.first).len();
    let x = l.input.prefix(n * per);
    let y = l.labels.prefix(n);
    for (i, v) in arena[x.offset..x.end()].iter_mut().enumerate() {
        *v = ((i * 37 % 101) as f32 - 50.0) / 25.0;
    }
    for (i, v) in arena[y.offset..y.end()].iter_mut().enumerate() {
        *v = (i % l.classes) as f32;
    }
    let mut keep = kept(l);
    keep.extend([x, y]);
    let state = kept(l);
    let out = match l.output() {
        o if o.is_empty() => o,
        o => o.prefix(n * l.output_shape().len()),
    };
    let nseg = l.n_segments();
    let what = |s: &str| {
        format!(
            "{name} units {}-{} ({:?}, batch {}, n {n}) {s}",
            l.first, l.last, l.mode, l.batch
        )
    };
    let opt = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    same_from_every_poison(&what("train step"), &arena, &keep, &state, |be| {
        let mut st = vec![SegStats::default(); nseg];
        step::train_step(be, l, n, &opt, 0.05, &mut st).unwrap();
        stat_bits(&st)
    });
    let mut observe = state.clone();
    observe.push(out);
    same_from_every_poison(&what("eval step"), &arena, &keep, &observe, |be| {
        let mut st = vec![SegStats::default(); nseg];
        step::eval_step(be, l, n, &mut st).unwrap();
        stat_bits(&st)
    });
    same_from_every_poison(&what("infer step"), &arena, &keep, &observe, |be| {
        step::infer_step(be, l, n).unwrap();
        Vec::new()
    });
}

/// A forward-only chain at batch `n`.
fn check_chain(name: &str, c: &InferLayout, n: usize) {
    let mut arena = vec![0.0f32; c.floats];
    let mut rng = Rng::new(5);
    for v in &mut arena[c.params.offset..c.params.end()] {
        *v = rng.normal() * 0.3;
    }
    for (i, v) in arena[c.state.offset..c.state.end()].iter_mut().enumerate() {
        *v = if i % 2 == 0 { 0.1 } else { 1.2 };
    }
    let x = c.input.prefix(n * c.input_shape.len());
    let y = if c.labels.is_empty() {
        Region::NONE
    } else {
        c.labels.prefix(n)
    };
    for v in &mut arena[x.offset..x.end()] {
        *v = rng.normal();
    }
    for (i, v) in arena[y.offset..y.end()].iter_mut().enumerate() {
        *v = (i % c.classes) as f32;
    }
    let out = c.output().prefix(n * c.output_shape().len());
    let what = format!(
        "{name} chain 0..={} (scored {}, batch {}, n {n})",
        c.last, c.scored, c.batch
    );
    same_from_every_poison(&what, &arena, &[c.params, c.state, x, y], &[out], |be| {
        let st = step::infer(be, c, n).unwrap();
        stat_bits(&[st])
    });
}

/// Every block and chain of the plans of `m` in every mode, with and without recomputation,
/// at the full batch and at a smaller one.
fn check_plans(m: &ModelSpec, classes: usize) {
    for mode in [Mode::NeuroFlux, Mode::Ll, Mode::Bp] {
        for (recompute, chain_in_scratch) in [(false, false), (true, true)] {
            let o = PlanOptions {
                b_min: 1,
                b_max: 3,
                recompute,
                chain_in_scratch,
                ..PlanOptions::DEFAULT
            };
            let p = plan(m, m.input, classes, 1 << 30, mode, &o).unwrap();
            for i in 0..p.n_blocks {
                let l = p.layout(i);
                for n in [l.batch, l.batch.div_ceil(2)] {
                    check_block(m.name, &l, n);
                    if let Some(c) = p.chain(i) {
                        check_chain(m.name, &c, n.min(c.batch));
                    }
                }
            }
        }
    }
}

/// Units without parameters (a ReLU alone, a pool alone, ReLU then flatten) between
/// convolutions, and a 5×5 "same" convolution on a 1×1 map.
const PARAMETER_FREE: ModelSpec = ModelSpec {
    name: "parameter-free units",
    about: "test",
    input: Shape::new(2, 8, 8),
    units: &[
        &[
            Op::Conv {
                out: 3,
                k: 3,
                stride: 1,
                pad: 1,
                bias: true,
            },
            Op::BatchNorm,
        ],
        &[Op::Relu],
        &[Op::MaxPool2],
        &[Op::AvgPool(4)],
        &[
            Op::Conv {
                out: 4,
                k: 5,
                stride: 1,
                pad: 2,
                bias: false,
            },
            Op::BatchNorm,
            Op::Relu,
        ],
        &[Op::Relu, Op::Flatten],
    ],
    head_pool: 0,
};

#[test]
fn parameter_free_units_read_only_what_they_wrote() {
    check_plans(&PARAMETER_FREE, 3);
}

#[test]
fn zoo_steps_read_only_what_they_wrote() {
    check_plans(&zoo::VGG_SMALL, 10);
}

/// Seeded random architectures (see `common`: they include parameter-free units and kernels
/// wider than their input).
#[test]
fn random_architectures_read_only_what_they_wrote() {
    let mut rng = Rng::new(2424);
    let (mut free, mut wide) = (0, 0);
    for _ in 0..12 {
        let m = common::random_model(&mut rng, "random");
        free += usize::from(common::has_parameter_free_unit(&m));
        wide += usize::from(common::has_wide_kernel(&m));
        check_plans(&m, common::CLASSES);
    }
    assert!(free > 0 && wide > 0, "{free} / {wide} of 12 models");
}
