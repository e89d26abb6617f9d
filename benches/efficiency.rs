//! Kernel efficiency of f32 training (issue 28): the small VGG's BP step on one thread against
//! the reference rate of the same thread in the same run, a 2048³ f32 GEMM (our own, as fast
//! as oneDNN on this machine: benches/README.md), and where the step's time goes.
//!
//! ```text
//! cargo bench --bench efficiency                       # 5 rounds of (GEMM, 5 BP steps), batch 128
//! cargo bench --bench efficiency -- --rounds 7 --steps 5 --batch 128 --size 2048 --no-profile
//! cargo bench --bench efficiency -- --precision bf16    # bf16 GEMMs, against a bf16 2048³
//! ```
//!
//! Rounds are interleaved: each runs the 2048³ product once, then `--steps` BP steps at batch
//! `--batch`, so machine drift hits both alike. Rates are GFLOP/s per second this thread ran
//! on a CPU (`CLOCK_THREAD_CPUTIME_ID`: on a shared machine the wall rate drops with the
//! share of the core the thread gets, this one much less) and per wall second; the BP step
//! counts, per image, 2 × the multiply-adds of the forward, input-gradient (every convolution
//! but the first) and weight-gradient convolutions (87.6 MFLOP for vgg-small), the convention
//! of issue 28. The ratio is the step's rate over the GEMM's, within a round. With
//! `--precision bf16` the step's convolution and linear GEMMs take bf16 operands
//! (`FastCpuBackend::with_precision`) and the reference is the bf16 GEMM (`vdpbf16ps` where
//! the CPU has it) on the same 2048³ product.
//!
//! Then one more pass of `--steps` steps with every backend call timed (thread CPU time) and
//! the GEMM's own accounting on (`nf_cpu::gemm::profile`): the step's time split into the
//! convolutions' GEMM micro-kernels, the packing of their operands, the rest of the
//! convolutions (im2col, col2im, transposes, the first layer's small-weight path, bias
//! gradients), batch norm, ReLU, pooling, the classifier and the optimiser (the bf16 GEMM keeps
//! the same accounting).
use std::path::PathBuf;
use std::time::Instant;

use nf_core::backend::Backend;
use nf_core::model::{ModelSpec, Op};
use nf_core::optim::Sgd;
use nf_core::plan::{Mode, PlanOptions};
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo;
use nf_cpu::bf16::Bf16;
use nf_cpu::gemm::bf16 as g16;
use nf_cpu::gemm::{self, profile, GemmScratch, Mat, MatMut, Operand};
use nf_cpu::{available_isas, FastCpuBackend, Pool, Precision};
use nf_host::data;
use nf_host::run_plan::{host_plan, HostKernels};

mod timed;
use timed::Timed;

struct Args {
    rounds: usize,
    steps: usize,
    batch: usize,
    size: usize,
    profile: bool,
    data: Option<PathBuf>,
    precision: Precision,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 5,
        steps: 5,
        batch: 128,
        size: 2048,
        profile: true,
        data: None,
        precision: Precision::F32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = val().parse().expect("--rounds N"),
            "--steps" => a.steps = val().parse().expect("--steps N"),
            "--batch" => a.batch = val().parse().expect("--batch N"),
            "--size" => a.size = val().parse().expect("--size N"),
            "--no-profile" => a.profile = false,
            "--data" => a.data = Some(PathBuf::from(val())),
            "--precision" => {
                let v = val();
                a.precision = Precision::from_name(&v).unwrap_or_else(|| panic!("no precision {v}"))
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a.rounds = a.rounds.max(1);
    a.steps = a.steps.max(1);
    a
}

#[cfg(target_os = "linux")]
mod cpu_clock {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }

