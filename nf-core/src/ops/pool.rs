//! Pooling over NCHW: 2×2 max pooling with stride 2, and adaptive average pooling.

use super::Nchw;

/// Index (within the input plane) of the first maximum of the 2×2 window at output `(oy, ox)`,
/// scanning row-major; the rule shared by forward and backward.
#[inline]
fn argmax2(plane: &[f32], w: usize, oy: usize, ox: usize) -> usize {
    let i0 = 2 * oy * w + 2 * ox;
    let mut best = i0;
    for i in [i0 + 1, i0 + w, i0 + w + 1] {
        if plane[i] > plane[best] {
            best = i;
        }
    }
    best
}

/// 2×2 max pooling with stride 2 of `x` (dims `d`) into `y` (`n·c·(h/2)·(w/2)`); an odd last
/// row or column is dropped (floor), as in PyTorch.
pub fn maxpool2_forward(d: &Nchw, x: &[f32], y: &mut [f32]) {
    let (ho, wo, hw) = (d.h / 2, d.w / 2, d.h * d.w);
    if ho * wo == 0 {
        return;
    }
    for (plane, out) in x[..d.len()]
        .chunks_exact(hw)
        .zip(y[..d.n * d.c * ho * wo].chunks_exact_mut(ho * wo))
    {
        for oy in 0..ho {
            for ox in 0..wo {
                out[oy * wo + ox] = plane[argmax2(plane, d.w, oy, ox)];
            }
        }
    }
}

/// Backward of [`maxpool2_forward`]: `dx` (dims `d`) is overwritten, each window's gradient
/// going to its first maximum in row-major order and zero elsewhere (including dropped rows and
/// columns).
pub fn maxpool2_backward(d: &Nchw, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let (ho, wo, hw) = (d.h / 2, d.w / 2, d.h * d.w);
    let dx = &mut dx[..d.len()];
    dx.fill(0.0);
    if ho * wo == 0 {
        return;
    }
    for ((plane, g), dplane) in x[..d.len()]
        .chunks_exact(hw)
        .zip(dy[..d.n * d.c * ho * wo].chunks_exact(ho * wo))
        .zip(dx.chunks_exact_mut(hw))
    {
        for oy in 0..ho {
            for ox in 0..wo {
                dplane[argmax2(plane, d.w, oy, ox)] = g[oy * wo + ox];
            }
        }
    }
}

/// PyTorch's adaptive pooling bin `i` of `s` over a length `len`:
/// `floor(i·len/s) .. ceil((i+1)·len/s)`.
#[inline]
const fn bin(i: usize, len: usize, s: usize) -> (usize, usize) {
    (i * len / s, ((i + 1) * len).div_ceil(s))
}

/// Adaptive average pooling of `x` (dims `d`) to `s×s` per channel, into `y` (`n·c·s·s`), with
/// PyTorch's bins (`start = floor(i·h/s)`, `end = ceil((i+1)·h/s)`; bins overlap when `s` does
/// not divide the size). `s = 1` is global average pooling.
pub fn avgpool_forward(d: &Nchw, s: usize, x: &[f32], y: &mut [f32]) {
    let hw = d.h * d.w;
    if hw == 0 || s == 0 {
        return;
    }
    for (plane, out) in x[..d.len()]
        .chunks_exact(hw)
        .zip(y[..d.n * d.c * s * s].chunks_exact_mut(s * s))
    {
        for oy in 0..s {
            let (y0, y1) = bin(oy, d.h, s);
            for ox in 0..s {
                let (x0, x1) = bin(ox, d.w, s);
                let mut acc = 0f32;
                for row in plane[y0 * d.w..y1 * d.w].chunks_exact(d.w) {
                    acc += row[x0..x1].iter().sum::<f32>();
                }
                out[oy * s + ox] = acc / ((y1 - y0) * (x1 - x0)) as f32;
            }
        }
    }
}

