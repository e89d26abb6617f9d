//! The HTML of `nf report`: a summary table, the charts that compare the runs, then one
//! section per run. Every chart is inline SVG with a caption saying what it shows; every field
//! a run's report.json lacks is named in its section (the charts draw what is there).
use std::fmt::Write as _;

use std::collections::HashMap;

use super::bound::{self, thousands, MAX_LINES};
use super::charts::{self, Axes, ChartError, Level, Series, StackedBar, XScale};
use super::run::{PlannedBlock, Run, BREAKDOWN_PARTS};
use super::{printable, without_controls};
use crate::error::CliError;
use crate::size::format_size;

const MIB: f64 = 1024.0 * 1024.0;

const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1100px;color:#222}\
h1{font-size:1.6em}h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
figure{margin:1.2em 0}figcaption{font-size:.9em;color:#444;max-width:900px}\
.absent{color:#8a5a00;font-size:.9em}.bound{display:block;font-size:.85em;color:#666}";

/// The most characters of a text field shown (a model, a data path; a report.json may hold
/// megabytes in one string).
const MAX_TEXT: usize = 200;

/// A chart and, when something was decimated or left out to bound it, the note saying so.
pub struct Drawn {
    /// The SVG.
    pub svg: String,
    /// What was decimated or left out, if anything.
    pub note: Option<String>,
}

type Chart = Result<Drawn, ChartError>;

fn drawn(svg: Result<String, ChartError>, note: Option<String>) -> Chart {
    svg.map(|svg| Drawn { svg, note })
}

/// `s` HTML-escaped, at most `MAX_TEXT` characters of it.
fn esc_clip(s: &str) -> String {
    let n = s.chars().count();
    if n <= MAX_TEXT {
        return esc(s);
    }
    let head: String = s.chars().take(MAX_TEXT).collect();
    format!("{}… ({} characters)", esc(&head), thousands(n))
}

/// HTML-escape `s` (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in without_controls(s).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn figure(out: &mut String, chart: Chart, caption: &str) -> Result<(), CliError> {
    let Drawn { svg, note } = chart.map_err(CliError::Failed)?;
    let note = note.map_or_else(String::new, |n| {
        format!("<small class=\"bound\">{}</small>", esc(&n))
    });
    let _ = write!(
        out,
        "<figure>\n{svg}\n<figcaption>{}{note}</figcaption></figure>\n",
        esc(caption)
    );
    Ok(())
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "–".to_string(), f)
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// The whole page for `runs` (labels already unique).
pub fn html(runs: &[Run]) -> Result<String, CliError> {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>NeuroFlux report</title><style>{STYLE}</style></head><body>\n\
         <h1>NeuroFlux report</h1>\n<p>{} run{}, drawn by nf {} from their report.json.</p>\n",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        env!("CARGO_PKG_VERSION")
    );
    summary(&mut out, runs);
    out.push_str("<h2>Comparison</h2>\n");
    figure(&mut out, exit_tradeoff(runs), "The early-exit trade-off: test accuracy of the model that ends at each unit's head (the last unit: the classifier) against its parameters, one line per run; the ring marks the chosen early exit.")?;
    if runs.iter().any(|r| !r.inference.is_empty()) {
        figure(&mut out, inference(runs), "Inference: test accuracy against images/s of the full and the early-exit model of each run that has an eval.json (from `nf eval --model RUN --json > RUN/eval.json`, on that machine with its --threads and --budget).")?;
    } else {
        out.push_str("<p>Inference images/s of the full and the exit model: save <code>nf eval --model RUN --json &gt; RUN/eval.json</code> and the report draws them against test accuracy.</p>\n");
    }
    figure(&mut out, run_memory(runs), "Memory of each run: the planned total, stacked by part (what --budget covers, then the host memory beside it: the data set as stored, the activation caches, the host copy of the model), and the process's peak resident set (black tick), which the memory contract keeps near the planned total.")?;
    figure(&mut out, accuracy_over_time(runs), "Training accuracy of each block's last unit at the end of every epoch, against training seconds so far; blocks train one after another, and a NeuroFlux block's line is that of its own last unit (an LL or BP run is one block).")?;
    for r in runs {
        run_section(&mut out, r)?;
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

fn summary(out: &mut String, runs: &[Run]) {
    out.push_str(
        "<table><tr><th>run</th><th>mode</th><th>model</th><th>budget</th><th>epochs/block</th>\
         <th>last unit test</th><th>exit unit</th><th>exit test</th><th>exit params</th>\
         <th>fewer params</th><th>seconds</th><th>planned total</th><th>peak RSS</th></tr>\n",
    );
    for r in runs {
        let exit = r.exit.as_ref();
        let ratio = match (r.full_params, exit.and_then(|e| e.params)) {
            (Some(f), Some(e)) if e > 0 => format!("{:.1}x", f as f64 / e as f64),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{ratio}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.label),
            esc_clip(r.mode.as_deref().unwrap_or("–")),
            esc_clip(r.model.as_deref().unwrap_or("–")),
            opt(r.budget, format_size),
            opt(r.epochs_per_block, |e| e.to_string()),
            opt(r.test_acc, pct),
            opt(exit.map(|e| e.unit), |u| u.to_string()),
            opt(exit.and_then(|e| e.test_acc), pct),
            opt(exit.and_then(|e| e.params), |p| p.to_string()),
            opt(r.seconds_total, |s| format!("{s:.1}")),
            opt(r.memory.planned_total, format_size),
            opt(r.memory.peak_rss, format_size),
        );
    }
    out.push_str("</table>\n");
}

fn run_section(out: &mut String, r: &Run) -> Result<(), CliError> {
    let _ = writeln!(
        out,
        "<h2>{}</h2>\n<p>{} · {} mode · data {} · <code>{}</code></p>",
        esc(&r.label),
        esc_clip(r.model.as_deref().unwrap_or("model unknown")),
        esc_clip(r.mode.as_deref().unwrap_or("unknown")),
        esc_clip(r.data.as_deref().unwrap_or("unknown")),
        esc_clip(&r.path.display().to_string())
    );
    if let Some(names) = &r.class_names {
        // At most 20 names: a folder of thousands of classes would drown the page.
        let shown: Vec<String> = names.iter().take(20).map(|n| esc(&printable(n))).collect();
        let more = names.len().saturating_sub(20);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<p>{} classes: {}{more}</p>",
            names.len(),
            shown.join(", ")
        );
    }
    if !r.absent.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"absent\">Absent from this report.json (written by an earlier version of \
             nf, or edited): {}. The charts below draw what is there.</p>",
            esc(&r.absent.join(", "))
        );
    }
    let title = format!("{}: arena of each block under --budget", r.label);
    figure(out, memory_per_block_noted(&title, &r.planned, r.budget), "The memory each block's training step touches, as planned: parameters, their gradients, the optimiser's momentum, batch-norm state, the block's input and output buffers (io), kept activations, activation gradients, the kernels' workspace, and the forward-only recompute chain of the frozen units when the cache is off. The dashed line is --budget; the tallest bar is the arena.")?;
    figure(out, curves(r, |(_, loss, _)| loss, "training loss"), "Training loss of every unit at the end of each epoch (each unit on its own auxiliary head; in BP mode only the classifier), blocks one after another.")?;
    figure(
        out,
        curves(
            r,
            |(_, _, acc)| acc.map(|a| 100.0 * a),
            "training accuracy (%)",
        ),
        "Training accuracy of every unit at the end of each epoch.",
    )?;
    figure(
        out,
        block_speed(r),
        "Training images per second of each block, at the batch size the plan gave it.",
    )?;
    Ok(())
}

