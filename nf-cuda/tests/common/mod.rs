//! Shared by the emulated and the GPU tests: every backend operation on random shapes,
//! compared element-wise with nf-core's reference backend, and whole training steps.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;

use nf_core::backend::Backend;
use nf_core::layout::{BlockLayout, Kernels, SegMode, Workspace};
use nf_core::model::{conv3, ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::plan::{plan, BlockWorkspace, Mode, Plan, PlanOptions};
use nf_core::probe::{block_workspace, KernelCall};
use nf_core::reference::ReferenceBackend;
use nf_core::region::{Bump, Region};
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo::VGG11;
use nf_cuda::ChunkPolicy;

/// Print a line straight to stderr (the harness captures `println!` of passing tests; these
/// lines are the evidence in CI logs).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One call of a backend operation.
#[derive(Clone, Debug)]
pub enum Call {
    Fill(Region, f32),
    Copy(Region, Region),
    ConvForward(ConvGeom, Region, Region, Region, Region, Region),
    ConvBackward(ConvGeom, [Region; 7]),
    BnTrain(Nchw, Region, Region, Region, Region, Region),
    BnEval(Nchw, Region, Region, Region, Region),
    BnBackward(Nchw, Region, Region, Region, Region, Region),
    Relu(Region),
    ReluBackward(Region, Region),
    Add(Region, Region),
    MaxPool(Nchw, Region, Region),
    MaxPoolBackward(Nchw, Region, Region, Region),
    AvgPool(Nchw, usize, Region, Region),
    AvgPoolBackward(Nchw, usize, Region, Region),
    Linear(usize, usize, usize, Region, Region, Region),
    LinearBackward(usize, usize, usize, [Region; 5]),
    Xent(usize, usize, Region, Region, Region),
    Sgd(Sgd, f32, Region, Region, Region),
}

impl Call {
    /// The operation's name (the key of the error report).
    pub fn name(&self) -> &'static str {
        match self {
            Call::Fill(..) => "fill",
            Call::Copy(..) => "copy",
            Call::ConvForward(..) => "conv forward (im2col + GEMM)",
            Call::ConvBackward(..) => "conv backward (dW, db, dx; col2im)",
            Call::BnTrain(..) => "batch norm forward (train)",
            Call::BnEval(..) => "batch norm forward (eval)",
            Call::BnBackward(..) => "batch norm backward",
            Call::Relu(..) => "relu forward",
            Call::ReluBackward(..) => "relu backward",
            Call::Add(..) => "add",
            Call::MaxPool(..) => "max pool forward",
            Call::MaxPoolBackward(..) => "max pool backward",
            Call::AvgPool(..) => "avg pool forward",
            Call::AvgPoolBackward(..) => "avg pool backward",
            Call::Linear(..) => "linear forward",
            Call::LinearBackward(..) => "linear backward",
            Call::Xent(..) => "softmax cross-entropy",
            Call::Sgd(..) => "sgd",
        }
    }

    /// Run it; the loss and correct count for the cross-entropy (read back from the backend's
    /// accumulator when it defers them; slot 3, so that slots are not mixed up).
    pub fn run<B: Backend>(&self, b: &mut B) -> Option<(f32, u32)> {
        match *self {
            Call::Fill(r, v) => b.fill(r, v),
            Call::Copy(s, d) => b.copy(s, d),
            Call::ConvForward(ref g, x, w, bias, y, cols) => b.conv_forward(g, x, w, bias, y, cols),
            Call::ConvBackward(ref g, [x, w, dy, dw, db, dx, cols]) => {
                b.conv_backward(g, x, w, dy, dw, db, dx, cols)
            }
            Call::BnTrain(ref d, x, gb, y, inv, run) => b.bn_forward_train(d, x, gb, y, inv, run),
            Call::BnEval(ref d, x, gb, run, y) => b.bn_forward_eval(d, x, gb, run, y),
            Call::BnBackward(ref d, xh, gb, inv, dy, dgb) => b.bn_backward(d, xh, gb, inv, dy, dgb),
            Call::Relu(x) => b.relu_forward(x),
            Call::ReluBackward(y, dy) => b.relu_backward(y, dy),
            Call::Add(y, x) => b.add_assign(y, x),
            Call::MaxPool(ref d, x, y) => b.maxpool_forward(d, x, y),
            Call::MaxPoolBackward(ref d, x, dy, dx) => b.maxpool_backward(d, x, dy, dx),
            Call::AvgPool(ref d, s, x, y) => b.avgpool_forward(d, s, x, y),
            Call::AvgPoolBackward(ref d, s, dy, dx) => b.avgpool_backward(d, s, dy, dx),
            Call::Linear(n, fi, fo, x, wb, y) => {
                b.linear_forward(n, fi, fo, x, wb, y, Region::NONE)
            }
            Call::LinearBackward(n, fi, fo, [x, wb, dy, dwb, dx]) => {
                b.linear_backward(n, fi, fo, x, wb, dy, dwb, dx, Region::NONE)
            }
            Call::Xent(n, c, lg, lb, dl) => {
                let now = b.softmax_xent(n, c, lg, lb, dl, 3);
                if !b.defers_scores() {
                    return Some(now);
                }
                assert_eq!(now, (0.0, 0), "a deferred score is returned as zero");
                let mut s = [(0.0, 0); 5];
                b.take_scores(&mut s);
                assert!(
                    s.iter().enumerate().all(|(k, v)| k == 3 || *v == (0.0, 0)),
                    "scores landed in another slot: {s:?}"
                );
                return Some(s[3]);
            }
            Call::Sgd(ref o, lr, p, g, m) => b.sgd(o, lr, p, g, m),
        }
        None
    }
}

