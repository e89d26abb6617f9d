//! The bfloat16 number format: f32's sign, 8-bit exponent and range with 7 stored mantissa bits
//! (the upper half of an f32). [`Bf16::from_f32`] rounds to nearest, ties to even;
//! [`Bf16::to_f32`] is exact. NaN stays NaN (quietened), infinities and signed zeros are kept,
//! and subnormals are rounded like every other value (no flush to zero here; the `vdpbf16ps`
//! GEMM kernel flushes them, see [`gemm::bf16`](crate::gemm::bf16)).

/// A bfloat16 value, stored as its 16 bits (the upper half of the f32 it widens to).
///
/// Equality and hashing are not derived on purpose: bitwise equality would make `-0 != +0`
/// and `NaN == NaN`; compare [`Bf16::to_f32`] or [`Bf16::to_bits`] instead.
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
pub struct Bf16(u16);

impl Bf16 {
    /// Positive zero.
    pub const ZERO: Bf16 = Bf16(0);

    /// The value whose bits are `bits`.
    #[inline]
    pub const fn from_bits(bits: u16) -> Bf16 {
        Bf16(bits)
    }

    /// The 16 bits of this value.
    #[inline]
    pub const fn to_bits(self) -> u16 {
        self.0
    }

    /// `x` rounded to the nearest bf16, ties to even. Values beyond the largest finite bf16
    /// (after rounding) become ±infinity; a NaN becomes a quiet NaN with the same sign and
    /// the upper bits of its payload.
    #[inline]
    pub fn from_f32(x: f32) -> Bf16 {
        let b = x.to_bits();
        // Add half an ulp of the bf16, minus one unless the bf16 ulp's lowest kept bit is
        // set: exact ties round to even. A carry into the exponent is the correct rounding
        // up (including the largest finite values to infinity).
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        // A NaN is truncated with the quiet bit set, so that a payload only in the low 16
        // bits cannot turn into infinity. Both are computed and one is selected (no branch),
        // so that loops of conversions vectorise.
        let quiet = ((b >> 16) as u16) | 0x0040;
        Bf16(if x.is_nan() { quiet } else { rounded })
    }

    /// The exact f32 value.
    #[inline]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

impl From<f32> for Bf16 {
    fn from(x: f32) -> Bf16 {
        Bf16::from_f32(x)
    }
}

impl From<Bf16> for f32 {
    fn from(x: Bf16) -> f32 {
        x.to_f32()
    }
}

/// `dst[i] = Bf16::from_f32(src[i])`.
///
/// # Panics
/// If the lengths differ.
pub fn to_bf16_slice(src: &[f32], dst: &mut [Bf16]) {
    assert_eq!(src.len(), dst.len(), "to_bf16_slice: lengths differ");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = Bf16::from_f32(s);
    }
}

