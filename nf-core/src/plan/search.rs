//! How the planner searches: block boundaries, head widths and the largest batch size that
//! fits, each candidate measured by laying it out ([`crate::layout::BlockLayout`]).
//!
//! A [`Search`] carries what stays fixed while one plan is made (the problem, the mode, the
//! options, the arena's bytes); its methods each answer one question: what a block costs
//! ([`Search::block_bytes`]), the largest batch that fits it ([`Search::largest_batch`]), where
//! a NeuroFlux block ends ([`Search::neuroflux_block`]). The allowed batch sizes and the cap
//! that keeps an epoch's steps are in [`super::batch`].
use super::batch::{n_batches, next_batch, nth_batch, step_cap};
use super::{
    BatchLimit, Block, Mode, Plan, PlanError, PlanOptions, Problem, EMPTY_BLOCK, MIN_HEAD,
};
use crate::infer::InferLayout;
use crate::layout::{BlockLayout, SegMode, ELEM_BYTES};
use crate::model::{ModelSpec, Shape, MAX_UNITS};

/// The forward-only chain of units `0..first` for `chunk` samples, placed after `block` in the
/// arena, or over its scratch with [`PlanOptions::chain_in_scratch`] (sharing its kernel
/// workspace when the block has a shared one).
pub(super) const fn chain_of<'a>(
    pb: Problem<'a>,
    heads: &[usize; MAX_UNITS],
    first: usize,
    chunk: usize,
    block: &BlockLayout,
    o: &PlanOptions,
) -> InferLayout<'a> {
    InferLayout::new(
        &pb.model,
        pb.input,
        pb.classes,
        heads,
        first - 1,
        false,
        chunk,
        if o.chain_in_scratch {
            block.scratch
        } else {
            block.floats
        },
        &o.kernels(first),
        block.workspace,
    )
}

/// The layout of the block `first..=last` at batch `b`.
pub(super) const fn layout_of<'a>(
    pb: Problem<'a>,
    mode: Mode,
    first: usize,
    last: usize,
    heads: &[usize; MAX_UNITS],
    b: usize,
    o: &PlanOptions,
) -> BlockLayout<'a> {
    let seg = match mode {
        Mode::Bp => SegMode::Global,
        _ => SegMode::Local,
    };
    BlockLayout::with_kernels(
        &pb.model,
        pb.input,
        pb.classes,
        seg,
        first,
        last,
        heads,
        b,
        &o.kernels(first),
    )
}

/// Whether a block starting at unit `first` recomputes its inputs.
const fn recomputes(o: &PlanOptions, first: usize) -> bool {
    o.recompute && first > 0
}

/// The smallest recompute chunk: `b_min`, or one sample when the chain lies over the scratch
/// (it then costs nothing while it fits there).
const fn min_chunk(o: &PlanOptions) -> usize {
    if o.chain_in_scratch {
        1
    } else {
        o.b_min
    }
}

/// The larger of two element counts.
const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Halve a head (never below [`MIN_HEAD`]).
const fn halved(f: usize) -> usize {
    if f / 2 > MIN_HEAD {
        f / 2
    } else {
        MIN_HEAD
    }
}

/// What stays fixed while one plan is made.
#[derive(Clone, Copy)]
pub(super) struct Search<'a> {
    /// The model, its input and classes.
    pub pb: Problem<'a>,
    /// The mode.
    pub mode: Mode,
    /// The options, with `b_max` lowered to the step cap ([`step_cap`]).
    pub o: PlanOptions,
    /// The options' own `b_max`.
    pub b_max: usize,
    /// Bytes of the arena.
    pub budget: u64,
}

