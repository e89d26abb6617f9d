//! Per-op timings: every convolution of the zoo models (forward, and backward with the input
//! gradient), plus batch norm, ReLU and max-pool at the first unit's shape, on the fast CPU backend
//! against `ReferenceBackend`.
//!
//! ```text
//! cargo bench --bench ops                      # small VGG and VGG-11, batch 128
//! cargo bench --bench ops -- --models vgg-small,vgg11,resnet18 --batch 128 --threads 2 --reps 3
//! cargo bench --bench ops -- --no-reference   # host only (the reference takes minutes on VGG-11)
//! cargo bench --bench ops -- --only 128x7x7    # rows whose op name contains the text
//! ```
//! Each figure is the median of `--reps` runs (the reference runs once); GFLOP/s counts
//! 2·MACs of the convolution (backward: weight and input gradients).
use std::time::Instant;

use nf_core::backend::Backend;
use nf_core::model::{ModelSpec, Op, Shape};
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::reference::ReferenceBackend;
use nf_core::region::{Bump, Region};
use nf_core::rng::Rng;
use nf_core::zoo;
use nf_cpu::workspace::{self, KernelCall};
use nf_cpu::{gemm, threads, FastCpuBackend, Pool};

struct Args {
    models: Vec<&'static ModelSpec<'static>>,
    batch: usize,
    threads: usize,
    reps: usize,
    reference: bool,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        models: vec![&zoo::VGG_SMALL, &zoo::VGG11],
        batch: 128,
        threads: threads(),
        reps: 3,
        reference: true,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--models" => {
                a.models = val()
                    .split(',')
                    .map(|n| zoo::by_name(n).unwrap_or_else(|| panic!("no model {n}")))
                    .collect()
            }
            "--batch" => a.batch = val().parse().expect("--batch N"),
            "--threads" => a.threads = val().parse().expect("--threads N"),
            "--reps" => a.reps = val().parse().expect("--reps N"),
            "--no-reference" => a.reference = false,
            "--only" => a.only = Some(val()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Every distinct convolution of `m` at batch `n` (with the unit index of its first use).
fn convs(m: &ModelSpec, n: usize) -> Vec<(usize, ConvGeom)> {
    let mut out: Vec<(usize, ConvGeom)> = Vec::new();
    let mut s = m.input;
    let geom = |s: Shape, c_out, k, stride, pad| ConvGeom {
        n,
        c_in: s.c,
        h: s.h,
        w: s.w,
        c_out,
        k,
        stride,
        pad,
    };
    for (u, unit) in m.units.iter().enumerate() {
        for op in unit.iter() {
            let mut add = |g: ConvGeom| {
                if !out.iter().any(|(_, h)| *h == g) {
                    out.push((u, g));
                }
            };
            match *op {
                Op::Conv {
                    out: c,
                    k,
                    stride,
                    pad,
                    ..
                } => add(geom(s, c, k, stride, pad)),
                Op::BasicBlock { out: c, stride } => {
                    add(geom(s, c, 3, stride, 1));
                    let o = op.out_shape(s);
                    add(geom(o, c, 3, 1, 1));
                    if op.has_projection(s) {
                        add(geom(s, c, 1, stride, 0));
                    }
                }
                _ => {}
            }
            s = op.out_shape(s);
        }
    }
    out
}

/// Median seconds of `reps` runs of `f`.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// Regions of one convolution's buffers in a fresh arena.
struct ConvBufs {
    x: Region,
    w: Region,
    y: Region,
    dy: Region,
    dw: Region,
    dx: Region,
    /// The host kernels' workspace (`workspace::floats`).
    ws: Region,
    /// The reference kernels' workspace (one sample's columns).
    ref_ws: Region,
    arena: Vec<f32>,
}

fn conv_bufs(g: &ConvGeom, workers: usize) -> ConvBufs {
    let mut b = Bump::at(0);
    let x = b.take(g.in_len());
    let w = b.take(g.weight_len());
    let y = b.take(g.out_len());
    let dy = b.take(g.out_len());
    let dw = b.take(g.weight_len());
    let dx = b.take(g.in_len());
    let fwd = KernelCall::ConvForward(*g);
    let bwd = KernelCall::ConvBackward {
        g: *g,
        dx: true,
        db: false,
    };
    let ws = b.take(workspace::floats(&fwd, workers).max(workspace::floats(&bwd, workers)));
    let ref_ws = b.take(g.cols_len());
    let mut rng = Rng::new(1);
    let arena = (0..b.next).map(|_| rng.normal()).collect();
    ConvBufs {
        x,
        w,
        y,
        dy,
        dw,
        dx,
        ws,
        ref_ws,
        arena,
    }
}

/// (forward, backward) seconds of `g` on `be` with workspace `ws`.
fn conv_times<B: Backend>(
    g: &ConvGeom,
    c: &ConvBufs,
    ws: Region,
    be: &mut B,
    reps: usize,
    first_unit: bool,
) -> (f64, f64) {
    // The first unit's input gradient is never needed (its input is the data).
    let dx = if first_unit { Region::NONE } else { c.dx };
    be.conv_forward(g, c.x, c.w, Region::NONE, c.y, ws);
    let f = time(reps, || be.conv_forward(g, c.x, c.w, Region::NONE, c.y, ws));
    let b = time(reps, || {
        be.conv_backward(g, c.x, c.w, c.dy, c.dw, Region::NONE, dx, ws)
    });
    (f, b)
}

fn main() {
    let a = args();
    let pool = Pool::new(a.threads);
    println!(
        "ops benchmark: batch {}, fast CPU backend with {} threads vs reference (1 thread); median of {} runs",
        a.batch, a.threads, a.reps
    );
    println!(
        "{:<10} {:<34} {:>5} {:>10} {:>10} {:>8} {:>10}",
        "model",
        "op (c_in x h x w -> c_out, k/s/p)",
        "pass",
        "host ms",
        "ref ms",
        "speedup",
        "GFLOP/s"
    );
    for m in &a.models {
        for (u, g) in convs(m, a.batch) {
            let name = format!(
                "{}x{}x{} -> {}, {}/{}/{}",
                g.c_in, g.h, g.w, g.c_out, g.k, g.stride, g.pad
            );
            if a.only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                continue;
            }
            let c = conv_bufs(&g, a.threads);
            let mut arena = c.arena.clone();
            let (hf, hb) = conv_times(
                &g,
                &c,
                c.ws,
                &mut FastCpuBackend::new(&mut arena, &pool),
                a.reps,
                u == 0,
            );
            let (rf, rb) = if a.reference {
                let mut arena = c.arena.clone();
                conv_times(
                    &g,
                    &c,
                    c.ref_ws,
                    &mut ReferenceBackend::new(&mut arena),
                    1,
                    u == 0,
                )
            } else {
                (f64::NAN, f64::NAN)
            };
            let macs = (g.c_out * g.c_in * g.k * g.k * g.h_out() * g.w_out() * g.n) as f64;
            let bwd_macs = if u == 0 { macs } else { 2.0 * macs };
            for (pass, h, r, fl) in [("fwd", hf, rf, 2.0 * macs), ("bwd", hb, rb, 2.0 * bwd_macs)] {
                println!(
                    "{:<10} {:<34} {:>5} {:>10.2} {:>10.2} {:>7.1}x {:>10.1}",
                    m.name,
                    name,
                    pass,
                    h * 1e3,
                    r * 1e3,
                    r / h,
                    fl / h / 1e9
                );
            }
        }
        // Batch norm, ReLU and max-pool at the first unit's output shape.
        if a.only.is_some() {
            continue;
        }
        let s0 = m.input;
        let c1 = match m.units[0][0] {
            Op::Conv { out, .. } => out,
            _ => 64,
        };
        let d = Nchw {
            n: a.batch,
            c: c1,
            h: s0.h,
            w: s0.w,
        };
        let mut b = Bump::at(0);
        let (x, gb, y, inv, run, dy, dgb, p) = (
            b.take(d.len()),
            b.take(2 * d.c),
            b.take(d.len()),
            b.take(d.c),
            b.take(2 * d.c),
            b.take(d.len()),
            b.take(2 * d.c),
            b.take(d.len() / 4),
        );
        let mut rng = Rng::new(2);
        let base: Vec<f32> = (0..b.next).map(|_| rng.normal().abs() + 0.1).collect();
        let shape = format!("{}x{}x{}", d.c, d.h, d.w);
        let run_all = |be: &mut dyn Backend<Error = std::convert::Infallible>, reps: usize| {
            [
                time(reps, || be.bn_forward_train(&d, x, gb, y, inv, run)),
                time(reps, || be.bn_backward(&d, x, gb, inv, dy, dgb)),
                time(reps, || be.relu_forward(y)),
                time(reps, || be.relu_backward(y, dy)),
                time(reps, || be.maxpool_forward(&d, y, p)),
                time(reps, || be.maxpool_backward(&d, y, p, dy)),
            ]
        };
        let mut ha = base.clone();
        let host = run_all(&mut FastCpuBackend::new(&mut ha, &pool), a.reps);
        let reference = if a.reference {
            let mut ra = base.clone();
            run_all(&mut ReferenceBackend::new(&mut ra), 1)
        } else {
            [f64::NAN; 6]
        };
        for (i, (op, pass)) in [
            ("batchnorm", "fwd"),
            ("batchnorm", "bwd"),
            ("relu", "fwd"),
            ("relu", "bwd"),
            ("maxpool2", "fwd"),
            ("maxpool2", "bwd"),
        ]
        .into_iter()
        .enumerate()
        {
            println!(
                "{:<10} {:<34} {:>5} {:>10.2} {:>10.2} {:>7.1}x",
                m.name,
                format!("{op} {shape}"),
                pass,
                host[i] * 1e3,
                reference[i] * 1e3,
                reference[i] / host[i]
            );
        }
    }
    // The packed GEMM alone on a large square product: the ceiling the convolutions work under.
    if a.only.as_ref().is_none_or(|o| "gemm".contains(o.as_str())) {
        let n = 1024;
        let (x, y) = (vec![1.0f32; n * n], vec![0.5f32; n * n]);
        let mut z = vec![0f32; n * n];
        let isa = pool.isa();
        let (la, lb) = gemm::scratch_len(isa, n, n, n, true, true);
        let (mut sa, mut sb) = (vec![0f32; la], vec![0f32; lb]);
        let t = time(a.reps, || {
            let mut c = gemm::MatMut::rows(&mut z, n, n);
            gemm::gemm(
                isa,
                1.0,
                gemm::Operand::View(gemm::Mat::rows(&x, n, n)),
                gemm::Operand::View(gemm::Mat::rows(&y, n, n)),
                0.0,
                &mut c,
                &mut gemm::GemmScratch::new(&mut sa, &mut sb),
                n,
            );
        });
        println!(
            "{:<10} {:<34} {:>5} {:>10.2} {:>10} {:>8} {:>10.1}",
            "-",
            format!("gemm {n}x{n}x{n}, 1 thread"),
            "fwd",
            t * 1e3,
            "",
            "",
            2.0 * (n * n * n) as f64 / t / 1e9
        );
    }
}
