//! The batch sizes a block may use: `b_min..=b_max`, rounded down to a multiple of 8 from 16
//! up, and at most the step cap ([`step_cap`]) when the options know the training set's size.
use super::PlanOptions;

/// The allowed batch sizes in increasing order: `i`-th allowed size, or 0 past the end.
pub(super) const fn nth_batch(o: &PlanOptions, i: usize) -> usize {
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
pub(super) const fn n_batches(o: &PlanOptions) -> usize {
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
const fn batch_allowed(o: &PlanOptions, b: usize) -> bool {
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

/// The largest batch the step cap allows: the largest allowed batch size `b` with
/// `b * world * min_steps <= samples`, so that an epoch of `samples` at the global batch
/// (`world` ranks of `b`) keeps at least `min_steps` steps; the smallest allowed batch when
/// even that is too large, and `b_max` (no cap) when `samples` or `min_steps` is 0.
pub const fn step_cap(o: &PlanOptions) -> usize {
    if o.samples == 0 || o.min_steps == 0 {
        return o.b_max;
    }
    let world = if o.world > 1 { o.world } else { 1 };
    let most = o.samples / o.min_steps / world;
    let smallest = nth_batch(o, 0);
    if most <= smallest {
        return smallest;
    }
    if most >= o.b_max {
        return o.b_max;
    }
    if most < 16 {
        most
    } else {
        most / 8 * 8
    }
}
