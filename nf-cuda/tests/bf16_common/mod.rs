//! The bf16 GEMM checks shared by the emulated device (`tests/emulated_bf16.rs`) and the GPU
//! (`tests/gpu.rs`): the convolution and linear ops of an engine with bf16 operands against
//! nf-core's reference ops, every output with `B = Σ|a||b|` its sum of absolute products (the
//! reference op on absolute values), against
//! - the f32 reference within `(2⁻⁷ + 10⁻⁴)·B`: what rounding both operands to bf16 allows;
//! - the reference run on the bf16-rounded inputs within `10⁻⁴·B`: the products really are of
//!   bf16 operands (the same engine in f32 misses this bound, which is checked too).
#![allow(dead_code)]
use std::io::Write;

use nf_core::backend::Backend;
use nf_core::layout::GEMM_ALIGN;
use nf_core::ops::conv2d::{self, ConvGeom};
use nf_core::ops::linear;
use nf_core::probe::KernelCall;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_cuda::engine::{Device, Engine};
use nf_cuda::gemm::{round_bf16, GemmPrecision};
use nf_cuda::workspace_floats_in;

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Worst errors of one output: relative to `B` against the f32 reference and against the
/// reference on rounded inputs.
#[derive(Default, Clone, Copy, Debug)]
struct Worst {
    to_f32: f64,
    to_rounded: f64,
}

/// Compare `got` with the references `r32` and `r16` element by element, scaled by `bound`.
fn worst(got: &[f32], r32: &[f32], r16: &[f32], bound: &[f32]) -> Worst {
    let mut w = Worst::default();
    for i in 0..got.len() {
        let b = f64::from(bound[i]).max(1e-30);
        w.to_f32 = w.to_f32.max(f64::from(got[i] - r32[i]).abs() / b);
        w.to_rounded = w.to_rounded.max(f64::from(got[i] - r16[i]).abs() / b);
    }
    w
}

const LOOSE: f64 = 1.0 / 128.0 + 1e-4;
const TIGHT: f64 = 1e-4;

fn check(what: &str, w: Worst, w_f32_engine: Worst) {
    say(&format!(
        "{what}: bf16 engine off the f32 reference by {:.2e}·B (bound {LOOSE:.2e}), off the \
         reference on bf16 inputs by {:.2e}·B (bound {TIGHT:.0e}); the f32 engine is off the \
         latter by {:.2e}·B",
        w.to_f32, w.to_rounded, w_f32_engine.to_rounded
    ));
    assert!(w.to_f32 <= LOOSE, "{what}: {w:?}");
    assert!(w.to_rounded <= TIGHT, "{what}: {w:?}");
    // The check can tell: an f32 GEMM misses the bf16 reference (by 9.8e-4·B to 3.9e-3·B
    // in these cases).
    assert!(
        w_f32_engine.to_rounded > 3.0 * TIGHT,
        "{what}: {w_f32_engine:?}"
    );
}

fn normal(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| round_bf16(x)).collect()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Lays regions out one after another, each on `align` elements.
struct Arena {
    next: usize,
    align: usize,
}

impl Arena {
    fn take(&mut self, len: usize) -> Region {
        let r = Region::new(self.next.next_multiple_of(self.align), len);
        self.next = r.end();
        r
    }
}

/// Elements of the arena an engine for these checks needs.
pub const ARENA: usize = 1 << 16;

fn read<D: Device>(be: &mut Engine<D>, r: Region) -> Vec<f32> {
    let mut v = vec![0.0; r.len()];
    be.read(r, &mut v);
    v
}

