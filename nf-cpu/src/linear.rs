//! The fully connected layer on the host: packed GEMMs, split over samples (forward, input
//! gradient) or output features (weight gradient), each worker packing into its own part of the
//! caller's workspace (see [`crate::workspace`]).
use crate::gemm::{GemmScratch, Mat, MatMut, Operand};
use crate::par::{Parts, Pool};
use crate::precision::{Kernels, Precision};
use crate::workspace::{Lin, Phase, WsLayout};

/// Run `phase` over `pool`: `f(worker, rows, gemm scratch)` for every worker, where `rows` is
/// the worker's range of the phase's rows, and `out` (the phase's result, `row_len` elements
/// per row) is split among the workers along the same rows.
fn run(
    pool: &Pool,
    phase: Phase,
    ws: &mut [f32],
    out: &mut [f32],
    row_len: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32], &mut GemmScratch<'_>) + Sync,
) {
    let l = WsLayout::fit(phase, pool.isa(), pool.threads(), ws.len());
    let t = l.workers;
    let rows = l.rows(t - 1).end;
    let parts = l.split(ws);
    let areas = l.cuts(parts.workers);
    let outs = Parts::new(&mut out[..rows * row_len], row_len, rows, t);
    pool.run(t, |wk| {
        let [a, b, _, _] = l.worker(wk).carve(areas.take(wk));
        f(
            l.rows(wk),
            outs.take(wk).into_slice(),
            &mut GemmScratch::new(a, b),
        );
    });
}

/// [`nf_core::ops::linear::forward`]: `y[n × fout] = x · Wᵀ + b`, the product in `prec`; `ws` is the kernel workspace
/// (at least one worker's share of [`floats`](crate::workspace::floats)).
///
/// # Panics
/// If `ws` is too small for one worker.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    pool: &Pool,
    prec: Precision,
    n: usize,
    fin: usize,
    fout: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    ws: &mut [f32],
) {
    if n == 0 || fout == 0 {
        return;
    }
    let kn = Kernels {
        isa: pool.isa(),
        prec,
    };
    let phase = Phase::LinearForward(Lin { n, fin, fout });
    run(pool, phase, ws, y, fout, |r, yw, gs| {
        let a = Mat::rows(&x[r.start * fin..], r.len(), fin);
        let wt = Mat::new(w, fin, fout, 1, fin);
        let mut c = MatMut::rows(yw, r.len(), fout);
        let (a, wt) = (Operand::View(a), Operand::View(wt));
        kn.gemm(1.0, a, wt, 0.0, &mut c, gs, fin);
        for row in yw.chunks_exact_mut(fout) {
            for (v, &bv) in row.iter_mut().zip(&b[..fout]) {
                *v += bv;
            }
        }
    });
}

/// [`nf_core::ops::linear::backward`]: `dw = dyᵀ · x`, `db = Σ dy`, `dx = dy · W` (when given),
/// the products in `prec`; with `add`, `dw` and `db` are added to instead of overwritten (so
/// that a batch can be taken in parts); `ws` is the kernel workspace (at least one worker's share of
/// [`floats`](crate::workspace::floats)), used by the weight gradient and then by the input
/// gradient.
///
/// # Panics
/// If `ws` is too small for one worker.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    pool: &Pool,
    prec: Precision,
    n: usize,
    fin: usize,
    fout: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    dx: Option<&mut [f32]>,
    ws: &mut [f32],
    add: bool,
) {
    if n == 0 {
        if !add {
            dw[..fout * fin].fill(0.0);
            db[..fout].fill(0.0);
        }
        return;
    }
    let beta = if add { 1.0 } else { 0.0 };
    let kn = Kernels {
        isa: pool.isa(),
        prec,
    };
    let lin = Lin { n, fin, fout };
    run(
        pool,
        Phase::LinearWeightGrad(lin),
        ws,
        dw,
        fin,
        |r, dww, gs| {
            let a = Operand::View(Mat::new(&dy[r.start..], r.len(), n, 1, fout));
            let b = Operand::View(Mat::rows(x, n, fin));
            let mut c = MatMut::rows(dww, r.len(), fin);
            kn.gemm(1.0, a, b, beta, &mut c, gs, n);
        },
    );
    // The bias gradient in the reference's order (f32, row by row).
    let db = &mut db[..fout];
    if !add {
        db.fill(0.0);
    }
    if fout > 0 {
        for row in dy[..n * fout].chunks_exact(fout) {
            for (acc, &g) in db.iter_mut().zip(row) {
                *acc += g;
            }
        }
    }
    if let Some(dx) = dx {
        run(
            pool,
            Phase::LinearInputGrad(lin),
            ws,
            dx,
            fin,
            |r, dxw, gs| {
                let a = Operand::View(Mat::rows(&dy[r.start * fout..], r.len(), fout));
                let b = Operand::View(Mat::rows(w, fout, fin));
                let mut c = MatMut::rows(dxw, r.len(), fin);
                kn.gemm(1.0, a, b, 0.0, &mut c, gs, fout);
            },
        );
    }
}
