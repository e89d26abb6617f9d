//! A [`Backend`] wrapper that times every call of the backend it wraps, keyed by operation and
//! shape: where a training step's time goes, op by op (`train_steps --profile`). Host kernels
//! return when their work is done, so wall time per call is the op's cost.
use std::collections::HashMap;
use std::time::Instant;

use nf_core::backend::Backend;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::region::Region;

/// `inner` with a stopwatch per (operation, shape), or a plain pass-through.
pub struct Timed<B> {
    /// The backend doing the work.
    pub inner: B,
    /// Seconds and calls per key; `None` when not timing (no clock reads, no keys built).
    pub times: Option<HashMap<String, (f64, usize)>>,
    /// The clock, in seconds: wall time unless [`Timed::with_clock`] set another.
    pub clock: fn() -> f64,
}

/// Seconds of wall time since the first call.
fn wall() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

impl<B> Timed<B> {
    /// Wrap `inner`, timing its calls when `on`.
    pub fn new(inner: B, on: bool) -> Self {
        Timed {
            inner,
            times: on.then(HashMap::new),
            clock: wall,
        }
    }

    /// The same, timing with `clock` (seconds; e.g. the thread's CPU time).
    #[allow(dead_code)] // used by some of the benches that include this module
    pub fn with_clock(self, clock: fn() -> f64) -> Self {
        Timed { clock, ..self }
    }

    fn time<R>(&mut self, key: impl FnOnce() -> String, f: impl FnOnce(&mut B) -> R) -> R {
        let Some(times) = self.times.as_mut() else {
            return f(&mut self.inner);
        };
        let t = (self.clock)();
        let r = f(&mut self.inner);
        let e = times.entry(key()).or_default();
        e.0 += (self.clock)() - t;
        e.1 += 1;
        r
    }

    /// The timings, most expensive first: (key, seconds, calls).
    pub fn report(&self) -> Vec<(String, f64, usize)> {
        let mut v: Vec<_> = self
            .times
            .iter()
            .flatten()
            .map(|(k, &(s, n))| (k.clone(), s, n))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

fn conv(g: &ConvGeom) -> String {
    format!("{}x{}x{} -> {}", g.c_in, g.h, g.w, g.c_out)
}

fn nchw(d: &Nchw) -> String {
    format!("{}x{}x{}", d.c, d.h, d.w)
}

impl<B: Backend> Backend for Timed<B> {
    type Error = B::Error;
    fn arena_len(&self) -> usize {
        self.inner.arena_len()
    }
    fn stores(&self, elem: nf_core::region::Elem) -> bool {
        self.inner.stores(elem)
    }
    fn write(&mut self, dst: Region, src: &[f32]) {
        self.time(|| "write".into(), |b| b.write(dst, src))
    }
    fn read(&mut self, src: Region, dst: &mut [f32]) {
        self.time(|| "read".into(), |b| b.read(src, dst))
    }
    fn fill(&mut self, dst: Region, value: f32) {
        self.time(|| "fill".into(), |b| b.fill(dst, value))
    }
    fn copy(&mut self, src: Region, dst: Region) {
        self.time(|| "copy".into(), |b| b.copy(src, dst))
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        self.inner.sync()
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
        self.time(
            || format!("conv fwd {}", conv(g)),
            |b| b.conv_forward(g, x, w, bias, y, cols),
        )
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
        let with_dx = if dx.is_empty() { "dW" } else { "dW+dX" };
        self.time(
            || format!("conv bwd {} ({with_dx})", conv(g)),
            |b| b.conv_backward(g, x, w, dy, dw, db, dx, cols),
        )
    }
    fn bn_forward_train(
        &mut self,
        d: &Nchw,
        x: Region,
        gb: Region,
        y: Region,
        inv: Region,
        run: Region,
    ) {
        self.time(
            || format!("bn fwd {}", nchw(d)),
            |b| b.bn_forward_train(d, x, gb, y, inv, run),
        )
    }
    fn bn_forward_eval(&mut self, d: &Nchw, x: Region, gb: Region, run: Region, y: Region) {
        self.time(
            || format!("bn eval {}", nchw(d)),
            |b| b.bn_forward_eval(d, x, gb, run, y),
        )
    }
    fn bn_backward(
        &mut self,
        d: &Nchw,
        xhat: Region,
        gb: Region,
        inv: Region,
        dy: Region,
        dgb: Region,
    ) {
        self.time(
            || format!("bn bwd {}", nchw(d)),
            |b| b.bn_backward(d, xhat, gb, inv, dy, dgb),
        )
    }
    fn relu_forward(&mut self, x: Region) {
        self.time(|| "relu fwd".into(), |b| b.relu_forward(x))
    }
    fn relu_backward(&mut self, y: Region, dy: Region) {
        self.time(|| "relu bwd".into(), |b| b.relu_backward(y, dy))
    }
    fn add_assign(&mut self, y: Region, x: Region) {
        self.time(|| "add".into(), |b| b.add_assign(y, x))
    }
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) {
        self.time(
            || format!("maxpool fwd {}", nchw(d)),
            |b| b.maxpool_forward(d, x, y),
        )
    }
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {
        self.time(
            || format!("maxpool bwd {}", nchw(d)),
            |b| b.maxpool_backward(d, x, dy, dx),
        )
    }
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {
        self.time(
            || format!("avgpool fwd {}", nchw(d)),
            |b| b.avgpool_forward(d, s, x, y),
        )
    }
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {
        self.time(
            || format!("avgpool bwd {}", nchw(d)),
            |b| b.avgpool_backward(d, s, dy, dx),
        )
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
        ws: Region,
    ) {
        self.time(
            || format!("linear fwd {fin} -> {fout}"),
            |b| b.linear_forward(n, fin, fout, x, wb, y, ws),
        )
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
        ws: Region,
    ) {
        self.time(
            || format!("linear bwd {fin} -> {fout}"),
            |b| b.linear_backward(n, fin, fout, x, wb, dy, dwb, dx, ws),
        )
    }
    fn softmax_xent(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
        slot: usize,
    ) -> (f32, u32) {
        self.time(
            || "softmax-xent".into(),
            |b| b.softmax_xent(n, classes, logits, labels, dlogits, slot),
        )
    }
    fn defers_scores(&self) -> bool {
        self.inner.defers_scores()
    }
    fn take_scores(&mut self, out: &mut [(f32, u32)]) {
        self.inner.take_scores(out)
    }
    fn sgd(&mut self, opt: &Sgd, lr: f32, param: Region, grad: Region, mom: Region) {
        self.time(|| "sgd".into(), |b| b.sgd(opt, lr, param, grad, mom))
    }
}