/// Conv forward and backward (dW, db, dx) of `g` on `be` (an arena of [`ARENA`] elements,
/// its precision and alignment set), in chunks of `chunk` samples: `[y, dw, db, dx]`.
fn conv_on<D: Device>(
    be: &mut Engine<D>,
    g: &ConvGeom,
    chunk: usize,
    [x, w, b, dy]: [&[f32]; 4],
) -> [Vec<f32>; 4] {
    let p = be.gemm_precision();
    let align = be.region_align_elems();
    let ws_len = [
        KernelCall::ConvForward(*g),
        KernelCall::ConvBackward {
            g: *g,
            dx: true,
            db: true,
        },
    ]
    .iter()
    .map(|k| workspace_floats_in(k, chunk, align, p))
    .max()
    .unwrap();
    let mut a = Arena { next: 0, align };
    let (rx, rw, rb, ry) = (
        a.take(x.len()),
        a.take(w.len()),
        a.take(b.len()),
        a.take(g.out_len()),
    );
    let (rdy, rdw, rdb, rdx, ws) = (
        a.take(dy.len()),
        a.take(w.len()),
        a.take(b.len()),
        a.take(x.len()),
        a.take(ws_len),
    );
    assert!(ws.end() <= ARENA);
    be.write(rx, x);
    be.write(rw, w);
    be.write(rb, b);
    be.write(rdy, dy);
    be.conv_forward(g, rx, rw, rb, ry, ws);
    be.conv_backward(g, rx, rw, rdy, rdw, rdb, rdx, ws);
    be.sync().unwrap_or_else(|e| panic!("{e}"));
    [ry, rdw, rdb, rdx].map(|r| read(be, r))
}

/// The nf-core reference of the same: `[y, dw, db, dx]`.
fn conv_ref(g: &ConvGeom, [x, w, b, dy]: [&[f32]; 4]) -> [Vec<f32>; 4] {
    let mut cols = vec![0.0; g.cols_len()];
    let mut y = vec![0.0; g.out_len()];
    conv2d::forward(g, x, w, Some(b), &mut y, &mut cols);
    let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; b.len()], vec![0.0; x.len()]);
    conv2d::backward(
        g,
        x,
        w,
        dy,
        &mut dw,
        Some(&mut db),
        Some(&mut dx),
        &mut cols,
    );
    [y, dw, db, dx]
}

/// The convolution checks on engines from `make(precision, align_bytes)`; `after` sees each
/// engine after its ops (with the convolution and its chunk).
pub fn check_convolutions<D: Device>(
    mut make: impl FnMut(GemmPrecision, usize) -> Engine<D>,
    mut after: impl FnMut(&Engine<D>, &ConvGeom, usize),
) {
    let mut rng = Rng::new(28);
    let geoms = [
        ConvGeom {
            n: 5,
            c_in: 3,
            h: 7,
            w: 6,
            c_out: 4,
            k: 3,
            stride: 1,
            pad: 1,
        },
        ConvGeom {
            n: 3,
            c_in: 5,
            h: 9,
            w: 8,
            c_out: 7,
            k: 3,
            stride: 2,
            pad: 0,
        },
    ];
    for (gi, g) in geoms.iter().enumerate() {
        let x = normal(&mut rng, g.in_len());
        let w = normal(&mut rng, g.weight_len());
        let b = normal(&mut rng, g.c_out);
        let dy = normal(&mut rng, g.out_len());
        let inputs = [&x[..], &w, &b, &dy];
        let r32 = conv_ref(g, inputs);
        let (rx, rw, rdy) = (rounded(&x), rounded(&w), rounded(&dy));
        // The bias and db are f32 on both paths: the rounded reference keeps b.
        let r16 = conv_ref(g, [&rx, &rw, &b, &rdy]);
        let bound = conv_ref(g, [&abs(&x), &abs(&w), &abs(&b), &abs(&dy)]);
        for (align, chunk) in [(4, 2), (GEMM_ALIGN, 1)] {
            let mut run = |p| {
                let mut be = make(p, align);
                let out = conv_on(&mut be, g, chunk, inputs);
                after(&be, g, chunk);
                out
            };
            let got = run(GemmPrecision::Bf16);
            let f32_engine = run(GemmPrecision::F32);
            for (i, name) in ["y", "dW", "dx"].into_iter().enumerate() {
                let i = [0, 1, 3][i];
                check(
                    &format!("conv {gi} (align {align} B, chunk {chunk}) {name}"),
                    worst(&got[i], &r32[i], &r16[i], &bound[i]),
                    worst(&f32_engine[i], &r32[i], &r16[i], &bound[i]),
                );
            }
            // The bias gradient is a reduction, in f32 on both paths.
            let db = worst(&got[2], &r32[2], &r32[2], &bound[2]);
            assert!(db.to_f32 <= TIGHT, "db: {db:?}");
        }
    }
}

