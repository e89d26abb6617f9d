//! Running planned steps on the host backend while nf-core's layout still sizes the kernel
//! workspace for the reference kernels (im2col columns per worker and partial sums): [`HostWs`]
//! gives every convolution and linear call a workspace of exactly
//! `host_backend::workspace::floats_for` elements, in room past the layout's end (`at`), and
//! [`room`] measures how much room a block's steps need (by running them on a backend that
//! computes nothing). Once the planner sizes the workspace region with `workspace::floats`,
//! this wrapper is no longer needed.
#![allow(dead_code)]

use std::convert::Infallible;

use nf_core::backend::Backend;
use nf_core::layout::BlockLayout;
use nf_core::model::MAX_UNITS;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::region::Region;
use nf_core::step::{self, SegStats};
use nf_host::host_backend::workspace::{floats_for, Kernel};
use nf_host::host_backend::Isa;

/// `inner` with the kernel workspace of every convolution and linear call moved to
/// `Region::new(at, floats_for(kernel, threads, isa))`.
pub struct HostWs<B> {
    /// The backend doing the work.
    pub inner: B,
    /// Where the workspace starts (past every region of the layout).
    pub at: usize,
    /// Workers the workspace is sized for.
    pub threads: usize,
    /// Instruction set the workspace is sized for.
    pub isa: Isa,
    /// The largest workspace handed out so far.
    pub max: usize,
}

impl<B: Backend> HostWs<B> {
    /// `inner`, with workspaces from `at` on, sized for `threads` workers on `isa`.
    pub fn new(inner: B, at: usize, threads: usize, isa: Isa) -> Self {
        HostWs {
            inner,
            at,
            threads,
            isa,
            max: 0,
        }
    }
    fn ws(&mut self, k: Kernel) -> Region {
        let len = floats_for(&k, self.threads, self.isa);
        self.max = self.max.max(len);
        let r = Region::new(self.at, len);
        assert!(
            r.end() <= self.inner.arena_len(),
            "{k:?}: workspace {r:?} past the arena ({})",
            self.inner.arena_len()
        );
        r
    }
}

/// The room past `l.floats` that [`HostWs`] needs for `l`'s training, evaluation and inference
/// steps at batch `n` with `threads` workers on `isa`.
pub fn room(l: &BlockLayout, n: usize, threads: usize, isa: Isa) -> usize {
    let mut be = HostWs::new(Null(usize::MAX), 0, threads, isa);
    let mut st = [SegStats::default(); MAX_UNITS];
    step::train_step(&mut be, l, n, &Sgd::default(), 0.01, &mut st).unwrap();
    step::eval_step(&mut be, l, n, &mut st).unwrap();
    step::infer_step(&mut be, l, n).unwrap();
    be.max
}

/// A backend that computes nothing (for [`room`]): an arena of `.0` elements in name only.
pub struct Null(pub usize);

#[rustfmt::skip]
#[allow(unused_variables)]
impl Backend for Null {
    type Error = Infallible;
    fn arena_len(&self) -> usize { self.0 }
    fn write(&mut self, dst: Region, src: &[f32]) {}
    fn read(&mut self, src: Region, dst: &mut [f32]) {}
    fn fill(&mut self, dst: Region, value: f32) {}
    fn copy(&mut self, src: Region, dst: Region) {}
    fn sync(&mut self) -> Result<(), Infallible> { Ok(()) }
    fn conv_forward(&mut self, g: &ConvGeom, x: Region, w: Region, b: Region, y: Region, c: Region) {}
    fn conv_backward(&mut self, g: &ConvGeom, x: Region, w: Region, dy: Region, dw: Region, db: Region, dx: Region, c: Region) {}
    fn bn_forward_train(&mut self, d: &Nchw, x: Region, gb: Region, y: Region, i: Region, r: Region) {}
    fn bn_forward_eval(&mut self, d: &Nchw, x: Region, gb: Region, r: Region, y: Region) {}
    fn bn_backward(&mut self, d: &Nchw, xh: Region, gb: Region, i: Region, dy: Region, dgb: Region) {}
    fn relu_forward(&mut self, x: Region) {}
    fn relu_backward(&mut self, y: Region, dy: Region) {}
    fn add_assign(&mut self, y: Region, x: Region) {}
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) {}
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {}
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {}
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {}
    fn linear_forward(&mut self, n: usize, fi: usize, fo: usize, x: Region, wb: Region, y: Region, ws: Region) {}
    fn linear_backward(&mut self, n: usize, fi: usize, fo: usize, x: Region, wb: Region, dy: Region, dwb: Region, dx: Region, ws: Region) {}
    fn softmax_xent(&mut self, n: usize, c: usize, lg: Region, lb: Region, dl: Region) -> (f32, u32) { (0.0, 0) }
    fn sgd(&mut self, opt: &Sgd, lr: f32, p: Region, g: Region, m: Region) {}
}

