//! GEMM rates on one thread: the f32 GEMM against the bf16 GEMM on each of its paths
//! (`vdpbf16ps`, AVX-512 widening, AVX2 widening, portable: every instruction set this CPU
//! runs), on a large square product and on the GEMMs of the small VGG's convolutions; the
//! `f32->bf16` line is the first path fed f32 operands, rounded to bf16 as they are packed
//! (`gemm_mixed`, what `nf train --precision bf16` runs).
//!
//! ```text
//! cargo bench --bench gemm_bf16                          # 2048³ and the vgg-small shapes
//! cargo bench --bench gemm_bf16 -- --rounds 5 --size 2048 --batch 32 --no-convs
//! cargo bench --bench gemm_bf16 -- --isas avx512bf16,avx512   # only these bf16 paths
//! ```
//! Rounds are interleaved (round r runs every variant once, in turn), so machine drift hits
//! every variant alike; each line reports the median and best of the rounds, and the bf16
//! line its median ratio to the f32 one within the same rounds. GFLOP/s counts 2·m·n·k, per
//! second of wall time and, in the `cpu` column, per second this thread spent on a CPU
//! (`/proc/thread-self/schedstat`, Linux): on a shared machine the wall rate drops with the
//! share of the core the thread gets, the CPU-time rate much less.
//! The f32 GEMM runs with the widest f32 kernel of this CPU (`Isa::f32_kernels`).
use std::time::Instant;

use nf_core::model::{ModelSpec, Op};
use nf_core::zoo;
use nf_cpu::bf16::Bf16;
use nf_cpu::gemm::{self, bf16 as g16, Mat, MatMut, Operand};
use nf_cpu::{available_isas, Isa};

