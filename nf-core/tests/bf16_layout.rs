//! Element sizes in the memory model ([`PlanOptions::precision`]): a bf16 layout is the f32
//! layout of the same block with every region sized by its element type.
//!
//! For each region of a block (its persistent areas, every segment's activations, gradient
//! buffers and workspace) the f32 layout gives the element count; the bf16 layout must make
//! the region exactly [`Elem::words`] of it for the element type its kind has under
//! [`Precision::Bf16`], start it on the plan's alignment, keep it inside the arena, and keep
//! apart every two regions live at the same time (the block's persistent areas and one
//! segment's scratch). The same checks pass on the f32 layout, so they are not vacuous.
//! A backend that stores only f32 (the reference) is refused such a layout by the step.
use nf_core::layout::{BlockLayout, Kernels, Precision, RegionKind, SegLayout, SegMode, Workspace};
use nf_core::model::{ModelSpec, Op, MAX_UNITS};
use nf_core::plan::{plan, Mode, PlanError, PlanOptions};
use nf_core::region::{Elem, Region};
use nf_core::zoo;

mod common;

/// A region of the bf16 layout, the same region of the f32 layout, and its kind.
type Pair = (Region, Region, RegionKind);

/// The regions of segment `k` of both layouts with their kinds (ops' inputs and outputs,
/// kept tensors, gradient buffers and, for [`Workspace::Columns`] with one worker, the
/// columns), and, apart, the op outputs that alias their input.
fn segment_pairs(l16: &BlockLayout, l32: &BlockLayout, k: usize) -> Vec<Pair> {
    let (s16, s32): (SegLayout, SegLayout) = (l16.segment(k), l32.segment(k));
    let carry = |r: Region| {
        l16.carry
            .iter()
            .any(|c| !c.is_empty() && c.offset == r.offset)
    };
    let mut v = Vec::new();
    for i in 0..s16.n_ops {
        let (a, b) = (&s16.ops[i], &s32.ops[i]);
        let x_kind = if i > 0 {
            None
        } else if k == 0 || l16.mode == SegMode::Global {
            Some(RegionKind::Input)
        } else {
            Some(RegionKind::Carry)
        };
        if let Some(kind) = x_kind {
            v.push((a.x, b.x, kind));
        }
        let y_kind = if a.y == a.x {
            None
        } else if carry(a.y) {
            Some(RegionKind::Carry)
        } else if i + 1 == s16.n_ops {
            Some(RegionKind::Logits)
        } else {
            Some(RegionKind::Activations)
        };
        if let Some(kind) = y_kind {
            v.push((a.y, b.y, kind));
        }
        for j in 0..8 {
            let stats = match a.op {
                Op::BatchNorm => j == 0,
                Op::BasicBlock { .. } => matches!(j, 1 | 4 | 6),
                _ => false,
            };
            let kind = if stats {
                RegionKind::BnStats
            } else {
                RegionKind::Activations
            };
            v.push((a.aux[j], b.aux[j], kind));
        }
    }
    for j in 0..3 {
        v.push((s16.grads[j], s32.grads[j], RegionKind::ActGrads));
    }
    if l16.kernels.workspace == Workspace::Columns && l16.kernels.workers == 1 {
        v.push((s16.cols, s32.cols, RegionKind::Columns));
    }
    v
}

/// The block's persistent regions of both layouts with their kinds.
fn block_pairs(l16: &BlockLayout, l32: &BlockLayout) -> Vec<Pair> {
    let mut v = vec![
        (l16.input, l32.input, RegionKind::Input),
        (l16.labels, l32.labels, RegionKind::Labels),
        (l16.carry[0], l32.carry[0], RegionKind::Carry),
        (l16.carry[1], l32.carry[1], RegionKind::Carry),
        (l16.grads, l32.grads, RegionKind::Grads),
    ];
    for k in 0..MAX_UNITS {
        v.push((l16.seg_params[k], l32.seg_params[k], RegionKind::Params));
        v.push((l16.seg_moms[k], l32.seg_moms[k], RegionKind::Momentum));
        v.push((l16.seg_state[k], l32.seg_state[k], RegionKind::BnState));
    }
    v
}

/// Whether `r` lies inside `outer`.
fn inside(r: &Region, outer: &Region) -> bool {
    r.offset >= outer.offset && r.end() <= outer.end()
}

