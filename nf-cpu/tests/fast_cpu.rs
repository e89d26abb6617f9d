//! The fast CPU backend against `ReferenceBackend` (the oracle), op by op on random shapes
//! and for whole training steps, with 1, 2 and 3 worker threads, under every instruction set
//! this CPU runs (`nf_cpu::available_isas`).
//!
//! Every op runs on two copies of the same arena, one per backend (`common::case`). Afterwards
//! the arenas must agree everywhere except in the kernel workspaces: outputs within a
//! tolerance, inputs and the gaps between buffers exactly (so a kernel that writes where it
//! should not is caught too). Outputs start as NaN, so an element the host kernel forgets to
//! write shows up. The host kernels get a workspace of `workspace::floats_for` elements (the
//! reference its own, of im2col columns).
//!
//! Tolerance: an element may differ by `1e-4 · max|reference|` over its buffer. The host
//! convolution and linear layer sum the same products in another order and with fused
//! multiply-adds; for a K-term f32 dot product that changes the result by about
//! `sqrt(K) · 2^-24 · Σ|terms|`, under `1e-5` of the buffer's largest value for the K ≤ 5000 used
//! here. 1e-4 leaves a 10x margin, while an indexing or synchronisation bug gives errors of the
//! order of the values themselves. Batch norm sums its statistics in `f64` in another order and
//! normalises in `f32` (the reference in `f64`): a few units in the last place, checked with
//! `1e-5` of the scale. ReLU, pooling, SGD and the loss run the reference arithmetic and must
//! match bit for bit (checked with tolerance 0).
use std::convert::Infallible;

use nf_core::backend::Backend;
use nf_core::layout::{BlockLayout, SegMode};
use nf_core::model::MAX_UNITS;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::plan::{Mode, Plan, PlanError, PlanOptions};
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo;
use nf_cpu::workspace::{floats_for, KernelCall};
use nf_cpu::{available_isas, FastCpuBackend, Isa, Pool};
use nf_host::memory::{host_plan, HostKernels};

mod common;
use common::case::{geom, Case, Side};

/// Relative tolerance for GEMM-based ops (see the module documentation).
const TOL: f32 = 1e-4;
/// Relative tolerance for batch norm (see the module documentation).
const BN_TOL: f32 = 1e-5;

const THREADS: [usize; 3] = [1, 2, 3];

/// Every thread count of [`THREADS`] under every instruction set this CPU runs.
fn threads_and_isas() -> Vec<(usize, Isa)> {
    let isas = available_isas();
    THREADS
        .into_iter()
        .flat_map(|t| isas.iter().map(move |&i| (t, i)))
        .collect()
}

fn conv_case(g: ConvGeom, bias: bool, with_dx: bool, threads: usize, isa: Isa, seed: u64) {
    let mut c = Case::new(seed);
    let x = c.input("x", g.in_len());
    let w = c.input("w", g.weight_len());
    let b = if bias {
        c.input("b", g.c_out)
    } else {
        Region::NONE
    };
    let y = c.output("y", g.out_len(), TOL);
    let dy = c.input("dy", g.out_len());
    let dw = c.output("dw", g.weight_len(), TOL);
    let db = if bias {
        c.output("db", g.c_out, 0.0)
    } else {
        Region::NONE
    };
    let dx = if with_dx {
        c.output("dx", g.in_len(), TOL)
    } else {
        Region::NONE
    };
    // As the memory model lays it out for `threads` workers.
    let fwd = KernelCall::ConvForward(g);
    let bwd = KernelCall::ConvBackward {
        g,
        dx: with_dx,
        db: bias,
    };
    let hws = c.workspace(floats_for(&fwd, threads, isa).max(floats_for(&bwd, threads, isa)));
    let rws = c.workspace(g.cols_len());
    let what = format!("conv {g:?} bias={bias} dx={with_dx}");
    c.check(&what, threads, isa, |be, side| {
        let ws = if side == Side::Host { hws } else { rws };
        be.conv_forward(&g, x, w, b, y, ws);
        be.conv_backward(&g, x, w, dy, dw, db, dx, ws);
    });
}

#[test]
fn conv_matches_reference_on_chosen_shapes() {
    let shapes = [
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
    ];
    for (i, &g) in shapes.iter().enumerate() {
        for (t, isa) in threads_and_isas() {
            for (bias, dx) in [(false, true), (true, false), (true, true)] {
                conv_case(g, bias, dx, t, isa, i as u64);
            }
        }
    }
}