impl Search<'_> {
    /// Bytes of the block `first..=last` at batch `b`, with its recompute chain at `chunk`
    /// samples when it has one.
    const fn block_bytes(
        &self,
        first: usize,
        last: usize,
        heads: &[usize; MAX_UNITS],
        b: usize,
        chunk: usize,
    ) -> u64 {
        let o = &self.o;
        let l = layout_of(self.pb, self.mode, first, last, heads, b, o);
        if recomputes(o, first) {
            let c = chain_of(self.pb, heads, first, chunk, &l, o);
            max(c.floats, l.floats) as u64 * ELEM_BYTES
        } else {
            l.bytes()
        }
    }

    /// Bytes of the block `first..=last` at the smallest batch and chunk.
    const fn smallest_bytes(&self, first: usize, last: usize, heads: &[usize; MAX_UNITS]) -> u64 {
        self.block_bytes(first, last, heads, self.o.b_min, min_chunk(&self.o))
    }

    /// Largest allowed batch size whose block fits the arena (0 if even `b_min` does not),
    /// its recompute chain (if any) at the smallest chunk.
    const fn largest_batch(&self, first: usize, last: usize, heads: &[usize; MAX_UNITS]) -> usize {
        let o = &self.o;
        // Bytes grow with the batch size: binary search for the last fitting index.
        let mut lo = 0;
        let mut hi = n_batches(o);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let b = nth_batch(o, mid);
            if self.block_bytes(first, last, heads, b, min_chunk(o)) <= self.budget {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            0
        } else {
            nth_batch(o, lo - 1)
        }
    }

    /// The largest batch backpropagation gets: the whole model as one block, no auxiliary
    /// heads (0 when even the smallest batch does not fit).
    const fn bp_batch(&self) -> usize {
        let bp = Search {
            mode: Mode::Bp,
            ..*self
        };
        bp.largest_batch(0, self.pb.model.units.len() - 1, &[0; MAX_UNITS])
    }

    /// The block `first..=last` at batch `batch`, with its recompute chunk: the largest
    /// allowed batch size up to the block's whose chain still fits.
    const fn make_block(
        &self,
        first: usize,
        last: usize,
        heads: &[usize; MAX_UNITS],
        batch: usize,
    ) -> Block {
        let o = &self.o;
        let l = layout_of(self.pb, self.mode, first, last, heads, batch, o);
        let limit = if batch == o.b_max && o.b_max < self.b_max {
            BatchLimit::Steps
        } else if batch == self.b_max {
            BatchLimit::BatchMax
        } else {
            BatchLimit::Budget
        };
        let mut block = Block {
            first,
            last,
            batch,
            limit,
            chunk: 0,
            bytes: l.bytes(),
            breakdown: l.breakdown,
        };
        if recomputes(o, first) {
            let mut chunk = min_chunk(o);
            let mut c = if chunk < o.b_min {
                o.b_min
            } else {
                next_batch(o, chunk)
            };
            while c != 0
                && c <= batch
                && self.block_bytes(first, last, heads, batch, c) <= self.budget
            {
                chunk = c;
                c = next_batch(o, c);
            }
            let chain = chain_of(self.pb, heads, first, chunk, &l, o);
            block.chunk = chunk;
            // Over the scratch, only what the chain adds past the block's end counts.
            let end = max(chain.floats, l.floats);
            block.bytes = end as u64 * ELEM_BYTES;
            block.breakdown.recompute = end - l.floats;
        }
        block
    }

    /// The smallest arena NeuroFlux plans in: every unit alone, its head at the minimum, at
    /// `b_min`.
    const fn neuroflux_needed(&self) -> u64 {
        let nu = self.pb.model.units.len();
        let mut min_heads = [0usize; MAX_UNITS];
        let mut u = 0;
        while u + 1 < nu {
            min_heads[u] = MIN_HEAD;
            u += 1;
        }
        let mut needed = 0;
        u = 0;
        while u < nu {
            let b = self.smallest_bytes(u, u, &min_heads);
            if b > needed {
                needed = b;
            }
            u += 1;
        }
        needed
    }

    /// Per-sample bytes of unit `u` trained alone (the slope of its block bytes in the batch
    /// size), under the default options.
    const fn per_sample(&self, u: usize, heads: &[usize; MAX_UNITS]) -> u64 {
        let o = &PlanOptions::DEFAULT;
        let one = layout_of(self.pb, Mode::NeuroFlux, u, u, heads, 1, o).bytes();
        let two = layout_of(self.pb, Mode::NeuroFlux, u, u, heads, 2, o).bytes();
        two - one
    }

    /// The last unit of the memory-homogeneous run that starts at `first`: units join while
    /// their per-sample memory is within `homogeneity`x of the first unit's.
    const fn homogeneous_end(&self, first: usize, heads: &[usize; MAX_UNITS]) -> usize {
        let nu = self.pb.model.units.len();
        let h = self.o.homogeneity as u64;
        let p0 = self.per_sample(first, heads);
        let mut last = first;
        while last + 1 < nu {
            let p = self.per_sample(last + 1, heads);
            if p * h < p0 || p > p0 * h {
                break;
            }
            last += 1;
        }
        last
    }

    /// The NeuroFlux block that starts at `first` (its head widths set in `heads`): the
    /// homogeneous run, shrunk until it fits at `b_min` (split first, then halve the head);
    /// split while its fixed costs starve its batch below half the one its first unit gets
    /// alone; then split or halve while its batch is below BP's (`bp_batch`).
    const fn neuroflux_block(
        &self,
        first: usize,
        heads: &mut [usize; MAX_UNITS],
        bp_batch: usize,
    ) -> Block {
        let mut last = self.homogeneous_end(first, heads);
        while self.smallest_bytes(first, last, heads) > self.budget {
            if last > first {
                last -= 1;
            } else {
                // The smallest budget (`neuroflux_needed`) guarantees that the minimum head fits.
                assert!(
                    heads[first] > MIN_HEAD,
                    "planner invariant: minimum head must fit"
                );
                heads[first] = halved(heads[first]);
            }
        }
        let alone = self.largest_batch(first, first, heads);
        while last > first && 2 * self.largest_batch(first, last, heads) < alone {
            last -= 1;
        }
        let mut b = self.largest_batch(first, last, heads);
        while b < bp_batch {
            if last > first {
                last -= 1;
            } else if heads[first] > MIN_HEAD {
                heads[first] = halved(heads[first]);
            } else {
                break;
            }
            b = self.largest_batch(first, last, heads);
        }
        self.make_block(first, last, heads, b)
    }

    /// The blocks of a NeuroFlux plan, into `blocks`; returns their number.
    const fn neuroflux_blocks(
        &self,
        heads: &mut [usize; MAX_UNITS],
        blocks: &mut [Block; MAX_UNITS],
    ) -> Result<usize, PlanError> {
        let needed = self.neuroflux_needed();
        if self.budget < needed {
            return Err(PlanError::BudgetTooSmall { needed });
        }
        let bp_batch = self.bp_batch();
        let nu = self.pb.model.units.len();
        let mut n = 0;
        let mut first = 0;
        while first < nu {
            blocks[n] = self.neuroflux_block(first, heads, bp_batch);
            first = blocks[n].last + 1;
            n += 1;
        }
        Ok(n)
    }

    /// The one block of an LL or BP plan: every unit at the largest batch that fits.
    const fn single_block(&self, heads: &[usize; MAX_UNITS]) -> Result<Block, PlanError> {
        let last = self.pb.model.units.len() - 1;
        let b = self.largest_batch(0, last, heads);
        if b == 0 {
            return Err(PlanError::BudgetTooSmall {
                needed: self.smallest_bytes(0, last, heads),
            });
        }
        Ok(self.make_block(0, last, heads, b))
    }
}

