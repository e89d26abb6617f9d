//! The host kernels' workspace model (`nf_cpu::workspace`) is exact.
//!
//! For a spread of convolutions that covers every path (per tap on small maps, small weights,
//! the plain and the transposed product, the flipped-kernel input gradient, pointwise, strided,
//! padded, odd sizes, GEMM blocking edges) and linear layers, with 1, 2, 3 and 8 workers and
//! under every instruction set this CPU runs, each kernel call gets a workspace of exactly
//! `floats_for(kernel, threads, isa)` elements, all holding a sentinel NaN. Its results must
//! match the reference kernels (tolerances as in `fast_cpu.rs`) and no sentinel may be
//! left: every planned element was written, so the model is not padded (and the arena checks
//! of `nf_conformance::Case` show that no kernel writes outside its regions, so it is not short). With
//! one element less, the kernel must still give the right results with fewer workers, or, when
//! even one worker does not fit, refuse with a clear panic.
use std::panic::{catch_unwind, AssertUnwindSafe};

use nf_core::ops::conv2d::ConvGeom;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_cpu::workspace::{floats, floats_for, KernelCall};
use nf_cpu::{available_isas, isa_from_env, Isa, Pool};

use nf_conformance::{geom, Call, Case, Side, SENTINEL};
use nf_core::backend::Backend;
use nf_cpu::FastCpuBackend;

const THREADS: [usize; 4] = [1, 2, 3, 8];

/// Run `calls` on the reference and on the host with `threads` workers on `isa` (tolerances as
/// in `fast_cpu.rs`); the host's arena.
fn check(
    c: &Case,
    what: &str,
    threads: usize,
    isa: Isa,
    calls: impl Fn(Side) -> Vec<Call>,
) -> Vec<f32> {
    let pool = Pool::with_isa(threads, isa);
    let mut arena = vec![0f32; c.len()];
    let mut be = FastCpuBackend::new(&mut arena, &pool);
    let tol = nf_conformance::Tol {
        gemm: 1e-4,
        bn: 1e-5,
        exact: 0.0,
        steps: 2e-3,
    };
    let what = format!("{what} [T={threads}, {isa}]");
    let got = c
        .check(&what, &mut be, &tol, calls)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(be.arena_len(), got.len());
    got
}

/// Run kernel `k` alone on both backends, the host with a workspace of `len` elements (the
/// reference with its own), and return the host's arena and its workspace region.
fn run(k: &KernelCall, len: usize, threads: usize, isa: Isa, seed: u64) -> (Vec<f32>, Region) {
    let mut c = Case::new(seed);
    let hws;
    let what = format!("{k:?} with {len} workspace floats");
    let got = match *k {
        KernelCall::ConvForward(g) => {
            let x = c.input("x", g.in_len());
            let w = c.input("w", g.weight_len());
            let b = c.input("b", g.c_out);
            let y = c.gemm_out("y", g.out_len());
            hws = c.workspace(len);
            let rws = c.workspace(g.cols_len());
            check(&c, &what, threads, isa, |side| {
                let ws = if side == Side::Subject { hws } else { rws };
                vec![Call::ConvForward(g, [x, w, b, y, ws])]
            })
        }
        KernelCall::ConvBackward { g, dx, db } => {
            let x = c.input("x", g.in_len());
            let w = c.input("w", g.weight_len());
            let dy = c.input("dy", g.out_len());
            let dw = c.gemm_out("dw", g.weight_len());
            let db = if db {
                c.exact_out("db", g.c_out)
            } else {
                Region::NONE
            };
            let dx = if dx {
                c.gemm_out("dx", g.in_len())
            } else {
                Region::NONE
            };
            hws = c.workspace(len);
            let rws = c.workspace(g.cols_len());
            check(&c, &what, threads, isa, |side| {
                let ws = if side == Side::Subject { hws } else { rws };
                vec![Call::ConvBackward(g, [x, w, dy, dw, db, dx, ws])]
            })
        }
        KernelCall::LinearForward { n, fin, fout } => {
            let x = c.input("x", n * fin);
            let wb = c.input("wb", fout * fin + fout);
            let y = c.gemm_out("y", n * fout);
            hws = c.workspace(len);
            check(&c, &what, threads, isa, |_| {
                vec![Call::Linear(n, fin, fout, [x, wb, y, hws])]
            })
        }
        KernelCall::LinearBackward { n, fin, fout, dx } => {
            let x = c.input("x", n * fin);
            let wb = c.input("wb", fout * fin + fout);
            let dy = c.input("dy", n * fout);
            let dwb = c.gemm_out("dwb", fout * fin + fout);
            let dx = if dx {
                c.gemm_out("dx", n * fin)
            } else {
                Region::NONE
            };
            hws = c.workspace(len);
            check(&c, &what, threads, isa, |_| {
                vec![Call::LinearBackward(
                    n,
                    fin,
                    fout,
                    [x, wb, dy, dwb, dx, hws],
                )]
            })
        }
    };
    (got, hws)
}

