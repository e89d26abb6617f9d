//! The planner: a memory budget goes in, a plan comes out, and the plan is the memory.
//!
//! Three modes over the same kernels and the same memory model ([`crate::layout`]):
//!
//! - [`Mode::NeuroFlux`]: head widths decay linearly with depth from `f_max` to `f_min`
//!   (never wider than half the unit's own output, multiples of 8 from 8 up; see
//!   [`adaptive_heads`]);
//!   consecutive units whose per-sample memory is within `homogeneity`x of the block's first unit
//!   form a block; a block that does not fit at `b_min`, or whose batch is less than half the
//!   one its first unit would get alone (fixed costs starve it), is split (last units first); a
//!   single unit that still does not fit has its head halved (never below 4); each block gets
//!   the largest batch size that fits. A block whose batch would be smaller than the one
//!   backpropagation gets under the same budget is shrunk the same way (split, then halve), so
//!   NeuroFlux never trains at a smaller batch than BP.
//! - [`Mode::Ll`]: classic local learning: one block of all units, every head `ll_filters` wide,
//!   one batch size.
//! - [`Mode::Bp`]: backpropagation: one segment of all units and the classifier.
//!
//! Allowed batch sizes are `b_min..=b_max`, rounded down to a multiple of 8 from 16 up. The
//! planned bytes of a block are the exact size of its CPU arena. Everything is `const`, so a
//! firmware build can plan at compile time and fail the build when the budget is too small.
use crate::infer::InferLayout;
use crate::layout::{BlockLayout, Breakdown, Kernels, Precision, Workspace, ELEM_BYTES};
use crate::model::{ModelSpec, Shape, MAX_UNITS};

mod batch;
mod search;

pub use batch::{next_batch, step_cap};
pub use search::adaptive_heads;
use search::{chain_of, layout_of, plan_arena};

/// What a plan is for: a model, the shape of one input sample and the number of classes.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    /// The model.
    pub model: ModelSpec<'a>,
    /// Shape of one input sample.
    pub input: Shape,
    /// Classes of the classifier and the heads.
    pub classes: usize,
}

/// Training mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Adaptive local learning (NeuroFlux).
    NeuroFlux,
    /// Classic local learning baseline.
    Ll,
    /// Backpropagation baseline.
    Bp,
}

