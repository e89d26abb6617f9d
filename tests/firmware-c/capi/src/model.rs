//! The C description of a model, checked and converted into nf-core's [`Op`]s.
//!
//! Everything nf-core computes from a model (shapes, parameter counts, layouts, the planner's
//! sizes) is plain `usize` arithmetic, and its kernels index slices: a description that is not
//! checked first could overflow on a 32-bit target or panic. So [`Model::from_c`] bounds every
//! field, walks the shapes in `u64`, checks the capacities of a training segment and a
//! recompute chain, and bounds the memory of the largest step the planner may lay out, before
//! nf-core sees the model.
use nf_core::layout::MAX_SEG_OPS;
use nf_core::model::{classifier_ops, Op, Shape, MAX_HEAD_OPS, MAX_UNITS};
use nf_core::plan::{Mode, PlanOptions, MIN_HEAD};

use crate::{
    nf_model, nf_op, nf_options, NF_E_CAPACITY, NF_E_MODEL, NF_E_NULL, NF_E_OPTIONS,
    NF_E_TOO_LARGE, NF_MAX_OPS, NF_MAX_UNITS, NF_MODE_BP, NF_MODE_LL, NF_MODE_NEUROFLUX,
    NF_OP_AVGPOOL, NF_OP_BASICBLOCK, NF_OP_BATCHNORM, NF_OP_CONV, NF_OP_FLATTEN, NF_OP_LINEAR,
    NF_OP_MAXPOOL2, NF_OP_RELU,
};

const _: () = assert!(
    NF_MAX_UNITS <= MAX_UNITS,
    "the C ABI allows more units than nf-core"
);

/// Largest number of `f32` elements any buffer size, shape or plan of an accepted model may
/// reach (512 MiB): far inside `usize` on a 32-bit target, so nf-core's arithmetic cannot wrap.
pub(crate) const MAX_FLOATS: u64 = 1 << 27;

/// A checked model: its ops unit after unit, the input shape, the classes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Model {
    ops: [Op; NF_MAX_OPS],
    unit_len: [u8; NF_MAX_UNITS],
    n_units: usize,
    pub(crate) input: Shape,
    pub(crate) classes: usize,
    pub(crate) head_pool: usize,
    /// The input normalisation the caller recorded (`nf_model::in_mean`, `in_std`).
    pub(crate) norm: [f32; 2],
}

fn field(v: u32, lo: u32, hi: u32) -> Result<usize, i32> {
    if (lo..=hi).contains(&v) {
        Ok(v as usize)
    } else {
        Err(NF_E_MODEL)
    }
}

/// The nf-core op of a C op (fields range-checked; shapes are checked later).
fn convert(o: &nf_op) -> Result<Op, i32> {
    Ok(match o.kind {
        NF_OP_CONV => Op::Conv {
            out: field(o.out, 1, 4096)?,
            k: field(o.k, 1, 15)?,
            stride: field(o.stride, 1, 15)?,
            pad: field(o.pad, 0, 15)?,
            bias: field(o.bias, 0, 1)? == 1,
        },
        NF_OP_BATCHNORM => Op::BatchNorm,
        NF_OP_RELU => Op::Relu,
        NF_OP_MAXPOOL2 => Op::MaxPool2,
        NF_OP_AVGPOOL => Op::AvgPool(field(o.out, 1, 256)?),
        NF_OP_FLATTEN => Op::Flatten,
        NF_OP_LINEAR => Op::Linear(field(o.out, 1, 65536)?),
        NF_OP_BASICBLOCK => Op::BasicBlock {
            out: field(o.out, 1, 4096)?,
            stride: field(o.stride, 1, 4)?,
        },
        _ => return Err(NF_E_MODEL),
    })
}

/// Elements of a shape, in `u64`.
fn elems(s: Shape) -> u64 {
    s.c as u64 * s.h as u64 * s.w as u64
}