/// Label of a block on an x axis: `0-1 (80)`: its units and batch size.
fn block_label(units: (u64, u64), batch: Option<u64>) -> String {
    let u = if units.0 == units.1 {
        units.0.to_string()
    } else {
        format!("{}-{}", units.0, units.1)
    };
    match batch {
        Some(b) => format!("{u} ({b})"),
        None => u,
    }
}

/// Stacked bars of each planned block's parts (MiB), with the budget as a dashed line (at
/// most [`bound::MAX_BARS`] bars: [`bound::bound_bars`]).
pub fn memory_per_block(
    title: &str,
    blocks: &[PlannedBlock],
    budget: Option<u64>,
) -> Result<String, ChartError> {
    memory_per_block_noted(title, blocks, budget).map(|d| d.svg)
}

fn memory_per_block_noted(title: &str, blocks: &[PlannedBlock], budget: Option<u64>) -> Chart {
    let names: Vec<&str> = BREAKDOWN_PARTS.iter().map(|(_, l)| *l).collect();
    let bars: Vec<StackedBar> = blocks
        .iter()
        .map(|b| StackedBar {
            label: block_label(b.units, b.batch),
            parts: b
                .parts
                .iter()
                .map(|p| p.unwrap_or(0) as f64 / MIB)
                .collect(),
            marker: None,
        })
        .collect();
    let (bars, note) = bound::bound_bars(bars, "blocks");
    let level = budget.map(|b| Level {
        label: format!("--budget {}", format_size(b)),
        value: b as f64 / MIB,
    });
    let axes = Axes {
        title: &printable(title),
        x: "units of the block (batch size)",
        y: "MiB",
    };
    drawn(
        charts::stacked_bars(&axes, &names, &bars, level.as_ref(), "", false),
        note,
    )
}

