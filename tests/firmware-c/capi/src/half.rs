//! IEEE half precision for the frozen-weight store: the weights of every block but the last are
//! kept as `f16` (half the bytes of `f32`), and rounded to those values in the arena before the
//! block is evaluated, so that what is evaluated is what is kept (predictions then reproduce
//! the evaluation exactly). The conversions are the `half` crate's, as in the Rust firmware (tests/firmware) and `nf eval`.

/// `x` in IEEE half precision (round to nearest even; overflow to infinity, subnormals kept).
pub(crate) fn f16_bits(x: f32) -> u16 {
    ::half::f16::from_f32(x).to_bits()
}

/// The value of IEEE half-precision bits `h` (exact).
pub(crate) fn f16_value(h: u16) -> f32 {
    ::half::f16::from_bits(h).to_f32()
}

/// Bytes of `n` half-precision values, rounded up to whole `f32` elements (the memory stays a
/// `float` buffer).
pub(crate) const fn f16_bytes(n: usize) -> u64 {
    (n as u64).div_ceil(2) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_and_sizes_are_whole_words() {
        // 1 + 2^-11 lies halfway between 1 and the next half up: ties go to the even one.
        assert_eq!(f16_bits(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f16_value(0x0001), 2f32.powi(-24), "subnormals kept");
        assert_eq!(f16_bits(65520.0), 0x7c00, "rounds up to infinity");
        assert_eq!(f16_bits(1e-9), 0);
        assert_eq!(f16_bytes(3), 8);
    }
}
