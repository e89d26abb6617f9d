//! Seeded random architectures for the property tests: what `nf train --model` accepts as a
//! description (any mix of convolutions with any kernel, stride, padding and bias, batch norm or
//! not, max- and average-pools, residual blocks, units without parameters, kernels wider than
//! the map they run on; non-square inputs), small enough that the reference kernels run them in
//! milliseconds.
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
    if !first && pick(rng, 6) == 0 {
        // A unit without parameters.
        return match pick(rng, 4) {
            0 => vec![Op::Relu],
            1 => vec![Op::MaxPool2],
            2 => vec![Op::AvgPool(1 + pick(rng, 3))],
            _ => vec![Op::Relu, Op::MaxPool2],
        };
    }
    if !first && pick(rng, 6) == 0 {
        // A map shrunk to 1×1 or 2×2, then a stride-1 kernel wider than the map plus its
        // padding plus one (rows and columns of the kernel that only ever read padding).
        // (A 1×1 output is only accepted in the last unit: a head needs 2×2.)
        let (p, k, pad) = [(2, 7, 3), (1, 5, 2), (1, 7, 3), (2, 7, 3)][pick(rng, 4)];
        return vec![
            Op::AvgPool(p),
            Op::Conv {
                out,
                k,
                stride: 1,
                pad,
                bias: true,
            },
            Op::Relu,
        ];
    }
    if !first && pick(rng, 3) == 0 {
        ops.push(Op::BasicBlock {
            out,
            stride: 1 + usize::from(pick(rng, 3) == 0),
        });
    } else {
        // One or two convolutions, each with or without batch norm.
        for _ in 0..1 + pick(rng, 2) {
            let k = [1, 3, 3, 5, 7][pick(rng, 5)];
            let bn = pick(rng, 4) != 0;
            ops.push(Op::Conv {
                out,
                k,
                stride: 1 + usize::from(pick(rng, 4) == 0),
                // "Same" padding often: a wide kernel on a small map then reads past its input.
                pad: if pick(rng, 3) == 0 {
                    k / 2
                } else {
                    pick(rng, k)
                },
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
pub fn random_model(rng: &mut Rng, name: &'static str) -> ModelSpec<'static> {
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

/// Whether `m` has a unit without parameters.
pub fn has_parameter_free_unit(m: &ModelSpec) -> bool {
    let mut s = m.input;
    m.units.iter().any(|u| {
        let free = u.iter().all(|op| op.params(s) == 0);
        s = nf_core::model::chain_shape(u, s);
        free
    })
}

/// Whether `m` has a stride-1 convolution whose kernel is wider or taller than its input plus
/// padding plus one (some kernel rows or columns then only ever read padding).
pub fn has_wide_kernel(m: &ModelSpec) -> bool {
    let mut s = m.input;
    let mut wide = false;
    for op in m.units.iter().flat_map(|u| u.iter()) {
        if let Op::Conv {
            k, stride: 1, pad, ..
        } = *op
        {
            wide |= k > s.w + pad + 1 || k > s.h + pad + 1;
        }
        s = op.out_shape(s);
    }
    wide
}