/// Upper bounds, per sample and fixed, of the memory one op can take in any layout nf-core
/// makes of it (activations, gradients, saved buffers, im2col columns; parameters, gradients,
/// momentum, running statistics), generous by a wide margin. Also checks the op accepts `s`.
/// Returns (output shape, per-sample bound, fixed bound).
fn op_bound(op: &Op, s: Shape) -> Result<(Shape, u64, u64), i32> {
    if elems(s) > MAX_FLOATS || !op.accepts(s) {
        return Err(NF_E_MODEL);
    }
    let (c, h, w) = (s.c as u64, s.h as u64, s.w as u64);
    // The output shape, computed here in u64 first (`Op::out_shape` is usize arithmetic).
    let o = match *op {
        Op::Conv {
            out,
            k,
            stride,
            pad,
            ..
        } => {
            let (k, st, p) = (k as u64, stride as u64, pad as u64);
            (
                out as u64,
                (h + 2 * p - k) / st + 1,
                (w + 2 * p - k) / st + 1,
            )
        }
        Op::BasicBlock { out, stride } => {
            let st = stride as u64;
            (out as u64, (h - 1) / st + 1, (w - 1) / st + 1)
        }
        Op::Flatten => (c * h * w, 1, 1),
        _ => {
            let o = op.out_shape(s);
            (o.c as u64, o.h as u64, o.w as u64)
        }
    };
    let out_len = o.0 * o.1 * o.2;
    let in_len = c * h * w;
    let (per, params) = match *op {
        Op::Conv { out, k, .. } => {
            let kk = (k * k) as u64;
            (c * kk * o.1 * o.2, out as u64 * (c * kk + 1))
        }
        Op::BasicBlock { out, .. } => {
            let out = out as u64;
            (
                12 * out_len + (c * 9 + out * 9 + c) * o.1 * o.2,
                out * (c * 9 + out * 9 + c + 8),
            )
        }
        Op::Linear(out) => (0, out as u64 * (in_len + 1)),
        Op::BatchNorm => (0, 4 * c),
        _ => (0, 0),
    };
    if out_len > MAX_FLOATS || per > MAX_FLOATS || params > MAX_FLOATS {
        return Err(NF_E_TOO_LARGE);
    }
    let shape = Shape::new(o.0 as usize, o.1 as usize, o.2 as usize);
    Ok((shape, 16 * (in_len + out_len) + 2 * per, 8 * params))
}

/// The bounds of a chain of ops from shape `s`: (output shape, per sample, fixed).
fn chain_bound(ops: &[Op], mut s: Shape) -> Result<(Shape, u64, u64), i32> {
    let (mut per, mut fixed) = (0u64, 0u64);
    for op in ops {
        let (o, p, f) = op_bound(op, s)?;
        per += p;
        fixed += f;
        s = o;
    }
    Ok((s, per, fixed))
}

/// Checked planner options for `model`.
pub(crate) fn options(o: &nf_options) -> Result<(Mode, PlanOptions), i32> {
    let mode = match o.mode {
        NF_MODE_NEUROFLUX => Mode::NeuroFlux,
        NF_MODE_LL => Mode::Ll,
        NF_MODE_BP => Mode::Bp,
        _ => return Err(NF_E_OPTIONS),
    };
    let (f_max, f_min, ll) = (o.f_max as usize, o.f_min as usize, o.ll_filters as usize);
    let ok = (MIN_HEAD..=1024).contains(&f_min)
        && (f_min..=1024).contains(&f_max)
        && (MIN_HEAD..=1024).contains(&ll)
        && o.b_min >= 1
        && o.b_min <= o.b_max
        && o.b_max <= 1024
        && (1..=64).contains(&o.homogeneity)
        && o.chain_in_scratch <= 1;
    if !ok {
        return Err(NF_E_OPTIONS);
    }
    Ok((
        mode,
        PlanOptions {
            f_max,
            f_min,
            ll_filters: ll,
            b_min: o.b_min as usize,
            b_max: o.b_max as usize,
            homogeneity: o.homogeneity as usize,
            workers: 1,
            // Blocks after the first recompute their inputs through the frozen units (the C
            // ABI has no activation cache): the chain is part of each block's planned bytes.
            recompute: true,
            chain_in_scratch: o.chain_in_scratch == 1,
            ..PlanOptions::DEFAULT
        },
    ))
}