/// Backward of [`avgpool_forward`]: `dx` (dims `d`) is overwritten; every input pixel receives
/// `dy / bin size` from each bin that contains it.
pub fn avgpool_backward(d: &Nchw, s: usize, dy: &[f32], dx: &mut [f32]) {
    let hw = d.h * d.w;
    let dx = &mut dx[..d.len()];
    dx.fill(0.0);
    if hw == 0 || s == 0 {
        return;
    }
    for (g, dplane) in dy[..d.n * d.c * s * s]
        .chunks_exact(s * s)
        .zip(dx.chunks_exact_mut(hw))
    {
        for oy in 0..s {
            let (y0, y1) = bin(oy, d.h, s);
            for ox in 0..s {
                let (x0, x1) = bin(ox, d.w, s);
                let v = g[oy * s + ox] / ((y1 - y0) * (x1 - x0)) as f32;
                for row in dplane[y0 * d.w..y1 * d.w].chunks_exact_mut(d.w) {
                    row[x0..x1].iter_mut().for_each(|t| *t += v);
                }
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

    #[test]
    fn maxpool_values_and_ties() {
        let d = Nchw {
            n: 1,
            c: 1,
            h: 3,
            w: 5,
        };
        #[rustfmt::skip]
        let x = [
            1.0, 2.0, 5.0, 5.0, 9.0,
            4.0, 3.0, 5.0, 5.0, 9.0,
            9.0, 9.0, 9.0, 9.0, 9.0,
        ];
        let mut y = [0f32; 2];
        maxpool2_forward(&d, &x, &mut y);
        assert_eq!(y, [4.0, 5.0]);
        let mut dx = [f32::NAN; 15];
        maxpool2_backward(&d, &x, &[10.0, 20.0], &mut dx);
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 20.0, 0.0, 0.0,
            10.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(
            dx, want,
            "ties go to the first maximum; dropped row/col get 0"
        );
    }

    #[test]
    fn avgpool_bins_match_pytorch() {
        // Adaptive pooling of length 5 to 2: bins [0,3) and [2,5); of 7 to 2: [0,4) and [3,7).
        assert_eq!((bin(0, 5, 2), bin(1, 5, 2)), ((0, 3), (2, 5)));
        assert_eq!((bin(0, 7, 2), bin(1, 7, 2)), ((0, 4), (3, 7)));
        assert_eq!((bin(0, 4, 2), bin(1, 4, 2)), ((0, 2), (2, 4)));
        let d = Nchw {
            n: 1,
            c: 1,
            h: 2,
            w: 3,
        };
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut y = [0f32; 1];
        avgpool_forward(&d, 1, &x, &mut y);
        assert_eq!(y, [3.5]);
    }

    /// Inputs are a shuffled grid of values spaced 0.05 apart, so the maximum of every window
    /// leads the runner-up by at least 0.05 > 2·eps (eps = 1e-2): no difference changes the
    /// argmax and the loss is exactly linear around the point; tolerance 1e-2 (rounding only).
    fn gradcheck_maxpool(d: Nchw, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut x: Vec<f32> = (0..d.len()).map(|i| i as f32 * 0.05 - 1.0).collect();
        rng.shuffle(&mut x);
        let (ho, wo) = (d.h / 2, d.w / 2);
        let r = random_vec(&mut rng, d.n * d.c * ho * wo);
        let mut dx = std::vec![f32::NAN; d.len()];
        maxpool2_backward(&d, &x, &r, &mut dx);
        let mut y = std::vec![0f32; r.len()];
        let fd = numeric_grad(&mut x, 1e-2, |x| {
            maxpool2_forward(&d, x, &mut y);
            project(&r, &y)
        });
        let e = rel_error(&dx, &fd);
        println!("gradcheck maxpool2 {d:?}: dx {e:e}");
        assert!(e < 1e-2, "maxpool {d:?} rel err {e}");
    }

    #[test]
    fn gradcheck_maxpool_even_and_odd() {
        gradcheck_maxpool(
            Nchw {
                n: 2,
                c: 3,
                h: 4,
                w: 6,
            },
            31,
        );
        gradcheck_maxpool(
            Nchw {
                n: 1,
                c: 2,
                h: 5,
                w: 7,
            },
            32,
        );
    }

    /// Average pooling is linear: central differences are exact up to rounding; eps = 1e-2,
    /// tolerance 1e-2.
    fn gradcheck_avgpool(d: Nchw, s: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut x = random_vec(&mut rng, d.len());
        let r = random_vec(&mut rng, d.n * d.c * s * s);
        let mut dx = std::vec![f32::NAN; d.len()];
        avgpool_backward(&d, s, &r, &mut dx);
        let mut y = std::vec![0f32; r.len()];
        let fd = numeric_grad(&mut x, 1e-2, |x| {
            avgpool_forward(&d, s, x, &mut y);
            project(&r, &y)
        });
        let e = rel_error(&dx, &fd);
        println!("gradcheck avgpool s={s} {d:?}: dx {e:e}");
        assert!(e < 1e-2, "avgpool s={s} {d:?} rel err {e}");
    }

    #[test]
    fn gradcheck_avgpool_global_and_adaptive() {
        gradcheck_avgpool(
            Nchw {
                n: 2,
                c: 3,
                h: 4,
                w: 4,
            },
            1,
            41,
        );
        gradcheck_avgpool(
            Nchw {
                n: 2,
                c: 2,
                h: 5,
                w: 7,
            },
            1,
            42,
        );
        gradcheck_avgpool(
            Nchw {
                n: 2,
                c: 2,
                h: 5,
                w: 7,
            },
            2,
            43,
        );
        gradcheck_avgpool(
            Nchw {
                n: 1,
                c: 3,
                h: 8,
                w: 6,
            },
            2,
            44,
        );
        gradcheck_avgpool(
            Nchw {
                n: 1,
                c: 1,
                h: 3,
                w: 2,
            },
            2,
            45,
        );
    }
}
