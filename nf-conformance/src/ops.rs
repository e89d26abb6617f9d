//! Every op forward and backward against the reference, on one list of shapes.
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::probe::KernelCall;
use nf_core::region::Region;
use nf_core::rng::Rng;

use crate::case::{Call, Case, Side};
use crate::{Subject, Worst};

/// Elements of the subject's arena in the op tests (every case fits).
const CAP: usize = 1 << 21;

/// `n` samples of `c_in × h × w` into `c_out` channels, kernel `k`, stride `s`, padding `p`.
#[allow(clippy::too_many_arguments)]
pub fn geom(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    s: usize,
    p: usize,
) -> ConvGeom {
    ConvGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        k,
        stride: s,
        pad: p,
    }
}

/// The chosen convolution shapes: every path of the backends' kernels and their edges.
pub fn conv_shapes() -> Vec<ConvGeom> {
    vec![
        // Small VGG's first conv (c_in = 1, ckk = 9) and a head-like 7x7 conv.
        geom(5, 1, 28, 28, 32, 3, 1, 1),
        geom(3, 64, 7, 7, 40, 3, 1, 1),
        // Same-size convolutions that narrow the channels (auxiliary heads): the input gradient
        // is a convolution of dY with the flipped kernel. Also 5x5 kernels, odd maps, equal
        // widths (the boundary of that path) and a map whose pixels are a multiple of 32.
        geom(3, 32, 14, 14, 16, 3, 1, 1),
        geom(2, 128, 7, 7, 16, 3, 1, 1),
        geom(3, 20, 9, 7, 20, 3, 1, 1),
        geom(2, 12, 8, 5, 6, 5, 1, 2),
        geom(2, 48, 8, 8, 32, 3, 1, 1),
        // GEMM blocking edges: ckk > 256, c_out > 96, more than 1024 output pixels.
        geom(2, 40, 9, 11, 100, 3, 1, 1),
        geom(2, 3, 33, 33, 8, 3, 1, 1),
        // Tiny maps (per-tap path): 2x2, 1x1, 2x2 with stride 2, 1x3.
        geom(4, 24, 2, 2, 36, 3, 1, 1),
        geom(5, 33, 1, 1, 20, 3, 1, 1),
        geom(3, 8, 4, 4, 12, 3, 2, 1),
        geom(3, 6, 1, 3, 5, 3, 1, 1),
        // Pointwise, strided 1x1 (a ResNet projection), stride 2 with and without padding.
        geom(3, 16, 6, 5, 24, 1, 1, 0),
        geom(4, 16, 8, 8, 32, 1, 2, 0),
        geom(3, 5, 9, 8, 7, 3, 2, 1),
        geom(2, 5, 8, 9, 7, 3, 2, 0),
        // Batch 1; batch 7 (not divisible by 2 or 3); a kernel larger than the map (no output).
        geom(1, 4, 6, 6, 6, 3, 1, 1),
        geom(7, 3, 5, 4, 9, 3, 1, 0),
        geom(2, 3, 2, 2, 4, 3, 1, 0),
        // Stride-1 kernels wider or taller than the map plus padding plus one (rows or columns
        // of taps that only read padding): 5x5 "same" on 1x1, 7x7 pad 3 on 2x2 and 2x1 (per
        // tap); 5x5 "same" on 1x20 (whole shifted planes), 5x5 pad 3 on 1x20 (columns).
        geom(3, 4, 1, 1, 5, 5, 1, 2),
        geom(2, 3, 2, 2, 4, 7, 1, 3),
        geom(2, 3, 2, 1, 4, 7, 1, 3),
        geom(2, 3, 1, 20, 4, 5, 1, 2),
        geom(2, 3, 1, 20, 4, 5, 1, 3),
    ]
}

fn pick(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below((hi - lo + 1) as u32) as usize
}

