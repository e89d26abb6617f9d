//! Seeded random architectures for the property tests: what `nf train --model` accepts as a
//! description (any mix of convolutions with any kernel, stride, padding and bias, batch norm or
//! not, max- and average-pools, residual blocks; non-square inputs), small enough that the
//! reference kernels run them in milliseconds.
#![allow(dead_code)] // each test file uses part of it
use nf_core::model::{ModelSpec, Op, Shape};
use nf_core::rng::Rng;

/// Classes of every random model.
pub const CLASSES: usize = 3;

fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u32) as usize
}

fn random_unit(rng: &mut Rng, first: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    let out = 2 + pick(rng, 6);
    if !first && pick(rng, 3) == 0 {
        ops.push(Op::BasicBlock {
            out,
            stride: 1 + usize::from(pick(rng, 3) == 0),
        });
    } else {
        // One or two convolutions, each with or without batch norm.
        for _ in 0..1 + pick(rng, 2) {
            let k = [1, 3, 3, 5][pick(rng, 4)];
            let bn = pick(rng, 4) != 0;
            ops.push(Op::Conv {
                out,
                k,
                stride: 1 + usize::from(pick(rng, 4) == 0),
                pad: pick(rng, k),
                bias: !bn || pick(rng, 2) == 0,
            });
            if bn {
                ops.push(Op::BatchNorm);
            }
            ops.push(Op::Relu);
        }
    }
    match pick(rng, 6) {
        0 => ops.push(Op::MaxPool2),
        1 => ops.push(Op::AvgPool(4 + pick(rng, 3))),
        _ => {}
    }
    ops
}

/// A random model (its `input` set, non-square most of the time) that accepts its input with
/// [`CLASSES`] classes: 2 to 4 units on inputs of 10 to 28 pixels a side.
pub fn random_model(rng: &mut Rng, name: &'static str) -> ModelSpec {
    loop {
        let n = 2 + pick(rng, 3);
        let units: Vec<&'static [Op]> = (0..n).map(|u| leak(random_unit(rng, u == 0))).collect();
        let m = ModelSpec {
            name,
            about: "random",
            input: Shape::new(1 + pick(rng, 3), 10 + pick(rng, 19), 10 + pick(rng, 19)),
            units: leak(units),
            head_pool: [0, 0, 2, 3][pick(rng, 4)],
        };
        if m.accepts(m.input, CLASSES) {
            return m;
        }
    }
}