#[rustfmt::skip]
impl<B: Backend> Backend for HostWs<B> {
    type Error = B::Error;
    fn arena_len(&self) -> usize { self.inner.arena_len() }
    fn write(&mut self, dst: Region, src: &[f32]) { self.inner.write(dst, src) }
    fn read(&mut self, src: Region, dst: &mut [f32]) { self.inner.read(src, dst) }
    fn fill(&mut self, dst: Region, value: f32) { self.inner.fill(dst, value) }
    fn copy(&mut self, src: Region, dst: Region) { self.inner.copy(src, dst) }
    fn sync(&mut self) -> Result<(), B::Error> { self.inner.sync() }
    fn conv_forward(&mut self, g: &ConvGeom, x: Region, w: Region, b: Region, y: Region, _c: Region) {
        let ws = self.ws(Kernel::ConvForward(*g));
        self.inner.conv_forward(g, x, w, b, y, ws)
    }
    fn conv_backward(&mut self, g: &ConvGeom, x: Region, w: Region, dy: Region, dw: Region, db: Region, dx: Region, _c: Region) {
        let ws = self.ws(Kernel::ConvBackward { g: *g, dx: !dx.is_empty(), db: !db.is_empty() });
        self.inner.conv_backward(g, x, w, dy, dw, db, dx, ws)
    }
    fn bn_forward_train(&mut self, d: &Nchw, x: Region, gb: Region, y: Region, i: Region, r: Region) {
        self.inner.bn_forward_train(d, x, gb, y, i, r)
    }
    fn bn_forward_eval(&mut self, d: &Nchw, x: Region, gb: Region, r: Region, y: Region) {
        self.inner.bn_forward_eval(d, x, gb, r, y)
    }
    fn bn_backward(&mut self, d: &Nchw, xh: Region, gb: Region, i: Region, dy: Region, dgb: Region) {
        self.inner.bn_backward(d, xh, gb, i, dy, dgb)
    }
    fn relu_forward(&mut self, x: Region) { self.inner.relu_forward(x) }
    fn relu_backward(&mut self, y: Region, dy: Region) { self.inner.relu_backward(y, dy) }
    fn add_assign(&mut self, y: Region, x: Region) { self.inner.add_assign(y, x) }
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) { self.inner.maxpool_forward(d, x, y) }
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {
        self.inner.maxpool_backward(d, x, dy, dx)
    }
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {
        self.inner.avgpool_forward(d, s, x, y)
    }
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {
        self.inner.avgpool_backward(d, s, dy, dx)
    }
    fn linear_forward(&mut self, n: usize, fi: usize, fo: usize, x: Region, wb: Region, y: Region, _ws: Region) {
        let ws = self.ws(Kernel::LinearForward { n, fin: fi, fout: fo });
        self.inner.linear_forward(n, fi, fo, x, wb, y, ws)
    }
    fn linear_backward(&mut self, n: usize, fi: usize, fo: usize, x: Region, wb: Region, dy: Region, dwb: Region, dx: Region, _ws: Region) {
        let ws = self.ws(Kernel::LinearBackward { n, fin: fi, fout: fo, dx: !dx.is_empty() });
        self.inner.linear_backward(n, fi, fo, x, wb, dy, dwb, dx, ws)
    }
    fn softmax_xent(&mut self, n: usize, c: usize, lg: Region, lb: Region, dl: Region) -> (f32, u32) {
        self.inner.softmax_xent(n, c, lg, lb, dl)
    }
    fn sgd(&mut self, opt: &Sgd, lr: f32, p: Region, g: Region, m: Region) { self.inner.sgd(opt, lr, p, g, m) }
}
