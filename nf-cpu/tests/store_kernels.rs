//! The element-wise host kernels with bf16 tensors (issue 28): for every kernel and every
//! choice of `f32` / bf16 for each tensor argument, on random shapes (odd sizes, large enough
//! ones to split among 1, 2 and 3 workers), the result equals the all-f32 kernel run on the
//! inputs widened to `f32`, its outputs then rounded to their element types — bit for bit,
//! batch norm included (its statistics are summed from the same widened values), and the
//! `f32` per-channel outputs (x̂'s 1/σ, running statistics, dγ, dβ) are the f32 kernel's.
use nf_core::ops::Nchw;
use nf_core::rng::Rng;
use nf_cpu::bf16::Bf16;
use nf_cpu::store::Store;
use nf_cpu::{activation, batchnorm, pool, Pool};

/// `n` random values of `T`: mostly normal, with zeros of both signs, repeats (ties for the
/// max-pool) and, if `specials`, infinities and NaN.
fn values<T: Store>(rng: &mut Rng, n: usize, specials: bool) -> Vec<T> {
    let mut prev = 0.0f32;
    (0..n)
        .map(|_| {
            let v = match rng.below(40) {
                0 => 0.0,
                1 => -0.0,
                2 | 3 => prev,
                4 if specials => f32::INFINITY,
                5 if specials => f32::NEG_INFINITY,
                6 if specials => f32::NAN,
                _ => rng.normal() * 3.0,
            };
            prev = v;
            T::store(v)
        })
        .collect()
}

fn widen<T: Store>(x: &[T]) -> Vec<f32> {
    x.iter().map(|v| v.load()).collect()
}

/// `x` rounded to `T` and widened back (what a `T` output of the f32 result holds).
fn round<T: Store>(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| T::store(v).load()).collect()
}

/// Bit-exact equality of the widened values (any NaN equals any NaN: which operand's payload
/// an addition of two NaNs keeps is up to the compiled code).
#[track_caller]
fn same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !(g.is_nan() && w.is_nan()) {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}[{i}]: {g} vs {w}");
        }
    }
}

fn pools() -> Vec<Pool> {
    (1..=3).map(Pool::new).collect()
}

/// Random NCHW shapes with odd sides, and one large enough to be split among workers.
fn shapes(rng: &mut Rng) -> Vec<Nchw> {
    let mut r = |lo: u32, hi: u32| (lo + rng.below(hi - lo + 1)) as usize;
    let mut v: Vec<Nchw> = (0..6)
        .map(|_| Nchw {
            n: r(1, 4),
            c: r(1, 7),
            h: r(1, 11),
            w: r(1, 11),
        })
        .collect();
    v.push(Nchw {
        n: 3,
        c: 7,
        h: 29,
        w: 31,
    });
    v
}

fn tname<T: Store>() -> &'static str {
    if T::store(1.0 + f32::EPSILON).load() == 1.0 {
        "bf16"
    } else {
        "f32"
    }
}

/// Run `$f::<types>()` for every combination of `f32` and `Bf16` in each position.
macro_rules! all_types {
    ($f:ident, 1) => {
        $f::<f32>();
        $f::<Bf16>();
    };
    ($f:ident, 2) => {
        $f::<f32, f32>();
        $f::<f32, Bf16>();
        $f::<Bf16, f32>();
        $f::<Bf16, Bf16>();
    };
    ($f:ident, 3) => {
        $f::<f32, f32, f32>();
        $f::<f32, f32, Bf16>();
        $f::<f32, Bf16, f32>();
        $f::<f32, Bf16, Bf16>();
        $f::<Bf16, f32, f32>();
        $f::<Bf16, f32, Bf16>();
        $f::<Bf16, Bf16, f32>();
        $f::<Bf16, Bf16, Bf16>();
    };
}

/// Element counts for the element-wise kernels: small odd ones and one above the size that
/// splits them among workers.
const LENS: [usize; 5] = [0, 1, 7, 1001, 70_001];

#[test]
fn relu_forward_matches_f32_kernel_rounded() {
    fn check<T: Store>() {
        let mut rng = Rng::new(11);
        for p in pools() {
            for len in LENS {
                let mut x = values::<T>(&mut rng, len, true);
                let mut want = widen(&x);
                activation::relu_forward(&p, &mut want);
                activation::relu_forward(&p, &mut x);
                let what = format!("relu fwd {} len {len} T={}", tname::<T>(), p.threads());
                same(&what, &widen(&x), &round::<T>(&want));
            }
        }
    }
    all_types!(check, 1);
}