#[test]
fn conv_matches_reference_on_random_shapes() {
    let mut rng = Rng::new(2025);
    for i in 0..40 {
        let k = [1usize, 3][rng.below(2) as usize];
        let stride = 1 + rng.below(2) as usize;
        let pad = if k == 1 { 0 } else { rng.below(2) as usize };
        let g = geom(
            1 + rng.below(6) as usize,
            1 + rng.below(12) as usize,
            1 + rng.below(12) as usize,
            1 + rng.below(12) as usize,
            1 + rng.below(40) as usize,
            k,
            stride,
            pad,
        );
        let t = THREADS[i % 3];
        for isa in available_isas() {
            conv_case(g, rng.below(2) == 0, rng.below(2) == 0, t, isa, i as u64);
        }
    }
}

/// A plan made for fewer workers than the pool has: the convolution uses fewer workers.
#[test]
fn conv_with_a_workspace_for_fewer_workers() {
    let g = geom(6, 8, 7, 7, 16, 3, 1, 1);
    let mut c = Case::new(9);
    let x = c.input("x", g.in_len());
    let w = c.input("w", g.weight_len());
    let y = c.output("y", g.out_len(), TOL);
    let dy = c.input("dy", g.out_len());
    let dw = c.output("dw", g.weight_len(), TOL);
    let dx = c.output("dx", g.in_len(), TOL);
    let isa = available_isas()[0];
    let one = |k| floats_for(&k, 1, isa);
    let bwd = KernelCall::ConvBackward {
        g,
        dx: true,
        db: false,
    };
    let hws = c.workspace(one(KernelCall::ConvForward(g)).max(one(bwd)));
    let rws = c.workspace(g.cols_len());
    c.check("conv, one worker's workspace", 3, isa, |be, side| {
        let ws = if side == Side::Host { hws } else { rws };
        be.conv_forward(&g, x, w, Region::NONE, y, ws);
        be.conv_backward(&g, x, w, dy, dw, Region::NONE, dx, ws);
    });
}

fn nchw(n: usize, c: usize, h: usize, w: usize) -> Nchw {
    Nchw { n, c, h, w }
}

#[test]
fn batchnorm_matches_reference() {
    // Small (one thread) and large (split over channels) shapes, odd channel counts.
    for (i, d) in [
        nchw(3, 5, 4, 3),
        nchw(1, 2, 1, 1),
        nchw(16, 7, 14, 14),
        nchw(9, 64, 7, 7),
    ]
    .into_iter()
    .enumerate()
    {
        for (t, isa) in threads_and_isas() {
            let mut c = Case::new(100 + i as u64);
            let x = c.inout("x", d.len(), BN_TOL);
            let gb = c.input("gamma_beta", 2 * d.c);
            let y = c.output("y", d.len(), BN_TOL);
            let inv = c.output("invstd", d.c, BN_TOL);
            let run = c.input_with("running", 2 * d.c, |r| 0.5 + r.uniform());
            c.checks.last_mut().unwrap().2 = Some(BN_TOL);
            let dyr = c.inout("dy", d.len(), BN_TOL);
            let dgb = c.output("dgamma_beta", 2 * d.c, BN_TOL);
            let ye = c.output("y_eval", d.len(), 0.0);
            let what = format!("batchnorm {d:?}");
            c.check(&what, t, isa, |be, _| {
                be.bn_forward_eval(&d, x, gb, run, ye);
                be.bn_forward_train(&d, x, gb, y, inv, run);
                be.bn_backward(&d, x, gb, inv, dyr, dgb);
            });
        }
    }
}