    /// Nanoseconds this thread has run on a CPU.
    pub fn ns() -> u64 {
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime (libc, which std links) writes one timespec through the
        // pointer, which points at `ts` for the duration of the call.
        let r = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

#[cfg(not(target_os = "linux"))]
mod cpu_clock {
    /// Wall nanoseconds since the first call (no per-thread CPU clock used here).
    pub fn ns() -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

/// This thread's CPU time in seconds.
fn cpu_s() -> f64 {
    cpu_clock::ns() as f64 * 1e-9
}

/// Wall and CPU seconds of `f`.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (t0, c0) = (Instant::now(), cpu_s());
    f();
    (t0.elapsed().as_secs_f64(), cpu_s() - c0)
}

/// Images (normalised, NCHW) and labels of the training split: `/usr/share/datasets/
/// fashion-mnist` when present (or `dir`), else the bundled subset.
fn load(dir: Option<PathBuf>) -> (Vec<f32>, Vec<f32>) {
    let system = PathBuf::from("/usr/share/datasets/fashion-mnist");
    let dir = dir.unwrap_or_else(|| {
        if system.is_dir() {
            system
        } else {
            data::default_dir()
        }
    });
    let t = data::load_dir(&dir, u64::MAX)
        .unwrap_or_else(|e| panic!("{e}"))
        .train;
    let labels = t.labels().iter().map(|&l| f32::from(l)).collect();
    let s = t.shape().len();
    let mut images = vec![0f32; t.len() * s];
    for (i, x) in images.chunks_exact_mut(s).enumerate() {
        t.write_normalised(i, x);
    }
    (images, labels)
}

/// FLOPs of one image's BP step as issue 28 counts them: 2 × the multiply-adds of every
/// convolution's forward pass, weight gradient and (but for the model's first) input gradient.
fn bp_flop_per_image(model: &ModelSpec) -> f64 {
    let mut s = model.input;
    let mut first = true;
    let mut macs = 0usize;
    for unit in model.units.iter() {
        for op in unit.iter() {
            if let Op::Conv {
                out,
                k,
                stride,
                pad,
                ..
            } = *op
            {
                let ho = (s.h + 2 * pad - k) / stride + 1;
                let wo = (s.w + 2 * pad - k) / stride + 1;
                let pass = out * s.c * k * k * ho * wo;
                macs += if first { 2 * pass } else { 3 * pass };
                first = false;
            }
            s = op.out_shape(s);
        }
    }
    2.0 * macs as f64
}

/// The reference: one `n × n × n` f32 GEMM (row-major operands) with the widest f32 kernel.
struct Square {
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    sa: Vec<f32>,
    sb: Vec<f32>,
    /// The operands and packing buffers in bf16 (empty in f32).
    bf16: Option<[Vec<Bf16>; 4]>,
}

impl Square {
    fn new(n: usize, prec: Precision) -> Self {
        let isa = available_isas()[0].f32_kernels();
        let (la, lb) = gemm::scratch_len(isa, n, n, n, true, true);
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        };
        let (a, b): (Vec<f32>, Vec<f32>) = (
            (0..n * n).map(|_| next()).collect(),
            (0..n * n).map(|_| next()).collect(),
        );
        let bf16 = (prec == Precision::Bf16).then(|| {
            let (la, lb) = g16::scratch_len(isa, n, n, n, true, true);
            let to = |v: &[f32]| v.iter().map(|&x| Bf16::from_f32(x)).collect();
            [to(&a), to(&b), vec![Bf16::ZERO; la], vec![Bf16::ZERO; lb]]
        });
        Square {
            n,
            a,
            b,
            c: vec![0.0; n * n],
            sa: vec![0.0; la],
            sb: vec![0.0; lb],
            bf16,
        }
    }

    fn flop(&self) -> f64 {
        2.0 * (self.n as f64).powi(3)
    }

    fn run(&mut self) {
        let n = self.n;
        if let Some([a, b, sa, sb]) = self.bf16.as_mut() {
            g16::gemm(
                available_isas()[0],
                1.0,
                Operand::View(Mat::rows(a, n, n)),
                Operand::View(Mat::rows(b, n, n)),
                0.0,
                &mut MatMut::rows(&mut self.c, n, n),
                &mut g16::Scratch { a: sa, b: sb },
                n,
            );
            return;
        }
        let isa = available_isas()[0].f32_kernels();
        gemm::gemm(
            isa,
            1.0,
            Operand::View(Mat::rows(&self.a, n, n)),
            Operand::View(Mat::rows(&self.b, n, n)),
            0.0,
            &mut MatMut::rows(&mut self.c, n, n),
            &mut GemmScratch::new(&mut self.sa, &mut self.sb),
            n,
        );
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The category of a timed backend call (its key in [`Timed`]).
fn category(key: &str) -> &'static str {
    let starts = |p: &str| key.starts_with(p);
    if starts("conv") {
        "conv"
    } else if starts("bn") {
        "batch norm"
    } else if starts("relu") {
        "ReLU"
    } else if starts("maxpool") || starts("avgpool") {
        "pooling"
    } else if starts("linear") || starts("softmax") {
        "classifier (linear, softmax)"
    } else if starts("sgd") {
        "optimiser (SGD)"
    } else {
        "other calls (write, fill, copy, add)"
    }
}

fn main() {
    let a = args();
    let m = &zoo::VGG_SMALL;
    let flop_image = bp_flop_per_image(m);
    let pool = Pool::new(1);
    let opts = PlanOptions {
        b_min: a.batch,
        b_max: a.batch,
        ..PlanOptions::DEFAULT
    };
    let kernels = HostKernels::of(&pool);
    let p = host_plan(m, m.input, 10, 1 << 30, Mode::Bp, &opts, kernels).expect("BP plans");
    let l = p.layout(0);
    let b = l.batch;
    assert_eq!(b, a.batch, "BP at batch {} plans", a.batch);
    let n_pool = a.steps * b;
    let (images, labels) = load(a.data.clone());
    let n_pool = n_pool.min(labels.len());
    let per = p.input.len();
    let mut arena = vec![0f32; p.peak_floats()];
    let host = FastCpuBackend::with_precision(&mut arena, &pool, a.precision);
    let mut be = Timed::new(host, false).with_clock(cpu_s);
    step::init_block(&mut be, &l, &mut Rng::new(1)).unwrap();
    let opt = Sgd::default();
    let mut st = [SegStats::default(); nf_core::model::MAX_UNITS];
    let mut k = 0usize;
    let mut steps = |be: &mut Timed<FastCpuBackend<'_>>, count: usize| {
        for _ in 0..count {
            let s0 = (k * b) % n_pool;
            let n = b.min(n_pool - s0);
            be.write(l.input.prefix(n * per), &images[s0 * per..(s0 + n) * per]);
            be.write(l.labels.prefix(n), &labels[s0..s0 + n]);
            step::train_step(be, &l, n, &opt, 0.01, &mut st).unwrap();
            k += 1;
        }
    };
    let mut sq = Square::new(a.size, a.precision);
    // Warm-up (page faults, caches, frequency).
    sq.run();
    steps(&mut be, 1);

    println!(
        "vgg-small BP step, {} GEMMs, batch {b}, 1 thread, {:.1} MFLOP per image; reference \
         {}³ {} GEMM ({}); {} interleaved rounds of (1 GEMM, {} steps); GFLOP/s per CPU second \
         (wall)",
        a.precision.name(),
        flop_image / 1e6,
        a.size,
        a.precision.name(),
        if a.precision == Precision::Bf16 {
            available_isas()[0]
        } else {
            available_isas()[0].f32_kernels()
        },
        a.rounds,
        a.steps
    );
    println!(
        "{:>5} {:>16} {:>16} {:>14} {:>7}",
        "round", "GEMM cpu (wall)", "step cpu (wall)", "img/s cpu", "ratio"
    );
    let step_flop = flop_image * (a.steps * b) as f64;
    let mut rows = Vec::new();
    for r in 0..a.rounds {
        let (gw, gc) = timed(|| sq.run());
        let (sw, sc) = timed(|| steps(&mut be, a.steps));
        let (g, s) = (sq.flop() / gc / 1e9, step_flop / sc / 1e9);
        println!(
            "{r:>5} {:>7.1} ({:>6.1}) {:>7.1} ({:>6.1}) {:>14.1} {:>7.3}",
            g,
            sq.flop() / gw / 1e9,
            s,
            step_flop / sw / 1e9,
            (a.steps * b) as f64 / sc,
            s / g
        );
        rows.push((g, s, s / g));
    }
    let col = |f: fn(&(f64, f64, f64)) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let ratios = col(|r| r.2);
    let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().cloned().fold(0.0, f64::max);
    println!(
        "median: GEMM {:.1} GFLOP/s, BP step {:.1} GFLOP/s ({:.1} img/s per CPU second), \
         ratio {:.3} (min {lo:.3}, max {hi:.3})",
        median(&col(|r| r.0)),
        median(&col(|r| r.1)),
        median(&col(|r| r.1)) * 1e9 / flop_image,
        median(&ratios)
    );
    if !a.profile {
        return;
    }

    // One more pass with every call timed and the GEMM's accounting on.
    be.times = Some(Default::default());
    profile::start(cpu_clock::ns);
    let (_, total) = timed(|| steps(&mut be, a.steps));
    let g = profile::stop();
    let per_step = |s: f64| 1e3 * s / a.steps as f64;
    let ns = |v: u64| v as f64 * 1e-9;
    let report = be.report();
    println!(
        "\nwhere a step goes ({} steps, thread CPU time, calls timed; {:.1} ms per step):",
        a.steps,
        per_step(total)
    );
    let mut cats: Vec<(&str, f64)> = Vec::new();
    for (key, s, _) in &report {
        let c = category(key);
        match cats.iter_mut().find(|x| x.0 == c) {
            Some(x) => x.1 += s,
            None => cats.push((c, *s)),
        }
    }
    let conv = cats.iter().find(|x| x.0 == "conv").map_or(0.0, |x| x.1);
    let timed_sum: f64 = cats.iter().map(|x| x.1).sum();
    let kernels = ns(g.gemm - g.pack);
    let mut lines = vec![
        (
            format!(
                "GEMM micro-kernels and stores ({:.1} GFLOP/s)",
                g.flop as f64 / kernels / 1e9
            ),
            kernels,
        ),
        (
            "GEMM packing (operand blocks, weights)".into(),
            ns(g.pack + g.prepack),
        ),
        (
            "convolution outside the GEMM (im2col, col2im, ...)".into(),
            conv - ns(g.gemm + g.prepack),
        ),
    ];
    for &(c, s) in cats.iter().filter(|x| x.0 != "conv") {
        lines.push((c.to_string(), s));
    }
    lines.push(("step outside the backend calls".into(), total - timed_sum));
    for (name, s) in &lines {
        println!(
            "  {name:<50} {:>8.2} ms {:>5.1}%",
            per_step(*s),
            100.0 * s / total
        );
    }
    if g.calls > 0 {
        println!(
            "  (GEMM FLOPs {:.1} MFLOP per image in {} calls per step; the classifier's GEMMs are \
         counted with the convolutions')",
            g.flop as f64 / (a.steps * b) as f64 / 1e6,
            g.calls / a.steps as u64
        );
    }
    println!("per call (ms per step, share):");
    for (key, s, calls) in &report {
        println!(
            "  {key:<40} {:>8.2} ms {:>5.1}% {:>6} calls",
            per_step(*s),
            100.0 * s / total,
            calls / a.steps
        );
    }
}