impl Model {
    /// Check and convert `m`.
    ///
    /// # Safety
    /// `m.ops` must point to `m.n_ops` readable `nf_op`s and `m.unit_ops` to `m.n_units`
    /// readable `u32`s (each checked for null and alignment here).
    pub(crate) unsafe fn from_c(m: &nf_model) -> Result<Model, i32> {
        if m.ops.is_null() || m.unit_ops.is_null() {
            return Err(NF_E_NULL);
        }
        if !m.ops.is_aligned() || !m.unit_ops.is_aligned() {
            return Err(crate::NF_E_ALIGN);
        }
        let (n_ops, n_units) = (m.n_ops as usize, m.n_units as usize);
        if n_units == 0 || n_ops == 0 {
            return Err(NF_E_MODEL);
        }
        if n_units > NF_MAX_UNITS || n_ops > NF_MAX_OPS {
            return Err(NF_E_CAPACITY);
        }
        // SAFETY: both pointers are non-null and aligned (checked above), the lengths are at
        // most NF_MAX_OPS / NF_MAX_UNITS, and the caller guarantees that many readable
        // elements. The slices live only during this call and are only read.
        let (c_ops, unit_ops) = unsafe {
            (
                core::slice::from_raw_parts(m.ops, n_ops),
                core::slice::from_raw_parts(m.unit_ops, n_units),
            )
        };
        let mut model = Model {
            ops: [Op::Relu; NF_MAX_OPS],
            unit_len: [0; NF_MAX_UNITS],
            n_units,
            input: Shape::new(
                field(m.in_c, 1, 4096)?,
                field(m.in_h, 1, 4096)?,
                field(m.in_w, 1, 4096)?,
            ),
            classes: field(m.classes, 2, 65536)?,
            head_pool: field(m.head_pool, 0, 64)?,
            norm: [m.in_mean, m.in_std],
        };
        let recorded = m.in_mean.is_finite() && m.in_std.is_finite() && m.in_std > 0.0;
        if !recorded && (m.in_mean, m.in_std) != (0.0, 0.0) {
            return Err(NF_E_MODEL);
        }
        let mut total = 0usize;
        for (u, &n) in unit_ops.iter().enumerate() {
            if n == 0 {
                return Err(NF_E_MODEL);
            }
            total += n as usize;
            if total > n_ops {
                return Err(NF_E_MODEL);
            }
            model.unit_len[u] = n as u8; // n <= n_ops <= NF_MAX_OPS < 256
        }
        if total != n_ops {
            return Err(NF_E_MODEL);
        }
        for (d, o) in model.ops.iter_mut().zip(c_ops) {
            *d = convert(o)?;
        }
        model.check()?;
        Ok(model)
    }

