//! The limits that keep a report's size and drawing time fixed, whatever a report.json holds
//! (a real run has tens of epochs and units; a file at the 64 MiB cap may hold a million):
//! every line is decimated to at most [`MAX_LINE_POINTS`] points, a chart draws at most
//! [`MAX_LINES`] per-unit lines, [`MAX_BARS`] bars and [`MAX_MARKS`] called-out points, and
//! the page says under the chart what was left out. Below the limits nothing changes.
use std::borrow::Cow;

use super::charts::{Series, StackedBar};

/// Buckets of a decimated line: a line of more than [`MAX_LINE_POINTS`] points is cut into
/// this many runs of consecutive points, each drawn as its lowest and highest point (so a
/// spike survives) and, if it holds one, a break of the line.
pub const LINE_BUCKETS: usize = 1000;

/// The most points of a line drawn as they are (above: decimated to at most this many points,
/// plus one break per bucket).
pub const MAX_LINE_POINTS: usize = 2 * LINE_BUCKETS;

/// The most per-unit lines of a chart (more units: this many, evenly spaced from the first to
/// the last).
pub const MAX_LINES: usize = 16;

/// The most bars of a chart (more blocks: each bar is the largest of a run of consecutive
/// blocks, so the tallest, the arena, is always drawn).
pub const MAX_BARS: usize = 32;

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

/// Decimate every line of `series` ([`decimate`]) and cap its marks at [`MAX_MARKS`]; the
/// note for the page saying which lines were decimated, from how many points, if any.
pub fn bound_lines(series: &mut [Series]) -> Option<String> {
    let mut decimated = Vec::new();
    let mut marks_left = 0;
    for s in series.iter_mut() {
        let n = s.points.len();
        if let Cow::Owned(points) = decimate(&s.points) {
            s.points = points;
            decimated.push(format!("{} ({} points)", s.label, thousands(n)));
        }
        marks_left += s.marks.len().saturating_sub(MAX_MARKS);
        s.marks.truncate(MAX_MARKS);
    }
    let mut note = Vec::new();
    if !decimated.is_empty() {
        let shown = decimated.len().min(4);
        let more = match decimated.len() - shown {
            0 => String::new(),
            m => format!(" and {m} more"),
        };
        note.push(format!(
            "Decimated to the lowest and highest point of each of {} runs of consecutive points \
             (a line of up to {} points is drawn whole): {}{more}.",
            thousands(LINE_BUCKETS),
            thousands(MAX_LINE_POINTS),
            decimated[..shown].join(", ")
        ));
    }
    if marks_left > 0 {
        note.push(format!(
            "{} called-out points left out (at most {MAX_MARKS} per line).",
            thousands(marks_left)
        ));
    }
    (!note.is_empty()).then(|| note.join(" "))
}

/// Indices of at most `k` of `n` items, evenly spaced, the first and the last among them.
pub fn spread(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    if k < 2 {
        return (0..k).map(|_| n - 1).collect();
    }
    (0..k).map(|i| i * (n - 1) / (k - 1)).collect()
}

/// At most [`MAX_BARS`] of `bars`: unchanged up to it; above, each bar the largest (by the sum
/// of its parts) of a run of consecutive bars, with the note for the page.
pub fn bound_bars(bars: Vec<StackedBar>, what: &str) -> (Vec<StackedBar>, Option<String>) {
    let n = bars.len();
    if n <= MAX_BARS {
        return (bars, None);
    }
    let per = n.div_ceil(MAX_BARS);
    let total = |b: &StackedBar| -> f64 { b.parts.iter().filter(|v| v.is_finite()).sum() };
    let mut out: Vec<StackedBar> = Vec::with_capacity(MAX_BARS);
    let mut best: Option<(f64, StackedBar)> = None;
    for (i, b) in bars.into_iter().enumerate() {
        let t = total(&b);
        if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
            best = Some((t, b));
        }
        if (i + 1).is_multiple_of(per) || i + 1 == n {
            out.extend(best.take().map(|(_, b)| b));
        }
    }
    let note = format!(
        "{} {what}: each bar is the largest of {} consecutive ones ({} bars drawn).",
        thousands(n),
        thousands(per),
        out.len()
    );
    (out, Some(note))
}

/// `n` with thousands separated by commas (1,161,607).
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

    #[test]
    fn bars_and_lines_are_capped_with_a_note() {
        let bar = |v: f64| StackedBar {
            label: v.to_string(),
            parts: vec![v],
            marker: None,
        };
        let (few, note) = bound_bars((0..MAX_BARS).map(|i| bar(i as f64)).collect(), "blocks");
        assert_eq!((few.len(), note), (MAX_BARS, None));
        let (many, note) = bound_bars((0..1000).map(|i| bar((i % 97) as f64)).collect(), "blocks");
        assert!(many.len() <= MAX_BARS);
        assert!(many.iter().any(|b| b.parts[0] == 96.0));
        assert!(note
            .unwrap()
            .starts_with("1,000 blocks: each bar is the largest of 32"));
        assert_eq!(spread(3, 16), vec![0, 1, 2]);
        assert_eq!(spread(100, 3), vec![0, 49, 99]);
        assert_eq!(thousands(1_161_607), "1,161,607");
        assert_eq!(thousands(999), "999");
    }
}
