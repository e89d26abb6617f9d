//! The limits that keep a report's size and drawing time fixed, whatever a report.json holds
//! (a real run has tens of epochs and units; a file at the 64 MiB cap may hold a million):
//! every line is decimated to at most [`MAX_LINE_POINTS`] points, a chart draws at most
//! [`MAX_LINES`] per-unit lines, [`MAX_BARS`] bars and [`MAX_MARKS`] called-out points, and
//! the page says under the chart what was left out. Below the limits nothing changes.
use std::borrow::Cow;

use super::charts::{Series, StackedBar};
use super::decimate::{decimate, LINE_BUCKETS, MAX_LINE_POINTS, MAX_MARKS};

/// The most per-unit lines of a chart (more units: this many, evenly spaced from the first to
/// the last).
pub const MAX_LINES: usize = 16;

/// The most bars of a chart (more blocks: each bar is the largest of a run of consecutive
/// blocks, so the tallest, the arena, is always drawn).
pub const MAX_BARS: usize = 32;

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
