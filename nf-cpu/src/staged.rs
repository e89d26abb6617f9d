//! The convolution and the linear layer on tensors stored in bf16 (a layout planned with
//! [`nf_core::layout::Precision::Bf16`]): the f32 kernels, run on the batch a part at a time.
//!
//! For each part (a sixteenth of the batch, at least a few samples per worker: `part_len`),
//! the bf16 inputs of the part are widened into f32 staging buffers, the f32 kernel (`conv2d`, `linear`) runs on them with its own
//! workspace, and its bf16 outputs are rounded from staging into the arena (once, to nearest
//! even); an `f32` tensor is read and written in place. Weight and bias gradients are summed
//! over the parts in `f32` (the kernels add to them after the first part), so only the
//! tensors a step streams are rounded, never a sum. The staging buffers and the kernel's
//! workspace are the front and the back of the workspace region the step passes; its exact
//! size is [`floats_for`], which the planner uses under bf16 storage.
use nf_core::ops::conv2d::ConvGeom;
use nf_core::probe::KernelCall;

use crate::isa::Isa;
use crate::precision::Precision;
use crate::store::Tensor;
use crate::{conv2d, linear, Pool};

/// Parts a batch is taken in at most: the staging then holds a sixteenth of each tensor in
/// `f32` (an eighth of it in bf16).
const PARTS: usize = 16;

/// Samples a part gives each worker at least: a part's fixed costs (waking the workers,
/// packing the weights, adding the workers' weight-gradient partial sums) are paid once per
/// part, so parts of one or two samples per worker cost a fifth more time than one pass
/// (vgg-small, batch 32, 2 threads), and eight per worker about as much as one pass.
const PART_SAMPLES_PER_WORKER: usize = 8;

/// Per-sample lengths of the tensors a call stages (`[input, output or dY, dX]`) and its batch.
fn staged_lens(k: &KernelCall) -> ([usize; 3], usize) {
    match *k {
        KernelCall::ConvForward(g) => ([in_len(&g), out_len(&g), 0], g.n),
        KernelCall::ConvBackward { g, dx, .. } => (
            [in_len(&g), out_len(&g), if dx { in_len(&g) } else { 0 }],
            g.n,
        ),
        KernelCall::LinearForward { n, fin, fout } => ([fin, fout, 0], n),
        KernelCall::LinearBackward { n, fin, fout, dx } => {
            ([fin, fout, if dx { fin } else { 0 }], n)
        }
    }
}

fn in_len(g: &ConvGeom) -> usize {
    g.c_in * g.h * g.w
}

fn out_len(g: &ConvGeom) -> usize {
    g.c_out * g.h_out() * g.w_out()
}

/// Samples per part of call `k` on `threads` workers: a [`PARTS`]th of the batch, but at
/// least [`PART_SAMPLES_PER_WORKER`] per worker, rounded up to a multiple of the workers, at
/// most the batch, at least one.
pub(crate) fn part_len(k: &KernelCall, threads: usize) -> usize {
    let (_, n) = staged_lens(k);
    let t = threads.max(1);
    n.div_ceil(PARTS)
        .max(PART_SAMPLES_PER_WORKER * t)
        .next_multiple_of(t)
        .min(n)
        .max(1)
}

/// Call `k` with its batch set to `n`.
fn with_batch(k: &KernelCall, n: usize) -> KernelCall {
    match *k {
        KernelCall::ConvForward(g) => KernelCall::ConvForward(ConvGeom { n, ..g }),
        KernelCall::ConvBackward { g, dx, db } => KernelCall::ConvBackward {
            g: ConvGeom { n, ..g },
            dx,
            db,
        },
        KernelCall::LinearForward { fin, fout, .. } => KernelCall::LinearForward { n, fin, fout },
        KernelCall::LinearBackward { fin, fout, dx, .. } => {
            KernelCall::LinearBackward { n, fin, fout, dx }
        }
    }
}

/// The exact workspace (`f32` elements) of call `k` on bf16-stored tensors with `threads`
/// workers on `isa`: the staging buffers of one part, then the f32 kernel's workspace for a
/// part ([`crate::workspace::floats_for`]). Never smaller for a larger batch.
pub fn floats_for(k: &KernelCall, threads: usize, isa: Isa) -> usize {
    let p = part_len(k, threads);
    let (lens, _) = staged_lens(k);
    p * lens.iter().sum::<usize>() + crate::workspace::floats_for(&with_batch(k, p), threads, isa)
}

/// The staging buffers (`[input, output or dY, dX]`, each `part × len`) and the kernel's
/// workspace, carved from `ws`.
fn carve_stage(ws: &mut [f32], part: usize, lens: [usize; 3]) -> ([&mut [f32]; 3], &mut [f32]) {
    let (a, rest) = ws.split_at_mut(part * lens[0]);
    let (b, rest) = rest.split_at_mut(part * lens[1]);
    let (c, rest) = rest.split_at_mut(part * lens[2]);
    ([a, b, c], rest)
}

