//! Row-major single-precision GEMM: `C = alpha · op(A) · op(B) + beta · C`.
//!
//! Plain safe Rust, written so that the compiler vectorises the inner loops: when B is not
//! transposed the inner loop is a contiguous `axpy` over a row of B and a row of C, blocked by
//! four rows of C and a panel of columns so that B is streamed once per four rows; when B is
//! transposed (and A is not) each entry is a contiguous dot product with eight partial sums,
//! four rows of A at a time. The transposed-A-and-B case is rare and uses a plain loop.

/// Rows of C updated together (each element of B loaded once for this many rows).
const MR: usize = 4;
/// Columns of C in one panel: `MR` rows of this many `f32` stay in L1.
const NC: usize = 512;
/// Lanes of partial sums in a dot product.
const LANES: usize = 8;

/// `C[m×n] = alpha · op(A) · op(B) + beta · C`, all row-major.
///
/// `op(A)` is `m×k`: A is stored `m×k` when `!ta`, `k×m` when `ta`. `op(B)` is `k×n`: B is
/// stored `k×n` when `!tb`, `n×k` when `tb`. Only the first `m·k`, `k·n`, `m·n` elements of the
/// slices are used. When `beta == 0`, C is overwritten without being read, so whatever it held
/// (even NaN) does not reach the result.
///
/// # Panics
/// If a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    assert!(a.len() >= m * k, "gemm: A has {} < {m}x{k}", a.len());
    assert!(b.len() >= k * n, "gemm: B has {} < {k}x{n}", b.len());
    assert!(c.len() >= m * n, "gemm: C has {} < {m}x{n}", c.len());
    let a = &a[..m * k];
    let b = &b[..k * n];
    let c = &mut c[..m * n];

    if beta == 0.0 {
        c.fill(0.0);
    } else if beta != 1.0 {
        c.iter_mut().for_each(|v| *v *= beta);
    }
    if m == 0 || n == 0 || k == 0 || alpha == 0.0 {
        return;
    }
    match (ta, tb) {
        (_, false) => gemm_axpy(ta, m, n, k, alpha, a, b, c),
        (false, true) => gemm_dot(m, n, k, alpha, a, b, c),
        (true, true) => {
            for i in 0..m {
                for j in 0..n {
                    let brow = &b[j * k..(j + 1) * k];
                    let s: f32 = brow
                        .iter()
                        .enumerate()
                        .map(|(p, &bv)| a[p * m + i] * bv)
                        .sum();
                    c[i * n + j] += alpha * s;
                }
            }
        }
    }
}

/// `C += alpha · op(A) · B` with B stored `k×n`: for each block of `MR` rows of C and each panel
/// of `NC` columns, `C[i, panel] += (alpha · A[i, p]) · B[p, panel]` for p in `0..k`.
#[allow(clippy::too_many_arguments)]
fn gemm_axpy(
    ta: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) {
    let a_at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
    let mut i0 = 0;
    while i0 < m {
        let rows = MR.min(m - i0);
        let cblock = &mut c[i0 * n..(i0 + rows) * n];
        let mut j0 = 0;
        while j0 < n {
            let j1 = (j0 + NC).min(n);
            if rows == MR {
                let (c0, rest) = cblock.split_at_mut(n);
                let (c1, rest) = rest.split_at_mut(n);
                let (c2, c3) = rest.split_at_mut(n);
                let (c0, c1, c2, c3) = (
                    &mut c0[j0..j1],
                    &mut c1[j0..j1],
                    &mut c2[j0..j1],
                    &mut c3[j0..j1],
                );
                for p in 0..k {
                    let s0 = alpha * a_at(i0, p);
                    let s1 = alpha * a_at(i0 + 1, p);
                    let s2 = alpha * a_at(i0 + 2, p);
                    let s3 = alpha * a_at(i0 + 3, p);
                    let brow = &b[p * n + j0..p * n + j1];
                    for ((((bv, x0), x1), x2), x3) in brow
                        .iter()
                        .zip(c0.iter_mut())
                        .zip(c1.iter_mut())
                        .zip(c2.iter_mut())
                        .zip(c3.iter_mut())
                    {
                        *x0 += s0 * bv;
                        *x1 += s1 * bv;
                        *x2 += s2 * bv;
                        *x3 += s3 * bv;
                    }
                }
            } else {
                for r in 0..rows {
                    let crow = &mut cblock[r * n + j0..r * n + j1];
                    for p in 0..k {
                        let s = alpha * a_at(i0 + r, p);
                        let brow = &b[p * n + j0..p * n + j1];
                        for (x, bv) in crow.iter_mut().zip(brow) {
                            *x += s * bv;
                        }
                    }
                }
            }
            j0 = j1;
        }
        i0 += rows;
    }
}

