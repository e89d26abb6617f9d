//! The charts of `nf report` and `nf plan --svg`, drawn as SVG text by `plotters`.
//!
//! Two kinds cover every chart: [`stacked_bars`] (memory per block, memory of a run against
//! its peak RSS, images/s per block) and [`lines`] (training curves, the early-exit
//! trade-off). Both take plain numbers, so they know nothing of report.json or plans; they never
//! panic on degenerate data (no points, one point, equal values): empty charts say so.
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::decimate;

/// Width and height of every chart, in SVG pixels.
pub const SIZE: (u32, u32) = (900, 400);

/// Width kept right of the plotting area for the legend, so it never hides data.
const LEGEND_WIDTH: u32 = 180;

/// Colours of series and parts, in order (Tableau 10: distinct, readable on white).
const COLORS: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// The colour of series or part `i`.
pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// One bar of a [`stacked_bars`] chart.
#[derive(Clone, Debug)]
pub struct StackedBar {
    /// The label under the bar.
    pub label: String,
    /// The height of each part, in the order of the chart's part names.
    pub parts: Vec<f64>,
    /// A value marked across the bar (e.g. the peak RSS), if any.
    pub marker: Option<f64>,
}

/// A horizontal line across a chart: its legend label and value.
#[derive(Clone, Debug)]
pub struct Level {
    /// Legend label.
    pub label: String,
    /// The value (in the chart's unit).
    pub value: f64,
}

/// One series of a [`lines`] chart: points joined in order, each drawn as a dot.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// The points, `(x, y)`; a point whose y is NaN breaks the line there.
    pub points: Vec<(f64, f64)>,
    /// Points to call out with a ring and a text (e.g. the chosen exit).
    pub marks: Vec<(f64, f64, String)>,
}

/// Axes and title of a chart.
#[derive(Clone, Debug)]
pub struct Axes<'a> {
    /// Title above the chart.
    pub title: &'a str,
    /// Label of the x axis.
    pub x: &'a str,
    /// Label of the y axis.
    pub y: &'a str,
}

/// An error drawing a chart (plotters reports its backend's errors as text).
pub type ChartError = String;

fn err(e: impl std::fmt::Display) -> ChartError {
    format!("drawing a chart: {e}")
}

/// A finite, non-empty range around `values` (padded by `pad` of its width at the top),
/// starting at zero when `from_zero`.
fn range(values: impl Iterator<Item = f64>, from_zero: bool, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    let width = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
    (
        lo - if from_zero { 0.0 } else { 0.05 * width },
        hi + pad * width,
    )
}