/// The exactness check of `k` on `threads` workers under `isa` (see the module documentation).
fn exact(k: &KernelCall, threads: usize, isa: Isa, seed: u64) {
    let len = floats_for(k, threads, isa);
    let (got, ws) = run(k, len, threads, isa, seed);
    let left = got[ws.offset..ws.end()]
        .iter()
        .filter(|v| v.to_bits() == SENTINEL)
        .count();
    assert_eq!(
        left, 0,
        "{k:?} [T={threads}, {isa}]: {left} of {len} planned workspace floats never written"
    );
    if len == 0 {
        return;
    }
    // One element less: fewer workers, or a refusal when one worker needs them all.
    let one = floats_for(k, 1, isa);
    let r = catch_unwind(AssertUnwindSafe(|| run(k, len - 1, threads, isa, seed)));
    if one < len {
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    } else {
        let e = r.expect_err("one element short of one worker's workspace must panic");
        let msg = e
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| e.downcast_ref::<&str>().copied())
            .unwrap_or("");
        assert!(
            msg.contains("one worker needs"),
            "{k:?} [T={threads}, {isa}]: unexpected panic {msg:?}"
        );
    }
}

/// Convolutions covering every path of the host kernels.
fn shapes() -> Vec<ConvGeom> {
    vec![
        // Per tap (≤ 16 output pixels): 2x2, 1x1, strided 4x4 → 2x2, 1x3, and a map whose
        // every tap sees only padding (k = 1, pad 1, stride 2 on 1x1: no used tap at all).
        geom(4, 24, 2, 2, 36, 3, 1, 1),
        geom(5, 33, 1, 1, 20, 3, 1, 1),
        geom(3, 8, 4, 4, 12, 3, 2, 1),
        geom(3, 6, 1, 3, 5, 3, 1, 1),
        geom(2, 3, 1, 1, 4, 1, 2, 1),
        // Small weights (first layers): grey 28x28 → 32, RGB 16x16 → 8.
        geom(5, 1, 28, 28, 32, 3, 1, 1),
        geom(3, 3, 16, 16, 8, 3, 1, 1),
        // 7x7: transposed forward product; transposed weight gradient (ckk = 45); transposed
        // input gradient (ckk = 288, widening, so not by the flipped kernel).
        geom(2, 16, 7, 7, 32, 3, 1, 1),
        geom(2, 5, 7, 7, 32, 3, 1, 1),
        geom(2, 32, 7, 7, 48, 3, 1, 1),
        // Narrowing same-size convolutions: input gradient by the flipped kernel (plain and
        // transposed product), and a 5x5 kernel on an odd map.
        geom(3, 32, 14, 14, 16, 3, 1, 1),
        geom(2, 128, 7, 7, 16, 3, 1, 1),
        geom(2, 12, 8, 5, 6, 5, 1, 2),
        // Plain products on maps of a multiple of the tile.
        geom(2, 48, 8, 8, 32, 3, 1, 1),
        // Pointwise; strided 1x1; stride 2 with and without padding.
        geom(3, 16, 6, 5, 24, 1, 1, 0),
        geom(4, 16, 8, 8, 32, 1, 2, 0),
        geom(3, 5, 9, 8, 7, 3, 2, 1),
        geom(2, 5, 8, 9, 7, 3, 2, 0),
        // GEMM blocking edges: c_out > 96 (MC), more than 1024 pixels (NC), ckk > 1152 (KC).
        geom(2, 40, 9, 11, 100, 3, 1, 1),
        geom(1, 16, 33, 33, 8, 3, 1, 1),
        geom(2, 130, 5, 5, 8, 3, 1, 1),
        // Odd batch and sizes; batch 1; a kernel larger than the map (no output).
        geom(7, 3, 5, 4, 9, 3, 1, 0),
        geom(1, 4, 6, 6, 6, 3, 1, 1),
        geom(2, 3, 2, 2, 4, 3, 1, 0),
    ]
}

fn conv_kernels(g: ConvGeom) -> [KernelCall; 3] {
    [
        KernelCall::ConvForward(g),
        KernelCall::ConvBackward {
            g,
            dx: true,
            db: true,
        },
        KernelCall::ConvBackward {
            g,
            dx: false,
            db: false,
        },
    ]
}

#[test]
fn conv_workspace_is_exact_on_every_path() {
    for (i, g) in shapes().into_iter().enumerate() {
        for k in conv_kernels(g) {
            for t in THREADS {
                for isa in available_isas() {
                    exact(&k, t, isa, i as u64);
                }
            }
        }
    }
}

