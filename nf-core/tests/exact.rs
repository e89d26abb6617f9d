//! The memory model is exact, shown by the kernels themselves, element by element.
//!
//! A tracing backend runs every call of the step on the reference kernels twice: on the arena,
//! and on a copy in which every element outside the call's regions is poisoned with NaN. It
//! checks that the call wrote nothing outside its regions and that the poisoned copy gives the
//! same bits inside them (no kernel read outside its regions: the plan is not short). The arena
//! starts filled with a sentinel; after initialisation, the feed's writes, a training step, an
//! evaluation pass and the units-only pass, no element of the planned arena may still hold it
//! (every planned element is written by some kernel: the plan is not padded), except, in a plan
//! with aligned regions ([`PlanOptions::region_align`]), the alignment padding: runs of fewer
//! elements than the alignment, each ending where an aligned region starts, no more of them
//! than the plan counts.
use nf_core::backend::Backend;
use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, Kernels, SegMode, Workspace};
use nf_core::model::{conv3, ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::plan::{plan, Mode, PlanOptions};
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_core::step;
use nf_core::zoo;

mod common;

/// Bits of the "never written" sentinel (a NaN no kernel produces).
const UNTOUCHED: u32 = 0x7fa5_a5a5;
/// Bits of the poison outside a call's regions.
const POISON: u32 = 0x7fc0_dead;

struct Trace {
    arena: Vec<f32>,
    calls: usize,
}

impl Trace {
    fn new(len: usize) -> Self {
        Trace {
            arena: vec![f32::from_bits(UNTOUCHED); len],
            calls: 0,
        }
    }

    /// Run `f` on the arena and on a poisoned copy; check it stays inside `regions`.
    fn call<R: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        regions: &[Region],
        f: impl Fn(&mut ReferenceBackend) -> R,
    ) -> R {
        self.calls += 1;
        let mut mask = vec![false; self.arena.len()];
        for r in regions {
            mask[r.offset..r.end()].fill(true);
        }
        let inside = |i: usize| mask[i];
        let before = self.arena.clone();
        let mut poisoned: Vec<f32> = before
            .iter()
            .zip(&mask)
            .map(|(&v, &m)| if m { v } else { f32::from_bits(POISON) })
            .collect();
        let r = f(&mut ReferenceBackend::new(&mut self.arena));
        let rp = f(&mut ReferenceBackend::new(&mut poisoned));
        for (i, ((a, b), p)) in self.arena.iter().zip(&before).zip(&poisoned).enumerate() {
            if inside(i) {
                assert_eq!(
                    a.to_bits(),
                    p.to_bits(),
                    "{what}: element {i} depends on memory outside the call's regions {regions:?}"
                );
            } else {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{what}: element {i} written outside the call's regions {regions:?}"
                );
            }
        }
        assert_eq!(
            r, rp,
            "{what}: result depends on memory outside its regions"
        );
        r
    }

    /// Elements of `0..len` never written.
    fn untouched(&self, len: usize) -> Vec<usize> {
        (0..len)
            .filter(|&i| self.arena[i].to_bits() == UNTOUCHED)
            .collect()
    }
}