/// Head widths of the NeuroFlux rule before any halving: linear from `f_max` (unit 0) to
/// `f_min` (the last unit with a head), rounded to the nearest integer; then (our additions)
/// never wider than half the unit's own output channels and, from 8 up, rounded down to a
/// multiple of 8. The cap keeps heads a small fraction of the work: a head's 3×3 conv runs at
/// its unit's output resolution, so on an early unit with few input channels the linear rule
/// alone gives a head that costs many times the unit it trains (small VGG, unit 0: 32 filters
/// = 8× the unit's own conv; 16 filters = 4×). Multiples of 8 fill whole vector lanes and GPU
/// MMA tiles.
pub const fn adaptive_heads(
    model: &ModelSpec,
    input: Shape,
    o: &PlanOptions,
) -> [usize; MAX_UNITS] {
    let mut h = [0usize; MAX_UNITS];
    let with_heads = model.units.len() - 1;
    let mut u = 0;
    while u < with_heads {
        let f = if with_heads == 1 {
            o.f_max
        } else {
            let span = o.f_max - o.f_min;
            o.f_max - (span * u + (with_heads - 1) / 2) / (with_heads - 1)
        };
        let half = model.unit_input(input, u + 1).c / 2;
        let cap = if half > MIN_HEAD { half } else { MIN_HEAD };
        let f = if f < cap { f } else { cap };
        h[u] = if f >= 8 { f / 8 * 8 } else { f };
        u += 1;
    }
    h
}