/// Run a case on the backend `be` of `s`, panicking with the first difference; its outputs'
/// errors go into `worst`.
fn run<S: Subject>(
    s: &S,
    be: &mut S::B<'_>,
    worst: &mut Worst,
    c: &Case,
    what: &str,
    calls: impl Fn(Side) -> Vec<Call>,
) -> Vec<f32> {
    let what = format!("{} [{what}]", s.name());
    let (got, errors) = c
        .check_errors(&what, be, &s.tol(), calls)
        .unwrap_or_else(|e| panic!("{e}"));
    worst.note(&errors);
    got
}

/// Convolution forward then backward (dW, db when `bias`, dX when `dx`), the subject with
/// the workspace it asks for, the reference with one sample's columns.
fn conv_case<S: Subject>(
    s: &S,
    be: &mut S::B<'_>,
    worst: &mut Worst,
    g: ConvGeom,
    bias: bool,
    with_dx: bool,
    seed: u64,
) {
    let mut c = Case::new(seed);
    let x = c.input("x", g.in_len());
    let w = c.input("w", g.weight_len());
    let b = if bias {
        c.input("b", g.c_out)
    } else {
        Region::NONE
    };
    let y = c.gemm_out("conv y", g.out_len());
    let dy = c.input("dy", g.out_len());
    let dw = c.gemm_out("conv dw", g.weight_len());
    let db = if bias {
        c.exact_out("conv db", g.c_out)
    } else {
        Region::NONE
    };
    let dx = if with_dx {
        c.gemm_out("conv dx", g.in_len())
    } else {
        Region::NONE
    };
    let bwd = KernelCall::ConvBackward {
        g,
        dx: with_dx,
        db: bias,
    };
    let sws = c.workspace(
        s.workspace(&KernelCall::ConvForward(g))
            .max(s.workspace(&bwd)),
    );
    let rws = c.workspace(g.cols_len());
    let what = format!("conv {g:?} bias={bias} dx={with_dx}");
    run(s, be, worst, &c, &what, |side| {
        let ws = if side == Side::Subject { sws } else { rws };
        vec![
            Call::ConvForward(g, [x, w, b, y, ws]),
            Call::ConvBackward(g, [x, w, dy, dw, db, dx, ws]),
        ]
    });
}

/// The convolution on every chosen shape, with and without bias and input gradient.
pub fn ops_conv_chosen<S: Subject>(s: &S) -> Worst {
    let mut store = vec![0f32; CAP];
    let mut be = s.backend(&mut store);
    let mut worst = Worst::default();
    for (i, g) in conv_shapes().into_iter().enumerate() {
        for (bias, dx) in [(false, true), (true, false), (true, true)] {
            conv_case(s, &mut be, &mut worst, g, bias, dx, i as u64);
        }
    }
    worst
}

/// The convolution on 40 random shapes: kernels 1 and 3, strides 1 and 2, every sixth a
/// 1x1 stride-1 unpadded one (no im2col), every seventh a stride-1 kernel wider than the map
/// plus padding plus one (5x5 "same" on 1x1 or 1xw, 7x7 pad 3 on 2x2).
pub fn ops_conv_random<S: Subject>(s: &S) -> Worst {
    let mut store = vec![0f32; CAP];
    let mut be = s.backend(&mut store);
    let mut worst = Worst::default();
    let mut rng = Rng::new(2025);
    for i in 0..40usize {
        let k = [1usize, 3][rng.below(2) as usize];
        let stride = pick(&mut rng, 1, 2);
        let pad = if k == 1 { 0 } else { pick(&mut rng, 0, 1) };
        let mut g = geom(
            pick(&mut rng, 1, 6),
            pick(&mut rng, 1, 12),
            pick(&mut rng, 1, 12),
            pick(&mut rng, 1, 12),
            pick(&mut rng, 1, 40),
            k,
            stride,
            pad,
        );
        if i % 6 == 5 {
            (g.k, g.stride, g.pad) = (1, 1, 0);
        }
        if i % 7 == 3 {
            let (h, w, k, pad) = [(1, 1, 5, 2), (1, g.w, 5, 2), (2, 2, 7, 3)][i % 3];
            g = ConvGeom {
                h,
                w,
                k,
                pad,
                stride: 1,
                ..g
            };
        }
        conv_case(
            s,
            &mut be,
            &mut worst,
            g,
            rng.below(2) == 0,
            rng.below(2) == 0,
            i as u64,
        );
    }
    worst
}

