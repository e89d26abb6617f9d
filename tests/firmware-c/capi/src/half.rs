//! IEEE half precision for the frozen-weight store: the weights of every block but the last are
//! kept as `f16` (half the bytes of `f32`), and rounded to those values in the arena before the
//! block is evaluated, so that what is evaluated is what is kept (predictions then reproduce
//! the evaluation exactly). The same conversions as the Rust firmware's (tests/firmware).

/// `x` in IEEE half precision (round to nearest even; overflow to infinity, subnormals kept).
pub(crate) fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    // Unbiased for f16: normal when 1..=30.
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let (full, shift) = if e > 0 {
        // Drop 13 mantissa bits; the exponent rides above them (a carry rounds it up).
        (((e as u32) << 23) | man, 13)
    } else {
        // Subnormal: the value in units of 2^-24, rounded.
        let shift = (126 - exp) as u32;
        if shift > 24 {
            return sign;
        }
        (man | 0x80_0000, shift)
    };
    let q = full >> shift;
    let rem = full & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    let q = if rem > half || (rem == half && q & 1 == 1) {
        q + 1
    } else {
        q
    };
    sign | q as u16
}

/// The value of IEEE half-precision bits `h`.
pub(crate) fn f16_value(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = u32::from((h >> 10) & 0x1f);
    let m = u32::from(h & 0x3ff);
    match e {
        0 => sign * m as f32 * (1.0 / 16_777_216.0),
        31 => f32::from_bits((u32::from(h & 0x8000) << 16) | 0x7f80_0000 | (m << 13)),
        _ => f32::from_bits((u32::from(h & 0x8000) << 16) | ((e + 112) << 23) | (m << 13)),
    }
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
    fn every_half_round_trips_and_midpoints_round_to_even() {
        for h in 0..=u16::MAX {
            let v = f16_value(h);
            if v.is_nan() {
                assert!(f16_bits(v) & 0x7c00 == 0x7c00 && f16_bits(v) & 0x3ff != 0);
                continue;
            }
            assert_eq!(f16_bits(v), h, "{h:#06x} = {v}");
            // Between h and the next half up (positive, finite): ties go to the even one.
            let next = h.wrapping_add(1);
            if h < 0x7bff {
                let (a, b) = (f64::from(v), f64::from(f16_value(next)));
                let mid = ((a + b) / 2.0) as f32;
                let even = if h & 1 == 0 { h } else { next };
                assert_eq!(f16_bits(mid), even, "midpoint of {h:#06x}");
                assert_eq!(
                    f16_bits(mid.next_up()),
                    next,
                    "above the midpoint of {h:#06x}"
                );
            }
        }
        assert_eq!(f16_bits(65520.0), 0x7c00, "rounds up to infinity");
        assert_eq!(f16_bits(1e-9), 0);
        assert_eq!(f16_bytes(3), 8);
    }
}
