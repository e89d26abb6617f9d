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

/// A buffer in the arena: [`Region::len`] elements of type [`Region::elem`] starting at word
/// `offset` (an `f32` region's elements are its words; a `bf16` region of `len` elements takes
/// [`Elem::words`]`(len)` words, see [`Region::words`]). Two words in memory, as small as an
/// offset and a length (the element type is the length's top bit), so that layouts held by a
/// microcontroller do not grow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First word.
    pub offset: usize,
    /// The number of elements, with [`BF16_BIT`] set for a `bf16` region.
    tagged_len: usize,
}

/// The bit of [`Region::tagged_len`] that marks a `bf16` region.
const BF16_BIT: usize = 1 << (usize::BITS - 1);

impl core::fmt::Debug for Region {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Region")
            .field("offset", &self.offset)
            .field("len", &self.len())
            .field("elem", &self.elem())
            .finish()
    }
}

impl Default for Region {
    fn default() -> Self {
        Region::NONE
    }
}

impl Region {
    /// The empty region, used where an optional buffer is absent.
    pub const NONE: Region = Region::new(0, 0);

    /// An `f32` region of `len` words at `offset`.
    pub const fn new(offset: usize, len: usize) -> Self {
        Region::of(Elem::F32, offset, len)
    }
    /// A region of `len` elements of `elem` at word `offset`.
    ///
    /// # Panics
    /// If `len` does not fit beside the element type (`len ≥ 2^(bits − 1)`).
    pub const fn of(elem: Elem, offset: usize, len: usize) -> Self {
        assert!(len & BF16_BIT == 0, "region too long");
        let tag = match elem {
            Elem::F32 => 0,
            Elem::Bf16 => BF16_BIT,
        };
        Region {
            offset,
            tagged_len: len | tag,
        }
    }
    /// Number of elements; 0 means "no buffer".
    pub const fn len(&self) -> usize {
        self.tagged_len & !BF16_BIT
    }
    /// The element type.
    pub const fn elem(&self) -> Elem {
        if self.tagged_len & BF16_BIT == 0 {
            Elem::F32
        } else {
            Elem::Bf16
        }
    }
    /// Words the region occupies.
    pub const fn words(&self) -> usize {
        self.elem().words(self.len())
    }
    /// One past the last word.
    pub const fn end(&self) -> usize {
        self.offset + self.words()
    }
    /// True for the empty region.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first `len` elements of this region.
    pub const fn prefix(&self, len: usize) -> Region {
        assert!(len <= self.len(), "prefix longer than region");
        Region::of(self.elem(), self.offset, len)
    }
    /// The sub-region of `len` elements starting `at` elements into this one (`at` a whole
    /// number of words: even in a `bf16` region).
    pub const fn sub(&self, at: usize, len: usize) -> Region {
        assert!(at + len <= self.len(), "sub-region out of bounds");
        let bytes = at * self.elem().bytes();
        assert!(bytes.is_multiple_of(WORD_BYTES), "sub-region not on a word");
        Region::of(self.elem(), self.offset + bytes / WORD_BYTES, len)
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
        self.take_of(Elem::F32, len)
    }
    /// Reserve a region of `n` elements of `elem` ([`Elem::words`]`(n)` words, after padding
    /// as [`Bump::take`]).
    pub const fn take_of(&mut self, elem: Elem, n: usize) -> Region {
        if n > 0 {
            self.next = self.next.next_multiple_of(self.align);
        }
        let r = Region::of(elem, self.next, n);
        self.next += elem.words(n);
        r
    }
}

/// Resolve `N` regions of `arena` to disjoint mutable slices of their words (empty regions
/// give empty slices; a `bf16` region's words hold its elements two by two).
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
        let (mine, tail) = tail.split_at_mut(r.words());
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
