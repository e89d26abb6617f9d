//! The bf16 GEMM on every instruction set this CPU runs ([`available_isas`]: on a CPU with
//! AVX512-BF16 the `vdpbf16ps`, AVX-512 widening, AVX2 widening and portable paths) against an
//! f64 product of the same bf16 inputs, so that only the summation order differs. Tolerance per
//! element: `1e-5 · (|alpha| · Σ_k |a||b| + |beta · c|)` (f32 sums of at most a few thousand
//! terms round by well under that; a wrong pair, lane or edge is off by a whole term).
use super::*;
use crate::isa::available_isas;

/// A deterministic stream of values in `[-1, 1)`, rounded to bf16 (never subnormal).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> Bf16 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Bf16::from_f32(((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32)
    }
    fn vec(&mut self, n: usize) -> Vec<Bf16> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// How the operands are laid out: `A` transposed (stored `k × m`), `B` transposed (stored
/// `n × k`), `C` column-major; `A` / `B` packed in advance ([`pack_a`], [`pack_b`]).
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    ta: bool,
    tb: bool,
    c_cols: bool,
    pa: bool,
    pb: bool,
}

const fn lay(ta: bool, tb: bool, c_cols: bool, pa: bool, pb: bool) -> Layout {
    Layout {
        ta,
        tb,
        c_cols,
        pa,
        pb,
    }
}

const LAYOUTS: [Layout; 8] = [
    lay(false, false, false, false, false),
    lay(true, false, false, false, false),
    lay(false, true, false, false, false),
    lay(true, true, false, false, false),
    lay(false, false, true, false, false),
    lay(true, false, false, true, false),
    lay(false, true, false, false, true),
    lay(false, false, true, true, true),
];

/// Runs `C = alpha·A·B + beta·C` with `isa` and compares it with the f64 reference.
#[allow(clippy::too_many_arguments)]
fn check(isa: Isa, m: usize, n: usize, k: usize, l: Layout, alpha: f32, beta: f32, seed: u64) {
    let mut rng = Rng(seed | 1);
    let (a, b) = (rng.vec(m * k), rng.vec(k * n));
    let c0: Vec<f32> = rng.vec(m * n).iter().map(|x| x.to_f32()).collect();
    let av = if l.ta {
        Mat::rows(&a, k, m).t()
    } else {
        Mat::rows(&a, m, k)
    };
    let bv = if l.tb {
        Mat::rows(&b, n, k).t()
    } else {
        Mat::rows(&b, k, n)
    };
    let mut c = c0.clone();
    let (sa, sb) = scratch_len(isa, m, n, k, !l.pa, !l.pb);
    // Sentinels (a NaN never produced by rounding values in [-1, 1)): every element of
    // buffers of exactly `scratch_len` must be written.
    let (mut pa, mut pb) = (
        vec![Bf16::from_bits(0xffff); sa],
        vec![Bf16::from_bits(0xffff); sb],
    );
    let mut packed_a = vec![Bf16::from_bits(0xffff); packed_a_len(isa, m, k)];
    let mut packed_b = vec![Bf16::from_bits(0xffff); packed_b_len(isa, k, n)];
    let ao = if l.pa {
        pack_a(isa, av, &mut packed_a);
        Operand::Packed(&packed_a)
    } else {
        Operand::View(av)
    };
    let bo = if l.pb {
        pack_b(isa, bv, &mut packed_b);
        Operand::Packed(&packed_b)
    } else {
        Operand::View(bv)
    };
    // `C = alpha·A·B + beta·C` into `c` (`m × n`, column-major with `l.c_cols`).
    let mut run = |ai: Input<'_>, bi: Input<'_>, c: &mut [f32]| {
        let mut cv = if l.c_cols {
            MatMut::new(c, m, n, 1, m)
        } else {
            MatMut::rows(c, m, n)
        };
        let mut s = Scratch {
            a: &mut pa,
            b: &mut pb,
        };
        gemm_mixed(isa, alpha, ai, bi, beta, &mut cv, &mut s, k);
    };
    run(ao.into(), bo.into(), &mut c);
    if !l.pa && !l.pb {
        // The same product from f32 views of the same values (rounded as they are packed,
        // through the f32 transposes where the kernel has them): the same bits.
        let (af, bf): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|x| x.to_f32()).collect(),
            b.iter().map(|x| x.to_f32()).collect(),
        );
        let (avf, bvf) = (
            Mat::new(&af, m, k, av.rs, av.cs),
            Mat::new(&bf, k, n, bv.rs, bv.cs),
        );
        let mut c2 = c0.clone();
        run(Input::F32(avf), Input::F32(bvf), &mut c2);
        let same = c2.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{isa} {m}x{n}x{k} {l:?}: f32 inputs differ");
    }
    if alpha != 0.0 && k > 0 {
        assert!(
            pa.iter().chain(&pb).all(|x| x.to_bits() != 0xffff),
            "{isa}: packing buffers not fully written"
        );
        // Packed operands: every element of exactly `packed_*_len` written.
        if l.pa && l.pb {
            assert!(
                packed_a
                    .iter()
                    .chain(&packed_b)
                    .all(|x| x.to_bits() != 0xffff),
                "{isa}: packed operands not fully written"
            );
        }
    }
    let at = |i: usize, j: usize| if l.c_cols { j * m + i } else { i * n + j };
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut mag) = (0f64, 0f64);
            for kk in 0..k {
                let p = av.data[i * av.rs + kk * av.cs].to_f32() as f64
                    * bv.data[kk * bv.rs + j * bv.cs].to_f32() as f64;
                sum += p;
                mag += p.abs();
            }
            let old = c0[at(i, j)] as f64;
            let want = alpha as f64 * sum + if beta == 0.0 { 0.0 } else { beta as f64 * old };
            let tol = 1e-5 * (alpha.abs() as f64 * mag + (beta as f64 * old).abs()) + 1e-30;
            let got = c[at(i, j)] as f64;
            assert!(
                (got - want).abs() <= tol,
                "{isa} {m}x{n}x{k} {l:?} alpha {alpha} beta {beta}: C[{i}][{j}] = {got}, \
                 want {want} (tolerance {tol})"
            );
        }
    }
}

