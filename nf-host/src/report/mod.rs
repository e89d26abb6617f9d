//! `nf report`: one self-contained HTML file (inline CSS and SVG, no script, nothing fetched)
//! with the charts of one or more training runs, and the memory chart of `nf plan --svg`.
//!
//! - [`run`]: report.json as read here, every field optional (older versions lack some);
//! - [`charts`]: the SVG charts (plotters), from plain numbers;
//! - [`page`]: which charts a report has and what they show, and the HTML around them;
//! - [`bound`]: the limits on points per line, lines, bars and marks per chart that bound the
//!   page's size and drawing time, whatever report.json holds.
//!
//! report.json is read in one pass into the fields drawn (`read` and `raw`), with no JSON tree
//! in between, so memory stays a small multiple of the file (at most 64 MiB).
pub mod bound;
pub mod charts;
pub mod decimate;
pub mod page;
mod raw;
mod read;
pub mod run;

use std::path::PathBuf;

use clap::Args;
use nf_core::plan::Plan;

use crate::error::CliError;
use crate::output::{file_target, Inputs};
use crate::plan_report::breakdown_bytes;
use run::{Run, BREAKDOWN_PARTS};

/// The most runs one report overlays (legends and tables stay readable).
pub const MAX_RUNS: usize = 16;

/// `nf report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Run directories written by `nf train` (or their report.json files); several runs are
    /// overlaid in the comparison charts and the summary table
    #[arg(value_name = "RUN", required = true)]
    pub runs: Vec<PathBuf>,
    /// The HTML file to write (a regular file, replaced if it exists; never one of the RUNs)
    #[arg(long, value_name = "FILE", default_value = "report.html", help_heading = crate::output::OUTPUT)]
    pub out: PathBuf,
}

/// `nf report`: read the runs, write the HTML file, and say what was written.
pub fn report_command(args: &ReportArgs) -> Result<String, CliError> {
    if args.runs.len() > MAX_RUNS {
        return Err(CliError::Usage(format!(
            "{} runs given; a report overlays at most {MAX_RUNS}",
            args.runs.len()
        )));
    }
    let mut inputs = Inputs::new();
    for r in &args.runs {
        inputs.path("RUN", r, &["report.json", run::EVAL_FILE]);
    }
    let out = file_target("--out", &args.out, &inputs)?;
    let mut runs = args
        .runs
        .iter()
        .map(|p| Run::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    unique_labels(&mut runs);
    let html = page::html(&runs)?;
    crate::store::atomic_write(&out, html.as_bytes())
        .map_err(|e| CliError::Usage(format!("--out {}: cannot write: {e}", args.out.display())))?;
    let absent: usize = runs.iter().filter(|r| !r.absent.is_empty()).count();
    let mut s = format!(
        "wrote {} ({} run{}, {} charts)\n",
        args.out.display(),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        html.matches("<svg").count()
    );
    if absent > 0 {
        s += &format!(
            "{absent} of the report.json files lack{} some fields (earlier versions of nf); the \
             report says which\n",
            if absent == 1 { "s" } else { "" }
        );
    }
    Ok(s)
}

/// Make run labels unique (`run`, `run (2)`, ...) and printable.
fn unique_labels(runs: &mut [Run]) {
    let mut seen: Vec<String> = Vec::new();
    for r in runs.iter_mut() {
        let base = printable(&r.label);
        let mut label = base.clone();
        let mut k = 2;
        while seen.contains(&label) {
            label = format!("{base} ({k})");
            k += 1;
        }
        seen.push(label.clone());
        r.label = label;
    }
}

/// `s` with every control character (which XML cannot hold) replaced by `?`.
pub fn without_controls(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// [`without_controls`], at most 60 characters (a label).
pub fn printable(s: &str) -> String {
    let mut out: String = without_controls(s).chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// The memory-per-block chart of a plan (`nf plan --svg`): the same chart as a report's.
pub fn plan_memory_svg(plan: &Plan) -> Result<String, CliError> {
    let blocks: Vec<run::PlannedBlock> = plan
        .blocks()
        .iter()
        .map(|b| {
            let bytes = breakdown_bytes(&b.breakdown);
            let parts = BREAKDOWN_PARTS
                .iter()
                .map(|(k, _)| bytes.iter().find(|(key, _, _)| key == k).map(|p| p.2))
                .collect();
            run::PlannedBlock {
                units: (b.first as u64, b.last as u64),
                batch: Some(b.batch as u64),
                parts,
            }
        })
        .collect();
    let title = format!(
        "{} in {} mode: arena of each block under --budget",
        plan.model.name,
        plan.mode.name()
    );
    page::memory_per_block(&title, &blocks, Some(plan.budget)).map_err(CliError::Failed)
}
