//! End-to-end training throughput of the small VGG on Fashion-MNIST on the fast CPU backend: a
//! fixed number of steps per block in each mode (NeuroFlux, classic local learning, BP) under a
//! memory budget, then a BP step at batch 128 with 1 and `--threads` threads.
//!
//! ```text
//! cargo bench --bench train_steps                          # 32 MiB budget, 20 steps per block
//! cargo bench --bench train_steps -- --steps 50 --threads 2 --budget-mib 32
//! cargo bench --bench train_steps -- --bp128-only --threads 2   # one line, for compare_pytorch.py
//! cargo bench --bench train_steps -- --bp128-only --precision bf16   # bf16 GEMM operands
//! ```
//!
//! Per block: `steps` training steps at the block's planned batch size (images/s of those
//! steps), then, in the local modes, the block's outputs for the next block computed once over
//! the sample pool (the activation cache; eval-mode forward). "model img/s" is the rate at which
//! every block trains on an image once and caches it once — the cost of one epoch per block,
//! per image — so it compares directly with BP's images/s. Data: `/usr/share/datasets/
//! fashion-mnist` when present (or `--data DIR`), else the bundled subset in `fixtures/`.
//! `--precision bf16` runs the convolutions' and linear layers' GEMMs on bf16 operands
//! (`FastCpuBackend::with_precision`) over the f32 plan: `nf train --precision bf16` before
//! 407b81a; since then nf train also stores activations in bf16, which this bench does not.
use std::path::PathBuf;
use std::time::Instant;

use nf_core::backend::Backend;
use nf_core::model::{ModelSpec, MAX_UNITS};
use nf_core::optim::Sgd;
use nf_core::plan::{Mode, Plan, PlanOptions};
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo;
use nf_cpu::{threads, FastCpuBackend, Pool, Precision};
use nf_host::data;
use nf_host::run_plan::{host_plan, HostKernels};

mod timed;
use timed::Timed;

struct Args {
    steps: usize,
    threads: usize,
    budget: u64,
    modes: Vec<Mode>,
    bp128_only: bool,
    profile: bool,
    data: Option<PathBuf>,
    head_pool: usize,
    precision: Precision,
}

