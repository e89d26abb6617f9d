//! The CPU reference backend: resolves regions to slices of one `&mut [f32]` and runs the
//! reference kernels of [`crate::ops`]. It is bit-reproducible: the same calls on the same
//! arena give the same bits.
use crate::backend::Backend;
use crate::ops::conv2d::ConvGeom;
use crate::ops::{activation, batchnorm, conv2d, linear, loss, pool, Nchw};
use crate::optim::Sgd;
use crate::region::{carve, optional, optional_mut, Region};

/// The reference backend over a caller-provided arena.
pub struct ReferenceBackend<'a> {
    arena: &'a mut [f32],
}

impl<'a> ReferenceBackend<'a> {
    /// A backend over `arena`.
    pub fn new(arena: &'a mut [f32]) -> Self {
        ReferenceBackend { arena }
    }
    /// The arena.
    pub fn arena(&mut self) -> &mut [f32] {
        self.arena
    }
}

impl Backend for ReferenceBackend<'_> {
    type Error = core::convert::Infallible;

    fn arena_len(&self) -> usize {
        self.arena.len()
    }
    fn write(&mut self, dst: Region, src: &[f32]) {
        let [d] = carve(self.arena, [dst]);
        d.copy_from_slice(src);
    }
    fn read(&mut self, src: Region, dst: &mut [f32]) {
        let [s] = carve(self.arena, [src]);
        dst.copy_from_slice(s);
    }
    fn fill(&mut self, dst: Region, value: f32) {
        let [d] = carve(self.arena, [dst]);
        d.fill(value);
    }
    fn copy(&mut self, src: Region, dst: Region) {
        let [s, d] = carve(self.arena, [src, dst]);
        d.copy_from_slice(s);
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn conv_forward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        bias: Region,
        y: Region,
        cols: Region,
    ) {
        let [x, w, b, y, cols] = carve(self.arena, [x, w, bias, y, cols]);
        conv2d::forward(g, x, w, optional(b), y, cols);
    }
    fn conv_backward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        dy: Region,
        dw: Region,
        db: Region,
        dx: Region,
        cols: Region,
    ) {
        let [x, w, dy, dw, db, dx, cols] = carve(self.arena, [x, w, dy, dw, db, dx, cols]);
        conv2d::backward(g, x, w, dy, dw, optional_mut(db), optional_mut(dx), cols);
    }
    fn bn_forward_train(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        y: Region,
        invstd: Region,
        running: Region,
    ) {
        let [x, gb, y, inv, run] = carve(self.arena, [x, gamma_beta, y, invstd, running]);
        let (g, b) = gb.split_at(d.c);
        let (rm, rv) = run.split_at_mut(d.c);
        batchnorm::forward_train(d, x, g, b, y, inv, rm, rv);
    }
    fn bn_forward_eval(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        running: Region,
        y: Region,
    ) {
        let [x, gb, run, y] = carve(self.arena, [x, gamma_beta, running, y]);
        let (g, b) = gb.split_at(d.c);
        let (rm, rv) = run.split_at(d.c);
        batchnorm::forward_eval(d, x, g, b, rm, rv, y);
    }
    fn bn_backward(
        &mut self,
        d: &Nchw,
        xhat: Region,
        gamma_beta: Region,
        invstd: Region,
        dy: Region,
        dgamma_beta: Region,
    ) {
        let [xh, gb, inv, dy, dgb] = carve(self.arena, [xhat, gamma_beta, invstd, dy, dgamma_beta]);
        let (dg, db) = dgb.split_at_mut(d.c);
        batchnorm::backward(d, xh, &gb[..d.c], inv, dy, dg, db);
    }
    fn relu_forward(&mut self, x: Region) {
        let [x] = carve(self.arena, [x]);
        activation::relu_forward(x);
    }
    fn relu_backward(&mut self, y: Region, dy: Region) {
        let [y, dy] = carve(self.arena, [y, dy]);
        activation::relu_backward(y, dy);
    }
    fn add_assign(&mut self, y: Region, x: Region) {
        let [y, x] = carve(self.arena, [y, x]);
        activation::add_assign(y, x);
    }
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) {
        let [x, y] = carve(self.arena, [x, y]);
        pool::maxpool2_forward(d, x, y);
    }
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {
        let [x, dy, dx] = carve(self.arena, [x, dy, dx]);
        pool::maxpool2_backward(d, x, dy, dx);
    }
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {
        let [x, y] = carve(self.arena, [x, y]);
        pool::avgpool_forward(d, s, x, y);
    }
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {
        let [dy, dx] = carve(self.arena, [dy, dx]);
        pool::avgpool_backward(d, s, dy, dx);
    }
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        y: Region,
        _ws: Region,
    ) {
        let [x, wb, y] = carve(self.arena, [x, wb, y]);
        let (w, b) = wb.split_at(fin * fout);
        linear::forward(n, fin, fout, x, w, Some(b), y);
    }
    fn linear_backward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        dy: Region,
        dwb: Region,
        dx: Region,
        _ws: Region,
    ) {
        let [x, wb, dy, dwb, dx] = carve(self.arena, [x, wb, dy, dwb, dx]);
        let (dw, db) = dwb.split_at_mut(fin * fout);
        linear::backward(
            n,
            fin,
            fout,
            x,
            &wb[..fin * fout],
            dy,
            dw,
            Some(db),
            optional_mut(dx),
        );
    }
    fn softmax_xent(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
        _slot: usize,
    ) -> (f32, u32) {
        let [lg, lb, dl] = carve(self.arena, [logits, labels, dlogits]);
        loss::softmax_xent(n, classes, lg, lb, optional_mut(dl))
    }
    fn sgd(&mut self, opt: &Sgd, lr: f32, param: Region, grad: Region, mom: Region) {
        let [p, g, m] = carve(self.arena, [param, grad, mom]);
        opt.update(lr, p, g, m);
    }
}
