//! The fully connected layer on the host: packed GEMMs, split over samples (forward, input
//! gradient) or output features (weight gradient).
use super::gemm::{self, Mat, MatMut, Operand};
use super::par::{Pool, Split};

/// Multiply-adds below which a product runs on the calling thread alone.
const SERIAL_BELOW: usize = 1 << 18;

fn parts(pool: &Pool, work: usize, rows: usize) -> usize {
    if work < SERIAL_BELOW {
        1
    } else {
        pool.threads().min(rows).max(1)
    }
}

/// [`nf_core::ops::linear::forward`]: `y[n × fout] = x · Wᵀ + b`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    pool: &Pool,
    n: usize,
    fin: usize,
    fout: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    if n == 0 || fout == 0 {
        return;
    }
    let t = parts(pool, n * fin * fout, n);
    let ys = Split::new(&mut y[..n * fout], fout, n, t);
    pool.run(t, |wk, sc| {
        let part = ys.take(wk);
        let r = part.units();
        let yw = part.into_slice();
        let a = Mat::rows(&x[r.start * fin..], r.len(), fin);
        let wt = Mat::new(w, fin, fout, 1, fin);
        let mut c = MatMut::rows(yw, r.len(), fout);
        gemm::gemm(
            1.0,
            Operand::View(a),
            Operand::View(wt),
            0.0,
            &mut c,
            &mut sc.gemm,
            fin,
        );
        for row in yw.chunks_exact_mut(fout) {
            for (v, &bv) in row.iter_mut().zip(&b[..fout]) {
                *v += bv;
            }
        }
    });
}

/// [`nf_core::ops::linear::backward`]: `dw = dyᵀ · x`, `db = Σ dy`, `dx = dy · W` (when given).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    pool: &Pool,
    n: usize,
    fin: usize,
    fout: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    if n == 0 {
        dw[..fout * fin].fill(0.0);
        db[..fout].fill(0.0);
        return;
    }
    let t = parts(pool, n * fin * fout, fout);
    let dws = Split::new(&mut dw[..fout * fin], fin, fout, t);
    pool.run(t, |wk, sc| {
        let part = dws.take(wk);
        let r = part.units();
        let a = Mat::new(&dy[r.start..], r.len(), n, 1, fout);
        let b = Mat::rows(x, n, fin);
        let mut c = MatMut::rows(part.into_slice(), r.len(), fin);
        gemm::gemm(
            1.0,
            Operand::View(a),
            Operand::View(b),
            0.0,
            &mut c,
            &mut sc.gemm,
            n,
        );
    });
    // The bias gradient in the reference's order (f32, row by row).
    let db = &mut db[..fout];
    db.fill(0.0);
    if fout > 0 {
        for row in dy[..n * fout].chunks_exact(fout) {
            for (acc, &g) in db.iter_mut().zip(row) {
                *acc += g;
            }
        }
    }
    if let Some(dx) = dx {
        let t = parts(pool, n * fin * fout, n);
        let dxs = Split::new(&mut dx[..n * fin], fin, n, t);
        pool.run(t, |wk, sc| {
            let part = dxs.take(wk);
            let r = part.units();
            let a = Mat::rows(&dy[r.start * fout..], r.len(), fout);
            let b = Mat::rows(w, fout, fin);
            let mut c = MatMut::rows(part.into_slice(), r.len(), fin);
            gemm::gemm(
                1.0,
                Operand::View(a),
                Operand::View(b),
                0.0,
                &mut c,
                &mut sc.gemm,
                fout,
            );
        });
    }
}