/// Worst error per operation.
#[derive(Default)]
pub struct Report {
    worst: BTreeMap<&'static str, (f32, usize)>,
}

impl Report {
    fn note(&mut self, name: &'static str, err: f32) {
        let e = self.worst.entry(name).or_insert((0.0, 0));
        e.0 = e.0.max(err);
        e.1 += 1;
    }
    /// Print the table (to stderr, visible in CI logs).
    pub fn print(&self, title: &str) {
        say(&format!(
            "{title}: worst error per op (max |got - want| / max |want|)"
        ));
        for (name, (err, n)) in &self.worst {
            say(&format!("  {name:<38} {n:>4} cases   {err:.2e}"));
        }
    }
    /// Largest error over all ops.
    pub fn worst(&self) -> f32 {
        self.worst.values().fold(0.0, |a, v| a.max(v.0))
    }
}

/// Largest |got − want| relative to the largest |want| (exact zero when both are zero).
pub fn scaled_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let diff = got.iter().zip(want).fold(0f32, |a, (g, w)| {
        if g.is_nan() != w.is_nan() {
            f32::INFINITY
        } else if g.is_nan() {
            a
        } else {
            a.max((g - w).abs())
        }
    });
    if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(1e-30)
    }
}

/// Run `call` on the reference backend and on `be` from the same arena contents `init`
/// (written to the first `init.len()` elements of `be`'s arena), and compare: every region of
/// `outputs` within `tol` (scaled error), every other element of the arena except the
/// workspace regions `scratch` (whose contents are not part of the semantics) bit for bit, and
/// the returned loss and correct count.
#[allow(clippy::too_many_arguments)]
pub fn check<B: Backend>(
    be: &mut B,
    init: &[f32],
    call: &Call,
    outputs: &[Region],
    scratch: &[Region],
    tol: f32,
    report: &mut Report,
) where
    B::Error: std::fmt::Debug,
{
    let n = init.len();
    let mut cpu = init.to_vec();
    let want_ret = call.run(&mut ReferenceBackend::new(&mut cpu));
    be.write(Region::new(0, n), init);
    let got_ret = call.run(be);
    be.sync()
        .unwrap_or_else(|e| panic!("{}: {call:?}: backend error {e:?}", call.name()));
    let mut got = vec![0f32; n];
    be.read(Region::new(0, n), &mut got);
    be.sync().unwrap();
    let mut is_out = vec![false; n];
    for r in scratch {
        is_out[r.offset..r.end()].iter_mut().for_each(|v| *v = true);
    }
    let mut worst = 0f32;
    for r in outputs {
        is_out[r.offset..r.end()].iter_mut().for_each(|v| *v = true);
        let e = scaled_err(&got[r.offset..r.end()], &cpu[r.offset..r.end()]);
        assert!(
            e <= tol,
            "{}: {call:?}: output {r:?} error {e:e} > {tol:e}\n got {:?}\nwant {:?}",
            call.name(),
            &got[r.offset..r.end().min(r.offset + 12)],
            &cpu[r.offset..r.end().min(r.offset + 12)]
        );
        worst = worst.max(e);
    }
    for i in 0..n {
        if !is_out[i] {
            assert_eq!(
                got[i].to_bits(),
                cpu[i].to_bits(),
                "{}: {call:?}: element {i} outside the outputs changed (got {}, reference {})",
                call.name(),
                got[i],
                cpu[i]
            );
        }
    }
    if let (Some((wl, wc)), Some((gl, gc))) = (want_ret, got_ret) {
        assert_eq!(wc, gc, "{}: correct count", call.name());
        let e = (wl - gl).abs() / wl.abs().max(1e-30);
        assert!(e <= tol, "{}: loss {gl} vs {wl}", call.name());
        worst = worst.max(e);
    }
    report.note(call.name(), worst);
}