#[test]
fn every_path_matches_the_reference_on_odd_shapes() {
    let shapes = [
        (1, 1, 1),
        (1, 33, 1),
        (13, 31, 1),
        (12, 32, 2),
        (5, 7, 3),
        (13, 33, 7),
        (24, 64, 16),
        (25, 65, 17),
        (97, 40, 31),
        (3, 17, 64),
        (50, 70, 129),
    ];
    for isa in available_isas() {
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            for (li, &l) in LAYOUTS.iter().enumerate() {
                check(isa, m, n, k, l, 1.0, 0.0, (s * 8 + li) as u64);
            }
        }
    }
}

#[test]
fn alpha_and_beta() {
    for isa in available_isas() {
        for (alpha, beta) in [
            (2.5, 0.0),
            (-0.75, 1.0),
            (1.0, -0.5),
            (0.0, 0.5),
            (0.0, 0.0),
        ] {
            check(isa, 14, 35, 9, LAYOUTS[0], alpha, beta, 7);
            check(isa, 14, 35, 9, LAYOUTS[4], alpha, beta, 8);
        }
    }
}

#[test]
fn several_depth_and_column_blocks() {
    for isa in available_isas() {
        // `KC + 1`: a second depth block of one (odd) step; `NC + 30`: two column blocks;
        // `MC + 5` rows: two row blocks.
        check(isa, 7, 20, KC + 1, LAYOUTS[0], 1.0, 0.5, 11);
        check(isa, 7, 20, KC + 1, LAYOUTS[3], 1.0, 0.0, 12);
        check(isa, 3, NC + 30, 5, LAYOUTS[2], 1.0, 0.0, 13);
        check(isa, MC + 5, 9, 6, LAYOUTS[1], 1.0, 0.0, 14);
        // The same, with operands packed in advance (several blocks of the packed layout).
        check(isa, 7, 20, KC + 1, LAYOUTS[7], 1.0, 0.5, 15);
        check(isa, 3, NC + 30, 5, LAYOUTS[6], 1.0, 0.0, 16);
        check(isa, MC + 5, 9, 6, LAYOUTS[5], 1.0, 0.0, 17);
        // Whole tiles over several depth blocks, with `C` kept (beta 1) and overwritten: on
        // AMX the tiles load and store such a `C` themselves.
        check(isa, 35, 70, 2 * KC + 40, LAYOUTS[0], 1.0, 1.0, 18);
        check(isa, 35, 70, 2 * KC + 40, LAYOUTS[3], 1.0, 0.0, 19);
    }
}