#[test]
fn pooling_relu_add_match_reference_bit_for_bit() {
    for (i, d) in [
        nchw(2, 3, 5, 7),
        nchw(8, 16, 28, 28),
        nchw(3, 9, 9, 6),
        nchw(4, 8, 7, 7),
        nchw(2, 5, 14, 14),
    ]
    .into_iter()
    .enumerate()
    {
        for (t, isa) in threads_and_isas() {
            let mut c = Case::new(200 + i as u64);
            let (ho, wo) = (d.h / 2, d.w / 2);
            let x = c.input("x", d.len());
            let y = c.output("maxpool y", d.n * d.c * ho * wo, 0.0);
            let dy = c.input("maxpool dy", d.n * d.c * ho * wo);
            let dx = c.output("maxpool dx", d.len(), 0.0);
            let ya1 = c.output("avgpool1 y", d.n * d.c, 0.0);
            let ya2 = c.output("avgpool2 y", d.n * d.c * 4, 0.0);
            let dya = c.input("avgpool dy", d.n * d.c * 4);
            let dxa1 = c.output("avgpool1 dx", d.len(), 0.0);
            let dxa2 = c.output("avgpool2 dx", d.len(), 0.0);
            // The heads' input pool (4x4: overlapping bins on odd sizes).
            let s4 = 4.min(d.h).min(d.w);
            let ya4 = c.output("avgpool4 y", d.n * d.c * s4 * s4, 0.0);
            let dya4 = c.input("avgpool4 dy", d.n * d.c * s4 * s4);
            let dxa4 = c.output("avgpool4 dx", d.len(), 0.0);
            let r = c.inout("relu", d.len(), 0.0);
            let dr = c.inout("relu dy", d.len(), 0.0);
            let a = c.inout("add y", d.len(), 0.0);
            let what = format!("pool/relu/add {d:?}");
            c.check(&what, t, isa, |be, _| {
                be.maxpool_forward(&d, x, y);
                be.maxpool_backward(&d, x, dy, dx);
                be.avgpool_forward(&d, 1, x, ya1);
                be.avgpool_forward(&d, 2, x, ya2);
                be.avgpool_backward(&d, 1, dya.prefix(d.n * d.c), dxa1);
                be.avgpool_backward(&d, 2, dya, dxa2);
                be.avgpool_forward(&d, s4, x, ya4);
                be.avgpool_backward(&d, s4, dya4, dxa4);
                be.relu_forward(r);
                be.relu_backward(r, dr);
                be.add_assign(a, x);
            });
        }
    }
}

#[test]
fn linear_loss_sgd_match_reference() {
    // (n, fin, fout): tiny, and large enough to be split over threads.
    for (i, (n, fin, fout)) in [(3, 7, 5), (128, 512, 10), (37, 300, 64)]
        .into_iter()
        .enumerate()
    {
        for (t, isa) in threads_and_isas() {
            for with_dx in [false, true] {
                let mut c = Case::new(300 + i as u64);
                let x = c.input("x", n * fin);
                let wb = c.input("wb", fout * fin + fout);
                let y = c.output("y", n * fout, TOL);
                let dy = c.input("dy", n * fout);
                let dwb = c.output("dwb", fout * fin + fout, TOL);
                let dx = if with_dx {
                    c.output("dx", n * fin, TOL)
                } else {
                    Region::NONE
                };
                let labels = c.input_with("labels", n, |r| r.below(fout as u32) as f32);
                let dl = c.output("dlogits", n * fout, 0.0);
                let p = c.inout("param", 70_000 + fin, 0.0);
                let g = c.input("grad", 70_000 + fin);
                let m = c.inout("mom", 70_000 + fin, 0.0);
                let fwd = KernelCall::LinearForward { n, fin, fout };
                let bwd = KernelCall::LinearBackward {
                    n,
                    fin,
                    fout,
                    dx: with_dx,
                };
                let ws = c.workspace(floats_for(&fwd, t, isa).max(floats_for(&bwd, t, isa)));
                let what = format!("linear/xent/sgd n={n} fin={fin} fout={fout} dx={with_dx}");
                let results = std::sync::Mutex::new(Vec::new());
                c.check(&what, t, isa, |be, _| {
                    be.linear_forward(n, fin, fout, x, wb, y, ws);
                    be.linear_backward(n, fin, fout, x, wb, dy, dwb, dx, ws);
                    let r = be.softmax_xent(n, fout, dy, labels, dl, 0);
                    results.lock().unwrap().push(r);
                    let opt = Sgd {
                        nesterov: i == 1,
                        ..Sgd::default()
                    };
                    be.sgd(&opt, 0.05, p, g, m);
                });
                let r = results.into_inner().unwrap();
                assert_eq!(r[0].0.to_bits(), r[1].0.to_bits(), "{what}: loss");
                assert_eq!(r[0].1, r[1].1, "{what}: correct");
            }
        }
    }
}