#[test]
fn linear_workspace_is_exact() {
    // Tiny (one worker); large enough to be split; fin > KC; n > KC (the weight gradient's
    // depth); fewer output features than workers.
    let shapes = [
        (3, 7, 5),
        (128, 512, 10),
        (37, 300, 64),
        (60, 1200, 40),
        (1300, 30, 10),
        (700, 400, 2),
    ];
    for (i, (n, fin, fout)) in shapes.into_iter().enumerate() {
        let kernels = [
            KernelCall::LinearForward { n, fin, fout },
            KernelCall::LinearBackward {
                n,
                fin,
                fout,
                dx: true,
            },
            KernelCall::LinearBackward {
                n,
                fin,
                fout,
                dx: false,
            },
        ];
        for k in kernels {
            for t in THREADS {
                for isa in available_isas() {
                    exact(&k, t, isa, 50 + i as u64);
                }
            }
        }
    }
}

/// The planner may size a block's workspace at its batch size: no kernel call needs more at a
/// smaller batch (checked on random shapes and on every path above).
#[test]
fn workspace_does_not_shrink_as_the_batch_grows() {
    let mut rng = Rng::new(77);
    let mut gs = shapes();
    for _ in 0..200 {
        let k = [1usize, 3, 5][rng.below(3) as usize];
        gs.push(geom(
            1,
            1 + rng.below(64) as usize,
            1 + rng.below(20) as usize,
            1 + rng.below(20) as usize,
            1 + rng.below(64) as usize,
            k,
            1 + rng.below(2) as usize,
            rng.below(k as u32 / 2 + 1) as usize,
        ));
    }
    for isa in available_isas() {
        for &g in &gs {
            for t in THREADS {
                let mut last = [0; 3];
                for n in 1..=40 {
                    let now = conv_kernels(ConvGeom { n, ..g }).map(|k| floats_for(&k, t, isa));
                    for (a, b) in last.iter().zip(&now) {
                        assert!(a <= b, "{g:?} T={t} {isa}: n={n} needs {b} < {a}");
                    }
                    last = now;
                }
            }
        }
        for (fin, fout) in [(7, 5), (512, 10), (300, 64), (1200, 40), (30, 10)] {
            for t in THREADS {
                let mut last = [0; 2];
                for n in (1..=1400).step_by(7) {
                    let now = [true, false].map(|dx| {
                        let f = KernelCall::LinearForward { n, fin, fout };
                        let b = KernelCall::LinearBackward { n, fin, fout, dx };
                        floats_for(&f, t, isa).max(floats_for(&b, t, isa))
                    });
                    for (a, b) in last.iter().zip(&now) {
                        assert!(a <= b, "linear {fin}->{fout} T={t} {isa}: n={n}");
                    }
                    last = now;
                }
            }
        }
    }
}

/// `floats` is `floats_for` with the instruction set of `Pool::new`.
#[test]
fn floats_uses_the_pools_instruction_set() {
    let isa = Pool::new(1).isa();
    for g in shapes() {
        for k in conv_kernels(g) {
            assert_eq!(floats(&k, 3), floats_for(&k, 3, isa));
        }
    }
}

/// Runs only as a child of `nf_gemm_isa_selects_the_instruction_set`: prints what
/// `NF_GEMM_ISA` selected.
#[test]
fn isa_env_probe() {
    if std::env::var_os("NF_ISA_PROBE").is_none() {
        return;
    }
    match isa_from_env() {
        Ok(i) => println!(
            "ISA-PROBE ok {:?} pool {}",
            i.map(Isa::name),
            Pool::new(1).isa()
        ),
        Err(e) => println!("ISA-PROBE err {e}"),
    }
}

fn probe(value: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "isa_env_probe",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("NF_ISA_PROBE", "1")
        .env("NF_GEMM_ISA", value)
        .output()
        .expect("running the test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split_once("ISA-PROBE ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("NF_GEMM_ISA={value}: no probe line in {text}"))
        .to_string()
}

#[test]
fn nf_gemm_isa_selects_the_instruction_set() {
    for isa in Isa::ALL {
        let got = probe(isa.name());
        if isa.available() {
            assert_eq!(
                got,
                format!("ok Some({:?}) pool {isa}", isa.name()),
                "NF_GEMM_ISA={isa}"
            );
        } else {
            let lacks = isa.missing_feature().unwrap();
            assert_eq!(
                got,
                format!("err NF_GEMM_ISA={isa}: this CPU lacks {lacks}")
            );
        }
    }
    assert_eq!(
        probe("foo"),
        "err NF_GEMM_ISA=foo: expected amx, avx512bf16, avx512, avx2 or portable"
    );
    let best = available_isas()[0];
    assert_eq!(probe(""), format!("ok None pool {best}"));
}