struct Args {
    rounds: usize,
    size: usize,
    batch: usize,
    convs: bool,
    isas: Vec<Isa>,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 5,
        size: 2048,
        batch: 32,
        convs: true,
        isas: available_isas(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = val().parse().expect("--rounds N"),
            "--size" => a.size = val().parse().expect("--size N"),
            "--batch" => a.batch = val().parse().expect("--batch N"),
            "--no-convs" => a.convs = false,
            "--isas" => {
                a.isas = val()
                    .split(',')
                    .map(|n| {
                        let i = Isa::from_name(n).unwrap_or_else(|| panic!("no isa {n}"));
                        assert!(i.available(), "this CPU cannot run {n}");
                        i
                    })
                    .collect()
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Nanoseconds this thread has run on a CPU (0 where `/proc/thread-self/schedstat` is missing).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Wall and CPU seconds of one run of `f`, averaged over `reps` runs (the CPU time advances
/// in scheduler ticks of a few milliseconds: each measurement runs at least ~10 GFLOP).
fn timed(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let (t0, c0) = (Instant::now(), cpu_ns());
    for _ in 0..reps {
        f();
    }
    let r = reps as f64;
    (
        t0.elapsed().as_secs_f64() / r,
        (cpu_ns() - c0) as f64 * 1e-9 / r,
    )
}

/// One GEMM `m × n × k` (row-major operands) in every variant, with its buffers.
struct Problem {
    m: usize,
    n: usize,
    k: usize,
    a32: Vec<f32>,
    b32: Vec<f32>,
    a16: Vec<Bf16>,
    b16: Vec<Bf16>,
    c: Vec<f32>,
    /// Runs per measurement.
    reps: usize,
}

impl Problem {
    fn new(m: usize, n: usize, k: usize) -> Self {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            Bf16::from_f32(((s >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0)
        };
        let a16: Vec<Bf16> = (0..m * k).map(|_| next()).collect();
        let b16: Vec<Bf16> = (0..k * n).map(|_| next()).collect();
        Problem {
            m,
            n,
            k,
            a32: a16.iter().map(|x| x.to_f32()).collect(),
            b32: b16.iter().map(|x| x.to_f32()).collect(),
            a16,
            b16,
            c: vec![0.0; m * n],
            reps: (1e10 / (2 * m * n * k) as f64).ceil().max(1.0) as usize,
        }
    }

    /// Wall and CPU seconds of one f32 GEMM (`isa`'s f32 kernel).
    fn f32(&mut self, isa: Isa) -> (f64, f64) {
        let (m, n, k) = (self.m, self.n, self.k);
        let (la, lb) = gemm::scratch_len(isa, m, n, k, true, true);
        let (mut sa, mut sb) = (vec![0f32; la], vec![0f32; lb]);
        timed(self.reps, || {
            gemm::gemm(
                isa,
                1.0,
                Operand::View(Mat::rows(&self.a32, m, k)),
                Operand::View(Mat::rows(&self.b32, k, n)),
                0.0,
                &mut MatMut::rows(&mut self.c, m, n),
                &mut gemm::GemmScratch::new(&mut sa, &mut sb),
                k,
            )
        })
    }

    /// Wall and CPU seconds of one bf16 GEMM on `isa`'s path.
    fn bf16(&mut self, isa: Isa) -> (f64, f64) {
        let (m, n, k) = (self.m, self.n, self.k);
        let (la, lb) = g16::scratch_len(isa, m, n, k, true, true);
        let (mut sa, mut sb) = (vec![Bf16::ZERO; la], vec![Bf16::ZERO; lb]);
        timed(self.reps, || {
            g16::gemm(
                isa,
                1.0,
                Operand::View(Mat::rows(&self.a16, m, k)),
                Operand::View(Mat::rows(&self.b16, k, n)),
                0.0,
                &mut MatMut::rows(&mut self.c, m, n),
                &mut g16::Scratch {
                    a: &mut sa,
                    b: &mut sb,
                },
                k,
            )
        })
    }
}

impl Problem {
    /// Wall and CPU seconds of one bf16 GEMM on `isa`'s path from the f32 operands, rounded
    /// to bf16 as they are packed (what `--precision bf16` runs).
    fn mixed(&mut self, isa: Isa) -> (f64, f64) {
        let (m, n, k) = (self.m, self.n, self.k);
        let (la, lb) = g16::scratch_len(isa, m, n, k, true, true);
        let (mut sa, mut sb) = (vec![Bf16::ZERO; la], vec![Bf16::ZERO; lb]);
        timed(self.reps, || {
            g16::gemm_mixed(
                isa,
                1.0,
                g16::Input::F32(Mat::rows(&self.a32, m, k)),
                g16::Input::F32(Mat::rows(&self.b32, k, n)),
                0.0,
                &mut MatMut::rows(&mut self.c, m, n),
                &mut g16::Scratch {
                    a: &mut sa,
                    b: &mut sb,
                },
                k,
            )
        })
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `p` in the f32 variant and every bf16 path for `rounds` interleaved rounds and prints
/// one line per variant.
fn bench(label: &str, p: &mut Problem, isas: &[Isa], rounds: usize) {
    let f32_isa = available_isas()[0].f32_kernels();
    let flop = 2.0 * (p.m * p.n * p.k) as f64;
    // Warm-up (page faults of the buffers, frequency).
    p.f32(f32_isa);
    let mut t32 = Vec::new();
    let mut t16: Vec<Vec<(f64, f64)>> = vec![Vec::new(); isas.len()];
    let mut tmixed = Vec::new();
    for _ in 0..rounds.max(1) {
        t32.push(p.f32(f32_isa));
        for (i, &isa) in isas.iter().enumerate() {
            t16[i].push(p.bf16(isa));
        }
        if let Some(&isa) = isas.first() {
            tmixed.push(p.mixed(isa));
        }
    }
    let line = |name: String, t: &[(f64, f64)], base: Option<&[(f64, f64)]>| {
        let mut wall: Vec<f64> = t.iter().map(|x| x.0).collect();
        let mut cpu: Vec<f64> = t.iter().map(|x| x.1).collect();
        let best = wall.iter().cloned().fold(f64::INFINITY, f64::min);
        let ratio = base.map(|b| {
            let mut r: Vec<f64> = b.iter().zip(t).map(|(f, h)| f.1 / h.1).collect();
            format!("{:.2}x", median(&mut r))
        });
        println!(
            "{:<34} {:<18} {:>7.1} {:>7.1} {:>7.1} {:>7}",
            label,
            name,
            flop / median(&mut wall) / 1e9,
            flop / best / 1e9,
            flop / median(&mut cpu) / 1e9,
            ratio.unwrap_or_default()
        );
    };
    line(format!("f32 ({f32_isa})"), &t32, None);
    for (isa, t) in isas.iter().zip(&t16) {
        line(format!("bf16 ({isa})"), t, Some(&t32));
    }
    if let Some(isa) = isas.first() {
        line(format!("f32->bf16 ({isa})"), &tmixed, Some(&t32));
    }
}

/// The GEMMs of every distinct convolution of `model` at batch `batch`, the batch folded into
/// the long dimension: forward `c_out × (ho·wo·batch) × ckk`, input gradient
/// `ckk × (ho·wo·batch) × c_out`, weight gradient `c_out × ckk × (ho·wo·batch)`.
fn conv_gemms(model: &ModelSpec, batch: usize) -> Vec<(String, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut s = model.input;
    for unit in model.units.iter() {
        for op in unit.iter() {
            if let Op::Conv {
                out: c,
                k,
                stride,
                pad,
                ..
            } = *op
            {
                let ho = (s.h + 2 * pad - k) / stride + 1;
                let wo = (s.w + 2 * pad - k) / stride + 1;
                let (ckk, hw) = (s.c * k * k, ho * wo * batch);
                let name = format!("{}x{}x{}->{c} k{k}", s.c, s.h, s.w);
                for (pass, m, n, kk) in
                    [("fwd", c, hw, ckk), ("dx", ckk, hw, c), ("dw", c, ckk, hw)]
                {
                    let g = (format!("{name} {pass}"), m, n, kk);
                    if !out
                        .iter()
                        .any(|o: &(String, usize, usize, usize)| o.0 == g.0)
                    {
                        out.push(g);
                    }
                }
            }
            s = op.out_shape(s);
        }
    }
    out
}

fn main() {
    let a = args();
    println!(
        "GEMM, 1 thread, {} interleaved rounds; GFLOP/s (2mnk): wall median, wall best, per CPU \
         second median; vs f32 = median of f32 CPU time / bf16 CPU time within a round",
        a.rounds
    );
    println!(
        "{:<34} {:<18} {:>7} {:>7} {:>7} {:>7}",
        "shape (m x n x k)", "variant", "median", "best", "cpu", "vs f32"
    );
    let s = a.size;
    bench(
        &format!("{s}x{s}x{s}"),
        &mut Problem::new(s, s, s),
        &a.isas,
        a.rounds,
    );
    if a.convs {
        // The portable paths take minutes on these; the SIMD ones are what the backend runs.
        let isas: Vec<Isa> = a
            .isas
            .iter()
            .copied()
            .filter(|&i| i != Isa::Portable)
            .collect();
        for (name, m, n, k) in conv_gemms(&zoo::VGG_SMALL, a.batch) {
            bench(
                &format!("{name} {m}x{n}x{k}"),
                &mut Problem::new(m, n, k),
                &isas,
                a.rounds,
            );
        }
    }
}
