//! GEMM rates on one thread: the f32 GEMM against the bf16 GEMM on each of its paths
//! (`vdpbf16ps`, AVX-512 widening, AVX2 widening, portable: every instruction set this CPU
//! runs), on a large square product and on the GEMMs of the small VGG's convolutions.
//!
//! ```text
//! cargo bench --bench gemm_bf16                          # 2048³ and the vgg-small shapes
//! cargo bench --bench gemm_bf16 -- --rounds 5 --size 2048 --batch 32 --no-convs
//! cargo bench --bench gemm_bf16 -- --isas avx512bf16,avx512   # only these bf16 paths
//! ```
//! Rounds are interleaved (round r runs every variant once, in turn), so machine drift hits
//! every variant alike; each line reports the median and best of the rounds, and the bf16
//! line its median ratio to the f32 one within the same rounds. GFLOP/s counts 2·m·n·k.
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
        }
    }

    /// Seconds of one f32 GEMM (`isa`'s f32 kernel).
    fn f32(&mut self, isa: Isa) -> f64 {
        let (m, n, k) = (self.m, self.n, self.k);
        let (la, lb) = gemm::scratch_len(isa, m, n, k, true, true);
        let (mut sa, mut sb) = (vec![0f32; la], vec![0f32; lb]);
        let t0 = Instant::now();
        gemm::gemm(
            isa,
            1.0,
            Operand::View(Mat::rows(&self.a32, m, k)),
            Operand::View(Mat::rows(&self.b32, k, n)),
            0.0,
            &mut MatMut::rows(&mut self.c, m, n),
            &mut gemm::GemmScratch::new(&mut sa, &mut sb),
            k,
        );
        t0.elapsed().as_secs_f64()
    }

    /// Seconds of one bf16 GEMM on `isa`'s path.
    fn bf16(&mut self, isa: Isa) -> f64 {
        let (m, n, k) = (self.m, self.n, self.k);
        let (la, lb) = g16::scratch_len(isa, m, n, k);
        let (mut sa, mut sb) = (vec![Bf16::ZERO; la], vec![Bf16::ZERO; lb]);
        let t0 = Instant::now();
        g16::gemm(
            isa,
            1.0,
            Mat::rows(&self.a16, m, k),
            Mat::rows(&self.b16, k, n),
            0.0,
            &mut MatMut::rows(&mut self.c, m, n),
            &mut g16::Scratch {
                a: &mut sa,
                b: &mut sb,
            },
        );
        t0.elapsed().as_secs_f64()
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
    let mut t16: Vec<Vec<f64>> = vec![Vec::new(); isas.len()];
    for _ in 0..rounds.max(1) {
        t32.push(p.f32(f32_isa));
        for (i, &isa) in isas.iter().enumerate() {
            t16[i].push(p.bf16(isa));
        }
    }
    let ratios: Vec<Vec<f64>> = t16
        .iter()
        .map(|t| t.iter().zip(&t32).map(|(b, f)| f / b).collect())
        .collect();
    let best = |t: &[f64]| t.iter().cloned().fold(f64::INFINITY, f64::min);
    let line = |name: String, t: &[f64], ratio: Option<f64>| {
        let mut t = t.to_vec();
        println!(
            "{:<32} {:<20} {:>9.1} {:>9.1} {:>8}",
            label,
            name,
            flop / median(&mut t) / 1e9,
            flop / best(&t) / 1e9,
            ratio.map_or(String::new(), |r| format!("{r:.2}x"))
        );
    };
    line(format!("f32 ({f32_isa})"), &t32, None);
    for ((isa, t), r) in isas.iter().zip(&t16).zip(ratios) {
        let mut r = r;
        line(format!("bf16 ({isa})"), t, Some(median(&mut r)));
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
        "GEMM, 1 thread, {} interleaved rounds; GFLOP/s (2mnk) median and best; ratio = f32 time / bf16 time",
        a.rounds
    );
    println!(
        "{:<32} {:<20} {:>9} {:>9} {:>8}",
        "shape (m x n x k)", "variant", "median", "best", "vs f32"
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