impl Mode {
    /// The command-line name.
    pub const fn name(&self) -> &'static str {
        match self {
            Mode::NeuroFlux => "neuroflux",
            Mode::Ll => "ll",
            Mode::Bp => "bp",
        }
    }
    /// The mode called `s` on the command line.
    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::NeuroFlux, Mode::Ll, Mode::Bp]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// Planner options (defaults from NEUROFLUX.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Head filters of the first unit (NeuroFlux).
    pub f_max: usize,
    /// Head filters of the last unit with a head (NeuroFlux).
    pub f_min: usize,
    /// Head filters of every unit (classic local learning).
    pub ll_filters: usize,
    /// Smallest batch size a block may use.
    pub b_min: usize,
    /// Largest batch size a block may use.
    pub b_max: usize,
    /// Units join a block while their per-sample memory is within this factor of the
    /// block's first unit.
    pub homogeneity: usize,
    /// Worker threads of the backend: each gets its own kernel workspace in the plan.
    pub workers: usize,
    /// How each block's kernel workspace is sized.
    pub workspace: BlockWorkspace,
    /// Inputs of blocks after the first are recomputed from the frozen blocks (no activation
    /// cache): each such block's memory includes that forward-only chain.
    pub recompute: bool,
    /// The recompute chain of a block lies over the block's scratch (its segments' activations,
    /// gradient buffers and workspace), not after it: the chain runs while a batch is loaded,
    /// when no segment is running, so only the part that does not fit in the scratch costs
    /// memory. The scratch is rewritten by every step, so the caller writes the chain's weights
    /// again before each batch it recomputes (a firmware copies them from its frozen-weight
    /// store). Chunks then start at 1 sample, not `b_min`.
    pub chain_in_scratch: bool,
    /// Bytes of the budget kept beside the arena (a feed's staging buffer, a device backend's
    /// own workspace): blocks are planned into the rest.
    pub reserve: u64,
    /// Training samples an epoch goes through, over all ranks (0: unknown). With
    /// `min_steps`, it caps every block's batch (see [`step_cap`]).
    pub samples: usize,
    /// Steps every epoch keeps at least (0: no cap): no block trains at a batch larger than
    /// `samples / min_steps` (never below `b_min`), so that the deep blocks of a small data
    /// set are not starved of updates by the large batches their small activations allow.
    pub min_steps: usize,
    /// Ranks training together ([`crate::collective`]): the planned batch is each rank's,
    /// the global batch `world` times it, and the step cap applies to the global batch. With
    /// more than one, each rank holds the reduction's host buffers beside its arena
    /// ([`Plan::reduce_bytes`]); a world of one plans exactly as without it.
    pub world: usize,
    /// Bytes every non-empty region of the plan's layouts starts on a multiple of
    /// ([`Kernels::region_align`]): [`ELEM_BYTES`] (the default) packs them, so CPU and
    /// firmware plans are what they were; a GPU backend asks for [`crate::layout::GEMM_ALIGN`]
    /// so that its GEMMs get aligned operands. The padding is part of the planned bytes
    /// ([`Breakdown::padding`]).
    pub region_align: usize,
    /// The element type of each kind of region ([`Precision::F32`], the default: every region
    /// `f32`, today's plans byte for byte; [`Precision::Bf16`]: the memory model's figure for
    /// bf16 storage of activations, which the fast CPU backend executes, see [`Precision`]).
    pub precision: Precision,
}

impl PlanOptions {
    /// The defaults: f 64 -> 16, LL heads 64, batch 8..=512, homogeneity 2x, one worker with
    /// the reference kernels' workspace, inputs from a cache.
    pub const DEFAULT: PlanOptions = PlanOptions {
        f_max: 64,
        f_min: 16,
        ll_filters: 64,
        b_min: 8,
        b_max: 512,
        homogeneity: 2,
        workers: 1,
        workspace: BlockWorkspace::Columns,
        recompute: false,
        chain_in_scratch: false,
        reserve: 0,
        samples: 0,
        min_steps: 0,
        world: 1,
        region_align: ELEM_BYTES as usize,
        precision: Precision::F32,
    };

    /// The kernels the plan sizes the workspace of a block starting at unit `first` for.
    pub const fn kernels(&self, first: usize) -> Kernels {
        Kernels {
            workers: self.workers,
            workspace: match self.workspace {
                BlockWorkspace::Columns => Workspace::Columns,
                BlockWorkspace::Fixed(n) => Workspace::Fixed(n[first]),
            },
            region_align: self.region_align,
            precision: self.precision,
        }
    }
}

/// How a plan sizes its blocks' kernel workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockWorkspace {
    /// The reference kernels' im2col columns, segment by segment ([`Workspace::Columns`]).
    Columns,
    /// For the block that starts at unit `u`: exactly `n[u]` elements, shared by its segments
    /// and its recompute chain ([`Workspace::Fixed`]), as the backend sized them for the
    /// block's own calls.
    Fixed([usize; MAX_UNITS]),
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Smallest head width the planner will shrink a head to.
pub const MIN_HEAD: usize = 4;

/// Why no plan was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The budget is below the smallest feasible one; `needed` bytes would plan.
    BudgetTooSmall {
        /// The smallest budget, in bytes, for which this model and mode plan.
        needed: u64,
    },
    /// The model does not accept this input shape and class count.
    BadInput,
    /// The options are inconsistent (the message says which).
    BadOptions(&'static str),
}