fn rnd(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn pick(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below((hi - lo + 1) as u32) as usize
}

/// A layout under construction: regions bumped one after another (with a gap of one element
/// between them, so a write past a region is caught), and the arena's initial values.
struct Arena {
    bump: Bump,
    init: Vec<f32>,
}

impl Arena {
    fn new() -> Self {
        Arena {
            bump: Bump::at(1),
            init: vec![0.5],
        }
    }
    /// A region of `n` elements with the given initial values.
    fn with(&mut self, vals: Vec<f32>) -> Region {
        let r = self.bump.take(vals.len());
        self.init.extend(vals);
        self.bump.take(1);
        self.init.push(-0.25);
        r
    }
    fn rand(&mut self, rng: &mut Rng, n: usize) -> Region {
        let v = rnd(rng, n);
        self.with(v)
    }
}

/// Every backend operation on `cases` random shapes each (plus fixed corner cases), compared
/// with the reference. `capacity` is `be`'s arena length; every case fits in it.
pub fn check_all_ops<B: Backend>(
    be: &mut B,
    capacity: usize,
    cases: usize,
    tol: f32,
    seed: u64,
) -> Report
where
    B::Error: std::fmt::Debug,
{
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut go_ws = |a: Arena, call: Call, outs: &[Region], ws: &[Region], report: &mut Report| {
        assert!(a.init.len() <= capacity, "case too large for the arena");
        check(be, &a.init, &call, outs, ws, tol, report);
    };
    for case in 0..cases {
        // --- element-wise -------------------------------------------------------------------
        let n = pick(&mut rng, 1, 700);
        let mut a = Arena::new();
        let x = a.rand(&mut rng, n);
        go_ws(a, Call::Fill(x, 0.75), &[x], &[], &mut report);
        let mut a = Arena::new();
        let (x, y) = (a.rand(&mut rng, n), a.rand(&mut rng, n));
        go_ws(a, Call::Copy(x, y), &[y], &[], &mut report);
        let mut a = Arena::new();
        let x = a.rand(&mut rng, n);
        go_ws(a, Call::Relu(x), &[x], &[], &mut report);
        let mut a = Arena::new();
        let mut yv = rnd(&mut rng, n);
        yv.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        let y = a.with(yv);
        let dy = a.rand(&mut rng, n);
        go_ws(a, Call::ReluBackward(y, dy), &[dy], &[], &mut report);
        let mut a = Arena::new();
        let (y, x) = (a.rand(&mut rng, n), a.rand(&mut rng, n));
        go_ws(a, Call::Add(y, x), &[y], &[], &mut report);
        for nesterov in [false, true] {
            let mut a = Arena::new();
            let (p, g, m) = (
                a.rand(&mut rng, n),
                a.rand(&mut rng, n),
                a.rand(&mut rng, n),
            );
            let opt = Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov,
            };
            go_ws(a, Call::Sgd(opt, 0.05, p, g, m), &[p, m], &[], &mut report);
        }

        // --- convolution --------------------------------------------------------------------
        let k = [1usize, 3][rng.below(2) as usize];
        let stride = pick(&mut rng, 1, 2);
        let pad = if k == 1 {
            rng.below(2) as usize * (case % 2)
        } else {
            pick(&mut rng, 0, 1)
        };
        // Every sixth case is a 1×1 stride-1 unpadded convolution (no im2col).
        let (k, stride, pad) = if case % 6 == 5 {
            (1, 1, 0)
        } else {
            (k, stride, pad)
        };
        let mut g = ConvGeom {
            n: if case < 2 { 1 } else { pick(&mut rng, 1, 5) },
            c_in: pick(&mut rng, 1, 5),
            h: pick(&mut rng, 3, 9),
            w: pick(&mut rng, 3, 10),
            c_out: pick(&mut rng, 1, 6),
            k,
            stride: if case % 5 == 4 { 1 } else { stride },
            pad,
        };
        // Every seventh case: a stride-1 kernel wider than the map plus padding plus one (5x5
        // "same" on 1x1 or 1xw, 7x7 pad 3 on 2x2).
        if case % 7 == 3 {
            let (h, w, k, pad) = [(1, 1, 5, 2), (1, g.w, 5, 2), (2, 2, 7, 3)][case % 3];
            g = ConvGeom {
                h,
                w,
                k,
                pad,
                stride: 1,
                ..g
            };
        }
        let (cl, wl) = (g.cols_len(), g.weight_len());
        // Workspace (at least what the reference needs, one sample's columns): one sample of
        // the CUDA engine; a chunk of 2 with half a sample to spare; or the whole batch.
        let per = nf_cuda::workspace::conv_sample_floats(&g);
        let cols_len = match case % 3 {
            0 => per,
            1 => 2 * per + per / 2,
            _ => g.n * per,
        }
        .max(cl)
        .max(1);
        let bias = case % 4 == 1;
        let mut a = Arena::new();
        let x = a.rand(&mut rng, g.in_len());
        let w = a.rand(&mut rng, wl);
        let b = if bias {
            a.rand(&mut rng, g.c_out)
        } else {
            Region::NONE
        };
        let y = a.rand(&mut rng, g.out_len());
        let cols = a.rand(&mut rng, cols_len);
        go_ws(
            a,
            Call::ConvForward(g, x, w, b, y, cols),
            &[y],
            &[cols],
            &mut report,
        );
        let mut a = Arena::new();
        let x = a.rand(&mut rng, g.in_len());
        let w = a.rand(&mut rng, wl);
        let dy = a.rand(&mut rng, g.out_len());
        let dw = a.rand(&mut rng, wl);
        let db = if bias {
            a.rand(&mut rng, g.c_out)
        } else {
            Region::NONE
        };
        let dx = if case % 4 == 3 {
            Region::NONE
        } else {
            a.rand(&mut rng, g.in_len())
        };
        let cols = a.rand(&mut rng, cols_len);
        go_ws(
            a,
            Call::ConvBackward(g, [x, w, dy, dw, db, dx, cols]),
            &[dw, db, dx],
            &[cols],
            &mut report,
        );

        // --- batch norm ---------------------------------------------------------------------
        let d = Nchw {
            n: if case == 0 { 1 } else { pick(&mut rng, 1, 6) },
            c: pick(&mut rng, 1, 7),
            h: if case == 0 { 1 } else { pick(&mut rng, 1, 7) },
            w: if case == 0 { 1 } else { pick(&mut rng, 1, 7) },
        };
        let mut a = Arena::new();
        // Shifted and scaled inputs: mean 3, spread 2.
        let xv: Vec<f32> = rnd(&mut rng, d.len())
            .iter()
            .map(|v| 3.0 + 2.0 * v)
            .collect();
        let x = a.with(xv);
        let gb = a.rand(&mut rng, 2 * d.c);
        let y = a.rand(&mut rng, d.len());
        let inv = a.rand(&mut rng, d.c);
        let runv: Vec<f32> = (0..2 * d.c)
            .map(|i| if i < d.c { 0.1 } else { 1.5 })
            .collect();
        let run = a.with(runv);
        go_ws(
            a,
            Call::BnTrain(d, x, gb, y, inv, run),
            &[x, y, inv, run],
            &[],
            &mut report,
        );
        let mut a = Arena::new();
        let x = a.rand(&mut rng, d.len());
        let gb = a.rand(&mut rng, 2 * d.c);
        let runv: Vec<f32> = (0..2 * d.c)
            .map(|i| {
                if i < d.c {
                    rng.normal()
                } else {
                    0.5 + rng.uniform()
                }
            })
            .collect();
        let run = a.with(runv);
        let y = a.rand(&mut rng, d.len());
        go_ws(a, Call::BnEval(d, x, gb, run, y), &[y], &[], &mut report);
        let mut a = Arena::new();
        let xh = a.rand(&mut rng, d.len());
        let gb = a.rand(&mut rng, 2 * d.c);
        let invv: Vec<f32> = (0..d.c).map(|_| 0.5 + rng.uniform()).collect();
        let inv = a.with(invv);
        let dy = a.rand(&mut rng, d.len());
        let dgb = a.rand(&mut rng, 2 * d.c);
        go_ws(
            a,
            Call::BnBackward(d, xh, gb, inv, dy, dgb),
            &[dy, dgb],
            &[],
            &mut report,
        );

        // --- pooling ------------------------------------------------------------------------
        let d = Nchw {
            n: pick(&mut rng, 1, 3),
            c: pick(&mut rng, 1, 4),
            h: pick(&mut rng, 1, 9),
            w: pick(&mut rng, 1, 9),
        };
        let (ho, wo) = (d.h / 2, d.w / 2);
        let mut a = Arena::new();
        // Repeated values make ties (the first maximum wins).
        let xv: Vec<f32> = (0..d.len()).map(|_| rng.below(4) as f32).collect();
        let x = a.with(xv.clone());
        let y = a.rand(&mut rng, d.n * d.c * ho * wo);
        go_ws(a, Call::MaxPool(d, x, y), &[y], &[], &mut report);
        let mut a = Arena::new();
        let x = a.with(xv);
        let dy = a.rand(&mut rng, d.n * d.c * ho * wo);
        let dx = a.rand(&mut rng, d.len());
        go_ws(
            a,
            Call::MaxPoolBackward(d, x, dy, dx),
            &[dx],
            &[],
            &mut report,
        );
        let s = pick(&mut rng, 1, d.h.min(d.w).min(4));
        let mut a = Arena::new();
        let x = a.rand(&mut rng, d.len());
        let y = a.rand(&mut rng, d.n * d.c * s * s);
        go_ws(a, Call::AvgPool(d, s, x, y), &[y], &[], &mut report);
        let mut a = Arena::new();
        let dy = a.rand(&mut rng, d.n * d.c * s * s);
        let dx = a.rand(&mut rng, d.len());
        go_ws(
            a,
            Call::AvgPoolBackward(d, s, dy, dx),
            &[dx],
            &[],
            &mut report,
        );

        // --- linear and loss ----------------------------------------------------------------
        let (nn, fin, fout) = (
            pick(&mut rng, 1, 9),
            pick(&mut rng, 1, 40),
            pick(&mut rng, 1, 12),
        );
        let mut a = Arena::new();
        let x = a.rand(&mut rng, nn * fin);
        let wb = a.rand(&mut rng, fout * fin + fout);
        let y = a.rand(&mut rng, nn * fout);
        go_ws(
            a,
            Call::Linear(nn, fin, fout, x, wb, y),
            &[y],
            &[],
            &mut report,
        );
        let mut a = Arena::new();
        let x = a.rand(&mut rng, nn * fin);
        let wb = a.rand(&mut rng, fout * fin + fout);
        let dy = a.rand(&mut rng, nn * fout);
        let dwb = a.rand(&mut rng, fout * fin + fout);
        let dx = if case % 3 == 0 {
            Region::NONE
        } else {
            a.rand(&mut rng, nn * fin)
        };
        go_ws(
            a,
            Call::LinearBackward(nn, fin, fout, [x, wb, dy, dwb, dx]),
            &[dwb, dx],
            &[],
            &mut report,
        );
        let classes = pick(&mut rng, 2, 12);
        let mut a = Arena::new();
        let lv: Vec<f32> = rnd(&mut rng, nn * classes)
            .iter()
            .map(|v| 3.0 * v)
            .collect();
        let logits = a.with(lv);
        let labels = a.with((0..nn).map(|_| rng.below(classes as u32) as f32).collect());
        let dl = if case % 4 == 2 {
            Region::NONE
        } else {
            a.rand(&mut rng, nn * classes)
        };
        go_ws(
            a,
            Call::Xent(nn, classes, logits, labels, dl),
            &[dl],
            &[],
            &mut report,
        );
    }
    report
}