/// `dst[i] = src[i].to_f32()`.
///
/// # Panics
/// If the lengths differ.
pub fn to_f32_slice(src: &[Bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "to_f32_slice: lengths differ");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(x: f32) -> u16 {
        Bf16::from_f32(x).to_bits()
    }

    /// Round to nearest even, the slow way: the two bf16 neighbours of `x` and the distance
    /// to each, in f64 (exact for these).
    fn reference(x: f32) -> u16 {
        let b = x.to_bits();
        let lo = (b >> 16) as u16; // toward zero
        let hi = lo.wrapping_add(1); // away from zero (the next bf16 of the same sign)
        let xl = Bf16::from_bits(lo).to_f32() as f64;
        let xh = f32::from_bits((hi as u32) << 16) as f64;
        // The upper neighbour of the largest finite bf16 is infinity; use where it would be
        // with an unbounded exponent.
        let xh = if xh.is_infinite() {
            xl + (xl - Bf16::from_bits(lo - 1).to_f32() as f64)
        } else {
            xh
        };
        let (dl, dh) = ((x as f64 - xl).abs(), (xh - x as f64).abs());
        if dl < dh || (dl == dh && lo & 1 == 0) {
            lo
        } else {
            hi
        }
    }

    #[test]
    fn exact_values_and_specials() {
        assert_eq!(bits(0.0), 0x0000);
        assert_eq!(bits(-0.0), 0x8000);
        assert!(Bf16::from_bits(0x8000).to_f32().is_sign_negative());
        assert_eq!(Bf16::from_bits(0x8000).to_f32(), 0.0);
        assert_eq!(bits(1.0), 0x3f80);
        assert_eq!(bits(-2.0), 0xc000);
        assert_eq!(bits(f32::INFINITY), 0x7f80);
        assert_eq!(bits(f32::NEG_INFINITY), 0xff80);
        assert_eq!(Bf16::from_bits(0x7f80).to_f32(), f32::INFINITY);
        // The largest finite bf16 and the smallest positive subnormal survive the round trip.
        for b in [0x7f7f, 0x0001, 0x8001, 0x007f, 0x0080] {
            assert_eq!(bits(Bf16::from_bits(b).to_f32()), b, "{b:#06x}");
        }
        // Every bf16 is an f32 exactly: widening then rounding gives it back (NaNs aside).
        for b in 0..=u16::MAX {
            let x = Bf16::from_bits(b).to_f32();
            if !x.is_nan() {
                assert_eq!(bits(x), b, "{b:#06x}");
            }
        }
    }

    #[test]
    fn nan_stays_nan() {
        // Payloads only in the low 16 bits (would truncate to infinity), both signs,
        // signalling and quiet.
        for b in [
            0x7f80_0001u32,
            0xff80_0001,
            0x7fc0_0000,
            0x7f80_ffff,
            0xffff_ffff,
        ] {
            let x = f32::from_bits(b);
            assert!(x.is_nan());
            let y = Bf16::from_f32(x);
            assert!(y.to_f32().is_nan(), "{b:#010x} -> {:#06x}", y.to_bits());
            assert_eq!(
                y.to_bits() & 0x8000,
                (b >> 16) as u16 & 0x8000,
                "sign of {b:#010x}"
            );
        }
        assert!(Bf16::from_bits(0x7fc1).to_f32().is_nan());
    }

    #[test]
    fn ties_round_to_even_and_overflow_rounds_to_infinity() {
        // 1 + 2^-8 is half way between 1 (even) and 1 + 2^-7 (odd): to 1.
        assert_eq!(bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 1 + 3·2^-8 is half way between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
        assert_eq!(bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        // Just above / below a tie.
        assert_eq!(bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bits(f32::from_bits(0x3f81_7fff)), 0x3f81);
        // Negative ties mirror the positive ones.
        assert_eq!(bits(f32::from_bits(0xbf80_8000)), 0xbf80);
        assert_eq!(bits(f32::from_bits(0xbf81_8000)), 0xbf82);
        // Subnormal ties: 0x0000_8000 is half the smallest bf16 subnormal (to 0, even);
        // 0x0001_8000 is between 0x0001 (odd) and 0x0002: up.
        assert_eq!(bits(f32::from_bits(0x0000_8000)), 0x0000);
        assert_eq!(bits(f32::from_bits(0x0001_8000)), 0x0002);
        assert_eq!(bits(f32::from_bits(0x8000_8001)), 0x8001);
        // The largest subnormal rounds up into the smallest normal.
        assert_eq!(bits(f32::from_bits(0x007f_ffff)), 0x0080);
        // f32::MAX is above the tie between the largest finite bf16 and 2^128: infinity.
        assert_eq!(bits(f32::MAX), 0x7f80);
        assert_eq!(bits(f32::MIN), 0xff80);
        // Just below that tie stays finite.
        assert_eq!(bits(f32::from_bits(0x7f7f_7fff)), 0x7f7f);
        assert_eq!(bits(f32::from_bits(0x7f7f_8000)), 0x7f80);
    }

    #[test]
    fn rounding_matches_the_nearest_neighbour_on_a_sweep() {
        // Every 16-bit high half with a set of low halves: exact, just below / at / just above
        // the tie, and others; against the distance-based reference.
        let lows = [
            0x0000u32, 0x0001, 0x3fff, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xc000, 0xfffe, 0xffff,
        ];
        for hi in 0..=u16::MAX as u32 {
            for &lo in &lows {
                let x = f32::from_bits(hi << 16 | lo);
                if x.is_nan() || x.is_infinite() {
                    continue;
                }
                assert_eq!(bits(x), reference(x), "{:#010x}", x.to_bits());
            }
        }
    }

    #[test]
    fn slices_convert_elementwise() {
        let src = [1.0f32, -0.0, 3.3, f32::INFINITY, 1e-40];
        let mut h = [Bf16::ZERO; 5];
        to_bf16_slice(&src, &mut h);
        let mut back = [0f32; 5];
        to_f32_slice(&h, &mut back);
        for (i, (&s, &b)) in src.iter().zip(&back).enumerate() {
            assert_eq!(h[i].to_bits(), bits(s));
            assert_eq!(b.to_bits(), (bits(s) as u32) << 16);
        }
        assert_eq!(f32::from(Bf16::from(2.5f32)), 2.5);
    }
}
