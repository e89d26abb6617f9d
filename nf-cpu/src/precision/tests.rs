//! The convolution (forward, input gradient, weight gradient) and the linear layer (forward,
//! input and weight gradients) in [`Precision::Bf16`] against the f32 reference kernels
//! ([`nf_core::ops`]), on every instruction set this CPU runs, with 1 and 2 workers and a
//! workspace of exactly [`floats_for`] elements.
//!
//! Tolerance, per element of a product `Σ a·b`: rounding both operands to bf16 (8 significant
//! bits, relative error at most `u = 2⁻⁸` each) changes each term by at most `(2u + u²)·|a||b|`,
//! so the result differs from the f32 reference by at most `2 · 2⁻⁸ · Σ|a||b|` plus the f32
//! rounding of the sums; the test allows `(2⁻⁷ + 10⁻⁴) · Σ|a||b|`, where `Σ|a||b|` is the reference kernel run
//! on the absolute values. That bound alone would also pass f32 products, so where the path
//! runs in bf16 (every GEMM of depth ≥ 2, not the small-weight paths of first layers) the
//! result must also match the reference run on the bf16-rounded operands within `10⁻⁴ ·
//! Σ|a||b|` (products of bf16 values are exact in f32: only the summation order differs): a
//! path left in f32 misses that by up to `2⁻⁷`.
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::{conv2d as rconv, linear as rlin};
use nf_core::probe::KernelCall;

use crate::conv2d::paths::Paths;
use crate::gemm::{self, bf16 as g16};
use crate::isa::{available_isas, Isa};
use crate::par::Pool;
use crate::precision::{Kernels, Precision};
use crate::workspace::floats_for;
use crate::{conv2d, linear};

/// The f32 error bound of bf16 operands, per unit of `Σ|a||b|`.
const BF16_BOUND: f32 = 1.0 / 128.0 + 1e-4;
/// The summation-order bound against the reference on bf16-rounded operands.
const SUM_BOUND: f32 = 1e-4;

/// Deterministic values in `[-1, 1)`.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| crate::bf16::Bf16::from_f32(x).to_f32())
        .collect()
}

/// `got` within `bound · scale` (+ a tiny absolute slack) of `want`, element by element.
fn close(what: &str, got: &[f32], want: &[f32], scale: &[f32], bound: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = bound * s + 1e-6;
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: {g} against {w} (Σ|a||b| = {s}, tolerance {tol})"
        );
    }
}

/// A pool of `threads` workers on `isa` and a workspace of exactly the planned size.
fn setup(k: KernelCall, threads: usize, isa: Isa) -> (Pool, Vec<f32>) {
    (
        Pool::with_isa(threads, isa),
        vec![f32::NAN; floats_for(&k, threads, isa)],
    )
}

fn shapes() -> Vec<ConvGeom> {
    use nf_conformance::geom;
    vec![
        // Per tap (small maps), plain and strided.
        geom(4, 24, 2, 2, 36, 3, 1, 1),
        geom(5, 33, 1, 1, 20, 3, 1, 1),
        geom(3, 8, 4, 4, 12, 3, 2, 1),
        // Small weights (a grey first layer): forward and weight gradient stay f32.
        geom(3, 1, 28, 28, 32, 3, 1, 1),
        // 7x7 transposed products; the flipped-kernel input gradient; plain products.
        geom(2, 16, 7, 7, 32, 3, 1, 1),
        geom(2, 5, 7, 7, 32, 3, 1, 1),
        geom(3, 32, 14, 14, 16, 3, 1, 1),
        geom(2, 48, 8, 8, 32, 3, 1, 1),
        // Pointwise, strided.
        geom(3, 16, 6, 5, 24, 1, 1, 0),
        geom(3, 5, 9, 8, 7, 3, 2, 1),
        // Blocking edges: c_out > 96, more than 1024 pixels, depth over the bf16 block (2304).
        geom(2, 40, 9, 11, 100, 3, 1, 1),
        geom(1, 16, 33, 33, 8, 3, 1, 1),
        geom(1, 260, 5, 5, 8, 3, 1, 1),
    ]
}