/// Check the layout `l` (of `p`) against the f32 layout `l32` of the same block.
fn check(name: &str, p: Precision, l: &BlockLayout, l32: &BlockLayout) {
    let align = l.kernels.align_elems();
    let blk = block_pairs(l, l32);
    for k in 0..l.n_segments() {
        let seg = segment_pairs(l, l32, k);
        // Sizes: the f32 layout's element count times the element size, in whole words.
        for (r, r32, kind) in blk.iter().chain(&seg) {
            // The columns are a workspace of words (bf16 columns, then f32 partial sums).
            if *kind != RegionKind::Columns {
                assert_eq!(r.len(), r32.len(), "{name}: {} elements", kind.name());
            }
            if !r.is_empty() && *kind != RegionKind::Columns {
                assert_eq!(
                    r.elem(),
                    p.elem(*kind),
                    "{name}: {} element type",
                    kind.name()
                );
            }
            assert_eq!(
                r.words(),
                p.words(*kind, r32.len()),
                "{name}: {} of {} elements",
                kind.name(),
                r32.len()
            );
            assert!(r.end() <= l.floats, "{name}: {r:?} past the arena");
            assert!(
                r.is_empty() || r.offset % align == 0,
                "{name}: {r:?} unaligned"
            );
        }
        // Live at once: the persistent regions and this segment's scratch. A segment's
        // input and output lie in the input or a carry buffer; the rest must not overlap.
        let mut live: Vec<Region> = blk.iter().map(|t| t.0).filter(|r| !r.is_empty()).collect();
        live.push(l.workspace);
        for (r, _, kind) in &seg {
            if r.is_empty() {
                continue;
            }
            match kind {
                RegionKind::Input | RegionKind::Carry => assert!(
                    blk.iter().any(|(b, _, _)| inside(r, b)),
                    "{name}: segment {k} input/output {r:?} outside the io"
                ),
                _ if !live.contains(r) => {
                    assert!(r.offset >= l.scratch, "{name}: {r:?} before the scratch");
                    live.push(*r);
                }
                _ => {}
            }
        }
        live.retain(|r| !r.is_empty());
        for (i, a) in live.iter().enumerate() {
            for b in &live[i + 1..] {
                assert!(
                    !a.overlaps(b),
                    "{name}: segment {k}: {a:?} and {b:?} overlap"
                );
            }
        }
    }
    // Persistent f32 areas keep their size; the arena is never larger than in f32.
    assert_eq!(l.breakdown.params, l32.breakdown.params, "{name}");
    assert_eq!(l.breakdown.optimizer, l32.breakdown.optimizer, "{name}");
    assert_eq!(l.breakdown.bn_state, l32.breakdown.bn_state, "{name}");
    assert!(l.floats <= l32.floats, "{name}");
}

/// Both precisions of block `first..=last` of `m`, checked.
#[allow(clippy::too_many_arguments)]
fn check_block<'m>(
    m: &ModelSpec<'m>,
    mode: SegMode,
    first: usize,
    last: usize,
    heads: &[usize; MAX_UNITS],
    batch: usize,
    kernels: Kernels,
) -> (BlockLayout<'m>, BlockLayout<'m>) {
    let at = |precision| {
        let k = Kernels {
            precision,
            ..kernels
        };
        BlockLayout::with_kernels(m, m.input, 10, mode, first, last, heads, batch, &k)
    };
    let (l32, l16) = (at(Precision::F32), at(Precision::Bf16));
    let name = format!("{} {mode:?} {first}..={last} b{batch} {kernels:?}", m.name);
    check(&name, Precision::F32, &l32, &l32);
    check(&name, Precision::Bf16, &l16, &l32);
    (l32, l16)
}

fn heads(m: &ModelSpec, f: usize) -> [usize; MAX_UNITS] {
    let mut h = [0; MAX_UNITS];
    h[..m.units.len() - 1].fill(f);
    h
}

#[test]
fn bf16_regions_are_their_elements_times_two_bytes_aligned_inside_and_apart() {
    let mut rng = nf_core::rng::Rng::new(2828);
    let mut models: Vec<ModelSpec> = vec![zoo::VGG_SMALL, zoo::VGG11, zoo::RESNET18];
    models.extend((0..8).map(|_| common::random_model(&mut rng, "random")));
    for m in &models {
        let h = heads(m, 12);
        let n = m.units.len();
        for align in [4, nf_core::layout::GEMM_ALIGN] {
            let k = Kernels {
                region_align: align,
                ..Kernels::REFERENCE
            };
            for mode in [SegMode::Local, SegMode::Global] {
                for (first, last) in [(0, n - 1), (0, 0), (n / 2, n - 1)] {
                    for batch in [1, 3, 8] {
                        let (l32, l16) = check_block(m, mode, first, last, &h, batch, k);
                        if align == 4 && batch == 8 && first == 0 {
                            // Activations dominate: bf16 saves at least a quarter of them.
                            assert!(
                                l16.breakdown.activations * 4 <= l32.breakdown.activations * 3,
                                "{}: {:?} vs {:?}",
                                m.name,
                                l16.breakdown,
                                l32.breakdown
                            );
                        }
                    }
                }
            }
        }
        // Two workers' partial sums stay f32, so the workspace halves less than its columns.
        let two = Kernels {
            workers: 2,
            ..Kernels::REFERENCE
        };
        check_block(m, SegMode::Local, 0, n - 1, &h, 4, two);
        // A backend's fixed workspace is the size it asked for, in both precisions.
        let fixed = Kernels {
            workspace: Workspace::Fixed(999),
            ..Kernels::REFERENCE
        };
        let (_, l16) = check_block(m, SegMode::Global, 0, n - 1, &h, 4, fixed);
        assert_eq!(l16.workspace.len(), 999);
    }
}

