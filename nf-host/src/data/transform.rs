//! Input transforms: zero padding of every image (`--pad`), and the training augmentation
//! (`--augment`): a random crop of the image padded by `crop` pixels on each side (the image
//! shifted by up to `crop` pixels, what it uncovers filled with black), and a random horizontal
//! flip.
//!
//! Both act as a sample is written into a batch ([`super::Dataset::write_view`]): the data set
//! stays as stored (no padded or augmented copy), so they cost no host memory. The view of a
//! sample depends only on the seed, the block, the epoch and the sample's index
//! ([`Augment::view`]), never on batch order or threads: runs are deterministic under `--seed`
//! and a resumed run sees the views an uninterrupted one would.
use nf_core::rng::Rng;

/// The most pixels `--pad` and `--augment`'s crop may add on each side.
pub const MAX_PAD: usize = 64;

/// How one sample is read: shifted by `(dy, dx)` pixels (a crop of the padded image), and
/// mirrored left-right when `flip`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Rows the image moves up (negative: down).
    pub dy: i32,
    /// Columns the image moves left (negative: right).
    pub dx: i32,
    /// Mirror left-right (after the shift).
    pub flip: bool,
}

impl View {
    /// The sample as it is: no shift, no flip.
    pub const IDENTITY: View = View {
        dy: 0,
        dx: 0,
        flip: false,
    };
}

/// The training augmentation of `nf train --augment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Random-crop padding: shifts are uniform in `-crop..=crop` on each axis (0: no crop).
    pub crop: usize,
    /// Random horizontal flip with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// The default crop padding for images `h` pixels high: an eighth of the side (4 for
    /// 32x32 CIFAR, 3 for 28x28 Fashion-MNIST), at least 1.
    pub fn default_crop(h: usize) -> usize {
        (h / 8).clamp(1, MAX_PAD)
    }

    /// The view of sample `index` in epoch `epoch` of block `block` under `seed`.
    pub fn view(&self, seed: u64, block: usize, epoch: u32, index: u32) -> View {
        let key = seed
            ^ 0xA11C_E5ED_0000_0000
            ^ ((block as u64) << 48)
            ^ (u64::from(epoch) << 32)
            ^ u64::from(index);
        let mut rng = Rng::new(key);
        let span = 2 * self.crop as u32 + 1;
        let mut shift = || {
            if self.crop == 0 {
                0
            } else {
                rng.below(span) as i32 - self.crop as i32
            }
        };
        let (dy, dx) = (shift(), shift());
        View {
            dy,
            dx,
            flip: self.flip && rng.next_u32() & 1 == 1,
        }
    }
}

/// Write one channel plane of `h` x `w` stored pixels, padded by `pad` on every side and read
/// through `view`, into `dst` (`(h + 2 pad) * (w + 2 pad)` values): pixel `p` becomes
/// `f(p)`, and what lies outside the stored image becomes `f(0)` (black).
pub fn write_plane(
    src: &[u8],
    (h, w): (usize, usize),
    pad: usize,
    view: View,
    dst: &mut [f32],
    f: impl Fn(u8) -> f32,
) {
    let (oh, ow) = (h + 2 * pad, w + 2 * pad);
    debug_assert_eq!(src.len(), h * w);
    debug_assert_eq!(dst.len(), oh * ow);
    let black = f(0);
    // Output (y, x) reads stored (y + dy - pad, x' + dx - pad), x' mirrored when flipped.
    for (y, row) in dst.chunks_exact_mut(ow).enumerate() {
        let sy = y as i64 + i64::from(view.dy) - pad as i64;
        if !(0..h as i64).contains(&sy) {
            row.fill(black);
            continue;
        }
        let src_row = &src[sy as usize * w..(sy as usize + 1) * w];
        for (x, d) in row.iter_mut().enumerate() {
            let x = if view.flip { ow - 1 - x } else { x };
            let sx = x as i64 + i64::from(view.dx) - pad as i64;
            *d = if (0..w as i64).contains(&sx) {
                f(src_row[sx as usize])
            } else {
                black
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(src: &[u8], hw: (usize, usize), pad: usize, view: View) -> Vec<f32> {
        let (oh, ow) = (hw.0 + 2 * pad, hw.1 + 2 * pad);
        let mut dst = vec![-1.0; oh * ow];
        write_plane(src, hw, pad, view, &mut dst, f32::from);
        dst
    }

    #[test]
    fn padding_shifts_and_flips_read_the_right_pixels() {
        // 2x3 image: 1 2 3 / 4 5 6.
        let src = [1, 2, 3, 4, 5, 6];
        assert_eq!(
            plane(&src, (2, 3), 0, View::IDENTITY),
            [1., 2., 3., 4., 5., 6.]
        );
        assert_eq!(
            plane(&src, (2, 3), 1, View::IDENTITY),
            [0., 0., 0., 0., 0., 0., 1., 2., 3., 0., 0., 4., 5., 6., 0., 0., 0., 0., 0., 0.]
        );
        let flip = View {
            flip: true,
            ..View::IDENTITY
        };
        assert_eq!(plane(&src, (2, 3), 0, flip), [3., 2., 1., 6., 5., 4.]);
        // Moved up one row and left one column: what is uncovered is black.
        let shifted = View {
            dy: 1,
            dx: 1,
            flip: false,
        };
        assert_eq!(plane(&src, (2, 3), 0, shifted), [5., 6., 0., 0., 0., 0.]);
        let down_right = View {
            dy: -1,
            dx: -2,
            flip: true,
        };
        // Shift right by 2 then mirror: row 0 black; row 1 = mirror of [0 0 1] = [1 0 0].
        assert_eq!(plane(&src, (2, 3), 0, down_right), [0., 0., 0., 1., 0., 0.]);
        // Shifts past the image leave only black.
        let gone = View {
            dy: 9,
            dx: 0,
            flip: false,
        };
        assert!(plane(&src, (2, 3), 0, gone).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn views_are_a_function_of_seed_block_epoch_and_index() {
        let a = Augment {
            crop: 4,
            flip: true,
        };
        assert_eq!(a.view(7, 1, 2, 3), a.view(7, 1, 2, 3));
        let views: Vec<View> = (0..2000).map(|i| a.view(7, 0, 0, i)).collect();
        // Every shift in -4..=4 occurs, both flips occur, nothing outside the range.
        for s in -4..=4 {
            assert!(views.iter().any(|v| v.dy == s) && views.iter().any(|v| v.dx == s));
        }
        assert!(views.iter().all(|v| v.dy.abs() <= 4 && v.dx.abs() <= 4));
        let flips = views.iter().filter(|v| v.flip).count();
        assert!((800..1200).contains(&flips), "{flips}");
        // Other epochs, blocks and seeds draw other views.
        let differ =
            |f: &dyn Fn(u32) -> View| (0..100).filter(|&i| f(i) != views[i as usize]).count();
        assert!(differ(&|i| a.view(7, 0, 1, i)) > 50);
        assert!(differ(&|i| a.view(7, 1, 0, i)) > 50);
        assert!(differ(&|i| a.view(8, 0, 0, i)) > 50);
        // No crop, no flip: the identity.
        let none = Augment {
            crop: 0,
            flip: false,
        };
        assert!((0..100).all(|i| none.view(1, 0, 0, i) == View::IDENTITY));
        assert_eq!(Augment::default_crop(32), 4);
        assert_eq!(Augment::default_crop(28), 3);
        assert_eq!(Augment::default_crop(4), 1);
    }
}