/// Batch norm: evaluation, training forward (running statistics updated) and backward, on
/// small shapes (one sample of one pixel too) and large ones, inputs of mean 3 and spread 2.
pub fn ops_batchnorm<S: Subject>(s: &S) -> Worst {
    let mut store = vec![0f32; CAP];
    let mut be = s.backend(&mut store);
    let mut worst = Worst::default();
    let mut rng = Rng::new(100);
    let mut shapes = vec![
        nchw(3, 5, 4, 3),
        nchw(1, 2, 1, 1),
        nchw(16, 7, 14, 14),
        nchw(9, 64, 7, 7),
    ];
    for _ in 0..8 {
        // At least 4 values per channel: with 2 the gradient cancels to rounding noise.
        shapes.push(nchw(
            pick(&mut rng, 2, 6),
            pick(&mut rng, 1, 7),
            pick(&mut rng, 1, 7),
            pick(&mut rng, 2, 7),
        ));
    }
    for (i, d) in shapes.into_iter().enumerate() {
        let mut c = Case::new(100 + i as u64);
        let x = c.bn_out("bn x", d.len(), |r| 3.0 + 2.0 * r.normal());
        let gb = c.input("bn gamma_beta", 2 * d.c);
        let y = c.bn_out("bn y", d.len(), |_| f32::NAN);
        let inv = c.bn_out("bn invstd", d.c, |_| f32::NAN);
        let run_stats = c.bn_out("bn running", 2 * d.c, |r| 0.5 + r.uniform());
        let dy = c.bn_out("bn dy", d.len(), |r| r.normal());
        let dgb = c.bn_out("bn dgamma_beta", 2 * d.c, |_| f32::NAN);
        let ye = c.bn_out("bn y_eval", d.len(), |_| f32::NAN);
        run(
            s,
            &mut be,
            &mut worst,
            &c,
            &format!("batchnorm {d:?}"),
            |_| {
                vec![
                    Call::BnEval(d, [x, gb, run_stats, ye]),
                    Call::BnTrain(d, [x, gb, y, inv, run_stats]),
                    Call::BnBackward(d, [x, gb, inv, dy, dgb]),
                ]
            },
        );
    }
    worst
}

fn nchw(n: usize, c: usize, h: usize, w: usize) -> Nchw {
    Nchw { n, c, h, w }
}

/// Max pooling (with ties: the first maximum wins), average pooling to 1x1, 2x2, 3x3 and the
/// heads' 4x4 (overlapping bins on odd sizes, bins of two sizes where the size does not divide
/// the map), ReLU forward and backward, add, fill and copy.
pub fn ops_elementwise<S: Subject>(s: &S) -> Worst {
    let mut store = vec![0f32; CAP];
    let mut be = s.backend(&mut store);
    let mut worst = Worst::default();
    let shapes = [
        nchw(2, 3, 5, 7),
        nchw(8, 16, 28, 28),
        nchw(3, 9, 9, 6),
        nchw(4, 8, 7, 7),
        nchw(2, 5, 14, 14),
        nchw(1, 1, 1, 1),
        nchw(3, 2, 1, 3),
    ];
    for (i, d) in shapes.into_iter().enumerate() {
        for ties in [false, true] {
            let mut c = Case::new(200 + i as u64);
            let (ho, wo) = (d.h / 2, d.w / 2);
            let x = if ties {
                c.input_with("x", d.len(), |r| r.below(4) as f32)
            } else {
                c.input("x", d.len())
            };
            let pooled = d.n * d.c * ho * wo;
            let y = c.exact_out("maxpool y", pooled);
            let dy = c.input("maxpool dy", pooled);
            let dx = c.exact_out("maxpool dx", d.len());
            let s4 = 4.min(d.h).min(d.w);
            let sizes = [1, 2.min(s4), 3.min(s4), s4];
            let ya = sizes.map(|k| c.exact_out(&format!("avgpool {k} y"), d.n * d.c * k * k));
            let dya = sizes.map(|k| c.input(&format!("avgpool {k} dy"), d.n * d.c * k * k));
            let dxa = sizes.map(|k| c.exact_out(&format!("avgpool {k} dx"), d.len()));
            let r = c.exact_inout("relu", d.len(), |r| r.normal());
            let dr = c.exact_inout("relu dy", d.len(), |r| r.normal());
            let a = c.exact_inout("add y", d.len(), |r| r.normal());
            let f = c.exact_inout("fill", d.len(), |r| r.normal());
            let cp = c.exact_out("copy", d.len());
            run(
                s,
                &mut be,
                &mut worst,
                &c,
                &format!("pool/relu/add {d:?} ties={ties}"),
                |_| {
                    let mut calls =
                        vec![Call::MaxPool(d, x, y), Call::MaxPoolBackward(d, x, dy, dx)];
                    for (k, sz) in sizes.into_iter().enumerate() {
                        calls.push(Call::AvgPool(d, sz, x, ya[k]));
                        calls.push(Call::AvgPoolBackward(d, sz, dya[k], dxa[k]));
                    }
                    calls.extend([
                        Call::Relu(r),
                        Call::ReluBackward(r, dr),
                        Call::Add(a, x),
                        Call::Fill(f, 0.75),
                        Call::Copy(x, cp),
                    ]);
                    calls
                },
            );
        }
    }
    worst
}