#[test]
fn default_precision_is_f32_and_plans_as_before() {
    assert_eq!(PlanOptions::DEFAULT.precision, Precision::F32);
    assert_eq!(Kernels::REFERENCE.precision, Precision::F32);
    for kind in RegionKind::ALL {
        assert_eq!(Precision::F32.elem(kind), Elem::F32);
    }
    // Master weights, their momentum and gradients, BN statistics, labels, logits and
    // partial sums stay f32 under bf16.
    for kind in [
        RegionKind::Params,
        RegionKind::Momentum,
        RegionKind::Grads,
        RegionKind::BnState,
        RegionKind::BnStats,
        RegionKind::Labels,
        RegionKind::Logits,
        RegionKind::Partials,
    ] {
        assert_eq!(Precision::Bf16.elem(kind), Elem::F32, "{}", kind.name());
    }
}

/// The smallest budget that plans `m` in `mode` at `precision`.
fn smallest(m: &ModelSpec, mode: Mode, precision: Precision) -> u64 {
    let o = PlanOptions {
        precision,
        ..PlanOptions::DEFAULT
    };
    match plan(m, m.input, 10, 0, mode, &o) {
        Err(PlanError::BudgetTooSmall { needed }) => {
            let p = plan(m, m.input, 10, needed, mode, &o).expect("the budget it asked for");
            assert!(p.peak_bytes() <= needed);
            assert!(plan(m, m.input, 10, needed - 1, mode, &o).is_err());
            needed
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bf16_plans_need_smaller_budgets_and_get_larger_batches() {
    for (m, mode) in [
        (&zoo::VGG_SMALL, Mode::NeuroFlux),
        (&zoo::VGG_SMALL, Mode::Bp),
    ] {
        let (f, b) = (
            smallest(m, mode, Precision::F32),
            smallest(m, mode, Precision::Bf16),
        );
        assert!(b < f, "{} {mode:?}: {b} vs {f}", m.name);
        let o = |precision| PlanOptions {
            precision,
            ..PlanOptions::DEFAULT
        };
        let budget = 8 << 20;
        let p32 = plan(m, m.input, 10, budget, mode, &o(Precision::F32)).unwrap();
        let p16 = plan(m, m.input, 10, budget, mode, &o(Precision::Bf16)).unwrap();
        assert!(p16.peak_bytes() <= budget);
        assert!(p16.blocks()[0].batch >= p32.blocks()[0].batch);
    }
}

#[test]
#[should_panic(expected = "backend that stores only f32")]
fn the_step_refuses_a_bf16_layout_on_a_backend_that_stores_only_f32() {
    let m = &zoo::VGG_SMALL;
    let o = PlanOptions {
        precision: Precision::Bf16,
        ..PlanOptions::DEFAULT
    };
    let p = plan(m, m.input, 10, 8 << 20, Mode::NeuroFlux, &o).unwrap();
    let l = p.layout(0);
    let mut arena = vec![0.0f32; l.floats];
    let mut be = nf_core::reference::ReferenceBackend::new(&mut arena);
    let _ = nf_core::step::init_block(&mut be, &l, &mut nf_core::rng::Rng::new(1));
}

/// The step over a bf16 layout stays inside an arena of exactly the planned words, uses all
/// of them, and every region it hands a kernel is within the arena ([`DryRun`]), for the zoo
/// in every mode: the layout is executable, not only a count.
#[test]
fn steps_over_bf16_layouts_use_exactly_the_planned_words() {
    use nf_core::dryrun::DryRun;
    use nf_core::optim::Sgd;
    use nf_core::step;
    let o = PlanOptions {
        precision: Precision::Bf16,
        ..PlanOptions::DEFAULT
    };
    for m in zoo::ALL {
        for mode in [Mode::NeuroFlux, Mode::Ll, Mode::Bp] {
            let p = plan(m, m.input, 10, 1 << 30, mode, &o).unwrap();
            for i in 0..p.n_blocks {
                let l = p.layout(i);
                assert_eq!(l.kernels.precision, Precision::Bf16);
                let mut be = DryRun::new(l.floats);
                let mut rng = nf_core::rng::Rng::new(1);
                step::init_block(&mut be, &l, &mut rng).unwrap();
                step::train_step(&mut be, &l, l.batch, &Sgd::default(), 0.1, &mut []).unwrap();
                step::eval_step(&mut be, &l, l.batch, &mut []).unwrap();
                assert_eq!(be.high_water, l.floats, "{} {mode:?} block {i}", m.name);
                let mut short = DryRun::new(l.floats - 1);
                assert!(step::init_block(&mut short, &l, &mut rng).is_err());
            }
        }
    }
}
