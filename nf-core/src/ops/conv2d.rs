//! 2-D convolution (cross-correlation, as in PyTorch) by im2col + GEMM, NCHW / OIHW.
//!
//! One sample at a time: its input is unrolled into `cols` (`c_in·k·k` rows of `h_out·w_out`
//! columns), and the output is `W[c_out × c_in·k·k] · cols`. The backward pass reuses the same
//! single-sample workspace, first for the unrolled input (weight gradient), then for the column
//! gradient (input gradient). A 1×1, stride-1, unpadded convolution skips the unrolling: the
//! input already is its column matrix.
use super::gemm::gemm;

/// Shape of a convolution: batch, input channels and size, output channels, square kernel,
/// stride and zero padding (the same on all four sides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size (k×k).
    pub k: usize,
    /// Stride (both directions); at least 1.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl ConvGeom {
    /// Output height: `(h + 2·pad − k) / stride + 1` (0 when the kernel does not fit).
    pub const fn h_out(&self) -> usize {
        let span = self.h + 2 * self.pad;
        if span < self.k {
            0
        } else {
            (span - self.k) / self.stride + 1
        }
    }
    /// Output width: `(w + 2·pad − k) / stride + 1` (0 when the kernel does not fit).
    pub const fn w_out(&self) -> usize {
        let span = self.w + 2 * self.pad;
        if span < self.k {
            0
        } else {
            (span - self.k) / self.stride + 1
        }
    }
    /// Elements of one sample's im2col buffer: `c_in·k·k·h_out·w_out`.
    pub const fn cols_len(&self) -> usize {
        self.c_in * self.k * self.k * self.h_out() * self.w_out()
    }
    /// Elements of the weight tensor `[c_out, c_in, k, k]`.
    pub const fn weight_len(&self) -> usize {
        self.c_out * self.c_in * self.k * self.k
    }
    /// Elements of the input batch `[n, c_in, h, w]`.
    pub const fn in_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements of the output batch `[n, c_out, h_out, w_out]`.
    pub const fn out_len(&self) -> usize {
        self.n * self.c_out * self.h_out() * self.w_out()
    }
    /// True when the input is its own column matrix (1×1 kernel, stride 1, no padding).
    pub const fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

