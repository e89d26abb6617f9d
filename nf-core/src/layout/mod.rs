//! The memory model: where every buffer of a block's training step lives in the arena.
//!
//! A [`BlockLayout`] places, for one block of consecutive units at batch size `b`:
//!
//! | area | contents | lifetime |
//! |---|---|---|
//! | params, momentum, BN state | trainable weights of every unit and head of the block, their SGD momentum, BN running statistics | whole block |
//! | grads | parameter gradients of *one* segment (segments update right after their backward, so they share it) | one segment |
//! | io | the input batch and its labels, two ping-pong buffers carrying a unit's output to the next unit | one step |
//! | scratch | the activations a segment keeps for its backward, the gradient buffers, the kernel workspace | one segment |
//!
//! A *segment* is what runs forward then backward as one chain: in local learning a unit and its
//! head (or, for the model's last unit, the model's classifier); in backpropagation all units and
//! the classifier. Segments run one after another, so the scratch is the maximum over segments,
//! not the sum. [`BlockLayout::floats`] is therefore the exact size of the CPU arena, and the
//! step ([`crate::step`]) touches no byte outside it. Every function here is `const`. A
//! segment's own buffers are placed by the `segment` submodule ([`SegLayout`]).
use crate::model::{ModelSpec, Op, Shape, MAX_UNITS};
use crate::ops::conv2d::ConvGeom;
use crate::region::{Bump, Region};

mod elem;
mod segment;

pub use elem::{Precision, RegionKind};

pub(crate) use segment::segment_ops;
pub use segment::{in_place, n_segments, op_state, param_start, OpSlot, SegLayout, SegMode};
use segment::{lay_segment, max, SegPlace};

/// Most ops in one segment (VGG-19 under backpropagation needs 56; 16 with the `small`
/// feature).
#[cfg(not(feature = "small"))]
pub const MAX_SEG_OPS: usize = 80;
/// Most ops in one segment (80 without the `small` feature).
#[cfg(feature = "small")]
pub const MAX_SEG_OPS: usize = 16;

/// Bytes per arena word (one `f32`; regions are counted in words, see [`Precision`]).
pub const ELEM_BYTES: u64 = 4;

/// How the kernel workspace of a segment is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workspace {
    /// The im2col model of the reference kernels: per worker, one sample's columns for every
    /// convolution that unrolls its input (all but 1×1 stride-1 unpadded ones) and, in
    /// training, a weight-gradient partial sum per worker after the first; the maximum over
    /// the segment's convolutions.
    Columns,
    /// Exactly this many elements, one region that every segment of a block (and its recompute
    /// chain) shares, placed before the segments' scratch: a backend that sizes its kernels'
    /// needs itself over the calls of a plan (the fast CPU backend's packed GEMMs), so that the
    /// call with the largest need uses all of it.
    Fixed(usize),
}

/// What the backend's kernels need besides their operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    /// Worker threads (each gets its own part of the workspace).
    pub workers: usize,
    /// How the workspace is sized.
    pub workspace: Workspace,
    /// Bytes every non-empty region of the layout is aligned to (a multiple of
    /// [`ELEM_BYTES`]): [`ELEM_BYTES`] packs them (every CPU and firmware plan);
    /// [`GEMM_ALIGN`] gives a GPU's GEMMs aligned operands. The padding this takes is planned
    /// (counted in [`Breakdown::padding`]) and never touched.
    pub region_align: usize,
    /// The element type of each kind of region ([`Precision::F32`]: all `f32`).
    pub precision: Precision,
}

/// Bytes of alignment a GPU's GEMM library wants of its operands for its fastest kernels
/// (cuBLAS: 128 for tensor-core tiles; 16 for vectorised loads).
pub const GEMM_ALIGN: usize = 128;

impl Kernels {
    /// The reference kernels ([`crate::reference::ReferenceBackend`]): one worker, im2col
    /// columns, packed regions.
    pub const REFERENCE: Kernels = Kernels {
        workers: 1,
        workspace: Workspace::Columns,
        region_align: ELEM_BYTES as usize,
        precision: Precision::F32,
    };