/// What set a block's batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchLimit {
    /// The largest batch whose block fits the arena.
    Budget,
    /// The largest batch the options allow (`b_max`).
    BatchMax,
    /// The step cap: a larger batch would leave an epoch fewer than `min_steps` steps.
    Steps,
}

impl BatchLimit {
    /// A short name (`budget`, `batch_max`, `steps`).
    pub const fn name(&self) -> &'static str {
        match self {
            BatchLimit::Budget => "budget",
            BatchLimit::BatchMax => "batch_max",
            BatchLimit::Steps => "steps",
        }
    }
}

/// One block of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// First unit.
    pub first: usize,
    /// Last unit (inclusive).
    pub last: usize,
    /// Batch size.
    pub batch: usize,
    /// What set the batch size.
    pub limit: BatchLimit,
    /// Samples per pass of the chain that recomputes the block's inputs (0: the block reads
    /// the data set or the activation cache).
    pub chunk: usize,
    /// Arena bytes at that batch size (with the recompute chain).
    pub bytes: u64,
    /// The bytes by kind, in `f32` elements.
    pub breakdown: Breakdown,
}

/// A training plan.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// Mode.
    pub mode: Mode,
    /// Model.
    pub model: ModelSpec<'a>,
    /// Input shape.
    pub input: Shape,
    /// Classes.
    pub classes: usize,
    /// Budget in bytes (the arena gets all but `options.reserve`).
    pub budget: u64,
    /// Options used.
    pub options: PlanOptions,
    /// Head filters per unit (0 for the last unit, which uses the classifier, and in BP).
    pub heads: [usize; MAX_UNITS],
    /// Number of blocks.
    pub n_blocks: usize,
    /// Blocks (the first `n_blocks` are used).
    pub blocks: [Block; MAX_UNITS],
    /// The batch size backpropagation gets under the same budget (0 if it cannot train).
    pub bp_batch: usize,
}

const EMPTY_BLOCK: Block = Block {
    first: 0,
    last: 0,
    batch: 0,
    limit: BatchLimit::Budget,
    chunk: 0,
    bytes: 0,
    breakdown: Breakdown {
        params: 0,
        grads: 0,
        optimizer: 0,
        bn_state: 0,
        io: 0,
        activations: 0,
        act_grads: 0,
        workspace: 0,
        recompute: 0,
        padding: 0,
    },
};