/// Linear forward and backward on `be` (as [`conv_on`]): `[y, dwb, dx]`.
fn linear_on<D: Device>(
    be: &mut Engine<D>,
    [n, fin, fout]: [usize; 3],
    [x, wb, dy]: [&[f32]; 3],
) -> [Vec<f32>; 3] {
    let p = be.gemm_precision();
    let align = be.region_align_elems();
    let ws_len = workspace_floats_in(
        &KernelCall::LinearBackward {
            n,
            fin,
            fout,
            dx: true,
        },
        n,
        align,
        p,
    );
    assert_eq!(ws_len > 0, p == GemmPrecision::Bf16);
    let mut a = Arena { next: 0, align };
    let (rx, rwb, ry, rdy) = (
        a.take(x.len()),
        a.take(wb.len()),
        a.take(n * fout),
        a.take(dy.len()),
    );
    let (rdwb, rdx, ws) = (a.take(wb.len()), a.take(x.len()), a.take(ws_len));
    be.write(rx, x);
    be.write(rwb, wb);
    be.write(rdy, dy);
    be.linear_forward(n, fin, fout, rx, rwb, ry, ws);
    be.linear_backward(n, fin, fout, rx, rwb, rdy, rdwb, rdx, ws);
    be.sync().unwrap_or_else(|e| panic!("{e}"));
    [ry, rdwb, rdx].map(|r| read(be, r))
}

fn linear_ref([n, fin, fout]: [usize; 3], [x, wb, dy]: [&[f32]; 3]) -> [Vec<f32>; 3] {
    let (w, b) = wb.split_at(fout * fin);
    let mut y = vec![0.0; n * fout];
    linear::forward(n, fin, fout, x, w, Some(b), &mut y);
    let mut dwb = vec![0.0; wb.len()];
    let mut dx = vec![0.0; x.len()];
    let (dw, db) = dwb.split_at_mut(fout * fin);
    linear::backward(n, fin, fout, x, w, dy, dw, Some(db), Some(&mut dx));
    [y, dwb, dx]
}

/// The linear-layer checks on engines from `make(precision, align_bytes)` (128-byte
/// alignment); `after` sees each engine after its ops.
pub fn check_linear<D: Device>(
    mut make: impl FnMut(GemmPrecision, usize) -> Engine<D>,
    mut after: impl FnMut(&Engine<D>),
) {
    let mut rng = Rng::new(7);
    // Odd sizes: the last bf16 pair of an operand has one element.
    let dims = [6, 37, 5];
    let [n, fin, fout] = dims;
    let x = normal(&mut rng, n * fin);
    let wb = normal(&mut rng, fout * fin + fout);
    let dy = normal(&mut rng, n * fout);
    let inputs = [&x[..], &wb, &dy];
    let r32 = linear_ref(dims, inputs);
    // Only the weight is rounded, not the bias (an f32 addition on both paths).
    let mut rwb = rounded(&wb);
    rwb[fout * fin..].copy_from_slice(&wb[fout * fin..]);
    let mut r16 = linear_ref(dims, [&rounded(&x), &rwb, &rounded(&dy)]);
    // The bias gradient is a reduction of the f32 dY on both paths.
    r16[1][fout * fin..].copy_from_slice(&r32[1][fout * fin..]);
    let bound = linear_ref(dims, [&abs(&x), &abs(&wb), &abs(&dy)]);
    let mut run = |p| {
        let mut be = make(p, GEMM_ALIGN);
        let out = linear_on(&mut be, dims, inputs);
        after(&be);
        out
    };
    let got = run(GemmPrecision::Bf16);
    let f32_engine = run(GemmPrecision::F32);
    for (i, name) in ["y", "dW (and db)", "dx"].into_iter().enumerate() {
        let w = |o: &[Vec<f32>; 3]| worst(&o[i], &r32[i], &r16[i], &bound[i]);
        check(&format!("linear {name}"), w(&got), w(&f32_engine));
    }
}
