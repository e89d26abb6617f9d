//! Region alignment ([`PlanOptions::region_align`]): the default plans are byte for byte what
//! they were before the option existed, and an aligned plan starts every region on the
//! alignment, its padding counted in the planned bytes.
use nf_core::layout::{BlockLayout, Kernels, SegLayout, ELEM_BYTES, GEMM_ALIGN};
use nf_core::model::ModelSpec;
use nf_core::plan::{plan, Mode, Plan, PlanOptions};
use nf_core::region::Region;
use nf_core::zoo;

/// FNV-1a over a stream of numbers.
struct Fnv(u64);

impl Fnv {
    fn add(&mut self, v: usize) {
        for b in (v as u64).to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
    fn region(&mut self, r: Region) {
        self.add(r.offset);
        self.add(r.len());
    }
}

/// Every region of one segment.
fn segment_regions(s: &SegLayout) -> Vec<Region> {
    let mut v = Vec::new();
    for o in &s.ops[..s.n_ops] {
        v.extend([o.x, o.y, o.param, o.grad, o.mom, o.state]);
        v.extend(o.aux);
    }
    v.extend(s.grads);
    v.extend([s.cols, s.params, s.param_grads, s.moms]);
    v.push(Region::new(s.end, s.activations));
    v
}

/// Every region of a block's layout, its segments and its recompute chain.
fn plan_regions(p: &Plan) -> Vec<Region> {
    let mut v = Vec::new();
    for (i, b) in p.blocks().iter().enumerate() {
        v.push(Region::new(b.batch, b.bytes as usize));
        let l: BlockLayout = p.layout(i);
        v.extend([l.input, l.labels, l.grads, l.workspace]);
        v.extend(l.carry);
        v.extend(l.seg_params);
        v.extend(l.seg_moms);
        v.extend(l.seg_state);
        v.push(Region::new(l.scratch, l.floats));
        for k in 0..l.n_segments() {
            v.extend(segment_regions(&l.segment(k)));
        }
        if let Some(c) = p.chain(i) {
            v.extend([c.params, c.state, c.input, c.labels]);
            v.push(Region::new(c.start, c.floats));
            v.extend(segment_regions(&c.seg));
        }
    }
    v
}

/// The plans the fingerprints cover: (model, budget in MiB, mode, recompute).
const CASES: [(&ModelSpec, u64, Mode, bool); 6] = [
    (&zoo::VGG_SMALL, 32, Mode::NeuroFlux, false),
    (&zoo::VGG_SMALL, 32, Mode::Bp, false),
    (&zoo::VGG11, 256, Mode::NeuroFlux, true),
    (&zoo::VGG11, 256, Mode::Ll, false),
    (&zoo::RESNET18, 512, Mode::NeuroFlux, false),
    (&zoo::RESNET18, 512, Mode::Bp, false),
];

/// Peak bytes and the fingerprint of every region of each case's plan under the default
/// options, recorded from the planner before region alignment existed (commit 24579ff).
const BEFORE: [(u64, u64); 6] = [
    (33182952, 2531919862575145857),
    (30626232, 3283310741885874962),
    (266975176, 10097695723682830072),
    (261941960, 9594110297248239241),
    (522644680, 498533625401643561),
    (502329208, 4286561240057376477),
];

fn plan_of<'a>(
    m: &ModelSpec<'a>,
    mib: u64,
    mode: Mode,
    recompute: bool,
    o: &PlanOptions,
) -> Plan<'a> {
    let o = PlanOptions { recompute, ..*o };
    plan(m, m.input, 10, mib << 20, mode, &o).unwrap()
}

#[test]
fn default_plans_are_byte_identical_to_before_alignment() {
    let mut got = Vec::new();
    for (m, mib, mode, recompute) in CASES {
        let p = plan_of(m, mib, mode, recompute, &PlanOptions::DEFAULT);
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        for r in plan_regions(&p) {
            h.region(r);
        }
        got.push((p.peak_bytes(), h.0));
    }
    assert_eq!(got, BEFORE);
}

/// The regions of a layout that its allocator hands out (not the views inside them): where
/// every op reads and writes its activations, the gradient buffers, the workspace and every
/// segment's parameters, gradients and momentum.
fn allocated(p: &Plan) -> Vec<Region> {
    let mut v = Vec::new();
    let seg = |v: &mut Vec<Region>, s: &SegLayout| {
        for o in &s.ops[..s.n_ops] {
            v.extend([o.x, o.y]);
            v.extend(o.aux);
        }
        v.extend(s.grads);
        v.extend([s.cols, s.params, s.param_grads, s.moms]);
    };
    for i in 0..p.n_blocks {
        let l = p.layout(i);
        v.extend([l.input, l.labels, l.grads, l.workspace]);
        v.extend(l.carry);
        v.extend(l.seg_params);
        v.extend(l.seg_moms);
        v.extend(l.seg_state);
        for k in 0..l.n_segments() {
            seg(&mut v, &l.segment(k));
        }
        if let Some(c) = p.chain(i) {
            v.extend([c.params, c.state, c.input, c.labels]);
            seg(&mut v, &c.seg);
        }
    }
    v.retain(|r| !r.is_empty());
    v
}

#[test]
fn aligned_plans_start_every_region_on_the_alignment_and_count_the_padding() {
    let aligned = PlanOptions {
        region_align: GEMM_ALIGN,
        ..PlanOptions::DEFAULT
    };
    let a = GEMM_ALIGN / ELEM_BYTES as usize;
    for (m, mib, mode, recompute) in CASES {
        let p = plan_of(m, mib, mode, recompute, &aligned);
        let d = plan_of(m, mib, mode, recompute, &PlanOptions::DEFAULT);
        for r in allocated(&p) {
            assert_eq!(r.offset % a, 0, "{} {mode:?}: {r:?} not aligned", m.name);
        }
        for (i, b) in p.blocks().iter().enumerate() {
            let l = p.layout(i);
            // The padding is part of the planned bytes: the breakdown adds up to the arena.
            assert_eq!(b.breakdown.total() as u64 * ELEM_BYTES, b.bytes);
            assert!(b.bytes <= p.budget, "{}: block over the budget", m.name);
            assert!(l.breakdown.padding > 0, "{}: no padding", m.name);
            // At the same batch, the aligned block is the packed one plus its padding.
            let packed = BlockLayout::with_kernels(
                &l.model,
                l.input_shape,
                l.classes,
                l.mode,
                l.first,
                l.last,
                &l.heads,
                l.batch,
                &Kernels {
                    region_align: ELEM_BYTES as usize,
                    ..l.kernels
                },
            );
            assert_eq!(packed.breakdown.padding, 0);
            let mut without = l.breakdown;
            without.padding = 0;
            assert_eq!(without, packed.breakdown, "{}: the regions differ", m.name);
            assert_eq!(l.floats, packed.floats + l.breakdown.padding);
        }
        // Padding can only cost batch.
        assert!(p.peak_bytes() <= p.budget && d.peak_bytes() <= d.budget);
    }
}

#[test]
fn a_region_alignment_that_is_not_whole_elements_is_refused() {
    for region_align in [0, 2, 6] {
        let o = PlanOptions {
            region_align,
            ..PlanOptions::DEFAULT
        };
        let m = &zoo::VGG_SMALL;
        assert!(matches!(
            plan(m, m.input, 10, 32 << 20, Mode::Bp, &o),
            Err(nf_core::plan::PlanError::BadOptions(_))
        ));
    }
}
