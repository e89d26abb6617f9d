//! Softmax cross-entropy over a batch of logits, with the gradient of the mean loss.

/// Softmax cross-entropy of `n` rows of `classes` logits against integer labels stored as `f32`.
///
/// Returns `(Σ loss, correct)`: the *sum* over the batch of `−ln softmax(logits)[label]` and the
/// number of rows whose first maximal logit is at the label. When `dlogits` is given it is
/// overwritten with the gradient of the *mean* loss, `(softmax − onehot(label)) / n`.
///
/// Stable for any finite logits: the row maximum is subtracted before `exp`, so the loss is
/// `ln Σ exp(l − max) − (l[label] − max)`. A label outside `0..classes` (or not an integer) is a
/// caller bug: it fails a debug assertion; in release that row is ignored (no loss, zero
/// gradient, not counted as correct).
pub fn softmax_xent(
    n: usize,
    classes: usize,
    logits: &[f32],
    labels: &[f32],
    dlogits: Option<&mut [f32]>,
) -> (f32, u32) {
    match dlogits {
        Some(d) => softmax_xent_into(
            n,
            classes,
            logits,
            labels,
            Some(|i: usize, v: f32| d[i] = v),
        ),
        None => softmax_xent_into(n, classes, logits, labels, None::<fn(usize, f32)>),
    }
}

/// [`softmax_xent`] handing each element of dL/dlogits to `put(index, value)` instead of
/// writing a slice (so that a caller can store it in another element type); the values and
/// the order of the calls are those of [`softmax_xent`]'s writes.
pub fn softmax_xent_into(
    n: usize,
    classes: usize,
    logits: &[f32],
    labels: &[f32],
    mut put: Option<impl FnMut(usize, f32)>,
) -> (f32, u32) {
    let mut loss = 0f64;
    let mut correct = 0u32;
    if classes == 0 {
        return (0.0, 0);
    }
    let inv_n = 1.0 / n.max(1) as f32;
    for i in 0..n {
        let row = &logits[i * classes..(i + 1) * classes];
        let lab = labels[i];
        debug_assert!(
            lab >= 0.0 && lab < classes as f32 && lab == libm::truncf(lab),
            "label {lab} outside 0..{classes}"
        );
        let label = if lab >= 0.0 && lab < classes as f32 && lab == libm::truncf(lab) {
            Some(lab as usize)
        } else {
            None
        };
        let (mut arg, mut max) = (0usize, row[0]);
        for (j, &v) in row.iter().enumerate().skip(1) {
            if v > max {
                max = v;
                arg = j;
            }
        }
        let sum: f64 = row.iter().map(|&v| f64::from(libm::expf(v - max))).sum();
        let Some(label) = label else {
            if let Some(put) = put.as_mut() {
                (0..classes).for_each(|j| put(i * classes + j, 0.0));
            }
            continue;
        };
        loss += libm::log(sum) - f64::from(row[label] - max);
        if arg == label {
            correct += 1;
        }
        if let Some(put) = put.as_mut() {
            let inv_sum = 1.0 / sum;
            for (j, &v) in row.iter().enumerate() {
                let g = (f64::from(libm::expf(v - max)) * inv_sum) as f32 * inv_n;
                put(i * classes + j, if j == label { g - inv_n } else { g });
            }
        }
    }
    (loss as f32, correct)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ops::gradcheck::{numeric_grad, random_vec, rel_error};
    use crate::rng::Rng;
    use std::println;
    use std::vec::Vec;

    #[test]
    fn uniform_logits_give_ln_classes() {
        for classes in [2usize, 10, 100] {
            let n = 4;
            let logits = std::vec![0.3f32; n * classes];
            let labels: Vec<f32> = (0..n).map(|i| (i % classes) as f32).collect();
            let mut d = std::vec![f32::NAN; n * classes];
            let (loss, _) = softmax_xent(n, classes, &logits, &labels, Some(&mut d));
            let want = n as f32 * (classes as f32).ln();
            assert!((loss - want).abs() < 1e-5 * want, "{loss} vs {want}");
            // Gradient rows sum to zero.
            for row in d.chunks_exact(classes) {
                assert!(row.iter().sum::<f32>().abs() < 1e-6);
            }
        }
    }

    #[test]
    fn correct_count() {
        #[rustfmt::skip]
        let logits = [
            1.0, 5.0, 2.0,   // argmax 1
            9.0, 0.0, -1.0,  // argmax 0
            0.0, 0.0, 3.0,   // argmax 2
            4.0, 4.0, 1.0,   // tie: first maximum, 0
        ];
        let labels = [1.0, 2.0, 2.0, 0.0];
        let (_, correct) = softmax_xent(4, 3, &logits, &labels, None);
        assert_eq!(correct, 3);
    }

    #[test]
    fn huge_logits_are_finite() {
        let logits = [1e4f32, -1e4, 0.0, -1e4, 1e4, 1e4];
        let labels = [1.0f32, 0.0];
        let mut d = [0f32; 6];
        let (loss, correct) = softmax_xent(2, 3, &logits, &labels, Some(&mut d));
        assert!(loss.is_finite(), "loss {loss}");
        assert!(d.iter().all(|v| v.is_finite()), "grad {d:?}");
        // Row 0: loss 2e4; row 1: label 0 at -1e4 against two 1e4 logits: 2e4 + ln 2.
        let want = 4e4f32 + core::f32::consts::LN_2;
        assert!((loss - want).abs() < 1.0, "loss {loss} want {want}");
        assert_eq!(correct, 0);
        assert_eq!(d, [0.5, -0.5, 0.0, -0.5, 0.25, 0.25]);
    }

    /// In release builds a bad label is ignored instead of panicking (debug builds assert).
    #[cfg(not(debug_assertions))]
    #[test]
    fn bad_label_is_ignored_in_release() {
        let logits = [1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0];
        let mut d = [f32::NAN; 6];
        let (loss, correct) = softmax_xent(2, 3, &logits, &[7.0, 1.0], Some(&mut d));
        assert!((loss - 3f32.ln()).abs() < 1e-6, "loss {loss}");
        assert_eq!(correct, 0);
        assert_eq!(&d[..3], &[0.0; 3]);
    }

    /// `L = mean cross-entropy` is smooth; logits of unit scale and eps = 1e-2 give truncation
    /// error O(eps²) ≈ 1e-4 relative; the loss is reduced in f64 so rounding is far smaller;
    /// tolerance 1e-2.
    #[test]
    fn gradcheck_softmax_xent() {
        let (n, classes) = (4, 6);
        let mut rng = Rng::new(61);
        let mut logits: Vec<f32> = random_vec(&mut rng, n * classes)
            .into_iter()
            .map(|v| 2.0 * v)
            .collect();
        let labels: Vec<f32> = (0..n).map(|_| rng.below(classes as u32) as f32).collect();
        let mut d = std::vec![0f32; n * classes];
        softmax_xent(n, classes, &logits, &labels, Some(&mut d));
        let fd = numeric_grad(&mut logits, 1e-2, |l| {
            f64::from(softmax_xent(n, classes, l, &labels, None).0) / n as f64
        });
        let e = rel_error(&d, &fd);
        println!("gradcheck softmax_xent: dlogits {e:e}");
        assert!(e < 1e-2, "softmax_xent rel err {e}");
    }
}