#[test]
fn relu_backward_matches_f32_kernel_rounded() {
    fn check<Y: Store, D: Store>() {
        let mut rng = Rng::new(12);
        for p in pools() {
            for len in LENS {
                let y = values::<Y>(&mut rng, len, true);
                let mut dy = values::<D>(&mut rng, len, true);
                let mut want = widen(&dy);
                activation::relu_backward(&p, &widen(&y), &mut want);
                activation::relu_backward(&p, &y, &mut dy);
                let what = format!(
                    "relu bwd y {} dy {} len {len} T={}",
                    tname::<Y>(),
                    tname::<D>(),
                    p.threads()
                );
                same(&what, &widen(&dy), &round::<D>(&want));
            }
        }
    }
    all_types!(check, 2);
}

#[test]
fn add_assign_matches_f32_kernel_rounded() {
    fn check<Y: Store, X: Store>() {
        let mut rng = Rng::new(13);
        for p in pools() {
            for len in LENS {
                let mut y = values::<Y>(&mut rng, len, true);
                let x = values::<X>(&mut rng, len, true);
                let mut want = widen(&y);
                activation::add_assign(&p, &mut want, &widen(&x));
                activation::add_assign(&p, &mut y, &x);
                let what = format!(
                    "add y {} x {} len {len} T={}",
                    tname::<Y>(),
                    tname::<X>(),
                    p.threads()
                );
                same(&what, &widen(&y), &round::<Y>(&want));
            }
        }
    }
    all_types!(check, 2);
}

#[test]
fn maxpool_forward_matches_f32_kernel_rounded() {
    fn check<X: Store, Y: Store>() {
        let mut rng = Rng::new(14);
        for p in pools() {
            for d in shapes(&mut rng) {
                let ylen = d.n * d.c * (d.h / 2) * (d.w / 2) + 3;
                let x = values::<X>(&mut rng, d.len(), true);
                let mut y = values::<Y>(&mut rng, ylen, false);
                let mut want = widen(&y);
                pool::maxpool_forward(&p, &d, &widen(&x), &mut want);
                pool::maxpool_forward(&p, &d, &x, &mut y);
                let what = format!(
                    "maxpool fwd {}->{} {d:?} T={}",
                    tname::<X>(),
                    tname::<Y>(),
                    p.threads()
                );
                same(&what, &widen(&y), &round::<Y>(&want));
            }
        }
    }
    all_types!(check, 2);
}

#[test]
fn maxpool_backward_matches_f32_kernel_rounded() {
    fn check<X: Store, DY: Store, DX: Store>() {
        let mut rng = Rng::new(15);
        for p in pools() {
            for d in shapes(&mut rng) {
                let ylen = d.n * d.c * (d.h / 2) * (d.w / 2);
                let x = values::<X>(&mut rng, d.len(), true);
                let dy = values::<DY>(&mut rng, ylen, true);
                let mut dx = values::<DX>(&mut rng, d.len() + 3, false);
                let mut want = widen(&dx);
                pool::maxpool_backward(&p, &d, &widen(&x), &widen(&dy), &mut want);
                pool::maxpool_backward(&p, &d, &x, &dy, &mut dx);
                let what = format!(
                    "maxpool bwd x {} dy {} dx {} {d:?} T={}",
                    tname::<X>(),
                    tname::<DY>(),
                    tname::<DX>(),
                    p.threads()
                );
                same(&what, &widen(&dx), &round::<DX>(&want));
            }
        }
    }
    all_types!(check, 3);
}

/// Output sides for the adaptive average pool: 1 (global), sides that divide nothing (bins
/// overlap), larger than the input (upsampling: an element in many bins) and above the
/// kernel's table of precomputed bins (16).
const SIDES: [usize; 6] = [1, 2, 3, 5, 13, 17];

#[test]
fn avgpool_forward_matches_f32_kernel_rounded() {
    fn check<X: Store, Y: Store>() {
        let mut rng = Rng::new(16);
        for p in pools() {
            for d in shapes(&mut rng) {
                for s in SIDES {
                    let x = values::<X>(&mut rng, d.len(), false);
                    let mut y = values::<Y>(&mut rng, d.n * d.c * s * s + 2, false);
                    let mut want = widen(&y);
                    pool::avgpool_forward(&p, &d, s, &widen(&x), &mut want);
                    pool::avgpool_forward(&p, &d, s, &x, &mut y);
                    let what = format!(
                        "avgpool fwd {}->{} {d:?} s {s} T={}",
                        tname::<X>(),
                        tname::<Y>(),
                        p.threads()
                    );
                    same(&what, &widen(&y), &round::<Y>(&want));
                }
            }
        }
    }
    all_types!(check, 2);
}

