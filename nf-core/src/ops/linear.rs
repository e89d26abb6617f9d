//! Fully connected layer `y = x·Wᵀ + b`, with `x: [n, fin]`, `W: [fout, fin]`, `y: [n, fout]`.
use super::gemm::gemm;

/// Forward pass: `y[n×fout] = x[n×fin] · Wᵀ (+ b per output)`; `y` is overwritten.
pub fn forward(
    n: usize,
    fin: usize,
    fout: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) {
    gemm(false, true, n, fout, fin, 1.0, x, w, 0.0, y);
    if let Some(b) = b {
        if fout > 0 {
            for row in y[..n * fout].chunks_exact_mut(fout) {
                for (v, &bv) in row.iter_mut().zip(&b[..fout]) {
                    *v += bv;
                }
            }
        }
    }
}

/// Backward pass: overwrites `dw = dyᵀ·x` (`[fout, fin]`), `db = Σₙ dy` (`fout`) and, when given,
/// `dx = dy·W` (`[n, fin]`).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    n: usize,
    fin: usize,
    fout: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
) {
    gemm(true, false, fout, fin, n, 1.0, dy, x, 0.0, dw);
    if let Some(db) = db {
        let db = &mut db[..fout];
        db.fill(0.0);
        if fout > 0 {
            for row in dy[..n * fout].chunks_exact(fout) {
                for (acc, &g) in db.iter_mut().zip(row) {
                    *acc += g;
                }
            }
        }
    }
    if let Some(dx) = dx {
        gemm(false, false, n, fin, fout, 1.0, dy, w, 0.0, dx);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ops::gradcheck::{numeric_grad, project, random_vec, rel_error};
    use crate::rng::Rng;
    use std::println;

    #[test]
    fn forward_values() {
        // x = [[1, 2]], W = [[1, 0], [0, 1], [1, 1]], b = [0.5, 0, -1]
        let mut y = [0f32; 3];
        forward(
            1,
            2,
            3,
            &[1.0, 2.0],
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            Some(&[0.5, 0.0, -1.0]),
            &mut y,
        );
        assert_eq!(y, [1.5, 2.0, 2.0]);
    }

    /// `L = Σ r·linear(x, W, b)` is linear in each argument: central differences are exact up to
    /// rounding; eps = 1e-2 on unit-scale data, tolerance 1e-2.
    #[test]
    fn gradcheck_linear() {
        let (n, fin, fout) = (3, 7, 5);
        let mut rng = Rng::new(51);
        let mut x = random_vec(&mut rng, n * fin);
        let mut w = random_vec(&mut rng, fout * fin);
        let mut b = random_vec(&mut rng, fout);
        let r = random_vec(&mut rng, n * fout);
        let mut dw = std::vec![f32::NAN; fout * fin];
        let mut db = std::vec![f32::NAN; fout];
        let mut dx = std::vec![f32::NAN; n * fin];
        backward(
            n,
            fin,
            fout,
            &x,
            &w,
            &r,
            &mut dw,
            Some(&mut db),
            Some(&mut dx),
        );
        let mut y = std::vec![0f32; n * fout];
        let (w0, b0) = (w.clone(), b.clone());
        let fd_x = numeric_grad(&mut x, 1e-2, |x| {
            forward(n, fin, fout, x, &w0, Some(&b0), &mut y);
            project(&r, &y)
        });
        let x0 = x.clone();
        let fd_w = numeric_grad(&mut w, 1e-2, |w| {
            forward(n, fin, fout, &x0, w, Some(&b0), &mut y);
            project(&r, &y)
        });
        let fd_b = numeric_grad(&mut b, 1e-2, |b| {
            forward(n, fin, fout, &x0, &w0, Some(b), &mut y);
            project(&r, &y)
        });
        let (ex, ew, eb) = (
            rel_error(&dx, &fd_x),
            rel_error(&dw, &fd_w),
            rel_error(&db, &fd_b),
        );
        println!("gradcheck linear: dx {ex:e}, dw {ew:e}, db {eb:e}");
        assert!(
            ex < 1e-2 && ew < 1e-2 && eb < 1e-2,
            "linear rel err {ex} {ew} {eb}"
        );
    }
}
