//! How the planner searches: block boundaries, head widths and the largest batch size that
//! fits, each candidate measured by laying it out ([`crate::layout::BlockLayout`]); the rules
//! for allowed batch sizes.
use super::{Block, Mode, Plan, PlanError, PlanOptions, EMPTY_BLOCK, MIN_HEAD};
use crate::infer::InferLayout;
use crate::layout::{BlockLayout, SegMode, ELEM_BYTES};
use crate::model::{ModelSpec, Shape, MAX_UNITS};

/// The forward-only chain of units `0..first` for `chunk` samples, placed after `block` in the
/// arena, or over its scratch with [`PlanOptions::chain_in_scratch`] (sharing its kernel
/// workspace when the block has a shared one).
#[allow(clippy::too_many_arguments)]
pub(super) const fn chain_of(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    heads: &[usize; MAX_UNITS],
    first: usize,
    chunk: usize,
    block: &BlockLayout,
    o: &PlanOptions,
) -> InferLayout {
    InferLayout::new(
        model,
        input,
        classes,
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

/// Whether a block starting at unit `first` recomputes its inputs.
const fn recomputes(o: &PlanOptions, first: usize) -> bool {
    o.recompute && first > 0
}

/// Bytes of the block `first..=last` at batch `b`, with its recompute chain at `chunk`
/// samples when it has one.
#[allow(clippy::too_many_arguments)]
const fn block_bytes(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    mode: Mode,
    first: usize,
    last: usize,
    heads: &[usize; MAX_UNITS],
    b: usize,
    chunk: usize,
    o: &PlanOptions,
) -> u64 {
    let l = layout_of(model, input, classes, mode, first, last, heads, b, o);
    if recomputes(o, first) {
        let c = chain_of(model, input, classes, heads, first, chunk, &l, o);
        let floats = if c.floats > l.floats {
            c.floats
        } else {
            l.floats
        };
        floats as u64 * ELEM_BYTES
    } else {
        l.bytes()
    }
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

const fn seg_mode(mode: Mode) -> SegMode {
    match mode {
        Mode::Bp => SegMode::Global,
        _ => SegMode::Local,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) const fn layout_of(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    mode: Mode,
    first: usize,
    last: usize,
    heads: &[usize; MAX_UNITS],
    b: usize,
    o: &PlanOptions,
) -> BlockLayout {
    BlockLayout::with_kernels(
        model,
        input,
        classes,
        seg_mode(mode),
        first,
        last,
        heads,
        b,
        &o.kernels(first),
    )
}

/// The allowed batch sizes in increasing order: `i`-th allowed size, or 0 past the end.
const fn nth_batch(o: &PlanOptions, i: usize) -> usize {
    let small_end = if o.b_max < 16 { o.b_max } else { 15 };
    let n_small = if o.b_min <= small_end {
        small_end - o.b_min + 1
    } else {
        0
    };
    if i < n_small {
        return o.b_min + i;
    }
    let first8 = if o.b_min <= 16 {
        16
    } else {
        o.b_min.div_ceil(8) * 8
    };
    let b = first8 + (i - n_small) * 8;
    if b <= o.b_max {
        b
    } else {
        0
    }
}

/// Number of allowed batch sizes.
const fn n_batches(o: &PlanOptions) -> usize {
    let mut lo = 0;
    let mut hi = o.b_max + 1;
    // nth_batch is non-zero for a prefix of indices: find its length.
    while lo < hi {
        let mid = (lo + hi) / 2;
        if nth_batch(o, mid) != 0 {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Whether `b` is an allowed batch size.
pub const fn batch_allowed(o: &PlanOptions, b: usize) -> bool {
    b >= o.b_min && b <= o.b_max && (b < 16 || b.is_multiple_of(8))
}

/// The next allowed batch size after `b` (0 if none).
pub const fn next_batch(o: &PlanOptions, b: usize) -> usize {
    let mut c = b + 1;
    while c <= o.b_max {
        if batch_allowed(o, c) {
            return c;
        }
        c += 1;
    }
    0
}

/// The largest batch backpropagation gets under `budget`: the whole model as one block, no
/// auxiliary heads (0 when even the smallest batch does not fit).
const fn bp_largest_batch(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    o: &PlanOptions,
    budget: u64,
) -> usize {
    let no_heads = [0usize; MAX_UNITS];
    let last = model.units.len() - 1;
    largest_batch(
        model,
        input,
        classes,
        Mode::Bp,
        0,
        last,
        &no_heads,
        o,
        budget,
    )
}

/// Largest allowed batch size whose block fits `budget` (0 if even `b_min` does not), its
/// recompute chain (if any) at `b_min` samples.
#[allow(clippy::too_many_arguments)]
const fn largest_batch(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    mode: Mode,
    first: usize,
    last: usize,
    heads: &[usize; MAX_UNITS],
    o: &PlanOptions,
    budget: u64,
) -> usize {
    let n = n_batches(o);
    // Bytes grow with the batch size: binary search for the last fitting index.
    let mut lo = 0;
    let mut hi = n;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let b = nth_batch(o, mid);
        if block_bytes(
            model,
            input,
            classes,
            mode,
            first,
            last,
            heads,
            b,
            min_chunk(o),
            o,
        ) <= budget
        {
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
    Ok(())
}

/// Per-sample bytes of unit `u` trained alone (the slope of its block bytes in the batch size).
const fn per_sample(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    u: usize,
    heads: &[usize; MAX_UNITS],
) -> u64 {
    let o = &PlanOptions::DEFAULT;
    let one = layout_of(model, input, classes, Mode::NeuroFlux, u, u, heads, 1, o).bytes();
    let two = layout_of(model, input, classes, Mode::NeuroFlux, u, u, heads, 2, o).bytes();
    two - one
}

/// [`plan`] for an arena of at most `budget` bytes.
pub(super) const fn plan_arena(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    budget: u64,
    mode: Mode,
    o: &PlanOptions,
) -> Result<Plan, PlanError> {
    if let Err(e) = check_options(o) {
        return Err(e);
    }
    if !model.accepts(input, classes) {
        return Err(PlanError::BadInput);
    }
    let nu = model.units.len();
    let mut heads = match mode {
        Mode::NeuroFlux => adaptive_heads(model, input, o),
        Mode::Ll => {
            let mut h = [0usize; MAX_UNITS];
            let mut u = 0;
            while u + 1 < nu {
                h[u] = o.ll_filters;
                u += 1;
            }
            h
        }
        Mode::Bp => [0usize; MAX_UNITS],
    };
    let mut blocks = [EMPTY_BLOCK; MAX_UNITS];
    let mut n_blocks = 0;
    match mode {
        Mode::Ll | Mode::Bp => {
            let b = largest_batch(model, input, classes, mode, 0, nu - 1, &heads, o, budget);
            if b == 0 {
                let needed = block_bytes(
                    model,
                    input,
                    classes,
                    mode,
                    0,
                    nu - 1,
                    &heads,
                    o.b_min,
                    min_chunk(o),
                    o,
                );
                return Err(PlanError::BudgetTooSmall { needed });
            }
            blocks[0] = make_block(model, input, classes, mode, 0, nu - 1, &heads, b, o, budget);
            n_blocks = 1;
        }
        Mode::NeuroFlux => {
            // The smallest feasible budget: every unit alone, its head at the minimum, at b_min.
            let mut min_heads = [0usize; MAX_UNITS];
            let mut u = 0;
            while u + 1 < nu {
                min_heads[u] = MIN_HEAD;
                u += 1;
            }
            let mut needed = 0;
            u = 0;
            while u < nu {
                let b = block_bytes(
                    model,
                    input,
                    classes,
                    mode,
                    u,
                    u,
                    &min_heads,
                    o.b_min,
                    min_chunk(o),
                    o,
                );
                if b > needed {
                    needed = b;
                }
                u += 1;
            }
            if budget < needed {
                return Err(PlanError::BudgetTooSmall { needed });
            }
            let bp_batch = bp_largest_batch(model, input, classes, o, budget);
            let mut first = 0;
            while first < nu {
                // Grow the block while units stay memory-homogeneous.
                let p0 = per_sample(model, input, classes, first, &heads);
                let mut last = first;
                while last + 1 < nu {
                    let p = per_sample(model, input, classes, last + 1, &heads);
                    let h = o.homogeneity as u64;
                    if p * h < p0 || p > p0 * h {
                        break;
                    }
                    last += 1;
                }
                // Shrink until it fits at b_min: split first, then halve the head.
                loop {
                    let bytes = block_bytes(
                        model,
                        input,
                        classes,
                        mode,
                        first,
                        last,
                        &heads,
                        o.b_min,
                        min_chunk(o),
                        o,
                    );
                    if bytes <= budget {
                        break;
                    }
                    if last > first {
                        last -= 1;
                    } else {
                        // `needed` guarantees that the minimum head fits.
                        assert!(
                            heads[first] > MIN_HEAD,
                            "planner invariant: minimum head must fit"
                        );
                        heads[first] = if heads[first] / 2 > MIN_HEAD {
                            heads[first] / 2
                        } else {
                            MIN_HEAD
                        };
                    }
                }
                // Fixed costs (parameters, momentum) of a long block can starve its batch:
                // split while the block gets less than half the batch its first unit would
                // get alone.
                let alone =
                    largest_batch(model, input, classes, mode, first, first, &heads, o, budget);
                while last > first
                    && 2 * largest_batch(
                        model, input, classes, mode, first, last, &heads, o, budget,
                    ) < alone
                {
                    last -= 1;
                }
                // A block must not train at a smaller batch than BP would: split, then halve.
                let mut b =
                    largest_batch(model, input, classes, mode, first, last, &heads, o, budget);
                while b < bp_batch {
                    if last > first {
                        last -= 1;
                    } else if heads[first] > MIN_HEAD {
                        heads[first] = if heads[first] / 2 > MIN_HEAD {
                            heads[first] / 2
                        } else {
                            MIN_HEAD
                        };
                    } else {
                        break;
                    }
                    b = largest_batch(model, input, classes, mode, first, last, &heads, o, budget);
                }
                blocks[n_blocks] = make_block(
                    model, input, classes, mode, first, last, &heads, b, o, budget,
                );
                n_blocks += 1;
                first = last + 1;
            }
        }
    }
    let bp_batch = bp_largest_batch(model, input, classes, o, budget);
    Ok(Plan {
        mode,
        model: *model,
        input,
        classes,
        budget,
        options: *o,
        heads,
        n_blocks,
        blocks,
        bp_batch,
    })
}

#[allow(clippy::too_many_arguments)]
const fn make_block(
    model: &ModelSpec,
    input: Shape,
    classes: usize,
    mode: Mode,
    first: usize,
    last: usize,
    heads: &[usize; MAX_UNITS],
    batch: usize,
    o: &PlanOptions,
    budget: u64,
) -> Block {
    let l = layout_of(model, input, classes, mode, first, last, heads, batch, o);
    let mut block = Block {
        first,
        last,
        batch,
        chunk: 0,
        bytes: l.bytes(),
        breakdown: l.breakdown,
    };
    if recomputes(o, first) {
        // The largest chunk (an allowed batch size up to the block's) that still fits.
        let mut chunk = min_chunk(o);
        let mut c = if chunk < o.b_min {
            o.b_min
        } else {
            next_batch(o, chunk)
        };
        while c != 0
            && c <= batch
            && block_bytes(model, input, classes, mode, first, last, heads, batch, c, o) <= budget
        {
            chunk = c;
            c = next_batch(o, c);
        }
        let chain = chain_of(model, input, classes, heads, first, chunk, &l, o);
        block.chunk = chunk;
        // Over the scratch, only what the chain adds past the block's end counts.
        let end = if chain.floats > l.floats {
            chain.floats
        } else {
            l.floats
        };
        block.bytes = end as u64 * ELEM_BYTES;
        block.breakdown.recompute = end - l.floats;
    }
    block
}