impl Backend for Trace {
    type Error = core::convert::Infallible;
    fn arena_len(&self) -> usize {
        self.arena.len()
    }
    fn write(&mut self, dst: Region, src: &[f32]) {
        self.call("write", &[dst], |b| b.write(dst, src));
    }
    fn read(&mut self, src: Region, dst: &mut [f32]) {
        let v = self.call("read", &[src], |b| {
            let mut v = vec![0.0; src.len()];
            b.read(src, &mut v);
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        });
        for (d, bits) in dst.iter_mut().zip(v) {
            *d = f32::from_bits(bits);
        }
    }
    fn fill(&mut self, dst: Region, value: f32) {
        self.call("fill", &[dst], |b| b.fill(dst, value));
    }
    fn copy(&mut self, src: Region, dst: Region) {
        self.call("copy", &[src, dst], |b| b.copy(src, dst));
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
        self.call("conv_forward", &[x, w, bias, y, cols], |b| {
            b.conv_forward(g, x, w, bias, y, cols)
        });
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
        self.call("conv_backward", &[x, w, dy, dw, db, dx, cols], |b| {
            b.conv_backward(g, x, w, dy, dw, db, dx, cols)
        });
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
        self.call("bn_forward_train", &[x, gb, y, inv, run], |b| {
            b.bn_forward_train(d, x, gb, y, inv, run)
        });
    }
    fn bn_forward_eval(&mut self, d: &Nchw, x: Region, gb: Region, run: Region, y: Region) {
        self.call("bn_forward_eval", &[x, gb, run, y], |b| {
            b.bn_forward_eval(d, x, gb, run, y)
        });
    }
    fn bn_backward(
        &mut self,
        d: &Nchw,
        xh: Region,
        gb: Region,
        inv: Region,
        dy: Region,
        dgb: Region,
    ) {
        self.call("bn_backward", &[xh, gb, inv, dy, dgb], |b| {
            b.bn_backward(d, xh, gb, inv, dy, dgb)
        });
    }
    fn relu_forward(&mut self, x: Region) {
        self.call("relu_forward", &[x], |b| b.relu_forward(x));
    }
    fn relu_backward(&mut self, y: Region, dy: Region) {
        self.call("relu_backward", &[y, dy], |b| b.relu_backward(y, dy));
    }
    fn add_assign(&mut self, y: Region, x: Region) {
        self.call("add_assign", &[y, x], |b| b.add_assign(y, x));
    }
    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) {
        self.call("maxpool_forward", &[x, y], |b| b.maxpool_forward(d, x, y));
    }
    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {
        self.call("maxpool_backward", &[x, dy, dx], |b| {
            b.maxpool_backward(d, x, dy, dx)
        });
    }
    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {
        self.call("avgpool_forward", &[x, y], |b| {
            b.avgpool_forward(d, s, x, y)
        });
    }
    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {
        self.call("avgpool_backward", &[dy, dx], |b| {
            b.avgpool_backward(d, s, dy, dx)
        });
    }
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
        self.call("linear_forward", &[x, wb, y, ws], |b| {
            b.linear_forward(n, fin, fout, x, wb, y, ws)
        });
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
        self.call("linear_backward", &[x, wb, dy, dwb, dx, ws], |b| {
            b.linear_backward(n, fin, fout, x, wb, dy, dwb, dx, ws)
        });
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
        let (l, c) = self.call("softmax_xent", &[logits, labels, dlogits], |b| {
            let (l, c) = b.softmax_xent(n, classes, logits, labels, dlogits, slot);
            (l.to_bits(), c)
        });
        (f32::from_bits(l), c)
    }
    fn sgd(&mut self, opt: &Sgd, lr: f32, param: Region, grad: Region, mom: Region) {
        self.call("sgd", &[param, grad, mom], |b| {
            b.sgd(opt, lr, param, grad, mom)
        });
    }
}

/// Write a batch of `n` inputs and labels the way a feed does.
fn feed(
    be: &mut Trace,
    input: Region,
    labels: Region,
    per: usize,
    classes: usize,
    n: usize,
    rng: &mut Rng,
) {
    let x: Vec<f32> = (0..n * per).map(|_| rng.normal()).collect();
    be.write(input.prefix(n * per), &x);
    if !labels.is_empty() {
        let y: Vec<f32> = (0..n).map(|_| rng.below(classes as u32) as f32).collect();
        be.write(labels.prefix(n), &y);
    }
}

/// Train, evaluate and propagate one block at its full batch; then every planned element must
/// have been written and no call may have left its regions.
fn check_block(name: &str, l: &BlockLayout) {
    let mut be = Trace::new(l.floats);
    let mut rng = Rng::new(7);
    step::init_block(&mut be, l, &mut rng).unwrap();
    let per = l.model.unit_input(l.input_shape, l.first).len();
    feed(
        &mut be, l.input, l.labels, per, l.classes, l.batch, &mut rng,
    );
    step::train_step(&mut be, l, l.batch, &Sgd::default(), 0.05, &mut []).unwrap();
    step::eval_step(&mut be, l, l.batch, &mut []).unwrap();
    step::infer_step(&mut be, l, l.batch).unwrap();
    let missed = be.untouched(l.floats);
    let missed = only_padding(&missed, l.kernels.align_elems(), l.breakdown.padding);
    assert!(
        missed.is_empty(),
        "{name} units {}-{} ({:?}, batch {}): {} of {} planned elements never written, first at {}",
        l.first,
        l.last,
        l.mode,
        l.batch,
        missed.len(),
        l.floats,
        missed[0]
    );
    // A smaller batch stays inside the same regions.
    let n = l.batch.div_ceil(2);
    feed(&mut be, l.input, l.labels, per, l.classes, n, &mut rng);
    step::train_step(&mut be, l, n, &Sgd::default(), 0.05, &mut []).unwrap();
}