#[test]
fn avgpool_backward_matches_f32_kernel_rounded() {
    fn check<DY: Store, DX: Store>() {
        let mut rng = Rng::new(17);
        for p in pools() {
            for d in shapes(&mut rng) {
                for s in SIDES {
                    let dy = values::<DY>(&mut rng, d.n * d.c * s * s, false);
                    let mut dx = values::<DX>(&mut rng, d.len() + 2, false);
                    let mut want = widen(&dx);
                    pool::avgpool_backward(&p, &d, s, &widen(&dy), &mut want);
                    pool::avgpool_backward(&p, &d, s, &dy, &mut dx);
                    let what = format!(
                        "avgpool bwd {}->{} {d:?} s {s} T={}",
                        tname::<DY>(),
                        tname::<DX>(),
                        p.threads()
                    );
                    same(&what, &widen(&dx), &round::<DX>(&want));
                }
            }
        }
    }
    all_types!(check, 2);
}

/// Per-channel parameters: γ, β and running statistics.
fn channel_params(rng: &mut Rng, c: usize) -> [Vec<f32>; 4] {
    let mut v = |off: f32| (0..c).map(|_| rng.normal() + off).collect::<Vec<f32>>();
    [
        v(1.0),
        v(0.0),
        v(0.0),
        v(2.0).iter().map(|x| x.abs()).collect(),
    ]
}

#[test]
fn batchnorm_forward_train_matches_f32_kernel_rounded() {
    fn check<X: Store, Y: Store>() {
        let mut rng = Rng::new(18);
        for p in pools() {
            for d in shapes(&mut rng) {
                let [g, b, rm0, rv0] = channel_params(&mut rng, d.c);
                let mut x = values::<X>(&mut rng, d.len(), false);
                let mut y = values::<Y>(&mut rng, d.len(), false);
                let (mut inv, mut rm, mut rv) = (vec![0.0; d.c], rm0.clone(), rv0.clone());
                let (mut wx, mut wy) = (widen(&x), widen(&y));
                let (mut winv, mut wrm, mut wrv) = (vec![0.0; d.c], rm0, rv0);
                batchnorm::forward_train(
                    &p, &d, &mut wx, &g, &b, &mut wy, &mut winv, &mut wrm, &mut wrv,
                );
                batchnorm::forward_train(
                    &p, &d, &mut x, &g, &b, &mut y, &mut inv, &mut rm, &mut rv,
                );
                let what = format!(
                    "bn fwd {}->{} {d:?} T={}",
                    tname::<X>(),
                    tname::<Y>(),
                    p.threads()
                );
                same(&format!("{what} xhat"), &widen(&x), &round::<X>(&wx));
                same(&format!("{what} y"), &widen(&y), &round::<Y>(&wy));
                same(&format!("{what} invstd"), &inv, &winv);
                same(&format!("{what} running mean"), &rm, &wrm);
                same(&format!("{what} running var"), &rv, &wrv);
            }
        }
    }
    all_types!(check, 2);
}

#[test]
fn batchnorm_forward_eval_matches_f32_kernel_rounded() {
    fn check<X: Store, Y: Store>() {
        let mut rng = Rng::new(19);
        for p in pools() {
            for d in shapes(&mut rng) {
                let [g, b, rm, rv] = channel_params(&mut rng, d.c);
                let x = values::<X>(&mut rng, d.len(), false);
                let mut y = values::<Y>(&mut rng, d.len() + 1, false);
                let mut want = widen(&y);
                batchnorm::forward_eval(&p, &d, &widen(&x), &g, &b, &rm, &rv, &mut want);
                batchnorm::forward_eval(&p, &d, &x, &g, &b, &rm, &rv, &mut y);
                let what = format!(
                    "bn eval {}->{} {d:?} T={}",
                    tname::<X>(),
                    tname::<Y>(),
                    p.threads()
                );
                same(&what, &widen(&y), &round::<Y>(&want));
            }
        }
    }
    all_types!(check, 2);
}

#[test]
fn batchnorm_backward_matches_f32_kernel_rounded() {
    fn check<XH: Store, DY: Store>() {
        let mut rng = Rng::new(20);
        for p in pools() {
            for d in shapes(&mut rng) {
                let [g, _, _, inv] = channel_params(&mut rng, d.c);
                let xh = values::<XH>(&mut rng, d.len(), false);
                let mut dy = values::<DY>(&mut rng, d.len(), false);
                let (mut dg, mut db) = (vec![0.0; d.c], vec![0.0; d.c]);
                let mut want = widen(&dy);
                let (mut wdg, mut wdb) = (vec![0.0; d.c], vec![0.0; d.c]);
                batchnorm::backward(&p, &d, &widen(&xh), &g, &inv, &mut want, &mut wdg, &mut wdb);
                batchnorm::backward(&p, &d, &xh, &g, &inv, &mut dy, &mut dg, &mut db);
                let what = format!(
                    "bn bwd xh {} dy {} {d:?} T={}",
                    tname::<XH>(),
                    tname::<DY>(),
                    p.threads()
                );
                same(&format!("{what} dx"), &widen(&dy), &round::<DY>(&want));
                same(&format!("{what} dgamma"), &dg, &wdg);
                same(&format!("{what} dbeta"), &db, &wdb);
            }
        }
    }
    all_types!(check, 2);
}