/// `m`'s plan for 10 classes at the smallest budget that plans.
fn smallest_plan(m: &nf_core::model::ModelSpec, mode: Mode, hk: HostKernels) -> Plan {
    let opts = &PlanOptions::DEFAULT;
    match host_plan(m, m.input, 10, 1, mode, opts, hk) {
        Err(PlanError::BudgetTooSmall { needed }) => {
            host_plan(m, m.input, 10, needed, mode, opts, hk).expect("the needed budget plans")
        }
        other => panic!("{}: a 1-byte budget: {other:?}", m.name),
    }
}

/// Initialise `l`, write the batch, run two training steps and an evaluation; the statistics.
fn run_steps<B: Backend<Error = Infallible>>(
    be: &mut B,
    l: &BlockLayout,
    n: usize,
    x: &[f32],
    labels: &[f32],
) -> Vec<SegStats> {
    step::init_block(be, l, &mut Rng::new(3)).unwrap();
    be.write(l.input.prefix(x.len()), x);
    be.write(l.labels.prefix(n), labels);
    let mut st = [SegStats::default(); MAX_UNITS];
    for _ in 0..2 {
        step::train_step(be, l, n, &Sgd::default(), 0.05, &mut st).unwrap();
    }
    let mut ev = [SegStats::default(); MAX_UNITS];
    step::eval_step(be, l, n, &mut ev).unwrap();
    st[..l.n_segments()]
        .iter()
        .chain(&ev[..l.n_segments()])
        .copied()
        .collect()
}

/// Two training steps (then an evaluation) of every block of a plan on both backends: the
/// parameters, momentum and BN statistics must agree (relative to each buffer's scale).
/// The host plan (its workspace sized for the host kernels) at the smallest feasible budget;
/// the reference runs the same blocks with its own workspace (the areas compared lie before
/// the scratch, at the same places in both layouts).
fn train_both(m: &nf_core::model::ModelSpec, mode: Mode, threads: usize, n_max: usize) {
    let pool = Pool::new(threads);
    let p = smallest_plan(m, mode, HostKernels::of(&pool));
    for i in 0..p.n_blocks {
        let l = p.layout(i);
        let b = &p.blocks[i];
        let seg_mode = if mode == Mode::Bp {
            SegMode::Global
        } else {
            SegMode::Local
        };
        let lr = BlockLayout::new(
            m, p.input, p.classes, seg_mode, b.first, b.last, &p.heads, b.batch,
        );
        assert_eq!(
            (lr.seg_params, lr.seg_moms, lr.seg_state, lr.output()),
            (l.seg_params, l.seg_moms, l.seg_state, l.output()),
            "the persistent areas are laid out alike"
        );
        let n = l.batch.min(n_max);
        let s = m.unit_input(p.input, l.first);
        let mut rng = Rng::new(7 + i as u64);
        let x: Vec<f32> = (0..n * s.len()).map(|_| rng.normal()).collect();
        let labels: Vec<f32> = (0..n).map(|j| (j % 10) as f32).collect();
        let mut want = vec![0f32; lr.floats];
        let mut got = vec![0f32; l.floats];
        let sw = run_steps(&mut ReferenceBackend::new(&mut want), &lr, n, &x, &labels);
        let sg = run_steps(
            &mut FastCpuBackend::new(&mut got, &pool),
            &l,
            n,
            &x,
            &labels,
        );
        let what = format!("{} {mode:?} block {i} T={threads} n={n}", m.name);
        for (a, b) in sw.iter().zip(&sg) {
            assert!(
                (a.loss - b.loss).abs() <= 1e-3 * a.loss.abs().max(1.0),
                "{what}: loss {} vs {}",
                b.loss,
                a.loss
            );
        }
        // Everything before the scratch: parameters, momentum, BN state, block output.
        let mut regions: Vec<Region> = Vec::new();
        for k in 0..l.n_segments() {
            regions.extend([l.seg_params[k], l.seg_moms[k], l.seg_state[k]]);
        }
        regions.push(l.output());
        for r in regions.into_iter().filter(|r| !r.is_empty()) {
            let (w, g) = (&want[r.offset..r.end()], &got[r.offset..r.end()]);
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = w.iter().zip(g).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            // Two SGD steps amplify rounding differences through BN (at n = 3, ResNet-18's
            // first block output reaches 1.1e-3 of its scale); 2e-3 of the scale still
            // separates that from a wrong gradient (which changes weights by ~lr·|g|).
            assert!(
                err <= 2e-3 * scale.max(1e-6),
                "{what}: region {r:?} max error {err} (scale {scale})"
            );
        }
    }
}