/// The head widths a mode starts from: adaptive (NeuroFlux), `ll_filters` everywhere but the
/// last unit (LL), none (BP).
const fn initial_heads(pb: Problem, mode: Mode, o: &PlanOptions) -> [usize; MAX_UNITS] {
    match mode {
        Mode::NeuroFlux => adaptive_heads(&pb.model, pb.input, o),
        Mode::Ll => {
            let mut h = [0usize; MAX_UNITS];
            let mut u = 0;
            while u + 1 < pb.model.units.len() {
                h[u] = o.ll_filters;
                u += 1;
            }
            h
        }
        Mode::Bp => [0usize; MAX_UNITS],
    }
}

const fn check_options(o: &PlanOptions) -> Result<(), PlanError> {
    if o.b_min == 0 || o.b_min > o.b_max {
        return Err(PlanError::BadOptions(
            "batch sizes need 1 <= b_min <= b_max",
        ));
    }
    if n_batches(o) == 0 {
        return Err(PlanError::BadOptions(
            "no allowed batch size between b_min and b_max",
        ));
    }
    if o.f_min < MIN_HEAD || o.f_min > o.f_max || o.ll_filters < MIN_HEAD {
        return Err(PlanError::BadOptions(
            "head filters need 4 <= f_min <= f_max and ll_filters >= 4",
        ));
    }
    if o.workers < 1 {
        return Err(PlanError::BadOptions("workers must be at least 1"));
    }
    if o.homogeneity < 1 {
        return Err(PlanError::BadOptions("homogeneity must be at least 1"));
    }
    if o.world < 1 {
        return Err(PlanError::BadOptions("world must be at least 1"));
    }
    if o.region_align < ELEM_BYTES as usize || !o.region_align.is_multiple_of(ELEM_BYTES as usize) {
        return Err(PlanError::BadOptions(
            "region alignment must be a multiple of the element size",
        ));
    }
    Ok(())
}

/// [`super::plan`] for an arena of at most `budget` bytes.
pub(super) const fn plan_arena<'a>(
    pb: Problem<'a>,
    budget: u64,
    mode: Mode,
    o: &PlanOptions,
) -> Result<Plan<'a>, PlanError> {
    if let Err(e) = check_options(o) {
        return Err(e);
    }
    if !pb.model.accepts(pb.input, pb.classes) {
        return Err(PlanError::BadInput);
    }
    let s = Search {
        pb,
        mode,
        o: PlanOptions {
            b_max: step_cap(o),
            ..*o
        },
        b_max: o.b_max,
        budget,
    };
    let mut heads = initial_heads(pb, mode, o);
    let mut blocks = [EMPTY_BLOCK; MAX_UNITS];
    let n_blocks = match mode {
        Mode::Ll | Mode::Bp => match s.single_block(&heads) {
            Ok(b) => {
                blocks[0] = b;
                1
            }
            Err(e) => return Err(e),
        },
        Mode::NeuroFlux => match s.neuroflux_blocks(&mut heads, &mut blocks) {
            Ok(n) => n,
            Err(e) => return Err(e),
        },
    };
    Ok(Plan {
        mode,
        model: pb.model,
        input: pb.input,
        classes: pb.classes,
        budget,
        options: *o,
        heads,
        n_blocks,
        blocks,
        bp_batch: s.bp_batch(),
    })
}