/// Forward, weight and input gradients of `g` in bf16 on `isa` with `threads` workers.
fn check_conv(g: ConvGeom, isa: Isa, threads: usize) {
    let what = format!("{g:?} [{isa}, T={threads}]");
    let seed = (g.n * 31 + g.c_in * 7 + g.c_out) as u64;
    let x = values(seed, g.in_len());
    let w = values(seed + 1, g.weight_len());
    let b = values(seed + 2, g.c_out);
    let dy = values(seed + 3, g.out_len());
    let mut cols = vec![0f32; g.cols_len().max(1)];
    let p = Paths::new(&g, isa);
    // Whether a product of depth `d` runs in bf16 (then the exact check applies); the per-tap
    // weight gradient's depth is a worker's samples (the fewest: n / threads).
    let kn = Kernels {
        isa,
        prec: Precision::Bf16,
    };
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());

    // Forward.
    let (pool, mut ws) = setup(KernelCall::ConvForward(g), threads, isa);
    let mut y = vec![0f32; g.out_len()];
    conv2d::forward(
        &pool,
        Precision::Bf16,
        &g,
        &x,
        &w,
        Some(&b),
        &mut y,
        &mut ws,
    );
    let mut want = vec![0f32; g.out_len()];
    rconv::forward(&g, &x, &w, Some(&b), &mut want, &mut cols);
    let mut scale = vec![0f32; g.out_len()];
    rconv::forward(&g, &abs(&x), &abs(&w), None, &mut scale, &mut cols);
    close(&format!("{what} forward"), &y, &want, &scale, BF16_BOUND);
    let fwd_bf16 = !p.small && kn.bf16(if p.tapwise { g.c_in } else { ckk });
    if fwd_bf16 {
        rconv::forward(
            &g,
            &rounded(&x),
            &rounded(&w),
            Some(&b),
            &mut want,
            &mut cols,
        );
        close(
            &format!("{what} forward (bf16 operands)"),
            &y,
            &want,
            &scale,
            SUM_BOUND,
        );
    }

    // Backward: dw, db, dx.
    let k = KernelCall::ConvBackward {
        g,
        dx: true,
        db: true,
    };
    let (pool, mut ws) = setup(k, threads, isa);
    let (mut dw, mut db, mut dx) = (
        vec![0f32; g.weight_len()],
        vec![0f32; g.c_out],
        vec![0f32; g.in_len()],
    );
    conv2d::backward(
        &pool,
        Precision::Bf16,
        &g,
        &x,
        &w,
        &dy,
        &mut dw,
        Some(&mut db),
        Some(&mut dx),
        &mut ws,
        false,
    );
    let grads = |x: &[f32], w: &[f32], dy: &[f32], cols: &mut [f32]| {
        let (mut dw, mut db, mut dx) = (
            vec![0f32; g.weight_len()],
            vec![0f32; g.c_out],
            vec![0f32; g.in_len()],
        );
        rconv::backward(&g, x, w, dy, &mut dw, Some(&mut db), Some(&mut dx), cols);
        (dw, db, dx)
    };
    let (rdw, rdb, rdx) = grads(&x, &w, &dy, &mut cols);
    let (sdw, sdb, sdx) = grads(&abs(&x), &abs(&w), &abs(&dy), &mut cols);
    close(&format!("{what} dw"), &dw, &rdw, &sdw, BF16_BOUND);
    close(&format!("{what} dx"), &dx, &rdx, &sdx, BF16_BOUND);
    // The bias gradient is a reduction: f32 in both precisions.
    close(&format!("{what} db"), &db, &rdb, &sdb, 1e-5);
    let (qdw, _, qdx) = grads(&rounded(&x), &rounded(&w), &rounded(&dy), &mut cols);
    let dw_bf16 = !p.small && kn.bf16(if p.tapwise { g.n / threads } else { hwo });
    if dw_bf16 {
        close(
            &format!("{what} dw (bf16 operands)"),
            &dw,
            &qdw,
            &sdw,
            SUM_BOUND,
        );
    }
    let dx_depth = if p.flip && !p.tapwise {
        g.c_out * g.k * g.k
    } else {
        g.c_out
    };
    if kn.bf16(dx_depth) {
        close(
            &format!("{what} dx (bf16 operands)"),
            &dx,
            &qdx,
            &sdx,
            SUM_BOUND,
        );
    }
}