#[test]
fn train_steps_match_reference_small_vgg() {
    for t in THREADS {
        for mode in [Mode::Bp, Mode::NeuroFlux] {
            train_both(&zoo::VGG_SMALL, mode, t, 6);
        }
    }
}

#[test]
fn train_steps_match_reference_resnet_and_vgg11() {
    // Basic blocks with projections (stride 2, 1x1), and the 2x2 / 1x1 stages of VGG-11.
    train_both(&zoo::RESNET18, Mode::NeuroFlux, 2, 3);
    train_both(&zoo::VGG11, Mode::Ll, 3, 4);
}

/// The block transpose used by GEMM packing and the convolution's input gradient (the AVX
/// 8×8 register transpose where the CPU has it) against a plain loop, on sizes that cover whole
/// blocks, ragged edges and padded strides.
#[test]
fn transpose_matches_plain_loop() {
    for isa in available_isas() {
        transpose_case(isa);
    }
}

fn transpose_case(isa: Isa) {
    use nf_cpu::gemm;
    for lines in [1, 7, 8, 9, 16, 23] {
        for kc in [1, 5, 8, 13, 24] {
            let (stride, d) = (kc + 3, lines + 2);
            let src: Vec<f32> = (0..lines * stride).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; kc * d];
            gemm::transpose(isa, &src, stride, lines, kc, &mut dst, d);
            for k in 0..kc {
                for l in 0..d {
                    let want = if l < lines { src[l * stride + k] } else { -1.0 };
                    assert_eq!(
                        dst[k * d + l],
                        want,
                        "{isa}: lines {lines} kc {kc}: ({k}, {l})"
                    );
                }
            }
        }
    }
}

/// Every element of a host plan's arena is written by the host kernels (no padding) when a
/// block trains, evaluates and propagates at its full batch, and when its recompute chain runs:
/// the arena starts full of a sentinel NaN that no kernel produces.
#[test]
fn host_plans_are_used_in_full() {
    const UNTOUCHED: u32 = 0x7fa5_a5a5;
    let pool = Pool::new(2);
    let hk = HostKernels::of(&pool);
    let m = &zoo::VGG_SMALL;
    for (mode, recompute) in [
        (Mode::NeuroFlux, false),
        (Mode::NeuroFlux, true),
        (Mode::Bp, false),
    ] {
        let opts = PlanOptions {
            recompute,
            ..PlanOptions::DEFAULT
        };
        let p = host_plan(m, m.input, 10, 24 << 20, mode, &opts, hk).unwrap();
        for i in 0..p.n_blocks {
            let l = p.layout(i);
            let end = p.blocks[i].bytes as usize / 4;
            let mut arena = vec![f32::from_bits(UNTOUCHED); end];
            let mut be = FastCpuBackend::new(&mut arena, &pool);
            let mut rng = Rng::new(3);
            let fill = |be: &mut FastCpuBackend, r: Region| {
                let v: Vec<f32> = (0..r.len).map(|j| (j % 10) as f32 * 0.1 - 0.3).collect();
                be.write(r, &v);
            };
            if let Some(c) = p.chain(i) {
                fill(&mut be, c.params);
                be.fill(c.state, 1.0);
                fill(&mut be, c.input);
                step::infer(&mut be, &c, c.batch).unwrap();
            }
            step::init_block(&mut be, &l, &mut rng).unwrap();
            fill(&mut be, l.input);
            let labels: Vec<f32> = (0..l.batch).map(|j| (j % 10) as f32).collect();
            be.write(l.labels, &labels);
            let mut st = [SegStats::default(); MAX_UNITS];
            step::train_step(&mut be, &l, l.batch, &Sgd::default(), 0.01, &mut st).unwrap();
            step::eval_step(&mut be, &l, l.batch, &mut st).unwrap();
            step::infer_step(&mut be, &l, l.batch).unwrap();
            let missed = arena.iter().filter(|v| v.to_bits() == UNTOUCHED).count();
            assert_eq!(
                missed, 0,
                "{mode:?} recompute {recompute} block {i}: {missed} of {end} planned elements never written"
            );
        }
    }
}