/// Bars of stacked parts (`part_names[k]` is `parts[k]` of every bar, bottom up), with an
/// optional level line (the budget) and each bar's marker (the peak RSS) as a black tick named
/// `marker_name` in the legend; `totals`: each bar's total written above it. Parts that are
/// zero in every bar are left out of the legend.
pub fn stacked_bars(
    axes: &Axes,
    part_names: &[&str],
    bars: &[StackedBar],
    level: Option<&Level>,
    marker_name: &str,
    totals: bool,
) -> Result<String, ChartError> {
    let sums: Vec<f64> = bars
        .iter()
        .map(|b| b.parts.iter().filter(|v| v.is_finite()).sum())
        .collect();
    let tops = sums
        .iter()
        .copied()
        .chain(bars.iter().filter_map(|b| b.marker))
        .chain(level.map(|l| l.value));
    let (_, y_max) = range(tops, true, 0.12);
    let n = bars.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let mut keys: Vec<(String, Glyph)> = Vec::new();
        // Bar i is centred on x = i.
        let mut chart = plot_area(&root, axes, -0.5..n as f64 - 0.5, 0.0..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(axes.x)
            .y_desc(axes.y)
            .y_label_formatter(&|v| format_value(*v))
            .x_labels(n + 1)
            // Labels at the bars' centres only (the axis may also tick between them).
            .x_label_formatter(&|v| {
                let i = v.round();
                match bars.get(i as usize) {
                    Some(b) if (v - i).abs() < 1e-6 && i >= 0.0 => b.label.clone(),
                    _ => String::new(),
                }
            })
            .draw()
            .map_err(err)?;
        if bars.is_empty() {
            draw_note(&root, "no data")?;
        }
        // Bars about 120 px wide at most: few bars do not fill the chart.
        let half = (0.09 * n as f64).min(0.3);
        let x = |i: usize, widen: f64| (i as f64 - half * widen, i as f64 + half * widen);
        for (k, name) in part_names.iter().enumerate() {
            if bars
                .iter()
                .all(|b| b.parts.get(k).copied().unwrap_or(0.0) <= 0.0)
            {
                continue;
            }
            let rects = bars.iter().enumerate().filter_map(|(i, b)| {
                let v = b
                    .parts
                    .get(k)
                    .copied()
                    .filter(|v| v.is_finite() && *v > 0.0)?;
                let base: f64 = b.parts[..k].iter().filter(|v| v.is_finite()).sum();
                let (l, r) = x(i, 1.0);
                Some(Rectangle::new(
                    [(l, base), (r, base + v)],
                    color(k).filled(),
                ))
            });
            chart.draw_series(rects).map_err(err)?;
            keys.push((name.to_string(), Glyph::Box(color(k))));
        }
        if totals {
            let font = ("sans-serif", 12).into_font().color(&BLACK);
            let label_pos = Pos::new(HPos::Center, VPos::Bottom);
            chart
                .draw_series(
                    sums.iter()
                        .enumerate()
                        .filter(|(_, t)| **t > 0.0)
                        .map(|(i, t)| {
                            Text::new(
                                format_value(*t),
                                (i as f64, *t),
                                font.clone().pos(label_pos),
                            )
                        }),
                )
                .map_err(err)?;
        }
        if bars.iter().any(|b| b.marker.is_some()) {
            // A tick a little wider than the bar, about 3 px high.
            let h = y_max / 100.0;
            let ticks = bars.iter().enumerate().filter_map(|(i, b)| {
                let m = b.marker?;
                let (l, r) = x(i, 1.3);
                Some(Rectangle::new(
                    [(l, m - h / 2.0), (r, m + h / 2.0)],
                    BLACK.filled(),
                ))
            });
            chart.draw_series(ticks).map_err(err)?;
            keys.push((marker_name.to_string(), Glyph::Tick));
        }
        if let Some(l) = level {
            let red = RGBColor(200, 30, 30);
            chart
                .draw_series(DashedLineSeries::new(
                    [(-0.5, l.value), (n as f64 - 0.5, l.value)],
                    8,
                    5,
                    red.stroke_width(2),
                ))
                .map_err(err)?;
            keys.push((l.label.clone(), Glyph::Dashed(red)));
        }
        legend(&root, &keys)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The x axis of a [`lines`] chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XScale {
    /// Linear, from zero (time).
    FromZero,
    /// Linear around the data, labelled at whole numbers only (epochs).
    Count,
    /// Log 10 (parameters); points with x <= 0 are left out.
    Log,
}

/// Lines through each series' points (a dot at every point of a line of at most
/// [`decimate::MAX_DOTS`], so a one-point series shows; a longer one is decimated by
/// [`decimate::decimate`]), with its marks ringed and labelled (at most [`decimate::MAX_MARKS`]); the y axis starts at zero when `y_from_zero`.
pub fn lines(
    axes: &Axes,
    series: &[Series],
    x_scale: XScale,
    y_from_zero: bool,
) -> Result<String, ChartError> {
    let x_log = x_scale == XScale::Log;
    let to_x = |x: f64| if x_log { x.log10() } else { x };
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!x_log || x > 0.0);
    let all = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().copied().filter(keep))
    };
    let (x0, x1) = range(
        all().map(|(x, _)| to_x(x)),
        x_scale == XScale::FromZero,
        0.05,
    );
    let (y0, y1) = range(all().map(|(_, y)| y), y_from_zero, 0.1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let mut keys: Vec<(String, Glyph)> = Vec::new();
        let mut chart = plot_area(&root, axes, x0..x1, y0..y1)?;
        // Log ticks fall between round numbers (10^4.2 = 15849): two significant digits.
        let log_label = |v: &f64| format_value(round_to_2_digits(10f64.powf(*v)));
        let plain_label = |v: &f64| format_value(*v);
        let count_label = |v: &f64| {
            if v.fract() == 0.0 {
                format_value(*v)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(axes.x)
            .y_desc(axes.y)
            .x_label_formatter(match x_scale {
                XScale::Log => &log_label,
                XScale::Count => &count_label,
                XScale::FromZero => &plain_label,
            })
            .y_label_formatter(&plain_label)
            .draw()
            .map_err(err)?;
        if all().next().is_none() {
            draw_note(&root, "no data")?;
        }
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            // Bounded whatever the caller gave (the page decimates first, to say so).
            let points = decimate::decimate(&s.points);
            let pts: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(keep)
                .map(|(x, y)| (to_x(x), y))
                .collect();
            // A point with a NaN y ends a line; the next point starts another.
            for part in points.split(|(_, y)| y.is_nan()) {
                let part = part.iter().copied().filter(keep).map(|(x, y)| (to_x(x), y));
                chart
                    .draw_series(LineSeries::new(part, c.stroke_width(2)))
                    .map_err(err)?;
            }
            keys.push((s.label.clone(), Glyph::Line(c)));
            if pts.len() <= decimate::MAX_DOTS {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(err)?;
            }
            let marks = s
                .marks
                .iter()
                .take(decimate::MAX_MARKS)
                .filter(|(x, y, _)| keep(&(*x, *y)));
            let font = ("sans-serif", 12).into_font().color(&BLACK);
            chart
                .draw_series(marks.map(|(x, y, text)| {
                    // Labels of marks in the right half go to their left, inside the chart.
                    let left = to_x(*x) > (x0 + x1) / 2.0;
                    let (dx, h) = if left {
                        (-10, HPos::Right)
                    } else {
                        (10, HPos::Left)
                    };
                    EmptyElement::at((to_x(*x), *y))
                        + Circle::new((0, 0), 8, c.stroke_width(2))
                        + Text::new(
                            text.clone(),
                            (dx, -10),
                            font.clone().pos(Pos::new(h, VPos::Bottom)),
                        )
                }))
                .map_err(err)?;
        }
        legend(&root, &keys)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The white chart with its title and the plotting area over `x` and `y` (the strip on the
/// right kept for the legend).
fn plot_area<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    axes: &Axes,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, ChartError>
{
    root.fill(&WHITE).map_err(err)?;
    ChartBuilder::on(root)
        .caption(axes.title, ("sans-serif", 18))
        .margin(12)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(err)
}

/// How a legend entry shows its series.
#[derive(Clone, Copy, Debug)]
enum Glyph {
    /// A filled box (a part of stacked bars).
    Box(RGBColor),
    /// A line with a dot (a series).
    Line(RGBColor),
    /// A dashed line (a level).
    Dashed(RGBColor),
    /// A black tick (a bar's marker).
    Tick,
}

/// The legend, in the strip right of the plotting area kept for it, so it never hides data.
fn legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    keys: &[(String, Glyph)],
) -> Result<(), ChartError> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| err(e.to_string());
    let x = (SIZE.0 - LEGEND_WIDTH + 16) as i32;
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    for (i, (label, glyph)) in keys.iter().enumerate() {
        let y = 50 + 20 * i as i32;
        match *glyph {
            Glyph::Box(c) => root.draw(&Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())),
            Glyph::Line(c) => root
                .draw(&PathElement::new(
                    vec![(x, y), (x + 14, y)],
                    c.stroke_width(2),
                ))
                .and_then(|()| root.draw(&Circle::new((x + 7, y), 3, c.filled()))),
            Glyph::Dashed(c) => root
                .draw(&PathElement::new(
                    vec![(x, y), (x + 5, y)],
                    c.stroke_width(2),
                ))
                .and_then(|()| {
                    root.draw(&PathElement::new(
                        vec![(x + 9, y), (x + 14, y)],
                        c.stroke_width(2),
                    ))
                }),
            Glyph::Tick => root.draw(&Rectangle::new(
                [(x - 2, y - 1), (x + 16, y + 2)],
                BLACK.filled(),
            )),
        }
        .map_err(e)?;
        // What fits the strip: long labels end in an ellipsis.
        let label: String = if label.chars().count() > 24 {
            label.chars().take(23).chain(['…']).collect()
        } else {
            label.clone()
        };
        let text = Text::new(
            label,
            (x + 22, y),
            font.clone().pos(Pos::new(HPos::Left, VPos::Center)),
        );
        root.draw(&text).map_err(e)?;
    }
    Ok(())
}

