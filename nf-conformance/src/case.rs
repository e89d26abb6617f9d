//! One case: buffers laid out in an arena with canaries between them, a list of calls run on
//! the reference and on the subject, and the comparison of the two arenas.
use nf_core::backend::Backend;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::reference::ReferenceBackend;
use nf_core::region::{Bump, Region};
use nf_core::rng::Rng;

use crate::Tol;

/// A NaN whose bit pattern no kernel produces: workspaces start full of it, and an element
/// still holding it afterwards was never written.
pub const SENTINEL: u32 = 0x7fa5_a5a5;

/// Every output buffer of a case by name, with its error ([`scaled_error`]).
pub type Errors = Vec<(String, f32)>;

/// Canary elements after every buffer (random values that must come back unchanged).
const GAP: usize = 3;

/// Which backend a call list is for (they differ in their workspace regions only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// nf-core's `ReferenceBackend`.
    Reference,
    /// The backend under test.
    Subject,
}

/// How a buffer is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Must be unchanged, bit for bit.
    Input,
    /// Within [`Tol::gemm`].
    Gemm,
    /// Within [`Tol::bn`].
    Bn,
    /// Within [`Tol::exact`].
    Exact,
}

/// One call of a backend operation (workspace regions included).
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum Call {
    Fill(Region, f32),
    Copy(Region, Region),
    ConvForward(ConvGeom, [Region; 5]),
    ConvBackward(ConvGeom, [Region; 7]),
    BnTrain(Nchw, [Region; 5]),
    BnEval(Nchw, [Region; 4]),
    BnBackward(Nchw, [Region; 5]),
    Relu(Region),
    ReluBackward(Region, Region),
    Add(Region, Region),
    MaxPool(Nchw, Region, Region),
    MaxPoolBackward(Nchw, Region, Region, Region),
    AvgPool(Nchw, usize, Region, Region),
    AvgPoolBackward(Nchw, usize, Region, Region),
    Linear(usize, usize, usize, [Region; 4]),
    LinearBackward(usize, usize, usize, [Region; 6]),
    Xent(usize, usize, [Region; 3]),
    Sgd(Sgd, f32, [Region; 3]),
}

impl Call {
    /// Run it on `b`; the cross-entropy's loss and correct count (read back from the
    /// backend's accumulator when it defers them; slot 3, so that slots are not mixed up).
    pub fn run<B: Backend>(&self, b: &mut B) -> Option<(f32, u32)> {
        match *self {
            Call::Fill(r, v) => b.fill(r, v),
            Call::Copy(s, d) => b.copy(s, d),
            Call::ConvForward(ref g, [x, w, bias, y, ws]) => b.conv_forward(g, x, w, bias, y, ws),
            Call::ConvBackward(ref g, [x, w, dy, dw, db, dx, ws]) => {
                b.conv_backward(g, x, w, dy, dw, db, dx, ws)
            }
            Call::BnTrain(ref d, [x, gb, y, inv, run]) => b.bn_forward_train(d, x, gb, y, inv, run),
            Call::BnEval(ref d, [x, gb, run, y]) => b.bn_forward_eval(d, x, gb, run, y),
            Call::BnBackward(ref d, [xh, gb, inv, dy, dgb]) => {
                b.bn_backward(d, xh, gb, inv, dy, dgb)
            }
            Call::Relu(x) => b.relu_forward(x),
            Call::ReluBackward(y, dy) => b.relu_backward(y, dy),
            Call::Add(y, x) => b.add_assign(y, x),
            Call::MaxPool(ref d, x, y) => b.maxpool_forward(d, x, y),
            Call::MaxPoolBackward(ref d, x, dy, dx) => b.maxpool_backward(d, x, dy, dx),
            Call::AvgPool(ref d, s, x, y) => b.avgpool_forward(d, s, x, y),
            Call::AvgPoolBackward(ref d, s, dy, dx) => b.avgpool_backward(d, s, dy, dx),
            Call::Linear(n, fi, fo, [x, wb, y, ws]) => b.linear_forward(n, fi, fo, x, wb, y, ws),
            Call::LinearBackward(n, fi, fo, [x, wb, dy, dwb, dx, ws]) => {
                b.linear_backward(n, fi, fo, x, wb, dy, dwb, dx, ws)
            }
            Call::Xent(n, c, [lg, lb, dl]) => {
                let now = b.softmax_xent(n, c, lg, lb, dl, 3);
                if !b.defers_scores() {
                    return Some(now);
                }
                assert_eq!(now, (0.0, 0), "a deferred score is returned as zero");
                let mut s = [(0.0, 0); 5];
                b.take_scores(&mut s);
                assert!(
                    s.iter().enumerate().all(|(k, v)| k == 3 || *v == (0.0, 0)),
                    "scores landed in another slot: {s:?}"
                );
                return Some(s[3]);
            }
            Call::Sgd(ref o, lr, [p, g, m]) => b.sgd(o, lr, p, g, m),
        }
        None
    }
}