/// The elements of `missed` (sorted) that are not alignment padding: with an alignment of
/// `align` elements, a run of untouched elements is padding when it is shorter than `align`
/// and ends on a multiple of it (where the next region starts); at most `padding` of them.
fn only_padding(missed: &[usize], align: usize, padding: usize) -> Vec<usize> {
    if align == 1 {
        return missed.to_vec();
    }
    let mut bad = Vec::new();
    let mut pad = 0;
    let mut i = 0;
    while i < missed.len() {
        let mut j = i + 1;
        while j < missed.len() && missed[j] == missed[j - 1] + 1 {
            j += 1;
        }
        let end = missed[j - 1] + 1;
        if j - i < align && end.is_multiple_of(align) {
            pad += j - i;
        } else {
            bad.extend_from_slice(&missed[i..j]);
        }
        i = j;
    }
    assert!(
        pad <= padding,
        "{pad} elements of padding untouched, the plan counts {padding}"
    );
    bad
}

/// The same for a forward-only chain placed after `start` elements of something else, its
/// regions aligned to `align` elements.
fn check_chain(name: &str, c: &InferLayout, align: usize) {
    let mut be = Trace::new(c.floats);
    let mut rng = Rng::new(3);
    // Weights: any values (the frozen units' own in a run).
    let w: Vec<f32> = (0..c.params.len()).map(|_| rng.normal() * 0.1).collect();
    be.write(c.params, &w);
    let st: Vec<f32> = (0..c.state.len())
        .map(|i| if i % 2 == 0 { 0.1 } else { 1.2 })
        .collect();
    be.write(c.state, &st);
    feed(
        &mut be,
        c.input,
        c.labels,
        c.input_shape.len(),
        c.classes,
        c.batch,
        &mut rng,
    );
    step::infer(&mut be, c, c.batch).unwrap();
    let missed: Vec<usize> = be
        .untouched(c.floats)
        .into_iter()
        .filter(|&i| i >= c.start)
        .collect();
    let missed = only_padding(&missed, align, c.len());
    assert!(
        missed.is_empty(),
        "{name} chain 0..={} (scored {}, batch {}): {} of {} planned elements never written, first at {}",
        c.last,
        c.scored,
        c.batch,
        missed.len(),
        c.len(),
        missed[0]
    );
}

const TINY_VGG: ModelSpec = ModelSpec {
    name: "tiny-vgg",
    about: "test",
    input: Shape::new(3, 12, 12),
    units: &[
        &[conv3(4), Op::BatchNorm, Op::Relu, Op::MaxPool2],
        &[
            Op::Conv {
                out: 8,
                k: 1,
                stride: 1,
                pad: 0,
                bias: true,
            },
            Op::BatchNorm,
            Op::Relu,
        ],
        &[
            Op::Conv {
                out: 8,
                k: 3,
                stride: 2,
                pad: 1,
                bias: false,
            },
            Op::BatchNorm,
            Op::Relu,
        ],
        &[conv3(6), Op::BatchNorm, Op::Relu],
    ],
    head_pool: 0,
};

const TINY_RESNET: ModelSpec = ModelSpec {
    name: "tiny-resnet",
    about: "test",
    input: Shape::new(3, 8, 8),
    units: &[
        &[conv3(4), Op::BatchNorm, Op::Relu],
        &[Op::BasicBlock { out: 4, stride: 1 }],
        &[Op::BasicBlock { out: 8, stride: 2 }],
        &[Op::BasicBlock { out: 8, stride: 1 }],
    ],
    head_pool: 0,
};

fn heads(m: &ModelSpec, f: usize) -> [usize; MAX_UNITS] {
    let mut h = [0; MAX_UNITS];
    for v in h.iter_mut().take(m.units.len() - 1) {
        *v = f;
    }
    h
}

#[test]
fn every_planned_element_is_used_and_no_kernel_leaves_its_regions() {
    for m in [&TINY_VGG, &TINY_RESNET] {
        let h = heads(m, 4);
        let n = m.units.len();
        for mode in [SegMode::Local, SegMode::Global] {
            for (first, last) in [(0, n - 1), (0, 0), (1, 2), (n - 1, n - 1)] {
                for batch in [1, 3] {
                    let l = BlockLayout::new(m, m.input, 5, mode, first, last, &h, batch);
                    check_block(m.name, &l);
                }
            }
        }
        for last in 0..n {
            for scored in [false, true] {
                for start in [0, 17] {
                    let c = InferLayout::new(
                        m,
                        m.input,
                        5,
                        &h,
                        last,
                        scored,
                        2,
                        start,
                        &Kernels::REFERENCE,
                        Region::NONE,
                    );
                    check_chain(m.name, &c, 1);
                }
            }
        }
    }
}