#[test]
fn convolutions_in_bf16_match_the_reference() {
    for isa in available_isas() {
        for threads in [1, 2] {
            for g in shapes() {
                check_conv(g, isa, threads);
            }
        }
    }
}

/// Forward and both gradients of a linear layer in bf16.
fn check_linear(n: usize, fin: usize, fout: usize, isa: Isa, threads: usize) {
    let what = format!("linear {n}x{fin}->{fout} [{isa}, T={threads}]");
    let kn = Kernels {
        isa,
        prec: Precision::Bf16,
    };
    let seed = (n * 131 + fin * 17 + fout) as u64;
    let x = values(seed, n * fin);
    let w = values(seed + 1, fin * fout);
    let b = values(seed + 2, fout);
    let dy = values(seed + 3, n * fout);

    let (pool, mut ws) = setup(KernelCall::LinearForward { n, fin, fout }, threads, isa);
    let mut y = vec![0f32; n * fout];
    linear::forward(
        &pool,
        Precision::Bf16,
        n,
        fin,
        fout,
        &x,
        &w,
        &b,
        &mut y,
        &mut ws,
    );
    let fwd = |x: &[f32], w: &[f32], b: Option<&[f32]>| {
        let mut y = vec![0f32; n * fout];
        rlin::forward(n, fin, fout, x, w, b, &mut y);
        y
    };
    let scale = fwd(&abs(&x), &abs(&w), None);
    close(
        &format!("{what} forward"),
        &y,
        &fwd(&x, &w, Some(&b)),
        &scale,
        BF16_BOUND,
    );
    if kn.bf16(fin) {
        let want = fwd(&rounded(&x), &rounded(&w), Some(&b));
        close(
            &format!("{what} forward (bf16 operands)"),
            &y,
            &want,
            &scale,
            SUM_BOUND,
        );
    }

    let k = KernelCall::LinearBackward {
        n,
        fin,
        fout,
        dx: true,
    };
    let (pool, mut ws) = setup(k, threads, isa);
    let (mut dw, mut db, mut dx) = (
        vec![0f32; fin * fout],
        vec![0f32; fout],
        vec![0f32; n * fin],
    );
    linear::backward(
        &pool,
        Precision::Bf16,
        n,
        fin,
        fout,
        &x,
        &w,
        &dy,
        &mut dw,
        &mut db,
        Some(&mut dx),
        &mut ws,
        false,
    );
    let grads = |x: &[f32], w: &[f32], dy: &[f32]| {
        let (mut dw, mut db, mut dx) = (
            vec![0f32; fin * fout],
            vec![0f32; fout],
            vec![0f32; n * fin],
        );
        rlin::backward(
            n,
            fin,
            fout,
            x,
            w,
            dy,
            &mut dw,
            Some(&mut db),
            Some(&mut dx),
        );
        (dw, db, dx)
    };
    let (rdw, rdb, rdx) = grads(&x, &w, &dy);
    let (sdw, sdb, sdx) = grads(&abs(&x), &abs(&w), &abs(&dy));
    close(&format!("{what} dw"), &dw, &rdw, &sdw, BF16_BOUND);
    close(&format!("{what} dx"), &dx, &rdx, &sdx, BF16_BOUND);
    close(&format!("{what} db"), &db, &rdb, &sdb, 1e-5);
    let (qdw, _, qdx) = grads(&rounded(&x), &rounded(&w), &rounded(&dy));
    if kn.bf16(n) {
        close(
            &format!("{what} dw (bf16 operands)"),
            &dw,
            &qdw,
            &sdw,
            SUM_BOUND,
        );
    }
    if kn.bf16(fout) {
        close(
            &format!("{what} dx (bf16 operands)"),
            &dx,
            &qdx,
            &sdx,
            SUM_BOUND,
        );
    }
}

