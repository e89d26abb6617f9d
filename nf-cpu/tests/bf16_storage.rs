//! The fast CPU backend on tensors stored in bf16 ([`Elem::Bf16`] regions, issue 28).
//!
//! Through the public [`Backend`] calls: a convolution or linear layer whose input, output and
//! gradients are bf16 regions (run a part of the batch at a time through f32 staging,
//! `nf_cpu::staged`) must give exactly what the f32 kernels give on the same values widened
//! to f32, with each bf16 output rounded once (forward and input gradient: bit for bit; the
//! weight and bias gradients, summed over the parts, within 1e-5 of their scale), on shapes
//! that take every path of the convolution (per sample, per tap, pointwise, small weights)
//! and on batches of one part and of several, with 1, 2 and 3 workers. Then whole training
//! steps of zoo models planned with bf16 storage against the same steps in f32 storage.
use nf_core::backend::Backend;
use nf_core::layout::Precision as Storage;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::optim::Sgd;
use nf_core::plan::{Mode, PlanOptions};
use nf_core::region::{Bump, Elem, Region};
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::{model::MAX_UNITS, zoo};
use nf_cpu::bf16::Bf16;
use nf_cpu::workspace::KernelCall;
use nf_cpu::{staged, FastCpuBackend, Pool, Precision};
use nf_host::run_plan::{host_plan, HostKernels};

fn rand(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

/// `v` rounded to bf16 and back.
fn bf(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| Bf16::from_f32(x).to_f32()).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    let tol = rel * max_abs(want).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (tol {tol})");
    }
}

/// The regions of one convolution: bf16 tensors (`elem`) and f32 parameters, laid out with
/// a workspace of `ws` words.
struct ConvRegions {
    x: Region,
    w: Region,
    b: Region,
    y: Region,
    dy: Region,
    dw: Region,
    db: Region,
    dx: Region,
    ws: Region,
    words: usize,
}

fn conv_regions(g: &ConvGeom, elem: Elem, ws: usize) -> ConvRegions {
    let mut b = Bump::at(0);
    let (xl, yl) = (g.in_len(), g.out_len());
    let r = ConvRegions {
        x: b.take_of(elem, xl),
        w: b.take(g.weight_len()),
        b: b.take(g.c_out),
        y: b.take_of(elem, yl),
        dy: b.take_of(elem, yl),
        dw: b.take(g.weight_len()),
        db: b.take(g.c_out),
        dx: b.take_of(elem, xl),
        ws: b.take(ws),
        words: 0,
    };
    ConvRegions { words: b.next, ..r }
}