/// Run `f(first, samples)` on the parts of a batch of `n` samples, `part` at a time; a batch
/// of none is one empty part, so that a backward pass still overwrites its gradients.
fn each_part(n: usize, part: usize, mut f: impl FnMut(usize, usize)) {
    let mut s = 0;
    loop {
        let m = part.min(n - s);
        f(s, m);
        s += m;
        if s >= n {
            break;
        }
    }
}

/// [`conv2d::forward`] on tensors of any element type.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_forward(
    pool: &Pool,
    prec: Precision,
    g: &ConvGeom,
    x: Tensor<'_>,
    w: &[f32],
    bias: Option<&[f32]>,
    mut y: Tensor<'_>,
    ws: &mut [f32],
) {
    let k = KernelCall::ConvForward(*g);
    let (part, (lens, n)) = (part_len(&k, pool.threads()), staged_lens(&k));
    let ([sx, sy, _], kws) = carve_stage(ws, part, lens);
    each_part(n, part, |s, m| {
        let gp = ConvGeom { n: m, ..*g };
        let xs = x.load(pool, s * lens[0], m * lens[0], sx);
        let ys = y.out(s * lens[1], m * lens[1], sy);
        conv2d::forward(pool, prec, &gp, xs, w, bias, ys, kws);
        y.store(pool, s * lens[1], m * lens[1], sy);
    });
}

/// [`conv2d::backward`] on tensors of any element type (`dw`, `db` f32, summed over the
/// parts).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_backward(
    pool: &Pool,
    prec: Precision,
    g: &ConvGeom,
    x: Tensor<'_>,
    w: &[f32],
    dy: Tensor<'_>,
    dw: &mut [f32],
    mut db: Option<&mut [f32]>,
    mut dx: Option<Tensor<'_>>,
    ws: &mut [f32],
) {
    let k = KernelCall::ConvBackward {
        g: *g,
        dx: dx.is_some(),
        db: db.is_some(),
    };
    let (part, (lens, n)) = (part_len(&k, pool.threads()), staged_lens(&k));
    let ([sx, sdy, sdx], kws) = carve_stage(ws, part, lens);
    each_part(n, part, |s, m| {
        let gp = ConvGeom { n: m, ..*g };
        let xs = x.load(pool, s * lens[0], m * lens[0], sx);
        let dys = dy.load(pool, s * lens[1], m * lens[1], sdy);
        let (at, len) = (s * lens[2], m * lens[2]);
        let dxs = dx.as_mut().map(|d| d.out(at, len, sdx));
        let dbs = db.as_deref_mut();
        conv2d::backward(pool, prec, &gp, xs, w, dys, dw, dbs, dxs, kws, s > 0);
        if let Some(d) = dx.as_mut() {
            d.store(pool, at, len, sdx);
        }
    });
}

/// [`linear::forward`] on tensors of any element type.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_forward(
    pool: &Pool,
    prec: Precision,
    fin: usize,
    fout: usize,
    x: Tensor<'_>,
    w: &[f32],
    b: &[f32],
    mut y: Tensor<'_>,
    n: usize,
    ws: &mut [f32],
) {
    let k = KernelCall::LinearForward { n, fin, fout };
    let (part, (lens, _)) = (part_len(&k, pool.threads()), staged_lens(&k));
    let ([sx, sy, _], kws) = carve_stage(ws, part, lens);
    each_part(n, part, |s, m| {
        let xs = x.load(pool, s * fin, m * fin, sx);
        let ys = y.out(s * fout, m * fout, sy);
        linear::forward(pool, prec, m, fin, fout, xs, w, b, ys, kws);
        y.store(pool, s * fout, m * fout, sy);
    });
}

/// [`linear::backward`] on tensors of any element type (`dw`, `db` f32, summed over the
/// parts).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_backward(
    pool: &Pool,
    prec: Precision,
    n: usize,
    fin: usize,
    fout: usize,
    x: Tensor<'_>,
    w: &[f32],
    dy: Tensor<'_>,
    dw: &mut [f32],
    db: &mut [f32],
    mut dx: Option<Tensor<'_>>,
    ws: &mut [f32],
) {
    let k = KernelCall::LinearBackward {
        n,
        fin,
        fout,
        dx: dx.is_some(),
    };
    let (part, (lens, _)) = (part_len(&k, pool.threads()), staged_lens(&k));
    let ([sx, sdy, sdx], kws) = carve_stage(ws, part, lens);
    each_part(n, part, |s, m| {
        let xs = x.load(pool, s * fin, m * fin, sx);
        let dys = dy.load(pool, s * fout, m * fout, sdy);
        let dxs = dx.as_mut().map(|d| d.out(s * fin, m * fin, sdx));
        linear::backward(
            pool,
            prec,
            m,
            fin,
            fout,
            xs,
            w,
            dys,
            dw,
            db,
            dxs,
            kws,
            s > 0,
        );
        if let Some(d) = dx.as_mut() {
            d.store(pool, s * fin, m * fin, sdx);
        }
    });
}