#[test]
fn empty_shapes_scale_c() {
    for isa in available_isas() {
        let (a, b) = ([Bf16::ZERO; 0], [Bf16::ZERO; 0]);
        let mut c = vec![2.0f32; 6];
        let mut s = Scratch {
            a: &mut [],
            b: &mut [],
        };
        gemm(
            isa,
            1.0,
            Operand::View(Mat::rows(&a, 2, 0)),
            Operand::View(Mat::rows(&b, 0, 3)),
            0.5,
            &mut MatMut::rows(&mut c, 2, 3),
            &mut s,
            0,
        );
        assert_eq!(c, [1.0; 6], "{isa}");
        assert_eq!(scratch_len(isa, 2, 3, 0, true, true), (0, 0));
    }
}

#[test]
fn nan_and_infinity_propagate() {
    for isa in available_isas() {
        let (m, n, k) = (3, 40, 4);
        let mut a = vec![Bf16::from_f32(0.5); m * k];
        let b = vec![Bf16::from_f32(0.25); k * n];
        a[0] = Bf16::from_f32(f32::NAN);
        a[2 * k + 1] = Bf16::from_f32(f32::INFINITY);
        let mut c = vec![0f32; m * n];
        let (sa, sb) = scratch_len(isa, m, n, k, true, true);
        let (mut pa, mut pb) = (vec![Bf16::ZERO; sa], vec![Bf16::ZERO; sb]);
        let mut s = Scratch {
            a: &mut pa,
            b: &mut pb,
        };
        let mut cv = MatMut::rows(&mut c, m, n);
        gemm(
            isa,
            1.0,
            Operand::View(Mat::rows(&a, m, k)),
            Operand::View(Mat::rows(&b, k, n)),
            0.0,
            &mut cv,
            &mut s,
            k,
        );
        for j in 0..n {
            assert!(c[j].is_nan(), "{isa}: C[0][{j}] = {}", c[j]);
            assert_eq!(c[n + j], 0.5, "{isa}: C[1][{j}]");
            assert_eq!(c[2 * n + j], f32::INFINITY, "{isa}: C[2][{j}]");
        }
    }
}

#[test]
#[should_panic(expected = "packing buffers")]
fn short_scratch_panics() {
    let isa = available_isas()[0];
    let a = vec![Bf16::ZERO; 4 * 4];
    let mut c = vec![0f32; 16];
    let mut s = Scratch {
        a: &mut [],
        b: &mut [],
    };
    gemm(
        isa,
        1.0,
        Operand::View(Mat::rows(&a, 4, 4)),
        Operand::View(Mat::rows(&a, 4, 4)),
        0.0,
        &mut MatMut::rows(&mut c, 4, 4),
        &mut s,
        4,
    );
}

#[test]
fn the_test_list_holds_every_path_this_cpu_runs() {
    // A CPU with AVX512-BF16 runs the `vdpbf16ps` kernel, and the widening and portable ones.
    let isas = available_isas();
    for isa in Isa::ALL {
        assert_eq!(isas.contains(&isa), isa.available(), "{isa}");
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("avx512vl")
    {
        assert!(isas.contains(&Isa::Avx512Bf16));
    }
    // A CPU with AMX-BF16 (Sapphire Rapids and later) runs the AMX kernel too, unless the
    // kernel or a sandbox refuses the tile state: said here, as the tests then run less.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22) != 0 && Isa::Avx512Bf16.available() {
        match crate::amx::missing() {
            None => assert_eq!(isas[0], Isa::Amx),
            Some(m) => eprintln!("this CPU has AMX-BF16 but the tests cannot use it: {m}"),
        }
    }
}