/// Forward and backward of `g` with tensors in `elem`: `(y, dw, db, dx)`.
fn run_conv(
    pool: &Pool,
    g: &ConvGeom,
    elem: Elem,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    dy: &[f32],
) -> [Vec<f32>; 4] {
    let k = KernelCall::ConvBackward {
        g: *g,
        dx: true,
        db: true,
    };
    let kf = KernelCall::ConvForward(*g);
    let ws =
        match elem {
            Elem::F32 => nf_cpu::workspace::floats(&k, pool.threads()),
            Elem::Bf16 => staged::floats_for(&k, pool.threads(), pool.isa())
                .max(staged::floats_for(&kf, pool.threads(), pool.isa())),
        }
        .max(nf_cpu::workspace::floats(&kf, pool.threads()));
    let r = conv_regions(g, elem, ws);
    let mut arena = vec![f32::NAN; r.words];
    let mut be = FastCpuBackend::new(&mut arena, pool);
    be.write(r.x, x);
    be.write(r.w, w);
    be.write(r.b, bias);
    be.write(r.dy, dy);
    be.conv_forward(g, r.x, r.w, r.b, r.y, r.ws);
    be.conv_backward(g, r.x, r.w, r.dy, r.dw, r.db, r.dx, r.ws);
    let mut out = [
        vec![0.0; r.y.len()],
        vec![0.0; r.dw.len()],
        vec![0.0; r.db.len()],
        vec![0.0; r.dx.len()],
    ];
    for (o, reg) in out.iter_mut().zip([r.y, r.dw, r.db, r.dx]) {
        be.read(reg, o);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn conv(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> ConvGeom {
    ConvGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        k,
        stride,
        pad,
    }
}

#[test]
fn convolutions_on_bf16_tensors_are_the_f32_kernels_on_their_values() {
    let shapes = [
        conv(5, 3, 9, 7, 8, 3, 1, 1),    // per sample
        conv(40, 16, 7, 7, 24, 3, 1, 1), // per sample, several parts
        conv(30, 32, 4, 4, 16, 3, 1, 1), // per tap
        conv(9, 12, 5, 5, 20, 1, 1, 0),  // pointwise
        conv(7, 1, 12, 12, 6, 3, 2, 1),  // small weights, strided
        conv(3, 8, 6, 6, 4, 3, 1, 1),    // a head narrowing the channels (flipped kernel)
    ];
    let mut rng = Rng::new(28);
    for g in shapes {
        for t in [1, 2, 3] {
            let pool = Pool::new(t);
            let x = rand(&mut rng, g.in_len());
            let w = rand(&mut rng, g.weight_len());
            let bias = rand(&mut rng, g.c_out);
            let dy = rand(&mut rng, g.out_len());
            let [y16, dw16, db16, dx16] = run_conv(&pool, &g, Elem::Bf16, &x, &w, &bias, &dy);
            let [y, dw, db, dx] = run_conv(&pool, &g, Elem::F32, &bf(&x), &w, &bias, &bf(&dy));
            let name = format!("{g:?} T={t}");
            assert_eq!(y16, bf(&y), "{name}: y");
            assert_eq!(dx16, bf(&dx), "{name}: dx");
            close(&format!("{name}: dw"), &dw16, &dw, 1e-5);
            close(&format!("{name}: db"), &db16, &db, 1e-5);
        }
    }
}

/// Forward and backward of a linear layer of `n` rows with `x`, `y`, `dy`, `dx` in `elem`.
fn run_linear(
    pool: &Pool,
    (n, fin, fout): (usize, usize, usize),
    elem: Elem,
    x: &[f32],
    wb: &[f32],
    dy: &[f32],
) -> [Vec<f32>; 3] {
    let kb = KernelCall::LinearBackward {
        n,
        fin,
        fout,
        dx: true,
    };
    let kf = KernelCall::LinearForward { n, fin, fout };
    let f = |k: &KernelCall| match elem {
        Elem::F32 => nf_cpu::workspace::floats(k, pool.threads()),
        Elem::Bf16 => staged::floats_for(k, pool.threads(), pool.isa()),
    };
    let mut b = Bump::at(0);
    let (rx, rwb, ry, rdy, rdwb, rdx, rws) = (
        b.take_of(elem, n * fin),
        b.take(fout * fin + fout),
        b.take_of(elem, n * fout),
        b.take_of(elem, n * fout),
        b.take(fout * fin + fout),
        b.take_of(elem, n * fin),
        b.take(f(&kb).max(f(&kf))),
    );
    let mut arena = vec![f32::NAN; b.next];
    let mut be = FastCpuBackend::new(&mut arena, pool);
    be.write(rx, x);
    be.write(rwb, wb);
    be.write(rdy, dy);
    be.linear_forward(n, fin, fout, rx, rwb, ry, rws);
    be.linear_backward(n, fin, fout, rx, rwb, rdy, rdwb, rdx, rws);
    let mut out = [
        vec![0.0; ry.len()],
        vec![0.0; rdwb.len()],
        vec![0.0; rdx.len()],
    ];
    for (o, reg) in out.iter_mut().zip([ry, rdwb, rdx]) {
        be.read(reg, o);
    }
    out
}

#[test]
fn linear_layers_on_bf16_tensors_are_the_f32_kernels_on_their_values() {
    let mut rng = Rng::new(29);
    for shape in [(7, 33, 10), (300, 130, 10), (2000, 64, 3)] {
        for t in [1, 2, 3] {
            let pool = Pool::new(t);
            let (n, fin, fout) = shape;
            let x = rand(&mut rng, n * fin);
            let wb = rand(&mut rng, fout * fin + fout);
            let dy = rand(&mut rng, n * fout);
            let [y16, dwb16, dx16] = run_linear(&pool, shape, Elem::Bf16, &x, &wb, &dy);
            let [y, dwb, dx] = run_linear(&pool, shape, Elem::F32, &bf(&x), &wb, &bf(&dy));
            let name = format!("{shape:?} T={t}");
            assert_eq!(y16, bf(&y), "{name}: y");
            assert_eq!(dx16, bf(&dx), "{name}: dx");
            close(&format!("{name}: dwb"), &dwb16, &dwb, 1e-5);
        }
    }
}

/// Losses of `steps` training steps on one fixed batch of block 0 of `m` planned at batch 32
/// in `storage` (the GEMMs in bf16 either way), and the arena's words.
fn train_block0(
    m: &nf_core::model::ModelSpec<'static>,
    mode: Mode,
    storage: Storage,
    steps: usize,
) -> (Vec<f32>, usize) {
    let pool = Pool::new(2);
    let hk = HostKernels::of(&pool);
    let opts = PlanOptions {
        precision: storage,
        b_min: 32,
        b_max: 32,
        ..PlanOptions::DEFAULT
    };
    let p = host_plan(m, m.input, 10, 1 << 30, mode, &opts, hk).unwrap();
    let l = p.layout(0);
    assert_eq!((l.kernels.precision, l.batch), (storage, 32));
    let n = 32;
    let mut arena = vec![f32::NAN; l.floats];
    let mut be = FastCpuBackend::with_precision(&mut arena, &pool, Precision::Bf16);
    step::init_block(&mut be, &l, &mut Rng::new(7)).unwrap();
    let mut rng = Rng::new(8);
    let x: Vec<f32> = (0..n * m.input.len()).map(|_| rng.normal()).collect();
    let labels: Vec<f32> = (0..n).map(|j| (j % 10) as f32).collect();
    be.write(l.input.prefix(x.len()), &x);
    be.write(l.labels.prefix(n), &labels);
    let opt = Sgd::default();
    let losses = (0..steps)
        .map(|_| {
            let mut st = [SegStats::default(); MAX_UNITS];
            step::train_step(&mut be, &l, n, &opt, 0.2, &mut st).unwrap();
            st[0].mean_loss()
        })
        .collect();
    (losses, l.floats)
}

#[test]
fn zoo_blocks_train_in_bf16_storage_as_in_f32_storage_in_less_memory() {
    for (m, mode, most) in [
        (&zoo::VGG_SMALL, Mode::NeuroFlux, 0.75),
        (&zoo::VGG_SMALL, Mode::Bp, 0.75),
        (&zoo::RESNET18, Mode::NeuroFlux, 0.9),
    ] {
        let (l32, w32) = train_block0(m, mode, Storage::F32, 12);
        let (l16, w16) = train_block0(m, mode, Storage::Bf16, 12);
        let name = format!("{} {mode:?}", m.name);
        // Same batch: the arena shrinks by most of the activations' half.
        let ratio = w16 as f64 / w32 as f64;
        assert!(
            ratio < most,
            "{name}: bf16/f32 arena {w16}/{w32} = {ratio:.3}"
        );
        // The same network on the same batch: the losses differ by bf16 rounding of the
        // streamed tensors only, first and after 12 steps, and both runs learn the batch.
        for at in [0, 11] {
            let diff = (l16[at] - l32[at]).abs() / l32[0];
            assert!(diff < 0.03, "{name}: loss {at}: {l16:?} vs {l32:?}");
        }
        for l in [&l32, &l16] {
            assert!(l.iter().all(|v| v.is_finite()), "{name}: {l:?}");
            assert!(l[11] < 0.95 * l[0], "{name}: does not learn: {l:?}");
        }
    }
}