/// An arena with named buffers, each followed by canaries.
pub struct Case {
    arena: Vec<f32>,
    bump: Bump,
    rng: Rng,
    checks: Vec<(String, Region, Kind)>,
    scratch: Vec<Region>,
}

impl Case {
    /// An empty case whose random values come from `seed`.
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
        let r = self.bump.take(GAP);
        self.push(r, |rng| rng.normal());
    }
    fn push(&mut self, r: Region, mut f: impl FnMut(&mut Rng) -> f32) {
        self.arena.resize(r.end(), 0.0);
        for i in r.offset..r.end() {
            self.arena[i] = f(&mut self.rng);
        }
    }
    fn add(
        &mut self,
        name: &str,
        len: usize,
        kind: Kind,
        f: impl FnMut(&mut Rng) -> f32,
    ) -> Region {
        let r = self.bump.take(len);
        self.push(r, f);
        self.checks.push((name.into(), r, kind));
        self.gap();
        r
    }
    /// Elements the case spans (the subject's arena must hold them).
    pub fn len(&self) -> usize {
        self.arena.len()
    }
    /// Whether the case has no buffer.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty() && self.scratch.is_empty()
    }
    /// A buffer of normal random values that no call may change.
    pub fn input(&mut self, name: &str, len: usize) -> Region {
        self.add(name, len, Kind::Input, |r| r.normal())
    }
    /// An input with the values `f` draws.
    pub fn input_with(&mut self, name: &str, len: usize, f: impl FnMut(&mut Rng) -> f32) -> Region {
        self.add(name, len, Kind::Input, f)
    }
    /// A GEMM output (starting as NaN).
    pub fn gemm_out(&mut self, name: &str, len: usize) -> Region {
        self.add(name, len, Kind::Gemm, |_| f32::NAN)
    }
    /// A batch-norm output or statistic starting with the values `f` draws.
    pub fn bn_out(&mut self, name: &str, len: usize, f: impl FnMut(&mut Rng) -> f32) -> Region {
        self.add(name, len, Kind::Bn, f)
    }
    /// An output compared within [`Tol::exact`] (starting as NaN).
    pub fn exact_out(&mut self, name: &str, len: usize) -> Region {
        self.add(name, len, Kind::Exact, |_| f32::NAN)
    }
    /// A buffer read and written, compared within [`Tol::exact`], starting with `f`'s values.
    pub fn exact_inout(
        &mut self,
        name: &str,
        len: usize,
        f: impl FnMut(&mut Rng) -> f32,
    ) -> Region {
        self.add(name, len, Kind::Exact, f)
    }
    /// A kernel workspace of `len` elements, all [`SENTINEL`] (contents not compared).
    pub fn workspace(&mut self, len: usize) -> Region {
        let r = self.bump.take(len);
        self.push(r, |_| f32::from_bits(SENTINEL));
        self.scratch.push(r);
        self.gap();
        r
    }
    /// The case's random source (for shapes and labels that must follow the seed).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Run `calls(side)` on the reference (over a copy of the arena) and on `be` (the arena
    /// written to its first [`Case::len`] elements), then compare: every output within `tol`,
    /// every input and canary bit for bit, the losses within `tol.exact` and the correct counts
    /// exactly. Returns the subject's arena, or the first difference, naming `what`.
    pub fn check<B: Backend>(
        &self,
        what: &str,
        be: &mut B,
        tol: &Tol,
        calls: impl Fn(Side) -> Vec<Call>,
    ) -> Result<Vec<f32>, String> {
        self.check_errors(what, be, tol, calls).map(|(got, _)| got)
    }

    /// [`Case::check`], also returning every output buffer's name and its error
    /// ([`scaled_error`]) when all of them are within `tol`.
    pub fn check_errors<B: Backend>(
        &self,
        what: &str,
        be: &mut B,
        tol: &Tol,
        calls: impl Fn(Side) -> Vec<Call>,
    ) -> Result<(Vec<f32>, Errors), String> {
        let n = self.arena.len();
        if n > be.arena_len() {
            return Err(format!(
                "{what}: case of {n} elements > arena {}",
                be.arena_len()
            ));
        }
        let mut want = self.arena.clone();
        let mut rb = ReferenceBackend::new(&mut want);
        let want_ret: Vec<_> = calls(Side::Reference)
            .iter()
            .map(|c| c.run(&mut rb))
            .collect();
        be.write(Region::new(0, n), &self.arena);
        let got_ret: Vec<_> = calls(Side::Subject).iter().map(|c| c.run(be)).collect();
        let mut got = vec![0f32; n];
        be.read(Region::new(0, n), &mut got);
        be.sync()
            .map_err(|e| format!("{what}: backend error: {e}"))?;
        let mut errors = Vec::new();
        let mut covered = vec![false; n];
        for r in &self.scratch {
            covered[r.offset..r.end()]
                .iter_mut()
                .for_each(|c| *c = true);
        }
        for (name, r, kind) in &self.checks {
            let (w, g) = (&want[r.offset..r.end()], &got[r.offset..r.end()]);
            covered[r.offset..r.end()]
                .iter_mut()
                .for_each(|c| *c = true);
            let t = match kind {
                Kind::Input => None,
                Kind::Gemm => Some(tol.gemm),
                Kind::Bn => Some(tol.bn),
                Kind::Exact => Some(tol.exact),
            };
            let scale = w
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f32, |m, v| m.max(v.abs()));
            for (i, (&a, &b)) in w.iter().zip(g).enumerate() {
                if !close(a, b, t, scale) {
                    return Err(format!(
                        "{what}: {name}[{i}] subject {b} vs reference {a} (scale {scale}, tol {t:?})"
                    ));
                }
            }
            if t.is_some() {
                errors.push((name.clone(), scaled_error(g, w)));
            }
        }
        for (i, c) in covered.iter().enumerate() {
            if !c && want[i].to_bits() != got[i].to_bits() {
                return Err(format!(
                    "{what}: canary element {i} outside every region changed ({} -> {})",
                    want[i], got[i]
                ));
            }
        }
        for (w, g) in want_ret.iter().zip(&got_ret) {
            if let (Some((wl, wc)), Some((gl, gc))) = (w, g) {
                if wc != gc || !close(*wl, *gl, Some(tol.exact), wl.abs()) {
                    return Err(format!(
                        "{what}: loss/correct {gl}/{gc} vs reference {wl}/{wc}"
                    ));
                }
            }
        }
        Ok((got, errors))
    }
}

/// The largest `|got - want|` over the elements where both are finite, relative to the
/// largest finite `|want|` (exactly zero when every such pair is equal).
pub fn scaled_error(got: &[f32], want: &[f32]) -> f32 {
    let mut scale = 0f32;
    let mut diff = 0f32;
    for (&g, &w) in got.iter().zip(want) {
        if w.is_finite() {
            scale = scale.max(w.abs());
            if g.is_finite() {
                diff = diff.max((g - w).abs());
            }
        }
    }
    if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(f32::MIN_POSITIVE)
    }
}

/// Whether `b` matches `a`: bit for bit for an input (`t = None`) or `t = 0`, both NaN, or
/// within `t · scale`.
fn close(a: f32, b: f32, t: Option<f32>, scale: f32) -> bool {
    match t {
        None => a.to_bits() == b.to_bits(),
        Some(0.0) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
        Some(t) => (a.is_nan() && b.is_nan()) || (a - b).abs() <= t * scale.max(f32::MIN_POSITIVE),
    }
}