impl<'a> Plan<'a> {
    /// The blocks.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks[..self.n_blocks]
    }
    /// Bytes of the arena the plan needs: the largest block.
    pub const fn peak_bytes(&self) -> u64 {
        let mut m = 0;
        let mut i = 0;
        while i < self.n_blocks {
            if self.blocks[i].bytes > m {
                m = self.blocks[i].bytes;
            }
            i += 1;
        }
        m
    }
    /// Arena elements (`f32`) the plan needs.
    pub const fn peak_floats(&self) -> usize {
        (self.peak_bytes() / crate::layout::ELEM_BYTES) as usize
    }
    /// Host elements of one reduction buffer of a data-parallel run: the largest segment's
    /// parameters or BN state over the blocks ([`crate::collective::scratch_floats`]); 0 in a
    /// world of one, which reduces nothing.
    pub const fn reduce_floats(&self) -> usize {
        if self.options.world <= 1 {
            return 0;
        }
        let mut m = 0;
        let mut i = 0;
        while i < self.n_blocks {
            let f = crate::collective::scratch_floats(&self.layout(i));
            if f > m {
                m = f;
            }
            i += 1;
        }
        m
    }
    /// Host bytes a data-parallel rank holds beside its arena for the reductions: the buffer
    /// a segment's gradients are read into and the all-reduce's receive buffer (the transport
    /// has no in-place all-reduce), each [`Plan::reduce_floats`] long; 0 in a world of one.
    pub const fn reduce_bytes(&self) -> u64 {
        2 * self.reduce_floats() as u64 * crate::layout::ELEM_BYTES
    }
    /// The memory layout of block `i`.
    pub const fn layout(&self, i: usize) -> BlockLayout<'a> {
        let b = &self.blocks[i];
        layout_of(
            self.problem(),
            self.mode,
            b.first,
            b.last,
            &self.heads,
            b.batch,
            &self.options,
        )
    }

    /// The same plan over `model` (which must describe the same units): lets a caller keep a
    /// plan apart from the units its model borrows (say, with an empty `units` between calls)
    /// and attach them again for as long as they are borrowed.
    pub const fn with_model<'b>(&self, model: ModelSpec<'b>) -> Plan<'b> {
        Plan {
            mode: self.mode,
            model,
            input: self.input,
            classes: self.classes,
            budget: self.budget,
            options: self.options,
            heads: self.heads,
            n_blocks: self.n_blocks,
            blocks: self.blocks,
            bp_batch: self.bp_batch,
        }
    }

    /// The model, input shape and classes the plan is for.
    pub const fn problem(&self) -> Problem<'a> {
        Problem {
            model: self.model,
            input: self.input,
            classes: self.classes,
        }
    }

    /// The chain that recomputes block `i`'s inputs from the frozen blocks, placed after the
    /// block's layout in the arena (over its scratch with [`PlanOptions::chain_in_scratch`]);
    /// `None` when the block reads the data set or the cache.
    pub const fn chain(&self, i: usize) -> Option<InferLayout<'a>> {
        if self.blocks[i].chunk == 0 {
            return None;
        }
        self.chain_over(i, &self.layout(i))
    }

    /// [`Plan::chain`] of block `i` over its layout `l` ([`Plan::layout`]`(i)`, made before:
    /// a device that keeps it does not lay the block out again, and its stack holds one
    /// layout at a time).
    pub const fn chain_over(&self, i: usize, l: &BlockLayout) -> Option<InferLayout<'a>> {
        let b = &self.blocks[i];
        if b.chunk == 0 {
            return None;
        }
        Some(chain_of(
            self.problem(),
            &self.heads,
            b.first,
            b.chunk,
            l,
            &self.options,
        ))
    }
}

/// Make a plan for `model` on `input` with `classes` classes under `budget` bytes, of which
/// the arena gets all but `o.reserve`.
///
/// ```
/// use nf_core::plan::{plan, Mode, PlanError, PlanOptions};
/// use nf_core::zoo;
///
/// let m = &zoo::VGG11;
/// let p = plan(m, m.input, 10, 256 << 20, Mode::NeuroFlux, &PlanOptions::DEFAULT)?;
/// assert!(p.peak_bytes() <= 256 << 20);
/// // The blocks cover the units in order, each at the largest batch size that fits.
/// assert_eq!(p.blocks()[0].first, 0);
/// assert_eq!(p.blocks()[p.n_blocks - 1].last, m.units.len() - 1);
/// // Backpropagation gets a smaller batch under the same budget.
/// assert!(p.blocks().iter().all(|b| b.batch >= p.bp_batch));
/// // A budget too small says which one would do.
/// match plan(m, m.input, 10, 1 << 20, Mode::Bp, &PlanOptions::DEFAULT) {
///     Err(PlanError::BudgetTooSmall { needed }) => assert!(needed > 1 << 20),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), PlanError>(())
/// ```
pub const fn plan<'a>(
    model: &ModelSpec<'a>,
    input: Shape,
    classes: usize,
    budget: u64,
    mode: Mode,
    o: &PlanOptions,
) -> Result<Plan<'a>, PlanError> {
    let arena = budget.saturating_sub(o.reserve);
    let pb = Problem {
        model: *model,
        input,
        classes,
    };
    match plan_arena(pb, arena, mode, o) {
        Ok(mut p) => {
            p.budget = budget;
            Ok(p)
        }
        Err(PlanError::BudgetTooSmall { needed }) => Err(PlanError::BudgetTooSmall {
            needed: needed + o.reserve,
        }),
        Err(e) => Err(e),
    }
}