/// Tiny models: a VGG-like chain (the first unit pooled), and a ResNet-like chain with a
/// strided basic block (projection shortcut) and an identity block.
const TINY_U0: [Op; 4] = [conv3(4), Op::BatchNorm, Op::Relu, Op::MaxPool2];
const TINY_U1: [Op; 3] = [conv3(6), Op::BatchNorm, Op::Relu];
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
pub const TINY_RES: ModelSpec = ModelSpec {
    name: "tiny-res",
    about: "test model",
    input: Shape::new(3, 8, 8),
    units: &[&RES_U0, &RES_U1, &RES_U2],
    head_pool: 0,
};

/// Train `steps` steps of the block of units `first..=last` of `model` in `mode` on the
/// reference backend and on `be` (arena `capacity` ≥ the layout), from the same
/// initialisation and batches, then evaluate; returns the worst scaled error over the
/// parameters, momentum and BN state, and over the losses. The block's kernel workspace holds
/// `chunk` samples of the CUDA engine's convolutions (and one sample's columns for the
/// reference).
#[allow(clippy::too_many_arguments)]
pub fn check_training<B: Backend>(
    be: &mut B,
    capacity: usize,
    model: &ModelSpec,
    mode: SegMode,
    first: usize,
    last: usize,
    chunk: usize,
    steps: usize,
) -> (f32, f32)
where
    B::Error: std::fmt::Debug,
{
    let classes = 3;
    let n = 6;
    let layout = |workspace| {
        BlockLayout::with_kernels(
            model,
            model.input,
            classes,
            mode,
            first,
            last,
            &[5; MAX_UNITS],
            n,
            &Kernels {
                workers: 1,
                workspace,
            },
        )
    };
    let ws = block_workspace(&layout(Workspace::Columns), |k| {
        let reference = match *k {
            KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => g.cols_len(),
            _ => 0,
        };
        reference.max(nf_cuda::workspace_floats(k, chunk))
    });
    let l = layout(Workspace::Fixed(ws));
    assert!(
        l.floats <= capacity,
        "layout of {} > capacity {capacity}",
        l.floats
    );
    let mut arena = vec![0f32; l.floats];
    let mut cpu = ReferenceBackend::new(&mut arena);
    step::init_block(&mut cpu, &l, &mut Rng::new(5)).unwrap();
    step::init_block(be, &l, &mut Rng::new(5)).unwrap();
    let opt = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let s_in = l.model.unit_input(l.input_shape, l.first);
    let mut rng = Rng::new(17);
    let nseg = l.n_segments();
    let mut loss_err = 0f32;
    for _ in 0..steps {
        let x: Vec<f32> = (0..n * s_in.len()).map(|_| rng.normal()).collect();
        let y: Vec<f32> = (0..n).map(|_| rng.below(classes as u32) as f32).collect();
        cpu.write(l.input.prefix(x.len()), &x);
        cpu.write(l.labels.prefix(n), &y);
        be.write(l.input.prefix(x.len()), &x);
        be.write(l.labels.prefix(n), &y);
        let mut s_cpu = vec![SegStats::default(); nseg];
        let mut s_be = vec![SegStats::default(); nseg];
        step::train_step(&mut cpu, &l, n, &opt, 0.05, &mut s_cpu).unwrap();
        step::train_step(be, &l, n, &opt, 0.05, &mut s_be).unwrap();
        step::collect_scores(be, &mut s_be);
        for (a, b) in s_cpu.iter().zip(&s_be) {
            loss_err = loss_err.max((a.loss - b.loss).abs() / a.loss.abs().max(1e-30));
        }
    }
    let mut s_cpu = vec![SegStats::default(); nseg];
    let mut s_be = vec![SegStats::default(); nseg];
    step::eval_step(&mut cpu, &l, n, &mut s_cpu).unwrap();
    step::eval_step(be, &l, n, &mut s_be).unwrap();
    step::collect_scores(be, &mut s_be);
    for (a, b) in s_cpu.iter().zip(&s_be) {
        loss_err = loss_err.max((a.loss - b.loss).abs() / a.loss.abs().max(1e-30));
    }
    // Persistent state: parameters, momentum, BN running statistics of every segment.
    let mut state_err = 0f32;
    for k in 0..nseg {
        for r in [l.seg_params[k], l.seg_moms[k], l.seg_state[k]] {
            let mut got = vec![0f32; r.len];
            be.read(r, &mut got);
            be.sync().unwrap();
            let want = &cpu.arena()[r.offset..r.end()];
            state_err = state_err.max(scaled_err(&got, want));
        }
    }
    (state_err, loss_err)
}