/// The linear layer forward and backward (with and without dX), softmax cross-entropy (with
/// and without dlogits) and SGD (plain and Nesterov momentum, weight decay), on tiny shapes,
/// shapes large enough to be split over threads, and 10 random ones.
pub fn ops_linear<S: Subject>(s: &S) -> Worst {
    let mut store = vec![0f32; CAP];
    let mut be = s.backend(&mut store);
    let mut worst = Worst::default();
    let mut rng = Rng::new(300);
    let mut shapes = vec![(3, 7, 5), (128, 512, 10), (37, 300, 64)];
    for _ in 0..10 {
        shapes.push((
            pick(&mut rng, 1, 9),
            pick(&mut rng, 1, 40),
            pick(&mut rng, 2, 12),
        ));
    }
    for (i, (n, fin, fout)) in shapes.into_iter().enumerate() {
        for with_dx in [false, true] {
            let mut c = Case::new(300 + i as u64);
            let x = c.input("x", n * fin);
            let wb = c.input("wb", fout * fin + fout);
            let y = c.gemm_out("linear y", n * fout);
            let dy = c.input_with("dy (logits)", n * fout, |r| 3.0 * r.normal());
            let dwb = c.gemm_out("linear dwb", fout * fin + fout);
            let dx = if with_dx {
                c.gemm_out("linear dx", n * fin)
            } else {
                Region::NONE
            };
            let labels = c.input_with("labels", n, |r| r.below(fout as u32) as f32);
            let dl = if with_dx {
                c.exact_out("xent dlogits", n * fout)
            } else {
                Region::NONE
            };
            let len = if i < 3 { 70_000 + fin } else { 1 + fin };
            let p = c.exact_inout("sgd param", len, |r| r.normal());
            let g = c.input("grad", len);
            let m = c.exact_inout("sgd momentum", len, |r| r.normal());
            let fwd = KernelCall::LinearForward { n, fin, fout };
            let bwd = KernelCall::LinearBackward {
                n,
                fin,
                fout,
                dx: with_dx,
            };
            let ws = c.workspace(s.workspace(&fwd).max(s.workspace(&bwd)));
            let opt = Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: i % 2 == 1,
            };
            let what = format!("linear/xent/sgd n={n} fin={fin} fout={fout} dx={with_dx}");
            run(s, &mut be, &mut worst, &c, &what, |_| {
                vec![
                    Call::Linear(n, fin, fout, [x, wb, y, ws]),
                    Call::LinearBackward(n, fin, fout, [x, wb, dy, dwb, dx, ws]),
                    Call::Xent(n, fout, [dy, labels, dl]),
                    Call::Sgd(opt, 0.05, [p, g, m]),
                ]
            });
        }
    }
    worst
}