/// Sum of a dot product's lanes, in a fixed pairwise order.
#[inline]
fn hsum(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Dot product of two equal-length slices with `LANES` partial sums.
#[inline]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, ys) in xc.zip(yc) {
        for ((s, a), b) in acc.iter_mut().zip(xs).zip(ys) {
            *s += a * b;
        }
    }
    hsum(&acc) + tail
}

/// `C += alpha · A · Bᵀ` with A stored `m×k` and B stored `n×k`: every entry is a dot product of
/// two contiguous rows; `MR` rows of A share each load of a row of B.
fn gemm_dot(m: usize, n: usize, k: usize, alpha: f32, a: &[f32], b: &[f32], c: &mut [f32]) {
    let mut i0 = 0;
    while i0 < m {
        let rows = MR.min(m - i0);
        if rows == MR {
            let a0 = &a[i0 * k..(i0 + 1) * k];
            let a1 = &a[(i0 + 1) * k..(i0 + 2) * k];
            let a2 = &a[(i0 + 2) * k..(i0 + 3) * k];
            let a3 = &a[(i0 + 3) * k..(i0 + 4) * k];
            for j in 0..n {
                let brow = &b[j * k..(j + 1) * k];
                let mut acc = [[0f32; LANES]; MR];
                let mut tail = [0f32; MR];
                let split = k - k % LANES;
                for q in (0..split).step_by(LANES) {
                    let bs = &brow[q..q + LANES];
                    for (acc_r, ar) in acc.iter_mut().zip([a0, a1, a2, a3]) {
                        for ((s, x), y) in acc_r.iter_mut().zip(&ar[q..q + LANES]).zip(bs) {
                            *s += x * y;
                        }
                    }
                }
                for (t, ar) in tail.iter_mut().zip([a0, a1, a2, a3]) {
                    *t = ar[split..]
                        .iter()
                        .zip(&brow[split..])
                        .map(|(x, y)| x * y)
                        .sum();
                }
                for (r, (acc_r, t)) in acc.iter().zip(tail).enumerate() {
                    c[(i0 + r) * n + j] += alpha * (hsum(acc_r) + t);
                }
            }
        } else {
            for r in i0..i0 + rows {
                let arow = &a[r * k..(r + 1) * k];
                for j in 0..n {
                    c[r * n + j] += alpha * dot(arow, &b[j * k..(j + 1) * k]);
                }
            }
        }
        i0 += rows;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ops::gradcheck::{random_vec, rel_error};
    use crate::rng::Rng;
    use std::vec::Vec;

    /// Naive triple loop in f64 with explicit indexing for each storage order.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &[f32],
    ) -> Vec<f32> {
        let mut out = std::vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += f64::from(av) * f64::from(bv);
                }
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    f64::from(beta) * f64::from(c[i * n + j])
                };
                out[i * n + j] = (f64::from(alpha) * s + prev) as f32;
            }
        }
        out
    }

    #[test]
    fn gemm_all_transposes_match_naive() {
        let mut rng = Rng::new(1);
        let shapes = [
            (1, 1, 1),
            (1, 7, 3),
            (5, 1, 9),
            (4, 4, 4),
            (3, 5, 2),
            (8, 17, 13),
            (13, 600, 9),
            (33, 20, 70),
            (6, 1030, 5),
            (9, 9, 0),
        ];
        for &(m, n, k) in &shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (-1.5, 0.25), (2.0, 0.0)] {
                    // Slices one element longer than needed: only the prefix may be used.
                    let a = random_vec(&mut rng, m * k + 1);
                    let b = random_vec(&mut rng, k * n + 1);
                    let mut c = if beta == 0.0 {
                        std::vec![f32::NAN; m * n + 1]
                    } else {
                        random_vec(&mut rng, m * n + 1)
                    };
                    let want = naive(ta, tb, m, n, k, alpha, &a, &b, beta, &c);
                    let sentinel = c[m * n];
                    gemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut c);
                    assert!(
                        c[..m * n].iter().all(|v| v.is_finite()),
                        "non-finite output ta={ta} tb={tb} {m}x{n}x{k} beta={beta}"
                    );
                    let err = rel_error(&c[..m * n], &want);
                    assert!(
                        err < 1e-5,
                        "ta={ta} tb={tb} {m}x{n}x{k} alpha={alpha} beta={beta}: rel err {err}"
                    );
                    assert_eq!(c[m * n].to_bits(), sentinel.to_bits(), "wrote past m*n");
                }
            }
        }
    }
}
