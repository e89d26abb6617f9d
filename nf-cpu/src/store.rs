//! The element types a tensor of the arena is stored in ([`Store`]: `f32`, or [`Bf16`] in a
//! region planned as bf16, see [`nf_core::layout::Precision`]), and the view of arena words
//! as bf16 values.
//!
//! Element-wise kernels are generic over [`Store`]: they load each element as `f32`, compute
//! in `f32` exactly as the f32 kernel does, and store the result rounded to the element type
//! (to nearest, ties to even). With `f32` everywhere they are the f32 kernels, bit for bit.
use crate::bf16::Bf16;
use crate::par::{Parts, Pool};
use crate::wide::wide;
use nf_core::region::{Elem, Region};

/// An element type of an arena tensor: loaded as `f32`, stored from `f32`.
pub trait Store: Copy + Send + Sync + Default + 'static {
    /// The value as `f32` (exact).
    fn load(self) -> f32;
    /// `v` in this type (exact for `f32`; rounded to nearest, ties to even, for bf16).
    fn store(v: f32) -> Self;
}

impl Store for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(v: f32) -> f32 {
        v
    }
}

impl Store for Bf16 {
    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn store(v: f32) -> Bf16 {
        Bf16::from_f32(v)
    }
}

/// `x`'s memory (arena words) as twice as many bf16 values.
pub fn as_bf16(x: &[f32]) -> &[Bf16] {
    // SAFETY: `Bf16` is `repr(transparent)` over `u16`: every bit pattern is a value, its
    // size is half and its alignment at most that of `f32`, so the `2 · len` values cover
    // exactly `x`'s bytes, borrowed (shared) for as long as `x`.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<Bf16>(), 2 * x.len()) }
}

/// `x`'s memory (arena words) as twice as many bf16 values, mutably.
pub fn as_bf16_mut(x: &mut [f32]) -> &mut [Bf16] {
    // SAFETY: as in `as_bf16`; the borrow is unique for as long as `x`'s, and any bf16
    // written there leaves `x` holding valid (if meaningless) f32 bit patterns.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<Bf16>(), 2 * x.len()) }
}

/// Copy `src` into `dst` converting each element (`dst.len() == src.len()`).
pub fn convert<S: Store, D: Store>(src: &[S], dst: &mut [D]) {
    assert_eq!(src.len(), dst.len(), "convert: lengths differ");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = D::store(s.load());
    }
}

/// [`convert`] over `pool`'s workers, in contiguous ranges once `src` is large enough to pay
/// for waking them, each in the pool's widest vectors.
pub fn convert_par<S: Store, D: Store>(pool: &Pool, src: &[S], dst: &mut [D]) {
    assert_eq!(src.len(), dst.len(), "convert: lengths differ");
    let len = dst.len();
    let t = pool.elementwise_parts(len);
    let ds = Parts::new(dst, 1, len, t);
    pool.run(t, |w| {
        wide(
            pool.isa(),
            #[inline(always)]
            || {
                let part = ds.take(w);
                let r = part.units();
                convert(&src[r], part.into_slice());
            },
        )
    });
}

/// A region of the arena resolved to its elements: its words as `f32`, or as bf16 values.
#[derive(Debug)]
pub enum Tensor<'a> {
    /// An `f32` region.
    F32(&'a mut [f32]),
    /// A bf16 region (its `len` elements; a trailing half word is not part of it).
    Bf16(&'a mut [Bf16]),
}

impl<'a> Tensor<'a> {
    /// The elements of region `r`, given its words (`carve`d from the arena).
    pub fn of(words: &'a mut [f32], r: Region) -> Self {
        match r.elem() {
            Elem::F32 => Tensor::F32(words),
            Elem::Bf16 => Tensor::Bf16(&mut as_bf16_mut(words)[..r.len()]),
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Tensor::F32(t) => t.len(),
            Tensor::Bf16(t) => t.len(),
        }
    }
    /// Whether it has no elements (an absent optional buffer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements `at..at + n` as `f32`: the region's own memory, or widened into `buf` (on
    /// `pool`'s workers).
    pub fn load<'s>(&'s self, pool: &Pool, at: usize, n: usize, buf: &'s mut [f32]) -> &'s [f32] {
        match self {
            Tensor::F32(t) => &t[at..at + n],
            Tensor::Bf16(t) => {
                convert_par(pool, &t[at..at + n], &mut buf[..n]);
                &buf[..n]
            }
        }
    }
    /// Where elements `at..at + n` are produced in `f32`: the region's own memory, or `buf`
    /// (then [`Tensor::store`] rounds them into the region).
    pub fn out<'s>(&'s mut self, at: usize, n: usize, buf: &'s mut [f32]) -> &'s mut [f32] {
        match self {
            Tensor::F32(t) => &mut t[at..at + n],
            Tensor::Bf16(_) => &mut buf[..n],
        }
    }
    /// After [`Tensor::out`]: round `buf[..n]` into elements `at..at + n` of a bf16 region
    /// (on `pool`'s workers; nothing to do for an `f32` one, which was written in place).
    pub fn store(&mut self, pool: &Pool, at: usize, n: usize, buf: &[f32]) {
        if let Tensor::Bf16(t) = self {
            convert_par(pool, &buf[..n], &mut t[at..at + n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_is_identity_and_bf16_rounds_to_nearest_even() {
        for v in [
            0.0f32,
            -0.0,
            1.0,
            1.0 + 1.0 / 256.0,
            -3.5e-20,
            f32::INFINITY,
        ] {
            assert_eq!(f32::store(v).to_bits(), v.to_bits());
            assert_eq!(Bf16::store(v).load(), Bf16::from_f32(v).to_f32());
        }
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1).
        assert_eq!(Bf16::store(1.0 + 1.0 / 256.0).load(), 1.0);
        let words = [1.0f32, -2.0];
        assert_eq!(as_bf16(&words).len(), 4);
    }

    #[test]
    fn convert_round_trips_bf16_values() {
        let src: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 0.37).collect();
        let mut b = vec![Bf16::ZERO; 100];
        convert(&src, &mut b);
        let mut back = vec![0.0f32; 100];
        convert(&b, &mut back);
        for (&s, &r) in src.iter().zip(&back) {
            assert_eq!(r, Bf16::from_f32(s).to_f32());
        }
    }
}