    /// The region alignment in elements (at least 1).
    pub const fn align_elems(&self) -> usize {
        assert!(
            self.region_align >= ELEM_BYTES as usize
                && self.region_align.is_multiple_of(ELEM_BYTES as usize),
            "region alignment must be a multiple of the element size"
        );
        self.region_align / ELEM_BYTES as usize
    }

    /// A bump allocator from element `at` with this alignment.
    pub const fn bump(&self, at: usize) -> Bump {
        Bump::aligned(at, self.align_elems())
    }

    /// The element type of regions of kind `k` under this precision.
    pub const fn elem(&self, k: RegionKind) -> crate::region::Elem {
        self.precision.elem(k)
    }

    /// Arena words of a region of kind `k` holding `n` elements under this precision.
    pub const fn words(&self, k: RegionKind, n: usize) -> usize {
        self.precision.words(k, n)
    }

    /// Workspace words of one convolution `g`, trained (`train`) or forward only.
    pub const fn conv(&self, g: &ConvGeom, train: bool) -> usize {
        match self.workspace {
            Workspace::Fixed(n) => n,
            Workspace::Columns => {
                let cols = if g.is_pointwise() { 0 } else { g.cols_len() };
                let partials = if train {
                    (self.workers - 1) * g.weight_len()
                } else {
                    0
                };
                self.words(RegionKind::Columns, self.workers * cols)
                    + self.words(RegionKind::Partials, partials)
            }
        }
    }

    /// Workspace elements of a segment whose largest convolution needs `conv` (the fixed
    /// amount for [`Workspace::Fixed`], whatever the ops).
    pub const fn segment_of(&self, conv: usize) -> usize {
        match self.workspace {
            Workspace::Fixed(n) => n,
            Workspace::Columns => conv,
        }
    }
}

/// Memory of one block by kind, in arena words (`f32` elements; multiply by [`ELEM_BYTES`]
/// for bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Trainable parameters of every unit and head of the block.
    pub params: usize,
    /// Parameter gradients (one segment at a time).
    pub grads: usize,
    /// SGD momentum.
    pub optimizer: usize,
    /// BN running statistics.
    pub bn_state: usize,
    /// Input batch, labels and the unit-output carry buffers.
    pub io: usize,
    /// Activations kept for backward (largest segment).
    pub activations: usize,
    /// Gradient buffers for activations (largest segment).
    pub act_grads: usize,
    /// Kernel workspace (im2col columns, GEMM packing).
    pub workspace: usize,
    /// The forward-only chain that recomputes the block's inputs from the frozen blocks
    /// (when the activation cache is off): their weights, activations and workspace.
    pub recompute: usize,
    /// Alignment padding before regions ([`Kernels::region_align`]): planned, never touched;
    /// 0 for packed layouts.
    pub padding: usize,
}

impl Breakdown {
    /// Sum of all parts, in elements.
    pub const fn total(&self) -> usize {
        self.params
            + self.grads
            + self.optimizer
            + self.bn_state
            + self.io
            + self.activations
            + self.act_grads
            + self.workspace
            + self.recompute
            + self.padding
    }
}

/// The arena layout of one block at one batch size.
#[derive(Clone, Copy, Debug)]
pub struct BlockLayout<'a> {
    /// The model.
    pub model: ModelSpec<'a>,
    /// The model's input shape.
    pub input_shape: Shape,
    /// Number of classes.
    pub classes: usize,
    /// How units form segments.
    pub mode: SegMode,
    /// First unit of the block.
    pub first: usize,
    /// Last unit of the block (inclusive).
    pub last: usize,
    /// Auxiliary head filters per unit of the model (0 where the unit has no head here).
    pub heads: [usize; MAX_UNITS],
    /// Batch size.
    pub batch: usize,
    /// The kernels the workspace is sized for.
    pub kernels: Kernels,
    /// Input batch.
    pub input: Region,
    /// Labels (class index as `f32`).
    pub labels: Region,
    /// Ping-pong buffers carrying a unit's output to the next unit (local mode).
    pub carry: [Region; 2],
    /// Parameters, momentum and BN state of each segment (index: segment number).
    pub seg_params: [Region; MAX_UNITS],
    /// Momentum of each segment.
    pub seg_moms: [Region; MAX_UNITS],
    /// BN state of each segment.
    pub seg_state: [Region; MAX_UNITS],
    /// Gradient area shared by all segments.
    pub grads: Region,
    /// The kernel workspace every segment shares ([`Workspace::Fixed`]; empty for
    /// [`Workspace::Columns`], where each segment has its own at the end of its scratch).
    pub workspace: Region,
    /// First word of the per-segment scratch area.
    pub scratch: usize,
    /// Total words of the arena (its `f32` elements).
    pub floats: usize,
    /// The total by kind.
    pub breakdown: Breakdown,
}

