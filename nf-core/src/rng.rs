//! Seeded, portable pseudo-random numbers and weight initialisation.
//!
//! The generator is xoshiro256** (Blackman and Vigna) whose 256-bit state is filled from a `u64`
//! seed by SplitMix64, so a seed names one stream on every platform. Nothing here reads a clock
//! or the OS: the same seed always gives the same numbers, initial weights and shuffles.

/// xoshiro256** generator, seeded deterministically from a `u64` through SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    /// Second value of the last Box–Muller pair, handed out by the next [`Rng::normal`].
    spare: Option<f32>,
}

/// One SplitMix64 step: advances `state` and returns a well-mixed output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole stream is determined by `seed` (any value, including 0).
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // SplitMix64 is a bijection of a counter, so four consecutive outputs are never all zero.
        Rng { s, spare: None }
    }

    /// Next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Next 32 uniformly distributed bits (the high half of [`Rng::next_u64`]).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Unbiased integer in `0..n` (Lemire's multiply-and-reject). `n` must be positive;
    /// `below(0)` returns 0 (and fails a debug assertion).
    pub fn below(&mut self, n: u32) -> u32 {
        debug_assert!(n > 0, "Rng::below(0)");
        if n == 0 {
            return 0;
        }
        let mut m = u64::from(self.next_u32()) * u64::from(n);
        if (m as u32) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u32) < threshold {
                m = u64::from(self.next_u32()) * u64::from(n);
            }
        }
        (m >> 32) as u32
    }

    /// Unbiased integer in `0..n` for 64-bit ranges; `n` must be positive.
    fn below_u64(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform `f32` in `[0, 1)`: 24 random bits times 2⁻²⁴, so every value is exact.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    /// Standard normal `f32` (mean 0, variance 1) by the Box–Muller transform; values come in
    /// pairs, the second is kept for the next call.
    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = libm::sqrtf(-2.0 * libm::logf(u1));
        let theta = 2.0 * core::f32::consts::PI * u2;
        let (s, c) = libm::sincosf(theta);
        self.spare = Some(r * s);
        r * c
    }

    /// Shuffles `xs` uniformly at random in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below_u64(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = Rng::new(43);
        let (xa, xc): (Vec<u64>, Vec<u64>) = (0..8).map(|_| (a.next_u64(), c.next_u64())).unzip();
        assert_ne!(xa, xc, "different seeds must give different streams");
        // A clone continues the same stream, including a pending Box–Muller value.
        let _ = a.normal();
        let mut d = a.clone();
        for _ in 0..10 {
            assert_eq!(a.normal().to_bits(), d.normal().to_bits());
        }
    }

    #[test]
    fn xoshiro_reference_values() {
        // xoshiro256** from the state [1, 2, 3, 4] (reference implementation's first outputs).
        let mut r = Rng {
            s: [1, 2, 3, 4],
            spare: None,
        };
        assert_eq!(r.next_u64(), 11520);
        assert_eq!(r.next_u64(), 0);
        assert_eq!(r.next_u64(), 1509978240);
        assert_eq!(r.next_u64(), 1215971899390074240);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(7);
        for len in [0usize, 1, 2, 3, 10, 1000] {
            let mut xs: Vec<usize> = (0..len).collect();
            r.shuffle(&mut xs);
            let mut sorted = xs.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..len).collect::<Vec<_>>());
            if len >= 10 {
                assert_ne!(
                    xs,
                    (0..len).collect::<Vec<_>>(),
                    "shuffle left {len} items in order"
                );
            }
        }
    }

    #[test]
    fn below_in_range_and_covers() {
        let mut r = Rng::new(3);
        for n in [1u32, 2, 3, 7, 10, 1000, u32::MAX] {
            for _ in 0..2000 {
                assert!(r.below(n) < n);
            }
        }
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[r.below(10) as usize] += 1;
        }
        for (v, &c) in seen.iter().enumerate() {
            assert!(
                (800..1200).contains(&c),
                "value {v} drawn {c} times of 10000"
            );
        }
    }

    #[test]
    fn uniform_in_unit_interval() {
        let mut r = Rng::new(11);
        let mut sum = 0f64;
        for _ in 0..100_000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += f64::from(u);
        }
        let mean = sum / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn normal_has_mean_0_and_std_1() {
        let mut r = Rng::new(1234);
        let w: Vec<f32> = (0..100_000).map(|_| r.normal()).collect();
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = w
            .iter()
            .map(|&v| (f64::from(v) - mean) * (f64::from(v) - mean))
            .sum::<f64>()
            / n;
        assert!((var.sqrt() - 1.0).abs() < 0.05, "std {}", var.sqrt());
        assert!(mean.abs() < 0.05, "mean {mean}");
    }
}