/// A centred note on an empty chart.
fn draw_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
) -> Result<(), ChartError> {
    let (w, h) = area.dim_in_pixel();
    let style = ("sans-serif", 16)
        .into_font()
        .color(&BLACK.mix(0.6))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(text, ((w / 2) as i32, (h / 2) as i32), style))
        .map_err(|e| err(e.to_string()))
}

/// `v` rounded to two significant digits (15849 -> 16000).
fn round_to_2_digits(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(v.abs().log10().floor() as i32 - 1);
    (v / scale).round() * scale
}

/// A number for an axis or a label: short, without trailing noise (`0.5`, `12`, `1.2k`,
/// `3.4M`).
pub fn format_value(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if scaled.abs() >= 100.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes() -> Axes<'static> {
        Axes {
            title: "t",
            x: "x",
            y: "y",
        }
    }

    #[test]
    fn degenerate_data_draws_without_panicking() {
        let one = Series {
            label: "one".into(),
            points: vec![(5.0, 5.0)],
            marks: vec![(5.0, 5.0, "m".into())],
        };
        let bad = Series {
            label: "bad".into(),
            points: vec![(0.0, f64::NAN), (-1.0, 1e300), (f64::INFINITY, 2.0)],
            marks: vec![],
        };
        for s in [vec![], vec![one.clone()], vec![bad], vec![one]] {
            for x in [XScale::FromZero, XScale::Count, XScale::Log] {
                let svg = lines(&axes(), &s, x, true).unwrap();
                assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            }
        }
        let bar = |parts: Vec<f64>| StackedBar {
            label: "b".into(),
            parts,
            marker: Some(0.0),
        };
        for bars in [
            vec![],
            vec![bar(vec![0.0, 0.0])],
            vec![bar(vec![1.0]), bar(vec![])],
        ] {
            let svg = stacked_bars(&axes(), &["p", "q"], &bars, None, "m", true).unwrap();
            assert!(svg.contains("</svg>"));
        }
    }

    #[test]
    fn values_are_short() {
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(12.0), "12");
        assert_eq!(format_value(12.25), "12.2");
        assert_eq!(format_value(38_698.0), "38.7k");
        assert_eq!(format_value(3_400_000.0), "3.4M");
        assert_eq!(format_value(-2.0), "-2");
        assert_eq!(format_value(round_to_2_digits(15_849.0)), "16k");
        assert_eq!(format_value(round_to_2_digits(6_309.6)), "6300");
        assert_eq!(format_value(round_to_2_digits(251_188.0)), "250k");
    }
}
