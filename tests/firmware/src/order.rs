//! The epoch order without a buffer: a keyed pseudo-random permutation of the training images,
//! computed position by position (a 4-round Feistel network on the next even power of two,
//! walked until it lands below the image count), so no `u16` per training image is kept
//! (8,000 B for 4,000 images).
use nf_core::rng::Rng;
use nf_core::schedule::SampleOrder;

/// The order of one epoch of one block: position `i` trains image [`Shuffle::index`]`(i)`.
pub struct Shuffle {
    n: u32,
    /// Bits of each half of the Feistel network's domain.
    half: u32,
    keys: [u32; 4],
}

impl Shuffle {
    /// The order of epoch `epoch` of block `block` over `n` images (keyed as
    /// `nf_core::schedule::epoch_order` keys its shuffle, so each epoch and block differs).
    pub fn new(seed: u64, block: usize, epoch: u32, n: usize) -> Self {
        assert!(n > 0 && n <= 1 << 30, "an epoch of 1..=2^30 images");
        let mix = seed
            ^ (block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (u64::from(epoch)).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let mut rng = Rng::new(mix);
        let bits = usize::BITS - (n - 1).leading_zeros();
        Shuffle {
            n: n as u32,
            half: bits.div_ceil(2).max(1),
            keys: [
                rng.next_u32(),
                rng.next_u32(),
                rng.next_u32(),
                rng.next_u32(),
            ],
        }
    }

    /// One pass of the Feistel network: a permutation of `0..4^half`.
    fn feistel(&self, x: u32) -> u32 {
        let mask = (1u32 << self.half) - 1;
        let (mut l, mut r) = (x >> self.half, x & mask);
        for &k in &self.keys {
            let mut f = (r ^ k).wrapping_mul(0x9E37_79B1);
            f ^= f >> 15;
            f = f.wrapping_mul(0x85EB_CA6B);
            f ^= f >> 13;
            (l, r) = (r, l ^ (f & mask));
        }
        (l << self.half) | r
    }

    /// The image at position `i` (`i < n`): a permutation of `0..n` (cycle walking: the
    /// network permutes `0..4^half`, at most 4 n values; positions outside `0..n` are walked
    /// on until they land inside).
    pub fn index(&self, i: u32) -> u32 {
        debug_assert!(i < self.n);
        let mut x = self.feistel(i);
        while x >= self.n {
            x = self.feistel(x);
        }
        x
    }
}

impl SampleOrder for Shuffle {
    fn len(&self) -> usize {
        self.n as usize
    }

    fn indices<'a>(&'a self, start: usize, end: usize, buf: &'a mut [u32]) -> &'a [u32] {
        let buf = &mut buf[..end - start];
        for (k, d) in buf.iter_mut().enumerate() {
            *d = self.index((start + k) as u32);
        }
        buf
    }
}