#[test]
fn linear_layers_in_bf16_match_the_reference() {
    for isa in available_isas() {
        for threads in [1, 2] {
            // A classifier, odd sizes, a depth of 1 (stays f32), a long depth (2 bf16 blocks).
            for (n, fin, fout) in [(32, 128, 10), (7, 33, 5), (5, 1, 3), (3, 2500, 4)] {
                check_linear(n, fin, fout, isa, threads);
            }
        }
    }
}

#[test]
fn f32_precision_is_the_f32_path() {
    // The default precision runs the f32 GEMM: the result matches the reference on the f32
    // operands far more closely than bf16 rounding allows.
    let g = nf_conformance::geom(2, 16, 7, 7, 32, 3, 1, 1);
    let isa = crate::isa::active();
    let x = values(1, g.in_len());
    let w = values(2, g.weight_len());
    let (pool, mut ws) = setup(KernelCall::ConvForward(g), 1, isa);
    let mut y = vec![0f32; g.out_len()];
    conv2d::forward(&pool, Precision::F32, &g, &x, &w, None, &mut y, &mut ws);
    let mut cols = vec![0f32; g.cols_len()];
    let (mut want, mut scale) = (vec![0f32; g.out_len()], vec![0f32; g.out_len()]);
    rconv::forward(&g, &x, &w, None, &mut want, &mut cols);
    rconv::forward(&g, &abs(&x), &abs(&w), None, &mut scale, &mut cols);
    close("f32 forward", &y, &want, &scale, 1e-5);
}

#[test]
fn names_round_trip() {
    for p in Precision::ALL {
        assert_eq!(Precision::from_name(p.name()), Some(p));
    }
    assert_eq!(Precision::from_name("fp16"), None);
    assert_eq!(Precision::default(), Precision::F32);
}

#[test]
fn packing_rounds_f32_as_bf16_from_f32_does() {
    use crate::bf16::Bf16;
    use crate::gemm::bf16::PackElem;
    // Every sign, exponent and the mantissa patterns around the rounding point (ties, NaN
    // payloads, infinities, subnormals, the largest finite values).
    for hi in 0..=0xffffu32 {
        for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
            let x = f32::from_bits(hi << 16 | lo);
            assert_eq!(
                PackElem::bf16(x).to_bits(),
                Bf16::from_f32(x).to_bits(),
                "{:#010x}",
                x.to_bits()
            );
        }
    }
}

#[test]
fn bf16_packed_sizes_fit_the_f32_ones() {
    // `Kernels::bf16` runs a product in bf16 only where its buffers hold in the f32 ones, for
    // any rows and columns (every instruction set, not only this CPU's: only sizes here),
    // across the f32 and bf16 depth blocks and the row counts that pad differently.
    for isa in Isa::ALL {
        let kn = Kernels {
            isa,
            prec: Precision::Bf16,
        };
        let mut refused = vec![];
        for k in (1..=2400).chain((2401..=6000).step_by(37)) {
            if !kn.bf16(k) {
                refused.push(k);
                continue;
            }
            for m in 1..=260 {
                assert!(
                    g16::scratch_len(isa, m, 1, k, true, false).0
                        <= 2 * gemm::scratch_len(isa, m, 1, k, true, false).0
                        && g16::packed_a_len(isa, m, k) <= 2 * gemm::packed_a_len(isa, m, k),
                    "{isa}: A of {m} x {k}"
                );
            }
            for n in 1..=1100 {
                assert!(
                    g16::scratch_len(isa, 1, n, k, false, true).1
                        <= 2 * gemm::scratch_len(isa, 1, n, k, false, true).1
                        && g16::packed_b_len(isa, k, n) <= 2 * gemm::packed_b_len(isa, k, n),
                    "{isa}: B of {k} x {n}"
                );
            }
        }
        assert_eq!(refused[0], 1, "{isa}");
        // Every depth of the zoo's deeper products runs in bf16.
        for k in [288, 576, 1152] {
            assert!(!refused.contains(&k), "{isa}: depth {k} refused");
        }
        let mut ranges: Vec<(usize, usize)> = vec![];
        for &k in &refused {
            match ranges.last_mut() {
                Some(r) if r.1 + 1 == k => r.1 = k,
                _ => ranges.push((k, k)),
            }
        }
        eprintln!("{isa}: depths refused {ranges:?}");
    }
}
