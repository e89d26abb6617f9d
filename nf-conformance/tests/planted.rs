//! The suite catches a backend that writes outside its regions: a wrapper of the reference
//! backend whose ReLU also writes the element just past its region must be reported, by
//! `Case::check` directly and by the suite's op test; the unchanged reference passes.
use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};

use nf_conformance::{Call, Case, Subject, Tol};
use nf_core::backend::Backend;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::probe::KernelCall;
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;

/// The reference backend, with (when `planted`) one write past the region of every ReLU.
struct Planted<'a> {
    inner: ReferenceBackend<'a>,
    planted: bool,
}

#[rustfmt::skip]
impl Backend for Planted<'_> {
    type Error = Infallible;
    fn arena_len(&self) -> usize { self.inner.arena_len() }
    fn write(&mut self, dst: Region, src: &[f32]) { self.inner.write(dst, src) }
    fn read(&mut self, src: Region, dst: &mut [f32]) { self.inner.read(src, dst) }
    fn fill(&mut self, dst: Region, value: f32) { self.inner.fill(dst, value) }
    fn copy(&mut self, src: Region, dst: Region) { self.inner.copy(src, dst) }
    fn sync(&mut self) -> Result<(), Infallible> { self.inner.sync() }
    fn conv_forward(&mut self, g: &ConvGeom, x: Region, w: Region, b: Region, y: Region, ws: Region) {
        self.inner.conv_forward(g, x, w, b, y, ws)
    }
    fn conv_backward(&mut self, g: &ConvGeom, x: Region, w: Region, dy: Region, dw: Region, db: Region, dx: Region, ws: Region) {
        self.inner.conv_backward(g, x, w, dy, dw, db, dx, ws)
    }
    fn bn_forward_train(&mut self, d: &Nchw, x: Region, gb: Region, y: Region, inv: Region, run: Region) {
        self.inner.bn_forward_train(d, x, gb, y, inv, run)
    }
    fn bn_forward_eval(&mut self, d: &Nchw, x: Region, gb: Region, run: Region, y: Region) {
        self.inner.bn_forward_eval(d, x, gb, run, y)
    }
    fn bn_backward(&mut self, d: &Nchw, xh: Region, gb: Region, inv: Region, dy: Region, dgb: Region) {
        self.inner.bn_backward(d, xh, gb, inv, dy, dgb)
    }
    fn relu_forward(&mut self, x: Region) {
        self.inner.relu_forward(x);
        if self.planted {
            self.inner.fill(Region::new(x.end(), 1), 0.0);
        }
    }
    fn relu_backward(&mut self, y: Region, dy: Region) { self.inner.relu_backward(y, dy) }
    fn add_assign(&mut self, y: Region, x: Region) { self.inner.add_assign(y, x) }
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) { self.inner.maxpool_forward(d, x, y) }
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) { self.inner.maxpool_backward(d, x, dy, dx) }
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) { self.inner.avgpool_forward(d, s, x, y) }
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) { self.inner.avgpool_backward(d, s, dy, dx) }
    fn linear_forward(&mut self, n: usize, fin: usize, fout: usize, x: Region, wb: Region, y: Region, ws: Region) {
        self.inner.linear_forward(n, fin, fout, x, wb, y, ws)
    }
    fn linear_backward(&mut self, n: usize, fin: usize, fout: usize, x: Region, wb: Region, dy: Region, dwb: Region, dx: Region, ws: Region) {
        self.inner.linear_backward(n, fin, fout, x, wb, dy, dwb, dx, ws)
    }
    fn softmax_xent(&mut self, n: usize, c: usize, lg: Region, lb: Region, dl: Region, slot: usize) -> (f32, u32) {
        self.inner.softmax_xent(n, c, lg, lb, dl, slot)
    }
    fn sgd(&mut self, opt: &Sgd, lr: f32, p: Region, g: Region, m: Region) { self.inner.sgd(opt, lr, p, g, m) }
}

struct Subj {
    planted: bool,
}

impl Subject for Subj {
    type B<'a> = Planted<'a>;
    fn name(&self) -> String {
        format!("reference, planted write {}", self.planted)
    }
    fn tol(&self) -> Tol {
        Tol {
            gemm: 0.0,
            bn: 0.0,
            exact: 0.0,
            steps: 0.0,
        }
    }
    fn workspace(&self, k: &KernelCall) -> usize {
        match *k {
            KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => g.cols_len(),
            _ => 0,
        }
    }
    fn backend<'a>(&'a self, arena: &'a mut [f32]) -> Planted<'a> {
        Planted {
            inner: ReferenceBackend::new(arena),
            planted: self.planted,
        }
    }
}

#[test]
fn one_write_past_a_region_is_reported_by_the_check() {
    let mut c = Case::new(1);
    let x = c.exact_inout("x", 10, |r| r.normal());
    let _y = c.input("y", 4);
    for planted in [false, true] {
        let s = Subj { planted };
        let mut arena = vec![0f32; c.len()];
        let mut be = s.backend(&mut arena);
        let r = c.check("relu", &mut be, &s.tol(), |_| vec![Call::Relu(x)]);
        if planted {
            let e = r.expect_err("a write past the region must be reported");
            assert!(e.contains("relu"), "{e}");
        } else {
            r.unwrap();
        }
    }
}

#[test]
fn one_write_past_a_region_fails_the_suite() {
    nf_conformance::ops_elementwise(&Subj { planted: false });
    let r = catch_unwind(AssertUnwindSafe(|| {
        nf_conformance::ops_elementwise(&Subj { planted: true })
    }));
    let e = r.expect_err("the suite must fail on a write past a region");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("planted write true"), "{msg}");
}