fn args() -> Args {
    let mut a = Args {
        steps: 20,
        threads: threads(),
        budget: 32 << 20,
        modes: vec![Mode::NeuroFlux, Mode::Ll, Mode::Bp],
        bp128_only: false,
        profile: false,
        data: None,
        head_pool: nf_host::plan_args::DEFAULT_HEAD_POOL,
        precision: Precision::F32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => a.steps = val().parse().expect("--steps N"),
            "--threads" => a.threads = val().parse().expect("--threads N"),
            "--budget-mib" => a.budget = val().parse::<u64>().expect("--budget-mib N") << 20,
            "--modes" => {
                a.modes = val()
                    .split(',')
                    .map(|m| Mode::parse(m).unwrap_or_else(|| panic!("no mode {m}")))
                    .collect()
            }
            "--bp128-only" => a.bp128_only = true,
            "--profile" => a.profile = true,
            "--data" => a.data = Some(PathBuf::from(val())),
            "--head-pool" => a.head_pool = val().parse().expect("--head-pool S"),
            "--precision" => {
                let v = val();
                a.precision = Precision::from_name(&v).unwrap_or_else(|| panic!("no precision {v}"))
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a.steps = a.steps.max(1);
    a
}

/// Images (normalised, NCHW) and labels of the training split.
fn load(dir: Option<PathBuf>) -> (Vec<f32>, Vec<f32>, String) {
    let system = PathBuf::from("/usr/share/datasets/fashion-mnist");
    let dir = dir.unwrap_or_else(|| {
        if system.is_dir() {
            system
        } else {
            data::default_dir()
        }
    });
    let splits = data::load_dir(&dir, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
    let t = splits.train;
    let labels = t.labels().iter().map(|&l| f32::from(l)).collect();
    let s = t.shape().len();
    let mut images = vec![0f32; t.len() * s];
    for (i, x) in images.chunks_exact_mut(s).enumerate() {
        t.write_normalised(i, x);
    }
    (
        images,
        labels,
        format!("{} ({} images)", dir.display(), t.len()),
    )
}

/// Seconds of training and of caching per block, and images trained per block.
struct Run {
    blocks: Vec<(usize, usize, f64, f64)>, // (batch, images trained, train s, cache s)
    pool_images: usize,
}

/// Train every block of `p` for `steps` steps on `images`, caching each block's outputs for the
/// next one over the whole sample pool.
fn run_plan(
    p: &Plan,
    pool: &Pool,
    images: &[f32],
    labels: &[f32],
    steps: usize,
    profile: bool,
    precision: Precision,
) -> Run {
    let m = p.model;
    let max_batch = p.blocks().iter().map(|b| b.batch).max().unwrap_or(1);
    let n_pool = (steps * max_batch).min(labels.len());
    let mut input: Vec<f32> = images[..n_pool * p.input.len()].to_vec();
    let labels = &labels[..n_pool];
    let mut arena = vec![0f32; p.peak_floats()];
    let opt = Sgd::default();
    let mut out = Vec::new();
    for i in 0..p.n_blocks {
        let l = p.layout(i);
        let b = l.batch;
        let per = m.unit_input(p.input, l.first).len();
        // With --profile every call is timed (a few hundred nanoseconds per call, against
        // milliseconds per step); without it the wrapper only passes calls through.
        let host = FastCpuBackend::with_precision(&mut arena, pool, precision);
        let mut be = Timed::new(host, profile);
        step::init_block(&mut be, &l, &mut Rng::new(1)).unwrap();
        let mut st = [SegStats::default(); MAX_UNITS];
        let feed = |be: &mut Timed<FastCpuBackend<'_>>, k: usize| -> usize {
            let s0 = (k * b) % n_pool;
            let n = b.min(n_pool - s0);
            be.write(l.input.prefix(n * per), &input[s0 * per..(s0 + n) * per]);
            be.write(l.labels.prefix(n), &labels[s0..s0 + n]);
            n
        };
        // Warm-up step (caches, page faults), not timed.
        let n = feed(&mut be, 0);
        step::train_step(&mut be, &l, n, &opt, 0.01, &mut st).unwrap();
        let t0 = Instant::now();
        let mut trained = 0;
        for k in 0..steps {
            let n = feed(&mut be, k);
            step::train_step(&mut be, &l, n, &opt, 0.01, &mut st).unwrap();
            trained += n;
        }
        let train_s = t0.elapsed().as_secs_f64();
        if profile {
            println!(
                "profile of block {i} (units {}-{}, batch {b}): {steps} steps, {trained} images",
                l.first, l.last
            );
            for (op, sec, calls) in be.report() {
                println!(
                    "  {op:<40} {:>8.1} us/image {:>5.1}% {calls:>7} calls",
                    sec / trained as f64 * 1e6,
                    100.0 * sec / train_s
                );
            }
        }
        // The activation cache: this block's outputs over the pool, for the next block.
        let mut cache_s = 0.0;
        if i + 1 < p.n_blocks {
            let out_per = l.output_shape().len();
            let mut next = vec![0f32; n_pool * out_per];
            let t1 = Instant::now();
            let mut s0 = 0;
            while s0 < n_pool {
                let n = b.min(n_pool - s0);
                be.write(l.input.prefix(n * per), &input[s0 * per..(s0 + n) * per]);
                be.write(l.labels.prefix(n), &labels[s0..s0 + n]);
                step::eval_step(&mut be, &l, n, &mut st).unwrap();
                be.read(
                    l.output().prefix(n * out_per),
                    &mut next[s0 * out_per..(s0 + n) * out_per],
                );
                s0 += n;
            }
            cache_s = t1.elapsed().as_secs_f64();
            input = next;
        }
        out.push((b, trained, train_s, cache_s));
    }
    Run {
        blocks: out,
        pool_images: n_pool,
    }
}

/// Images per second of one epoch-per-block over the whole model.
fn model_rate(r: &Run) -> f64 {
    let per_image: f64 = r
        .blocks
        .iter()
        .map(|&(_, n, t, c)| t / n as f64 + c / r.pool_images as f64)
        .sum();
    1.0 / per_image
}

/// BP at batch exactly 128 on `threads` threads, GEMM operands in `precision`: images/s over
/// `steps` steps.
fn bp128(
    images: &[f32],
    labels: &[f32],
    threads: usize,
    steps: usize,
    profile: bool,
    precision: Precision,
) -> f64 {
    let opts = PlanOptions {
        b_min: 128,
        b_max: 128,
        ..PlanOptions::DEFAULT
    };
    let m = &zoo::VGG_SMALL;
    let pool = Pool::new(threads);
    let p = host_plan(
        m,
        m.input,
        10,
        1 << 30,
        Mode::Bp,
        &opts,
        HostKernels::of(&pool),
    )
    .expect("BP at batch 128 plans");
    assert_eq!(p.blocks[0].batch, 128);
    let r = run_plan(&p, &pool, images, labels, steps, profile, precision);
    let (_, n, t, _) = r.blocks[0];
    n as f64 / t
}

fn main() {
    let a = args();
    let (images, labels, what) = load(a.data.clone());
    let m = &ModelSpec {
        head_pool: a.head_pool,
        ..zoo::VGG_SMALL
    };
    if a.bp128_only {
        let r = bp128(&images, &labels, a.threads, a.steps, a.profile, a.precision);
        println!(
            "bp128 threads={} precision={} images_per_s={r:.1}",
            a.threads,
            a.precision.name()
        );
        return;
    }
    println!("data: {what}");
    println!(
        "model {} (head pool {}) on {}x{}x{}, {} threads, budget {} MiB, {} steps per block, {}",
        m.name,
        m.head_pool,
        m.input.c,
        m.input.h,
        m.input.w,
        a.threads,
        a.budget >> 20,
        a.steps,
        a.precision.name()
    );
    let pool = Pool::new(a.threads);
    println!(
        "{:<10} {:>6} {:>8} {:>9} {:>10} {:>9} {:>13}",
        "mode", "block", "batch", "train s", "train img/s", "cache s", "model img/s"
    );
    for &mode in &a.modes {
        let opts = PlanOptions::DEFAULT;
        let p = match host_plan(
            m,
            m.input,
            10,
            a.budget,
            mode,
            &opts,
            HostKernels::of(&pool),
        ) {
            Ok(p) => p,
            Err(e) => {
                println!("{:<10} does not plan: {e:?}", mode.name());
                continue;
            }
        };
        let r = run_plan(&p, &pool, &images, &labels, a.steps, a.profile, a.precision);
        let total: f64 = r.blocks.iter().map(|&(_, _, t, c)| t + c).sum();
        for (i, &(b, n, t, c)) in r.blocks.iter().enumerate() {
            let units = format!("{}-{}", p.blocks[i].first, p.blocks[i].last);
            println!(
                "{:<10} {:>6} {:>8} {:>9.3} {:>10.1} {:>9.3}",
                mode.name(),
                units,
                b,
                t,
                n as f64 / t,
                c
            );
        }
        println!(
            "{:<10} {:>6} {:>8} {:>9.3} {:>10} {:>9} {:>13.1}",
            mode.name(),
            "all",
            "",
            total,
            "",
            "",
            model_rate(&r)
        );
    }
    let t1 = bp128(&images, &labels, 1, a.steps, false, a.precision);
    println!("bp step at batch 128, 1 thread: {t1:.1} img/s");
    if a.threads > 1 {
        let tn = bp128(&images, &labels, a.threads, a.steps, false, a.precision);
        println!(
            "bp step at batch 128, {} threads: {tn:.1} img/s (scaling {:.2}x)",
            a.threads,
            tn / t1
        );
    }
}