/// One series per run: its label, with the points and marks `f` gives.
type PointsAndMarks = (Vec<(f64, f64)>, Vec<(f64, f64, String)>);

fn per_run(runs: &[Run], f: impl Fn(&Run) -> PointsAndMarks) -> Vec<Series> {
    runs.iter()
        .map(|r| {
            let (points, marks) = f(r);
            Series {
                label: r.label.clone(),
                points,
                marks,
            }
        })
        .collect()
}

fn exit_tradeoff(runs: &[Run]) -> Chart {
    let mut series = per_run(runs, |r| {
        let points = r
            .units
            .iter()
            .filter_map(|u| Some((r.params_of(u)? as f64, 100.0 * u.test_acc?)))
            .collect();
        let marks = r
            .exit
            .iter()
            .filter_map(|e| {
                let p = e.params.or_else(|| r.params_at(e.unit))?;
                let text = format!("exit: unit {}", e.unit);
                Some((p as f64, 100.0 * e.test_acc?, text))
            })
            .collect();
        (points, marks)
    });
    let axes = Axes {
        title: "Early exit: test accuracy against parameters",
        x: "parameters of the model ending at the unit (log scale)",
        y: "test accuracy (%)",
    };
    let note = bound::bound_lines(&mut series);
    drawn(charts::lines(&axes, &series, XScale::Log, false), note)
}

fn inference(runs: &[Run]) -> Chart {
    let mut series = per_run(runs, |r| {
        // A run whose exit is its last unit measured one model twice: draw it once.
        let mut models = r.inference.clone();
        models.dedup_by_key(|m| m.unit);
        let mut points: Vec<(f64, f64)> = models
            .iter()
            .map(|m| (m.images_per_sec, 100.0 * m.test_acc))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let marks = models
            .iter()
            .map(|m| {
                let params = m.params.map_or_else(String::new, |p| {
                    format!(", {} params", charts::format_value(p as f64))
                });
                let text = format!("unit {}{params}", m.unit);
                (m.images_per_sec, 100.0 * m.test_acc, text)
            })
            .collect();
        (points, marks)
    });
    let axes = Axes {
        title: "Inference: test accuracy against images/s",
        x: "inference images/s",
        y: "test accuracy (%)",
    };
    let note = bound::bound_lines(&mut series);
    drawn(charts::lines(&axes, &series, XScale::FromZero, false), note)
}