/// The geometry of convolution `op` on input `s` at batch `n`.
pub const fn op_geom(op: &Op, s: Shape, n: usize) -> ConvGeom {
    match *op {
        Op::Conv {
            out,
            k,
            stride,
            pad,
            ..
        } => ConvGeom {
            n,
            c_in: s.c,
            h: s.h,
            w: s.w,
            c_out: out,
            k,
            stride,
            pad,
        },
        _ => panic!("not a convolution"),
    }
}

/// The three convolutions of a basic block on input `s` at batch `n`: the first 3×3, the
/// second 3×3 and the 1×1 projection shortcut.
pub const fn block_geoms(op: &Op, s: Shape, n: usize) -> (ConvGeom, ConvGeom, ConvGeom) {
    let Op::BasicBlock { out, stride } = *op else {
        panic!("not a basic block")
    };
    let o = op.out_shape(s);
    let g1 = ConvGeom {
        n,
        c_in: s.c,
        h: s.h,
        w: s.w,
        c_out: out,
        k: 3,
        stride,
        pad: 1,
    };
    let g2 = ConvGeom {
        c_in: out,
        h: o.h,
        w: o.w,
        stride: 1,
        ..g1
    };
    let gs = ConvGeom { k: 1, pad: 0, ..g1 };
    (g1, g2, gs)
}

/// What each segment of a block keeps between steps, in elements (index: segment number).
struct SegSizes {
    /// Elements of the segment's parameter area (and as many of momentum and gradients): its
    /// trainable parameters, each op's starting on the alignment ([`param_start`]).
    params: [usize; MAX_UNITS],
    /// Trainable parameters (without alignment padding).
    raw_params: [usize; MAX_UNITS],
    /// BN running statistics.
    state: [usize; MAX_UNITS],
    /// Per-sample output of the segment's last unit (what a carry buffer holds).
    out: [usize; MAX_UNITS],
}

impl SegSizes {
    /// The sizes of every segment of the block of units `first..=last`.
    #[allow(clippy::too_many_arguments)]
    const fn of(
        model: &ModelSpec,
        input_shape: Shape,
        classes: usize,
        mode: SegMode,
        first: usize,
        last: usize,
        heads: &[usize; MAX_UNITS],
        align: usize,
    ) -> SegSizes {
        let mut sizes = SegSizes {
            params: [0; MAX_UNITS],
            raw_params: [0; MAX_UNITS],
            state: [0; MAX_UNITS],
            out: [0; MAX_UNITS],
        };
        let mut k = 0;
        while k < n_segments(mode, first, last) {
            let (ops, n, lu) =
                segment_ops(model, input_shape, classes, mode, first, last, heads, k);
            let mut s = model.unit_input(
                input_shape,
                first + if let SegMode::Local = mode { k } else { 0 },
            );
            let mut i = 0;
            while i < n {
                let np = ops[i].params(s);
                sizes.params[k] = param_start(sizes.params[k], np, align) + np;
                sizes.raw_params[k] += np;
                sizes.state[k] += op_state(&ops[i], s);
                s = ops[i].out_shape(s);
                if i == lu {
                    sizes.out[k] = s.len();
                }
                i += 1;
            }
            k += 1;
        }
        sizes
    }
}

/// One region of `len[k]` elements for each of the first `n` segments, one after another.
const fn take_each(bump: &mut Bump, len: &[usize; MAX_UNITS], n: usize) -> [Region; MAX_UNITS] {
    let mut r = [Region::NONE; MAX_UNITS];
    let mut k = 0;
    while k < n {
        r[k] = bump.take(len[k]);
        k += 1;
    }
    r
}

/// The sum of the first `n` of `v`.
const fn sum(v: &[usize; MAX_UNITS], n: usize) -> usize {
    let mut s = 0;
    let mut k = 0;
    while k < n {
        s += v[k];
        k += 1;
    }
    s
}