/// The training cases of the emulated and the GPU tests (the same, so that what a GPU runs has
/// run on the emulated device first): name, model, mode, first and last unit, and the samples
/// per convolution chunk the workspace holds (one; part of the batch of 6 with a short last
/// chunk; the whole batch).
pub const TRAINING_CASES: [(&str, &ModelSpec, SegMode, usize, usize, usize); 6] = [
    (
        "tiny VGG, local, chunks of 1",
        &TINY,
        SegMode::Local,
        0,
        1,
        1,
    ),
    (
        "tiny VGG, local, chunks of 4",
        &TINY,
        SegMode::Local,
        0,
        1,
        4,
    ),
    ("tiny VGG, bp, one chunk", &TINY, SegMode::Global, 0, 1, 6),
    (
        "tiny ResNet, local, chunks of 1",
        &TINY_RES,
        SegMode::Local,
        0,
        2,
        1,
    ),
    (
        "tiny ResNet, bp, chunks of 4",
        &TINY_RES,
        SegMode::Global,
        0,
        2,
        4,
    ),
    (
        "tiny ResNet, block 1..=2, one chunk",
        &TINY_RES,
        SegMode::Local,
        1,
        2,
        6,
    ),
];

/// Arena of the training cases (every one fits).
pub const TRAINING_CAPACITY: usize = 1 << 17;

/// VGG-11 planned for the CUDA backend as `nf train` plans it (each block's workspace what its
/// calls need under the default chunk policy; a short version of nf-host's settle loop).
pub fn cuda_plan(budget: u64, mode: Mode, reserve: u64) -> Plan {
    let policy = ChunkPolicy::DEFAULT;
    let mut ws = [0usize; MAX_UNITS];
    for _ in 0..16 {
        let o = PlanOptions {
            workspace: BlockWorkspace::Fixed(ws),
            reserve,
            ..PlanOptions::DEFAULT
        };
        let p = plan(&VGG11, VGG11.input, 10, budget, mode, &o).expect("VGG-11 plans");
        let mut need = ws;
        for (i, b) in p.blocks().iter().enumerate() {
            need[b.first] = block_workspace(&p.layout(i), |k| policy.need(k));
        }
        if need == ws {
            return p;
        }
        ws = need;
    }
    panic!("the workspace does not settle");
}