/// For kernel offset `kk` along an axis of input size `len`, the output positions `o` in
/// `0..out` whose input index `o·stride + kk − pad` lies inside `0..len`, as a range.
pub fn valid_range(kk: usize, pad: usize, stride: usize, len: usize, out: usize) -> (usize, usize) {
    // o·stride + kk >= pad  <=>  o >= ceil((pad − kk) / stride)
    let lo = if kk >= pad {
        0
    } else {
        (pad - kk).div_ceil(stride)
    };
    // o·stride + kk − pad < len  <=>  o·stride < len + pad − kk
    let hi = if len + pad <= kk {
        0
    } else {
        (len + pad - kk).div_ceil(stride)
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// Unrolls one sample `x` (`c_in·h·w`) into `cols` (`cols_len`): row `(ci·k + ky)·k + kx`,
/// column `oy·w_out + ox` holds `x[ci, oy·stride + ky − pad, ox·stride + kx − pad]`, or 0 in the
/// padding. Every element of `cols[..cols_len]` is written.
pub fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let (ho, wo, k) = (g.h_out(), g.w_out(), g.k);
    let hw = g.h * g.w;
    let x = &x[..g.c_in * hw];
    let cols = &mut cols[..g.cols_len()];
    if ho * wo == 0 {
        return;
    }
    for (row, out) in cols.chunks_exact_mut(ho * wo).enumerate() {
        let (ci, ky, kx) = (row / (k * k), (row / k) % k, row % k);
        let plane = &x[ci * hw..(ci + 1) * hw];
        let (oy0, oy1) = valid_range(ky, g.pad, g.stride, g.h, ho);
        let (ox0, ox1) = valid_range(kx, g.pad, g.stride, g.w, wo);
        for (oy, orow) in out.chunks_exact_mut(wo).enumerate() {
            // An empty column range (a kernel wider than the padded input reaches) is all
            // padding: `ox0 + kx − pad` would underflow there.
            if oy < oy0 || oy >= oy1 || ox0 >= ox1 {
                orow.fill(0.0);
                continue;
            }
            let iy = oy * g.stride + ky - g.pad;
            let xrow = &plane[iy * g.w..(iy + 1) * g.w];
            orow[..ox0].fill(0.0);
            orow[ox1..].fill(0.0);
            if g.stride == 1 {
                let ix0 = ox0 + kx - g.pad;
                orow[ox0..ox1].copy_from_slice(&xrow[ix0..ix0 + (ox1 - ox0)]);
            } else {
                for (ox, v) in orow[ox0..ox1].iter_mut().enumerate() {
                    *v = xrow[(ox0 + ox) * g.stride + kx - g.pad];
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: overwrites one sample's `dx` (`c_in·h·w`) with the sum, over every
/// column entry that reads an input pixel, of that entry of `cols`. Padding entries are dropped.
pub fn col2im(g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    let (ho, wo, k) = (g.h_out(), g.w_out(), g.k);
    let hw = g.h * g.w;
    let dx = &mut dx[..g.c_in * hw];
    dx.fill(0.0);
    if ho * wo == 0 {
        return;
    }
    let cols = &cols[..g.cols_len()];
    for (row, src) in cols.chunks_exact(ho * wo).enumerate() {
        let (ci, ky, kx) = (row / (k * k), (row / k) % k, row % k);
        let plane = &mut dx[ci * hw..(ci + 1) * hw];
        let (oy0, oy1) = valid_range(ky, g.pad, g.stride, g.h, ho);
        let (ox0, ox1) = valid_range(kx, g.pad, g.stride, g.w, wo);
        if ox0 >= ox1 {
            continue; // every entry of the row reads padding
        }
        for oy in oy0..oy1 {
            let iy = oy * g.stride + ky - g.pad;
            let srow = &src[oy * wo..(oy + 1) * wo];
            let xrow = &mut plane[iy * g.w..(iy + 1) * g.w];
            if g.stride == 1 {
                let ix0 = ox0 + kx - g.pad;
                for (d, s) in xrow[ix0..ix0 + (ox1 - ox0)].iter_mut().zip(&srow[ox0..ox1]) {
                    *d += s;
                }
            } else {
                for ox in ox0..ox1 {
                    xrow[ox * g.stride + kx - g.pad] += srow[ox];
                }
            }
        }
    }
}

/// Forward pass: `y[n] = W · im2col(x[n]) (+ bias per output channel)` for every sample.
///
/// `x`: `in_len`, `w`: `weight_len` (OIHW), `bias`: `c_out`, `y`: `out_len` (overwritten),
/// `cols`: `cols_len` workspace (unused for 1×1 stride-1 unpadded convolutions).
pub fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    cols: &mut [f32],
) {
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
    for s in 0..g.n {
        let xs = &x[s * in_s..(s + 1) * in_s];
        let ys = &mut y[s * out_s..(s + 1) * out_s];
        if g.is_pointwise() {
            gemm(false, false, g.c_out, hwo, ckk, 1.0, w, xs, 0.0, ys);
        } else {
            im2col(g, xs, cols);
            gemm(false, false, g.c_out, hwo, ckk, 1.0, w, cols, 0.0, ys);
        }
        if let Some(b) = bias {
            if hwo > 0 {
                for (plane, &bv) in ys.chunks_exact_mut(hwo).zip(&b[..g.c_out]) {
                    plane.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    }
}

/// Backward pass. Overwrites `dw` (`weight_len`) with `Σₙ dy[n] · im2col(x[n])ᵀ`, `db` (`c_out`)
/// with `Σₙ,ₚ dy[n, o, p]`, and, when given, `dx` (`in_len`) with `col2im(Wᵀ · dy[n])`.
///
/// `cols` (`cols_len`) is the only workspace: it holds the unrolled input, then the column
/// gradient of the same sample.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    mut dx: Option<&mut [f32]>,
    cols: &mut [f32],
) {
    let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
    let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
    let dw = &mut dw[..g.weight_len()];
    if g.n == 0 {
        dw.fill(0.0);
    }
    if let Some(db) = db {
        let db = &mut db[..g.c_out];
        db.fill(0.0);
        if hwo > 0 {
            for s in 0..g.n {
                let dys = &dy[s * out_s..(s + 1) * out_s];
                for (acc, plane) in db.iter_mut().zip(dys.chunks_exact(hwo)) {
                    // f64 per plane keeps the bias gradient accurate for large maps.
                    *acc += plane.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
                }
            }
        }
    }
    for s in 0..g.n {
        let xs = &x[s * in_s..(s + 1) * in_s];
        let dys = &dy[s * out_s..(s + 1) * out_s];
        let beta = if s == 0 { 0.0 } else { 1.0 };
        if g.is_pointwise() {
            gemm(false, true, g.c_out, ckk, hwo, 1.0, dys, xs, beta, dw);
            if let Some(dx) = dx.as_deref_mut() {
                let dxs = &mut dx[s * in_s..(s + 1) * in_s];
                gemm(true, false, ckk, hwo, g.c_out, 1.0, w, dys, 0.0, dxs);
            }
        } else {
            im2col(g, xs, cols);
            gemm(false, true, g.c_out, ckk, hwo, 1.0, dys, cols, beta, dw);
            if let Some(dx) = dx.as_deref_mut() {
                gemm(true, false, ckk, hwo, g.c_out, 1.0, w, dys, 0.0, cols);
                col2im(g, cols, &mut dx[s * in_s..(s + 1) * in_s]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ops::gradcheck::{numeric_grad, project, random_vec, rel_error};
    use crate::rng::Rng;
    use std::println;
    use std::vec::Vec;

    /// Direct convolution in f64, no im2col: `y[n,o,oy,ox] = b[o] + Σ w[o,c,ky,kx]·x[n,c,iy,ix]`.
    fn direct_forward(g: &ConvGeom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let (ho, wo, k) = (g.h_out(), g.w_out(), g.k);
        let mut y = std::vec![0f32; g.out_len()];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut s = b.map_or(0.0, |b| f64::from(b[o]));
                        for c in 0..g.c_in {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    s += f64::from(w[((o * g.c_in + c) * k + ky) * k + kx])
                                        * f64::from(x[((n * g.c_in + c) * g.h + iy) * g.w + ix]);
                                }
                            }
                        }
                        y[((n * g.c_out + o) * ho + oy) * wo + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    /// Direct backward in f64, no im2col: scatters every (output, tap) product.
    fn direct_backward(
        g: &ConvGeom,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (ho, wo, k) = (g.h_out(), g.w_out(), g.k);
        let mut dw = std::vec![0f64; g.weight_len()];
        let mut db = std::vec![0f64; g.c_out];
        let mut dx = std::vec![0f64; g.in_len()];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let d = f64::from(dy[((n * g.c_out + o) * ho + oy) * wo + ox]);
                        db[o] += d;
                        for c in 0..g.c_in {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((n * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((o * g.c_in + c) * k + ky) * k + kx;
                                    dw[wi] += d * f64::from(x[xi]);
                                    dx[xi] += d * f64::from(w[wi]);
                                }
                            }
                        }
                    }
                }
            }
        }
        let f = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
        (f(dw), f(db), f(dx))
    }

    fn random_geom(rng: &mut Rng, i: usize) -> ConvGeom {
        let k = [1usize, 3][rng.below(2) as usize];
        let stride = 1 + rng.below(2) as usize;
        let pad = if k == 1 { 0 } else { rng.below(2) as usize };
        ConvGeom {
            // The first few shapes have batch 1.
            n: if i < 4 { 1 } else { 1 + rng.below(3) as usize },
            c_in: 1 + rng.below(4) as usize,
            h: 3 + rng.below(6) as usize,
            w: 3 + rng.below(8) as usize,
            c_out: 1 + rng.below(5) as usize,
            k,
            stride,
            pad,
        }
    }

    #[test]
    fn conv_matches_direct_reference() {
        let mut rng = Rng::new(2024);
        let mut geoms: Vec<ConvGeom> = (0..20).map(|i| random_geom(&mut rng, i)).collect();
        // Make sure the interesting corners are present whatever the draw.
        let base = ConvGeom {
            n: 2,
            c_in: 3,
            h: 5,
            w: 7,
            c_out: 4,
            k: 3,
            stride: 2,
            pad: 1,
        };
        geoms.push(base);
        geoms.push(ConvGeom {
            stride: 1,
            pad: 0,
            ..base
        });
        geoms.push(ConvGeom {
            k: 1,
            stride: 1,
            pad: 0,
            n: 1,
            ..base
        });
        geoms.push(ConvGeom {
            k: 1,
            stride: 2,
            pad: 0,
            ..base
        });
        geoms.push(ConvGeom {
            h: 8,
            w: 6,
            stride: 2,
            pad: 0,
            ..base
        });
        geoms.push(ConvGeom {
            c_in: 16,
            c_out: 9,
            h: 11,
            w: 10,
            ..base
        });
        // Kernels wider than the padded input reaches (`k > w + pad + 1`, stride 1): a 5×5
        // "same" convolution on a 1×1 map, 7×7 on 2×1, 5×5 with pad 3 on 1×2.
        for (h, w, k, pad) in [(1, 1, 5, 2), (2, 1, 7, 3), (1, 2, 5, 3), (3, 1, 5, 2)] {
            geoms.push(ConvGeom {
                h,
                w,
                k,
                pad,
                stride: 1,
                ..base
            });
        }
        let mut worst = 0f32;
        for g in &geoms {
            for with_bias in [false, true] {
                // One spare element at the end of every slice: only the prefix may be used.
                let x = random_vec(&mut rng, g.in_len() + 1);
                let w = random_vec(&mut rng, g.weight_len() + 1);
                let b = random_vec(&mut rng, g.c_out + 1);
                let bias = with_bias.then_some(&b[..]);
                let mut cols = std::vec![f32::NAN; g.cols_len() + 1];
                let mut y = std::vec![f32::NAN; g.out_len() + 1];
                forward(g, &x, &w, bias, &mut y, &mut cols);
                let want = direct_forward(g, &x, &w, bias);
                let e_y = rel_error(&y[..g.out_len()], &want);
                assert!(e_y < 1e-4, "{g:?} bias={with_bias}: forward rel err {e_y}");
                assert!(y[g.out_len()].is_nan(), "forward wrote past out_len");

                let dy = random_vec(&mut rng, g.out_len() + 1);
                let mut dw = std::vec![f32::NAN; g.weight_len()];
                let mut db = std::vec![f32::NAN; g.c_out];
                let mut dx = std::vec![f32::NAN; g.in_len()];
                backward(
                    g,
                    &x,
                    &w,
                    &dy,
                    &mut dw,
                    Some(&mut db),
                    Some(&mut dx),
                    &mut cols,
                );
                let (w_dw, w_db, w_dx) = direct_backward(g, &x, &w, &dy);
                let (e_dw, e_db, e_dx) = (
                    rel_error(&dw, &w_dw),
                    rel_error(&db, &w_db),
                    rel_error(&dx, &w_dx),
                );
                assert!(e_dw < 1e-4, "{g:?}: dw rel err {e_dw}");
                assert!(e_db < 1e-4, "{g:?}: db rel err {e_db}");
                assert!(e_dx < 1e-4, "{g:?}: dx rel err {e_dx}");
                worst = worst.max(e_y).max(e_dw).max(e_db).max(e_dx);

                // Without db and dx: dw alone is the same.
                let mut dw2 = std::vec![f32::NAN; g.weight_len()];
                backward(g, &x, &w, &dy, &mut dw2, None, None, &mut cols);
                assert_eq!(dw, dw2);
            }
        }
        println!(
            "conv vs direct reference: {} shapes, worst rel err {worst:e}",
            geoms.len()
        );
    }

    #[test]
    fn conv_output_sizes() {
        let g = ConvGeom {
            n: 2,
            c_in: 3,
            h: 32,
            w: 30,
            c_out: 8,
            k: 3,
            stride: 2,
            pad: 1,
        };
        assert_eq!((g.h_out(), g.w_out()), (16, 15));
        assert_eq!(g.cols_len(), 3 * 9 * 16 * 15);
        assert_eq!(g.weight_len(), 8 * 3 * 9);
        assert_eq!(g.in_len(), 2 * 3 * 32 * 30);
        assert_eq!(g.out_len(), 2 * 8 * 16 * 15);
        let tiny = ConvGeom {
            h: 1,
            w: 1,
            pad: 0,
            ..g
        };
        assert_eq!((tiny.h_out(), tiny.w_out(), tiny.out_len()), (0, 0, 0));
    }

    /// Finite differences of `L = Σ r·conv(x, w, b)` with respect to x, w and b.
    /// The loss is linear in each argument, so central differences have no truncation error;
    /// eps = 1e-2 on unit-scale data keeps the f32 rounding noise of the outputs (≈1e-7
    /// relative) below 1e-4 of the gradient, and 1e-2 leaves a wide margin.
    fn gradcheck(g: ConvGeom, with_bias: bool, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut x = random_vec(&mut rng, g.in_len());
        let mut w = random_vec(&mut rng, g.weight_len());
        let mut b = random_vec(&mut rng, g.c_out);
        let r = random_vec(&mut rng, g.out_len());
        let mut cols = std::vec![0f32; g.cols_len()];
        let mut dw = std::vec![0f32; g.weight_len()];
        let mut db = std::vec![0f32; g.c_out];
        let mut dx = std::vec![0f32; g.in_len()];
        backward(
            &g,
            &x,
            &w,
            &r,
            &mut dw,
            with_bias.then_some(&mut db[..]),
            Some(&mut dx),
            &mut cols,
        );
        let mut y = std::vec![0f32; g.out_len()];
        let eps = 1e-2;
        let (w0, b0) = (w.clone(), b.clone());
        let fd_x = numeric_grad(&mut x, eps, |x| {
            forward(&g, x, &w0, with_bias.then_some(&b0[..]), &mut y, &mut cols);
            project(&r, &y)
        });
        let x0 = x.clone();
        let fd_w = numeric_grad(&mut w, eps, |w| {
            forward(&g, &x0, w, with_bias.then_some(&b0[..]), &mut y, &mut cols);
            project(&r, &y)
        });
        let (e_x, e_w) = (rel_error(&dx, &fd_x), rel_error(&dw, &fd_w));
        println!("gradcheck conv2d {g:?} bias={with_bias}: dx {e_x:e}, dw {e_w:e}");
        assert!(e_x < 1e-2, "conv dx rel err {e_x}");
        assert!(e_w < 1e-2, "conv dw rel err {e_w}");
        if with_bias {
            let fd_b = numeric_grad(&mut b, eps, |b| {
                forward(&g, &x0, &w0, Some(b), &mut y, &mut cols);
                project(&r, &y)
            });
            let e_b = rel_error(&db, &fd_b);
            println!("gradcheck conv2d {g:?}: db {e_b:e}");
            assert!(e_b < 1e-2, "conv db rel err {e_b}");
        }
    }

    #[test]
    fn gradcheck_conv_with_bias() {
        let g = ConvGeom {
            n: 2,
            c_in: 3,
            h: 5,
            w: 6,
            c_out: 4,
            k: 3,
            stride: 1,
            pad: 1,
        };
        gradcheck(g, true, 10);
        gradcheck(
            ConvGeom {
                stride: 2,
                h: 7,
                ..g
            },
            true,
            11,
        );
    }

    #[test]
    fn gradcheck_conv_without_bias() {
        let g = ConvGeom {
            n: 2,
            c_in: 2,
            h: 6,
            w: 5,
            c_out: 3,
            k: 3,
            stride: 2,
            pad: 0,
        };
        gradcheck(g, false, 12);
        gradcheck(
            ConvGeom {
                k: 1,
                stride: 1,
                pad: 0,
                ..g
            },
            false,
            13,
        );
    }
}