/// Plans of `m` (batches 1 to 2) in every mode, with and without recomputation (its chain
/// after the block or over its scratch): no kernel of a block or of its forward-only chain
/// leaves its regions and every planned element is used.
fn check_plans_are_exact(m: &ModelSpec, classes: usize) {
    check_plans_are_exact_aligned(m, classes, PlanOptions::DEFAULT.region_align);
}

/// [`check_plans_are_exact`] with regions aligned to `align` bytes.
fn check_plans_are_exact_aligned(m: &ModelSpec, classes: usize, align: usize) {
    for mode in [Mode::NeuroFlux, Mode::Ll, Mode::Bp] {
        for (recompute, chain_in_scratch) in [(false, false), (true, false), (true, true)] {
            let o = PlanOptions {
                b_min: 1,
                b_max: 2,
                recompute,
                chain_in_scratch,
                region_align: align,
                ..PlanOptions::DEFAULT
            };
            let p = plan(m, m.input, classes, 1 << 30, mode, &o).unwrap();
            for i in 0..p.n_blocks {
                let l = p.layout(i);
                check_block(m.name, &l);
                if let Some(c) = p.chain(i) {
                    check_chain(m.name, &c, align / 4);
                    if chain_in_scratch {
                        assert_eq!(c.start, l.scratch);
                        assert_eq!(c.floats.max(l.floats) as u64 * 4, p.blocks[i].bytes);
                    } else {
                        assert_eq!(c.start, l.floats);
                        assert_eq!(c.floats as u64 * 4, p.blocks[i].bytes);
                    }
                    assert_eq!(
                        l.floats + p.blocks[i].breakdown.recompute,
                        c.floats.max(l.floats)
                    );
                }
            }
        }
    }
}

#[test]
fn zoo_plans_are_exact_for_the_reference_kernels() {
    // The small VGG at its real size.
    check_plans_are_exact(&zoo::VGG_SMALL, 10);
}

/// With regions aligned for a GPU's GEMMs, the same holds but for the alignment padding,
/// which no kernel touches and the plan counts.
#[test]
fn aligned_plans_are_exact_but_for_their_padding() {
    check_plans_are_exact_aligned(&zoo::VGG_SMALL, 10, nf_core::layout::GEMM_ALIGN);
    let mut rng = nf_core::rng::Rng::new(1616);
    for _ in 0..4 {
        let m = common::random_model(&mut rng, "random");
        check_plans_are_exact_aligned(&m, common::CLASSES, nf_core::layout::GEMM_ALIGN);
    }
}

/// Seeded random architectures (see `common`).
#[test]
fn random_architectures_are_exact_for_the_reference_kernels() {
    let mut rng = nf_core::rng::Rng::new(1515);
    let (mut free, mut wide) = (0, 0);
    for _ in 0..16 {
        let m = common::random_model(&mut rng, "random");
        free += usize::from(common::has_parameter_free_unit(&m));
        wide += usize::from(common::has_wide_kernel(&m));
        check_plans_are_exact(&m, common::CLASSES);
    }
    // The draw covers units without parameters and kernels wider than their input.
    assert!(free > 0 && wide > 0, "{free} / {wide} of 16 models");
}

#[test]
fn fixed_workspace_is_exactly_the_given_size() {
    let k = Kernels {
        workers: 3,
        workspace: Workspace::Fixed(1234),
        ..Kernels::REFERENCE
    };
    let h = heads(&TINY_VGG, 4);
    let l = BlockLayout::with_kernels(
        &TINY_VGG,
        TINY_VGG.input,
        5,
        SegMode::Local,
        0,
        3,
        &h,
        4,
        &k,
    );
    // One region, shared by every segment, before their scratch.
    assert_eq!(l.workspace.len(), 1234);
    assert!(l.workspace.end() <= l.scratch);
    for s in 0..l.n_segments() {
        assert_eq!(l.segment(s).cols, l.workspace);
    }
    assert_eq!(l.breakdown.workspace, 1234);
    let c = InferLayout::new(
        &TINY_VGG,
        TINY_VGG.input,
        5,
        &h,
        2,
        true,
        4,
        0,
        &k,
        Region::NONE,
    );
    assert_eq!(c.seg.cols.len(), 1234);
}
