//! Decimation of a chart's line to a fixed number of points (the lowest and highest point of
//! each run of consecutive points, so spikes and dips survive), and the per-line limits of what
//! a chart draws. A leaf: the chart drawing ([`super::charts`]) and the page's bounds
//! ([`super::bound`]) both use it.
use std::borrow::Cow;

/// Buckets of a decimated line: a line of more than [`MAX_LINE_POINTS`] points is cut into
/// this many runs of consecutive points, each drawn as its lowest and highest point (so a
/// spike survives) and, if it holds one, a break of the line.
pub const LINE_BUCKETS: usize = 1000;

/// The most points of a line drawn as they are (above: decimated to at most this many points,
/// plus one break per bucket).
pub const MAX_LINE_POINTS: usize = 2 * LINE_BUCKETS;

/// The most called-out points (rings with a text) of a chart.
pub const MAX_MARKS: usize = 16;

/// Lines of at most this many points get a dot at every point (more: the line alone).
pub const MAX_DOTS: usize = 200;

/// Whether a point is drawn (a NaN y breaks the line; other non-finite points are left out).
fn drawn(&(x, y): &(f64, f64)) -> bool {
    x.is_finite() && y.is_finite()
}

/// `points` as drawn: unchanged up to [`MAX_LINE_POINTS`]; above, in order, the lowest and
/// highest drawn point of each of [`LINE_BUCKETS`] runs of consecutive points, and the run's
/// first break (NaN y) where it has one. Linear time.
pub fn decimate(points: &[(f64, f64)]) -> Cow<'_, [(f64, f64)]> {
    let n = points.len();
    if n <= MAX_LINE_POINTS {
        return Cow::Borrowed(points);
    }
    let mut out = Vec::with_capacity(3 * LINE_BUCKETS);
    for k in 0..LINE_BUCKETS {
        let (lo, hi) = (k * n / LINE_BUCKETS, (k + 1) * n / LINE_BUCKETS);
        let (mut min, mut max, mut gap) = (None::<usize>, None::<usize>, None::<usize>);
        for (i, p) in points[lo..hi].iter().enumerate().map(|(i, p)| (lo + i, p)) {
            if p.1.is_nan() {
                gap.get_or_insert(i);
            } else if drawn(p) {
                if min.is_none_or(|m| p.1 < points[m].1) {
                    min = Some(i);
                }
                if max.is_none_or(|m| p.1 > points[m].1) {
                    max = Some(i);
                }
            }
        }
        let mut keep = [min, max, gap];
        keep.sort_unstable();
        let mut last = None;
        for i in keep.into_iter().flatten() {
            if last != Some(i) {
                out.push(points[i]);
                last = Some(i);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_drawn_whole_and_long_ones_keep_their_extremes() {
        let short: Vec<(f64, f64)> = (0..MAX_LINE_POINTS).map(|i| (i as f64, 1.0)).collect();
        assert!(matches!(decimate(&short), Cow::Borrowed(_)));
        let n = 1_000_003;
        let mut long: Vec<(f64, f64)> = (0..n).map(|i| (i as f64, (i % 7) as f64)).collect();
        long[500_001].1 = 1e6; // a spike
        long[700_000].1 = -5.0; // a dip
        long[900_000].1 = f64::NAN; // a break
        let d = decimate(&long);
        assert!(d.len() <= 3 * LINE_BUCKETS, "{}", d.len());
        assert!(d.contains(&(500_001.0, 1e6)) && d.contains(&(700_000.0, -5.0)));
        assert_eq!(d.iter().filter(|p| p.1.is_nan()).count(), 1);
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "in order");
        assert_eq!(d.first().unwrap().0, 0.0);
    }
}
