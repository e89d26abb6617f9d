//! A backend that runs no kernel: it checks that every region an operation names lies inside
//! the arena and that the regions of one operation do not overlap, and records the highest
//! element touched. Running a step over it proves a layout's bound without doing the
//! arithmetic, so tests can check plans at batch sizes too large to compute quickly.
use crate::backend::Backend;
use crate::ops::conv2d::ConvGeom;
use crate::ops::Nchw;
use crate::optim::Sgd;
use crate::region::Region;

/// A memory-checking backend over an arena of `len` elements.
#[derive(Clone, Debug, Default)]
pub struct DryRun {
    len: usize,
    /// One past the highest element any operation touched.
    pub high_water: usize,
    /// Number of operations run.
    pub ops: usize,
    /// The first violation seen, if any.
    pub violation: Option<Violation>,
}

/// A region an operation named that leaves the arena or overlaps another region of the same
/// operation: the error [`DryRun`] reports from [`Backend::sync`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The operation (`"conv_forward"`, `"copy"`, ...).
    pub op: &'static str,
    /// The offending region.
    pub region: Region,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let r = self.region;
        write!(
            f,
            "{} names elements {}..{}, which leave the arena or overlap another of its regions",
            self.op,
            r.offset,
            r.end()
        )
    }
}

impl core::error::Error for Violation {}

impl DryRun {
    /// A dry-run backend over an arena of `len` elements.
    pub fn new(len: usize) -> Self {
        DryRun {
            len,
            ..Default::default()
        }
    }

    fn touch<const N: usize>(&mut self, what: &'static str, rs: [Region; N]) {
        self.ops += 1;
        for (i, r) in rs.iter().enumerate() {
            if r.is_empty() {
                continue;
            }
            if r.end() > self.len && self.violation.is_none() {
                self.violation = Some(Violation {
                    op: what,
                    region: *r,
                });
            }
            self.high_water = self.high_water.max(r.end());
            for o in &rs[i + 1..] {
                if r.overlaps(o) && self.violation.is_none() {
                    self.violation = Some(Violation {
                        op: what,
                        region: *r,
                    });
                }
            }
        }
    }
}

impl Backend for DryRun {
    type Error = Violation;

    fn arena_len(&self) -> usize {
        self.len
    }
    /// Every element type: the dry run checks regions, which count elements of their type.
    fn stores(&self, _elem: crate::region::Elem) -> bool {
        true
    }
    fn write(&mut self, dst: Region, src: &[f32]) {
        assert_eq!(dst.len(), src.len(), "write length");
        self.touch("write", [dst]);
    }
    fn read(&mut self, src: Region, dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "read length");
        self.touch("read", [src]);
    }
    fn fill(&mut self, dst: Region, _: f32) {
        self.touch("fill", [dst]);
    }
    fn copy(&mut self, src: Region, dst: Region) {
        self.touch("copy", [src, dst]);
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        match self.violation {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }
    fn conv_forward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        b: Region,
        y: Region,
        cols: Region,
    ) {
        assert!(
            x.len() >= g.in_len() && y.len() >= g.out_len() && w.len() == g.weight_len(),
            "conv shapes"
        );
        self.touch("conv_forward", [x, w, b, y, cols]);
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
        assert!(
            dy.len() >= g.out_len() && dw.len() == g.weight_len(),
            "conv shapes"
        );
        assert!(dx.is_empty() || dx.len() >= g.in_len(), "conv dx shape");
        self.touch("conv_backward", [x, w, dy, dw, db, dx, cols]);
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
        assert!(
            x.len() >= d.len() && gb.len() == 2 * d.c && run.len() == 2 * d.c,
            "bn shapes"
        );
        self.touch("bn_forward_train", [x, gb, y, inv, run]);
    }
    fn bn_forward_eval(&mut self, d: &Nchw, x: Region, gb: Region, run: Region, y: Region) {
        assert!(x.len() >= d.len() && gb.len() == 2 * d.c, "bn shapes");
        self.touch("bn_forward_eval", [x, gb, run, y]);
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
        assert!(dy.len() >= d.len() && dgb.len() == 2 * d.c, "bn shapes");
        self.touch("bn_backward", [xhat, gb, inv, dy, dgb]);
    }
    fn relu_forward(&mut self, x: Region) {
        self.touch("relu_forward", [x]);
    }
    fn relu_backward(&mut self, y: Region, dy: Region) {
        self.touch("relu_backward", [y, dy]);
    }
    fn add_assign(&mut self, y: Region, x: Region) {
        self.touch("add_assign", [y, x]);
    }
    fn maxpool_forward(&mut self, _: &Nchw, x: Region, y: Region) {
        self.touch("maxpool_forward", [x, y]);
    }
    fn maxpool_backward(&mut self, _: &Nchw, x: Region, dy: Region, dx: Region) {
        self.touch("maxpool_backward", [x, dy, dx]);
    }
    fn avgpool_forward(&mut self, _: &Nchw, _: usize, x: Region, y: Region) {
        self.touch("avgpool_forward", [x, y]);
    }
    fn avgpool_backward(&mut self, _: &Nchw, _: usize, dy: Region, dx: Region) {
        self.touch("avgpool_backward", [dy, dx]);
    }
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &mut self,
        _: usize,
        _: usize,
        _: usize,
        x: Region,
        wb: Region,
        y: Region,
        ws: Region,
    ) {
        self.touch("linear_forward", [x, wb, y, ws]);
    }
    fn linear_backward(
        &mut self,
        _: usize,
        _: usize,
        _: usize,
        x: Region,
        wb: Region,
        dy: Region,
        dwb: Region,
        dx: Region,
        ws: Region,
    ) {
        self.touch("linear_backward", [x, wb, dy, dwb, dx, ws]);
    }
    fn softmax_xent(
        &mut self,
        _: usize,
        _: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
        _: usize,
    ) -> (f32, u32) {
        self.touch("softmax_xent", [logits, labels, dlogits]);
        (0.0, 0)
    }
    fn sgd(&mut self, _: &Sgd, _: f32, p: Region, g: Region, m: Region) {
        assert!(p.len() == g.len() && p.len() == m.len(), "sgd lengths");
        self.touch("sgd", [p, g, m]);
    }
}