/// The largest of the first `n` of `v` (0 when `n` is 0).
const fn largest(v: &[usize; MAX_UNITS], n: usize) -> usize {
    let mut m = 0;
    let mut k = 0;
    while k < n {
        m = max(m, v[k]);
        k += 1;
    }
    m
}

/// Per-sample elements of the two carry buffers: in local mode segment `k`'s unit output goes
/// to buffer `k % 2`, so each is sized by the largest output it holds; none in global mode.
const fn carry_lens(mode: SegMode, out: &[usize; MAX_UNITS], nseg: usize) -> [usize; 2] {
    let mut len = [0usize; 2];
    if let SegMode::Local = mode {
        let mut k = 0;
        while k < nseg {
            len[k % 2] = max(len[k % 2], out[k]);
            k += 1;
        }
    }
    len
}

impl<'a> BlockLayout<'a> {
    /// The same layout over `model` (which must describe the same units), as
    /// [`crate::plan::Plan::with_model`]: a caller may keep a layout with an empty `units`
    /// between calls (its regions need no model) and attach the units again to lay out a
    /// segment.
    pub const fn with_model<'b>(&self, model: ModelSpec<'b>) -> BlockLayout<'b> {
        BlockLayout {
            model,
            input_shape: self.input_shape,
            classes: self.classes,
            mode: self.mode,
            first: self.first,
            last: self.last,
            heads: self.heads,
            batch: self.batch,
            kernels: self.kernels,
            input: self.input,
            labels: self.labels,
            carry: self.carry,
            seg_params: self.seg_params,
            seg_moms: self.seg_moms,
            seg_state: self.seg_state,
            grads: self.grads,
            workspace: self.workspace,
            scratch: self.scratch,
            floats: self.floats,
            breakdown: self.breakdown,
        }
    }

    /// Lay out the block of units `first..=last` at batch size `batch` for the reference
    /// kernels. `heads[u]` is the head width of unit `u` (ignored for the model's last unit,
    /// which uses the classifier).
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        model: &ModelSpec<'a>,
        input_shape: Shape,
        classes: usize,
        mode: SegMode,
        first: usize,
        last: usize,
        heads: &[usize; MAX_UNITS],
        batch: usize,
    ) -> Self {
        Self::with_kernels(
            model,
            input_shape,
            classes,
            mode,
            first,
            last,
            heads,
            batch,
            &Kernels::REFERENCE,
        )
    }

    /// [`BlockLayout::new`] with the workspace of `kernels`.
    ///
    /// The arena, in order: the persistent areas (every segment's parameters, then their
    /// momentum, then their BN state), one segment's parameter gradients, the io (input batch,
    /// labels, the carry buffers), the shared workspace ([`Workspace::Fixed`]), then the
    /// scratch, as large as the largest segment needs.
    #[allow(clippy::too_many_arguments)]
    pub const fn with_kernels(
        model: &ModelSpec<'a>,
        input_shape: Shape,
        classes: usize,
        mode: SegMode,
        first: usize,
        last: usize,
        heads: &[usize; MAX_UNITS],
        batch: usize,
        kernels: &Kernels,
    ) -> Self {
        assert!(first <= last && last < model.units.len(), "bad block range");
        assert!(kernels.workers >= 1, "at least one worker");
        let nseg = n_segments(mode, first, last);
        let align = kernels.align_elems();
        let sizes = SegSizes::of(model, input_shape, classes, mode, first, last, heads, align);
        let mut bump = kernels.bump(0);
        let seg_params = take_each(&mut bump, &sizes.params, nseg);
        let seg_moms = take_each(&mut bump, &sizes.params, nseg);
        let seg_state = take_each(&mut bump, &sizes.state, nseg);
        let max_p = largest(&sizes.params, nseg);
        let grads = bump.take(max_p);
        let k = kernels;
        let input_len = batch * model.unit_input(input_shape, first).len();
        let input = bump.take_of(k.elem(RegionKind::Input), input_len);
        let labels = bump.take_of(k.elem(RegionKind::Labels), batch);
        let carry_len = carry_lens(mode, &sizes.out, nseg);
        let carry = [
            bump.take_of(k.elem(RegionKind::Carry), batch * carry_len[0]),
            bump.take_of(k.elem(RegionKind::Carry), batch * carry_len[1]),
        ];
        let workspace = match kernels.workspace {
            Workspace::Fixed(n) => bump.take(n),
            Workspace::Columns => Region::NONE,
        };
        let scratch = bump.next;
        BlockLayout {
            model: *model,
            input_shape,
            classes,
            mode,
            first,
            last,
            heads: *heads,
            batch,
            kernels: *kernels,
            input,
            labels,
            carry,
            seg_params,
            seg_moms,
            seg_state,
            grads,
            workspace,
            scratch,
            floats: scratch,
            breakdown: Breakdown {
                params: sum(&sizes.raw_params, nseg),
                grads: largest(&sizes.raw_params, nseg),
                optimizer: sum(&sizes.raw_params, nseg),
                bn_state: sum(&sizes.state, nseg),
                io: input.words() + labels.words() + carry[0].words() + carry[1].words(),
                activations: 0,
                act_grads: 0,
                workspace: workspace.len(),
                recompute: 0,
                padding: 0,
            },
        }
        .with_scratch()
    }

    /// The layout with its scratch sized: the segment that ends furthest decides the arena's
    /// size and the scratch parts of the breakdown.
    const fn with_scratch(mut self) -> Self {
        let mut k = 0;
        while k < self.n_segments() {
            let seg = self.segment(k);
            if seg.end > self.floats {
                self.floats = seg.end;
                self.breakdown.activations = seg.activations;
                self.breakdown.act_grads =
                    seg.grads[0].words() + seg.grads[1].words() + seg.grads[2].words();
                if self.workspace.is_empty() {
                    self.breakdown.workspace = seg.cols.len();
                }
            }
            k += 1;
        }
        // What the regions do not cover is the alignment padding before them.
        self.breakdown.padding = 0;
        let used = self.breakdown.total();
        assert!(used <= self.floats, "breakdown does not add up");
        self.breakdown.padding = self.floats - used;
        assert!(
            self.kernels.align_elems() > 1 || self.breakdown.padding == 0,
            "a packed layout has no padding"
        );
        self
    }

    /// Number of segments.
    pub const fn n_segments(&self) -> usize {
        n_segments(self.mode, self.first, self.last)
    }

    /// Bytes of the arena.
    pub const fn bytes(&self) -> u64 {
        self.floats as u64 * ELEM_BYTES
    }

    /// The region holding the block's output after a step or an evaluation pass (local
    /// mode); empty in global mode.
    pub const fn output(&self) -> Region {
        match self.mode {
            SegMode::Local => self.carry[(self.last - self.first) % 2]
                .prefix(self.batch * self.output_shape().len()),
            SegMode::Global => Region::NONE,
        }
    }

    /// Shape of the block's output per sample.
    pub const fn output_shape(&self) -> Shape {
        self.model.unit_input(self.input_shape, self.last + 1)
    }

    /// Layout of segment `k`.
    pub const fn segment(&self, k: usize) -> SegLayout {
        let (ops, n, lu) = segment_ops(
            &self.model,
            self.input_shape,
            self.classes,
            self.mode,
            self.first,
            self.last,
            &self.heads,
            k,
        );
        let (input, out, s0) = match self.mode {
            SegMode::Local => {
                let input = if k == 0 {
                    self.input
                } else {
                    self.carry[(k - 1) % 2]
                };
                let s0 = self.model.unit_input(self.input_shape, self.first + k);
                let o = crate::model::chain_shape(self.model.units[self.first + k], s0);
                let out = self.carry[k % 2].prefix(self.batch * o.len());
                (input.prefix(self.batch * s0.len()), out, s0)
            }
            SegMode::Global => (
                self.input,
                Region::NONE,
                self.model.unit_input(self.input_shape, self.first),
            ),
        };
        lay_segment(
            &ops,
            n,
            lu,
            s0,
            self.batch,
            self.classes,
            &SegPlace {
                input,
                out,
                params: self.seg_params[k],
                grads: self.grads,
                moms: self.seg_moms[k],
                state: self.seg_state[k],
                scratch: self.scratch,
                shared_ws: self.workspace,
            },
            &self.kernels,
        )
    }
}