fn run_memory(runs: &[Run]) -> Chart {
    let names = [
        "under --budget",
        "data set",
        "activation caches",
        "model (host copy)",
        "planned, not broken down",
    ];
    let bars: Vec<StackedBar> = runs
        .iter()
        .map(|r| {
            let m = &r.memory;
            let known = [m.budget_used, m.data, m.cache, m.model];
            let sum: u64 = known.iter().flatten().sum();
            let rest = m.planned_total.map_or(0, |t| t.saturating_sub(sum));
            let mut parts: Vec<f64> = known.iter().map(|v| v.unwrap_or(0) as f64 / MIB).collect();
            parts.push(rest as f64 / MIB);
            StackedBar {
                label: r.label.clone(),
                parts,
                marker: m.peak_rss.map(|v| v as f64 / MIB),
            }
        })
        .collect();
    let axes = Axes {
        title: "Planned total and peak RSS of each run",
        x: "run",
        y: "MiB",
    };
    // One bar per run: at most MAX_RUNS.
    drawn(
        charts::stacked_bars(&axes, &names, &bars, None, "peak RSS", false),
        None,
    )
}

fn accuracy_over_time(runs: &[Run]) -> Chart {
    let mut series = per_run(runs, |r| {
        let mut t = 0.0;
        let mut points = Vec::new();
        for b in &r.blocks {
            // Each block trains a new last unit: its own line.
            points.push((t, f64::NAN));
            for e in &b.epochs {
                t += e.seconds.unwrap_or(0.0);
                if let Some(acc) = e.units.last().and_then(|u| u.2) {
                    points.push((t, 100.0 * acc));
                }
            }
        }
        (points, Vec::new())
    });
    let axes = Axes {
        title: "Training accuracy against training time",
        x: "training seconds",
        y: "training accuracy (%)",
    };
    let note = bound::bound_lines(&mut series);
    drawn(charts::lines(&axes, &series, XScale::FromZero, true), note)
}

/// One series per unit: `value` of its (unit, loss, accuracy) at every epoch, the x axis
/// counting epochs across blocks; at most [`MAX_LINES`] units (evenly spaced, the first and
/// the last among them), each line decimated.
fn curves(
    r: &Run,
    value: impl Fn((u64, Option<f64>, Option<f64>)) -> Option<f64>,
    y: &str,
) -> Chart {
    let epochs = || r.blocks.iter().flat_map(|b| &b.epochs);
    let mut units: Vec<u64> = epochs()
        .flat_map(|e| &e.units)
        .filter(|&&u| value(u).is_some())
        .map(|u| u.0)
        .collect();
    units.sort_unstable();
    units.dedup();
    let shown = bound::spread(units.len(), MAX_LINES);
    let index: HashMap<u64, usize> = shown
        .iter()
        .enumerate()
        .map(|(i, &k)| (units[k], i))
        .collect();
    let mut series: Vec<Series> = shown
        .iter()
        .map(|&k| Series {
            label: format!("unit {}", units[k]),
            ..Series::default()
        })
        .collect();
    for (x, e) in epochs().enumerate() {
        for &u in &e.units {
            if let (Some(&i), Some(v)) = (index.get(&u.0), value(u)) {
                series[i].points.push((x as f64 + 1.0, v));
            }
        }
    }
    let lines_note = (units.len() > shown.len()).then(|| {
        format!(
            "{} units: the lines of {} of them are drawn, evenly spaced from the first to the \
             last.",
            thousands(units.len()),
            shown.len()
        )
    });
    let note = [lines_note, bound::bound_lines(&mut series)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    let title = format!("{}: {y} per epoch", r.label);
    let axes = Axes {
        title: &title,
        x: "epoch (counted across blocks)",
        y,
    };
    drawn(
        charts::lines(&axes, &series, XScale::Count, true),
        (!note.is_empty()).then(|| note.join(" ")),
    )
}

fn block_speed(r: &Run) -> Chart {
    let bars: Vec<StackedBar> = r
        .blocks
        .iter()
        .map(|b| StackedBar {
            label: block_label(b.units, b.batch),
            parts: vec![b.images_per_sec.unwrap_or(0.0)],
            marker: None,
        })
        .collect();
    let (bars, note) = bound::bound_bars(bars, "blocks");
    let title = format!("{}: training images/s per block", r.label);
    let axes = Axes {
        title: &title,
        x: "units of the block (batch size)",
        y: "images/s",
    };
    drawn(
        charts::stacked_bars(&axes, &["images/s"], &bars, None, "", true),
        note,
    )
}
