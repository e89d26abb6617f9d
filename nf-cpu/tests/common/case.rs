//! One op (or a few) run on two copies of the same arena, one per backend: the reference
//! `ReferenceBackend` (the oracle) and the fast CPU backend with a given number of workers and
//! instruction set. Afterwards the arenas must agree everywhere except in the kernel
//! workspaces: outputs within a tolerance, inputs and the gaps between buffers exactly (so a
//! kernel that writes where it should not is caught too). Outputs start as NaN, so an element
//! the host kernel forgets to write shows up.
#![allow(dead_code)]

use std::convert::Infallible;

use nf_core::backend::Backend;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::reference::ReferenceBackend;
use nf_core::region::{Bump, Region};
use nf_core::rng::Rng;
use nf_cpu::{FastCpuBackend, Isa, Pool};

/// A backend as the ops see it.
pub type Dyn<'a> = dyn Backend<Error = Infallible> + 'a;

/// A NaN whose bit pattern no kernel produces: the workspace starts full of it, and an element
/// still holding it afterwards was never written.
pub const SENTINEL: u32 = 0x7fa5_a5a5;

/// An arena with named buffers separated by gaps of random values.
pub struct Case {
    pub arena: Vec<f32>,
    bump: Bump,
    rng: Rng,
    /// (name, region, tolerance; `None` = input, must be unchanged).
    pub checks: Vec<(String, Region, Option<f32>)>,
    /// Kernel workspaces (not compared).
    scratch: Vec<Region>,
}

/// Which backend an op runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The reference `ReferenceBackend`.
    Reference,
    /// The fast CPU backend.
    Host,
}

impl Case {
    pub fn new(seed: u64) -> Self {
        let mut c = Case {
            arena: Vec::new(),
            bump: Bump::at(0),
            rng: Rng::new(seed),
            checks: Vec::new(),
            scratch: Vec::new(),
        };
        c.gap();
        c
    }
    fn gap(&mut self) {
        let r = self.bump.take(3);
        self.push(r, |rng| rng.normal());
    }
    fn push(&mut self, r: Region, mut f: impl FnMut(&mut Rng) -> f32) {
        self.arena.resize(r.end(), 0.0);
        for i in r.offset..r.end() {
            self.arena[i] = f(&mut self.rng);
        }
    }
    /// A buffer of random values that no op may change (an input).
    pub fn input(&mut self, name: &str, len: usize) -> Region {
        self.input_with(name, len, |rng| rng.normal())
    }
    pub fn input_with(&mut self, name: &str, len: usize, f: impl FnMut(&mut Rng) -> f32) -> Region {
        let r = self.bump.take(len);
        self.push(r, f);
        self.checks.push((name.into(), r, None));
        self.gap();
        r
    }
    /// A buffer the op writes (starting as NaN), compared with tolerance `tol`.
    pub fn output(&mut self, name: &str, len: usize, tol: f32) -> Region {
        let r = self.bump.take(len);
        self.push(r, |_| f32::NAN);
        self.checks.push((name.into(), r, Some(tol)));
        self.gap();
        r
    }
    /// A buffer the op reads and writes (random start), compared with tolerance `tol`.
    pub fn inout(&mut self, name: &str, len: usize, tol: f32) -> Region {
        let r = self.bump.take(len);
        self.push(r, |rng| rng.normal());
        self.checks.push((name.into(), r, Some(tol)));
        self.gap();
        r
    }
    /// A kernel workspace of `len` elements, all [`SENTINEL`] (not compared).
    pub fn workspace(&mut self, len: usize) -> Region {
        let r = self.bump.take(len);
        self.push(r, |_| f32::from_bits(SENTINEL));
        self.scratch.push(r);
        self.gap();
        r
    }

    /// Run `op` on both backends (the host with `threads` workers on `isa`) and compare the
    /// arenas; returns the host's arena.
    pub fn check(
        &self,
        what: &str,
        threads: usize,
        isa: Isa,
        op: impl Fn(&mut Dyn<'_>, Side),
    ) -> Vec<f32> {
        let mut want = self.arena.clone();
        let mut got = self.arena.clone();
        op(&mut ReferenceBackend::new(&mut want), Side::Reference);
        let pool = Pool::with_isa(threads, isa);
        op(&mut FastCpuBackend::new(&mut got, &pool), Side::Host);
        let what = format!("{what} [T={threads}, {isa}]");
        let mut covered = vec![false; self.arena.len()];
        for (name, r, tol) in &self.checks {
            let (w, g) = (&want[r.offset..r.end()], &got[r.offset..r.end()]);
            covered[r.offset..r.end()]
                .iter_mut()
                .for_each(|c| *c = true);
            let scale = w
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f32, |m, v| m.max(v.abs()));
            for (i, (&a, &b)) in w.iter().zip(g).enumerate() {
                let ok = match tol {
                    None => a.to_bits() == b.to_bits(),
                    Some(0.0) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    Some(t) => {
                        (a.is_nan() && b.is_nan())
                            || (a - b).abs() <= t * scale.max(f32::MIN_POSITIVE)
                    }
                };
                assert!(
                    ok,
                    "{what}: {name}[{i}] host {b} vs reference {a} (scale {scale}, tol {tol:?})"
                );
            }
        }
        for r in &self.scratch {
            covered[r.offset..r.end()]
                .iter_mut()
                .for_each(|c| *c = true);
        }
        for (i, c) in covered.iter().enumerate() {
            if !c {
                assert_eq!(
                    want[i].to_bits(),
                    got[i].to_bits(),
                    "{what}: gap element {i} changed"
                );
            }
        }
        got
    }
}

/// `n` samples of `c_in × h × w` into `c_out` channels, kernel `k`, stride `s`, padding `p`.
#[allow(clippy::too_many_arguments)]
pub fn geom(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    s: usize,
    p: usize,
) -> ConvGeom {
    ConvGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        k,
        stride: s,
        pad: p,
    }
}
