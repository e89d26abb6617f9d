//! Regions of the arena and the safe carving of one `&mut [f32]` into disjoint slices.
//!
//! A [`Region`] names a buffer by its place in the arena (offset and length, in arena words
//! of [`WORD_BYTES`] bytes: one `f32`, or two `bf16` of a region planned as [`Elem::Bf16`]).
//! Backends resolve regions to memory; [`carve`] does it for a host slice without
//! `unsafe`: it sorts the regions and splits the slice, so two mutable views can never alias.

/// Bytes of one arena word, the unit of [`Region`] offsets and lengths: one `f32`.
pub const WORD_BYTES: usize = 4;

/// The element type a region of the memory model stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// IEEE single precision, one per arena word.
    F32,
    /// bfloat16 (f32's exponent, 8 bits of mantissa), two per arena word.
    Bf16,
}

impl Elem {
    /// Bytes of one element.
    pub const fn bytes(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::Bf16 => 2,
        }
    }
    /// Arena words that `n` elements occupy: `n` elements times their size, rounded up to a
    /// whole word (a region of an odd number of `bf16` ends with a half word it never
    /// touches), so every region starts on a 4-byte boundary.
    pub const fn words(self, n: usize) -> usize {
        (n * self.bytes()).div_ceil(WORD_BYTES)
    }
    /// The name (`f32`, `bf16`).
    pub const fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::Bf16 => "bf16",
        }
    }
}

/// A buffer in the arena: `len` words starting at word `offset` (an `f32` region's words are
/// its elements; a `bf16` region of `n` elements is [`Elem::words`]`(n)` words long).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First word.
    pub offset: usize,
    /// Number of words; 0 means "no buffer".
    pub len: usize,
}

impl Region {
    /// The empty region, used where an optional buffer is absent.
    pub const NONE: Region = Region { offset: 0, len: 0 };

    /// A region of `len` words at `offset`.
    pub const fn new(offset: usize, len: usize) -> Self {
        Region { offset, len }
    }
    /// One past the last word.
    pub const fn end(&self) -> usize {
        self.offset + self.len
    }
    /// True for the empty region.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The first `len` words of this region.
    pub const fn prefix(&self, len: usize) -> Region {
        assert!(len <= self.len, "prefix longer than region");
        Region {
            offset: self.offset,
            len,
        }
    }
    /// The sub-region of `len` words starting `at` words into this one.
    pub const fn sub(&self, at: usize, len: usize) -> Region {
        assert!(at + len <= self.len, "sub-region out of bounds");
        Region {
            offset: self.offset + at,
            len,
        }
    }
    /// Whether two non-empty regions share a word.
    pub const fn overlaps(&self, other: &Region) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.offset < other.end()
            && other.offset < self.end()
    }
}

/// A bump allocator over region offsets: the memory model lays buffers out with it.
///
/// Each non-empty region it hands out starts on a multiple of `align` words; the words
/// skipped to get there are padding, planned (they count in the arena's size) and never
/// touched. With `align` 1 (the default, every CPU and firmware plan) regions are packed.
#[derive(Clone, Copy, Debug)]
pub struct Bump {
    /// Next free element.
    pub next: usize,
    /// Alignment of every non-empty region, in words (at least 1).
    pub align: usize,
}

impl Default for Bump {
    fn default() -> Self {
        Bump::at(0)
    }
}

impl Bump {
    /// A packing bump allocator starting at `at`.
    pub const fn at(at: usize) -> Self {
        Bump { next: at, align: 1 }
    }
    /// A bump allocator starting at `at` whose non-empty regions start on multiples of
    /// `align` words (1: packed, as [`Bump::at`]).
    pub const fn aligned(at: usize, align: usize) -> Self {
        assert!(align >= 1, "alignment of at least one element");
        Bump { next: at, align }
    }
    /// Reserve `len` words (after padding up to the alignment when `len` is not 0; an
    /// empty region takes nothing).
    pub const fn take(&mut self, len: usize) -> Region {
        if len > 0 {
            self.next = self.next.next_multiple_of(self.align);
        }
        let r = Region {
            offset: self.next,
            len,
        };
        self.next += len;
        r
    }
}

/// Resolve `N` regions of `arena` to disjoint mutable slices (empty regions give empty
/// slices).
///
/// # Panics
/// If a region ends past the arena or two non-empty regions overlap. Layouts are built so that
/// neither happens; a panic here is a bug in the memory model, never a user error.
pub fn carve<'a, const N: usize>(arena: &'a mut [f32], regions: [Region; N]) -> [&'a mut [f32]; N] {
    let mut order: [usize; N] = core::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| regions[i].offset);
    let mut out: [Option<&'a mut [f32]>; N] = core::array::from_fn(|_| None);
    let mut rest: &'a mut [f32] = arena;
    let mut pos = 0;
    for &i in &order {
        let r = regions[i];
        if r.is_empty() {
            out[i] = Some(Default::default());
            continue;
        }
        assert!(r.offset >= pos, "overlapping regions {:?}", regions);
        assert!(
            r.end() - pos <= rest.len(),
            "region {r:?} ends past the arena"
        );
        let (_, tail) = core::mem::take(&mut rest).split_at_mut(r.offset - pos);
        let (mine, tail) = tail.split_at_mut(r.len);
        out[i] = Some(mine);
        rest = tail;
        pos = r.end();
    }
    out.map(|s| s.unwrap_or_default())
}

/// `None` for a slice carved from an empty region (an absent optional buffer), else the slice.
pub fn optional(s: &[f32]) -> Option<&[f32]> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// [`optional`] for a mutable slice.
pub fn optional_mut(s: &mut [f32]) -> Option<&mut [f32]> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carve_gives_disjoint_views_in_any_order() {
        let mut a = [0.0f32; 10];
        let [x, e, y] = carve(&mut a, [Region::new(6, 3), Region::NONE, Region::new(1, 2)]);
        x.fill(1.0);
        y.fill(2.0);
        assert!(e.is_empty());
        assert_eq!(a, [0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn aligned_bump_pads_before_non_empty_regions_only() {
        let mut p = Bump::at(3);
        assert_eq!(p.take(5), Region::new(3, 5));
        assert_eq!(p.take(2), Region::new(8, 2));
        let mut a = Bump::aligned(3, 32);
        assert_eq!(a.take(5), Region::new(32, 5));
        assert_eq!(a.take(0), Region::new(37, 0));
        assert_eq!(a.take(1), Region::new(64, 1));
        assert_eq!(a.next, 65);
        let mut one = Bump::aligned(3, 1);
        assert_eq!(one.take(5), Region::new(3, 5));
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn carve_refuses_overlap() {
        let mut a = [0.0f32; 10];
        let _ = carve(&mut a, [Region::new(0, 3), Region::new(2, 3)]);
    }

    #[test]
    #[should_panic(expected = "past the arena")]
    fn carve_refuses_out_of_bounds() {
        let mut a = [0.0f32; 10];
        let _ = carve(&mut a, [Region::new(8, 3)]);
    }
}