    /// The ops unit after unit, as the C ABI describes them (`kind`, `out`, `k`, `stride`,
    /// `pad`, `bias`; unused fields 0).
    pub(crate) fn c_ops(&self) -> impl Iterator<Item = [u32; 6]> + '_ {
        let n: usize = self.unit_len[..self.n_units]
            .iter()
            .map(|&n| n as usize)
            .sum();
        self.ops[..n].iter().map(|op| match *op {
            Op::Conv {
                out,
                k,
                stride,
                pad,
                bias,
            } => [
                NF_OP_CONV,
                out as u32,
                k as u32,
                stride as u32,
                pad as u32,
                u32::from(bias),
            ],
            Op::BatchNorm => [NF_OP_BATCHNORM, 0, 0, 0, 0, 0],
            Op::Relu => [NF_OP_RELU, 0, 0, 0, 0, 0],
            Op::MaxPool2 => [NF_OP_MAXPOOL2, 0, 0, 0, 0, 0],
            Op::AvgPool(s) => [NF_OP_AVGPOOL, s as u32, 0, 0, 0, 0],
            Op::Flatten => [NF_OP_FLATTEN, 0, 0, 0, 0, 0],
            Op::Linear(o) => [NF_OP_LINEAR, o as u32, 0, 0, 0, 0],
            Op::BasicBlock { out, stride } => {
                [NF_OP_BASICBLOCK, out as u32, 0, stride as u32, 0, 0]
            }
        })
    }

    /// Number of ops of each unit.
    pub(crate) fn unit_lens(&self) -> &[u8] {
        &self.unit_len[..self.n_units]
    }

    /// Number of units.
    pub(crate) fn n_units(&self) -> usize {
        self.n_units
    }

    /// The ops of unit `u`.
    pub(crate) fn unit(&self, u: usize) -> &[Op] {
        let start: usize = self.unit_len[..u].iter().map(|&n| n as usize).sum();
        &self.ops[start..start + self.unit_len[u] as usize]
    }

    /// The units as nf-core wants them, in `refs`.
    pub(crate) fn units<'a>(&'a self, refs: &'a mut [&'a [Op]; NF_MAX_UNITS]) -> &'a [&'a [Op]] {
        for (u, r) in refs.iter_mut().enumerate().take(self.n_units) {
            *r = self.unit(u);
        }
        &refs[..self.n_units]
    }

    /// Shapes and capacities, so that every later nf-core call on this model stays in range
    /// (the memory bound, which depends on the options, is [`Model::check_bound`]).
    fn check(&self) -> Result<(), i32> {
        let nu = self.n_units;
        if elems(self.input) > MAX_FLOATS {
            return Err(NF_E_TOO_LARGE);
        }
        // Capacities of a segment: a unit with its head (or the classifier), the whole model
        // and its classifier (backpropagation), and the longest recompute chain (units
        // 0..nu-1, laid out with the trailing head of its last unit).
        let n_cls = classifier_ops(self.classes).len();
        let mut prefix = 0;
        for u in 0..nu {
            let len = self.unit_len[u] as usize;
            let tail = if u + 1 == nu { n_cls } else { MAX_HEAD_OPS };
            if len + tail > MAX_SEG_OPS {
                return Err(NF_E_CAPACITY);
            }
            if u + 1 < nu {
                prefix += len;
            }
        }
        let all = prefix + self.unit_len[nu - 1] as usize;
        if prefix + MAX_HEAD_OPS > MAX_SEG_OPS || all + n_cls > MAX_SEG_OPS {
            return Err(NF_E_CAPACITY);
        }
        // Every op accepts its input (units, the narrowest head, the classifier), with the
        // shapes walked in u64.
        self.bound(MIN_HEAD).map(|_| ())
    }

    /// Bounds (per sample, fixed) of everything a step of this model can lay out: the units,
    /// a head of `f` filters on each unit's output, the classifier.
    fn bound(&self, f: usize) -> Result<(u64, u64), i32> {
        let nu = self.n_units;
        let (mut per, mut fixed) = (2 * elems(self.input), 0u64);
        let mut s = self.input;
        for u in 0..nu {
            let (o, p, fx) = chain_bound(self.unit(u), s)?;
            per += p;
            fixed += fx;
            s = o;
            if u + 1 < nu {
                let (head, n) = self.head(f, s);
                let (_, p, fx) = chain_bound(&head[..n], s)?;
                per += p;
                fixed += fx;
            }
        }
        let (_, p, fx) = chain_bound(&classifier_ops(self.classes), s)?;
        Ok((per + p, fixed + fx))
    }

    /// Whether the largest layout the planner may make with options `o` (heads up to `f_max`
    /// or `ll_filters` filters, batches up to `b_max`) stays under [`MAX_FLOATS`].
    pub(crate) fn check_bound(&self, o: &PlanOptions) -> Result<(), i32> {
        let (per, fixed) = self.bound(o.f_max.max(o.ll_filters))?;
        if per.saturating_mul(o.b_max as u64).saturating_add(fixed) > MAX_FLOATS {
            return Err(NF_E_TOO_LARGE);
        }
        Ok(())
    }

    /// The head of `f` filters nf-core puts on a unit output of shape `s`.
    fn head(&self, f: usize, s: Shape) -> ([Op; MAX_HEAD_OPS], usize) {
        let spec = nf_core::model::ModelSpec {
            name: "",
            about: "",
            input: self.input,
            units: &[],
            head_pool: self.head_pool,
        };
        spec.head(f, self.classes, s)
    }
}
