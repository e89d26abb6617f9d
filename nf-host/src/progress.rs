//! Progress of `nf train`: one bar per block epoch with loss, running accuracy and images/s.
//!
//! When stdout is a terminal the bar is drawn with indicatif; otherwise (a log file, a pipe, CI)
//! [`Progress`] prints plain lines instead: at most about ten per epoch, then one summary line.
//! Use [`log`] for other messages so that they do not tear an active bar.
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar being drawn, if any, so that [`log`] can print above it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn set_active(bar: Option<ProgressBar>) {
    if let Ok(mut a) = ACTIVE.lock() {
        *a = bar;
    }
}

thread_local! {
    /// Whether this thread's run prints nothing (the ranks of a data-parallel run other
    /// than rank 0).
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Silence (or not) the progress and log lines of the calling thread.
pub fn set_quiet(quiet: bool) {
    QUIET.with(|q| q.set(quiet));
}

fn quiet() -> bool {
    QUIET.with(|q| q.get())
}

/// Print a message line to stdout without breaking an active progress bar.
pub fn log(line: &str) {
    if quiet() {
        return;
    }
    let bar = ACTIVE.lock().ok().and_then(|a| a.clone());
    match bar {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    }
}

/// Progress of one block epoch.
pub struct Progress {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    /// Plain mode: the next batch count at which a line is printed.
    next_line: u64,
}

/// The running figures as shown on the bar and in log lines.
fn figures(loss: f32, acc: f32, images_per_sec: f64) -> String {
    format!(
        "loss {loss:.4} acc {:.2}% {images_per_sec:.0} img/s",
        acc * 100.0
    )
}

impl Progress {
    /// Start the progress of an epoch of `total_batches` batches; `label` names it
    /// (`block 1/3 epoch 2/3`). Draws a bar when stdout is a terminal.
    pub fn new(label: String, total_batches: u64) -> Self {
        let quiet = quiet();
        let bar = (std::io::stdout().is_terminal() && !quiet).then(|| {
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed}<{eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar =
                ProgressBar::with_draw_target(Some(total_batches), ProgressDrawTarget::stdout())
                    .with_style(style)
                    .with_prefix(label.clone());
            set_active(Some(bar.clone()));
            bar
        });
        Progress {
            label,
            total: total_batches,
            bar,
            next_line: if quiet {
                u64::MAX
            } else {
                Self::step(total_batches)
            },
        }
    }

    /// Batches between two plain log lines (about ten lines per epoch).
    fn step(total: u64) -> u64 {
        total.div_ceil(10).max(1)
    }

    /// Report that `done` batches are finished, with the running loss, the running accuracy (a
    /// fraction in 0..=1) and the throughput.
    pub fn update(&mut self, done: u64, loss: f32, acc: f32, images_per_sec: f64) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(figures(loss, acc, images_per_sec));
            }
            None => {
                if self.plain_due(done) {
                    println!(
                        "{}: batch {done}/{} {}",
                        self.label,
                        self.total,
                        figures(loss, acc, images_per_sec)
                    );
                }
            }
        }
    }

    /// Whether a plain line is due at `done` batches (and, if so, when the next one is).
    fn plain_due(&mut self, done: u64) -> bool {
        if done < self.next_line {
            return false;
        }
        let step = Self::step(self.total);
        self.next_line = (done / step + 1) * step;
        true
    }

    /// End the epoch: remove the bar and print `{label}: {summary}` as one line.
    pub fn finish(mut self, summary: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            set_active(None);
        }
        if self.next_line != u64::MAX {
            println!("{}: {summary}", self.label);
        }
    }
}

impl Drop for Progress {
    /// An epoch abandoned without [`Progress::finish`] (an error) clears its bar.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
            set_active(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(total: u64) -> Progress {
        Progress {
            label: "t".into(),
            total,
            bar: None,
            next_line: Progress::step(total),
        }
    }

    #[test]
    fn plain_lines_are_about_ten_per_epoch() {
        for total in [1, 3, 9, 10, 11, 99, 100, 1000, 12345] {
            let mut p = plain(total);
            let lines = (1..=total).filter(|&d| p.plain_due(d)).count();
            assert!((1..=10).contains(&lines), "{total}: {lines} lines");
        }
        // Sparse updates (every 7th batch) still print at most ten lines.
        let mut p = plain(1000);
        let lines = (1..=1000).step_by(7).filter(|&d| p.plain_due(d)).count();
        assert!(lines <= 10, "{lines}");
    }

    #[test]
    fn figures_format() {
        assert_eq!(
            figures(0.5, 0.875, 1234.4),
            "loss 0.5000 acc 87.50% 1234 img/s"
        );
    }
}
