//! The `nf` command line: the subcommands (clap derive), `nf plan`, and dispatch to
//! [`crate::train`], [`crate::eval`], [`crate::report`] and [`crate::export`].
//!
//! `main.rs` only parses, calls [`run`] and turns a [`CliError`] into one `error: ...` line on
//! stderr and an exit code. Subcommands are variants of [`Command`]; the model, budget, mode and
//! planner flags live in [`PlanSpecArgs`] ([`crate::plan_args`]) so that every subcommand that
//! needs a plan can `#[command(flatten)]` them and plan with [`crate::run_plan::plan_run`].
//!
//! Exit codes: 0 on success, 2 for a usage error (bad flag value, a budget too small for the
//! model, an input the model does not accept; clap's own usage errors also exit 2), 1 when a
//! command fails for another reason.
use std::io::{self, Write};

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;
pub use crate::error::{print_error_line, value_error_line};
use crate::plan_args::{HostArgs, PlanSpecArgs, Target};
use crate::plan_report;

/// NeuroFlux: memory-budgeted CNN training with adaptive local learning.
#[derive(Parser, Debug)]
#[command(name = "nf", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Command,
}

/// The subcommands of `nf`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Plan training under a memory budget: blocks, head widths, batch sizes and bytes.
    ///
    /// Prints one row per block (the units it trains together, their auxiliary head widths,
    /// its batch size and its arena bytes with their breakdown), the arena the plan needs (the
    /// largest block), and the batch size backpropagation would get under the same budget.
    // `--lr -1` is a value to refuse with a line naming the flag, not an unknown flag `-1`.
    #[command(allow_negative_numbers = true)]
    Plan(Box<PlanArgs>),
    /// Train a model under a memory budget (NeuroFlux, or the LL and BP baselines).
    ///
    /// Writes report.json, model.safetensors (every unit, head and the classifier),
    /// exit.safetensors (the early-exit model) and a checkpoint after every epoch into --out.
    /// Without --data it trains on the Fashion-MNIST subset bundled in fixtures/.
    #[command(allow_negative_numbers = true)]
    Train(Box<crate::train::TrainArgs>),
    /// Test accuracy and inference throughput of a model file, or of a run directory's full
    /// and early-exit models side by side.
    #[command(allow_negative_numbers = true)]
    Eval(crate::eval::EvalArgs),
    /// Draw runs as one self-contained HTML file: memory per block, training curves, the
    /// early-exit trade-off, images/s, peak RSS against the plan; several runs are overlaid.
    Report(crate::report::ReportArgs),
    /// Export a model file (or a run directory's exit or full model) as an ONNX file for
    /// inference runtimes: opset 13, the input normalisation inside the graph.
    ///
    /// The graph's input is the image as stored, float pixels / 255 in [0, 1], [N, C, H, W];
    /// its output is the logits, [N, classes].
    Export(crate::export::ExportArgs),
}

/// `nf plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Model, input, budget, mode and planner options.
    #[command(flatten)]
    pub spec: PlanSpecArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// CPU worker threads to plan for, as `nf train --threads` (each worker has its own part
    /// of the kernel workspace in the arena, so more workers can mean a smaller batch).
    /// Default: all cores, like `nf train`
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// The data `nf train --data` would read: the input shape and classes come from it, and
    /// the host memory of the run (data set, activation caches) is planned too
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// Plan for the first N training images of --data, as `nf train --limit N` (the training
    /// split's size sets the --min-steps cap)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..))]
    pub limit: Option<u64>,
    /// Fraction of the training set of --data held out for validation, as `nf train --val`
    /// [default: 0.1]
    #[arg(long, value_name = "FRACTION")]
    pub val: Option<f32>,
    /// How an image folder given as --data becomes a data set, as for `nf train`.
    #[command(flatten)]
    pub images: crate::plan_args::ImageArgs,
    /// Host memory beside the budget.
    #[command(flatten)]
    pub host: HostArgs,
    /// Also write the memory-per-block chart (the one `nf report` draws) to this SVG file
    #[arg(long, value_name = "FILE", help_heading = crate::output::OUTPUT)]
    pub svg: Option<std::path::PathBuf>,
    /// Element types the memory model plans for: bf16 sizes the input, carry buffers,
    /// activations, activation gradients and im2col columns in 2 bytes (weights, momentum,
    /// gradients, BN statistics stay f32) and prints the element size per region kind and the
    /// smallest budget in f32 and bf16. A bf16 plan is what nf train --precision bf16 plans
    /// and runs on the CPU
    #[arg(long, value_enum, value_name = "P")]
    pub precision: Option<crate::precision::PrecisionArg>,
}

/// Run a parsed command line, writing its normal output to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match &cli.cmd {
        Command::Plan(args) => {
            let text = plan_command(args)?;
            write_out(out, &text)
        }
        Command::Train(args) => {
            let argv: Vec<String> = std::env::args().collect();
            crate::train::train_command(args, &argv)
        }
        Command::Eval(args) => {
            let text = crate::eval::eval_command(args)?;
            write_out(out, &text)
        }
        Command::Report(args) => {
            let text = crate::report::report_command(args)?;
            write_out(out, &text)
        }
        Command::Export(args) => {
            let text = crate::export::export_command(args)?;
            write_out(out, &text)
        }
    }
}

/// `nf plan`: the table (or, with `--json`, the JSON object and a newline).
pub fn plan_command(args: &PlanArgs) -> Result<String, CliError> {
    let workers = args.threads.map_or_else(nf_cpu::threads, |t| t as usize);
    let mut spec = args.spec.clone();
    let precision = args.precision.map(nf_core::layout::Precision::from);
    spec.options.storage = precision.unwrap_or_default();
    if args.data.is_none() {
        if let Some(flag) = [
            (args.limit.is_some(), "--limit"),
            (args.val.is_some(), "--val"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
        {
            return Err(CliError::Usage(format!(
                "{flag} sizes the training split of --data, which is not given"
            )));
        }
    }
    let data = match &args.data {
        Some(d) => {
            let opts = args.images.options(workers)?;
            let info = crate::data::describe_with(d, &opts)
                .map_err(|e| CliError::Usage(format!("--data: {e}")))?;
            let val = args.val.unwrap_or(0.1);
            if !(0.0..0.9).contains(&val) {
                return Err(CliError::Usage(format!(
                    "--val {val}: must be a fraction in [0, 0.9)"
                )));
            }
            spec.input = Some(info.shape);
            spec.classes = info.classes;
            Some(crate::run_plan::DataMemory::new(&info, val, args.limit))
        }
        None => None,
    };
    let svg_to = match &args.svg {
        Some(path) => {
            let mut inputs = crate::output::Inputs::new();
            if let Some(d) = &args.data {
                inputs.data(d);
            }
            Some(crate::output::file_target("--svg", path, &inputs)?)
        }
        None => None,
    };
    let rp = crate::run_plan::plan_run(
        &spec,
        Target::Host(workers),
        0,
        &args.host,
        args.host.cache_dtype(args.precision.unwrap_or_default()),
        data,
    )?;
    if let (Some(path), Some(to)) = (&args.svg, &svg_to) {
        let svg = crate::report::plan_memory_svg(&rp.plan)?;
        crate::store::atomic_write(to, svg.as_bytes())
            .map_err(|e| CliError::Usage(format!("--svg {}: cannot write: {e}", path.display())))?;
    }
    let target = Target::Host(workers);
    Ok(if args.json {
        let mut v = plan_report::json(&rp.plan);
        v["memory"] = plan_report::contract_json(&rp);
        if let Some(p) = precision {
            v["precision"] = crate::precision_plan::json(&spec, target, rp.staging, p);
        }
        let mut s = v.to_string();
        s.push('\n');
        s
    } else {
        let mut s = plan_report::table(&rp.plan, rp.bp_needed);
        s.push_str(&plan_report::contract(&rp));
        if let Some(p) = precision {
            s.push_str(&crate::precision_plan::section(
                &spec, target, rp.staging, p,
            ));
        }
        s
    })
}

/// Write `text` to `out`; a closed pipe (`nf plan | head`) is not an error.
fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("cannot write the output: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan_args::{parse_shape, ModeArg};
    use crate::run_plan::make_plan;
    use clap::CommandFactory;
    use nf_core::model::Shape;
    use nf_core::plan::PlanOptions;
    use nf_core::zoo;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nf").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let a = plan_args(parse(&["plan", "--budget", "64MiB"]).unwrap());
        assert_eq!(a.spec.model.name, "vgg-small");
        assert_eq!(a.spec.budget, 64 << 20);
        assert_eq!(a.spec.mode, ModeArg::Neuroflux);
        assert_eq!(a.spec.input, None);
        assert_eq!(a.spec.classes, 10);
        assert!(!a.json);
        assert_eq!(
            a.spec.options.to_options().unwrap(),
            PlanOptions {
                min_steps: crate::plan_args::DEFAULT_MIN_STEPS as usize,
                ..PlanOptions::DEFAULT
            }
        );
        let p = make_plan(&a.spec, Target::Host(1), 0, false, 0).unwrap();
        assert_eq!(p.input, zoo::VGG_SMALL.input);
    }

    #[test]
    fn shapes() {
        assert_eq!(parse_shape("3x32x32"), Ok(Shape::new(3, 32, 32)));
        assert_eq!(parse_shape(" 1X28x28 "), Ok(Shape::new(1, 28, 28)));
        for bad in [
            "3x32",
            "3x32x32x1",
            "",
            "x32x32",
            "3x-1x32",
            "0x32x32",
            "3x32x9999",
            "axbxc",
        ] {
            let e = parse_shape(bad).expect_err(bad);
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn value_errors_are_one_line() {
        for args in [
            &["plan", "--budget", "abc"][..],
            &["plan", "--budget", "64MiB", "--model", "nope"],
            &["plan", "--budget", "64MiB", "--mode", "sgd"],
            &["plan", "--budget", "64MiB", "--input", "3x32"],
            &["plan", "--budget", "64MiB", "--classes", "1"],
        ] {
            let e = parse(args).expect_err("must fail");
            let line = value_error_line(&e).expect("a value error");
            assert!(line.starts_with("error: "), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        let e = parse(&["plan", "--no-such-flag"]).unwrap_err();
        assert!(value_error_line(&e).is_none());
    }

    #[test]
    fn planner_errors_name_the_flag() {
        let make = |extra: &[&str]| {
            let mut args = vec!["plan", "--model", "vgg11"];
            args.extend_from_slice(extra);
            make_plan(
                &plan_args(parse(&args).unwrap()).spec,
                Target::Columns(1),
                0,
                false,
                0,
            )
        };
        let e = make(&["--budget", "1KiB"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(
            m.starts_with("--budget 1.0 KiB is too small for vgg11 in neuroflux mode: at least "),
            "{m}"
        );
        let needed: u64 = m
            .split(" (")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // `needed` plans; one byte less does not.
        assert!(make(&["--budget", &needed.to_string()]).is_ok());
        assert!(make(&["--budget", &(needed - 1).to_string()]).is_err());

        let e = make(&["--budget", "64MiB", "--input", "3x8x8"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--input 3x8x8 is too small for vgg11"),
            "{e}"
        );
        let e = make(&["--budget", "64MiB", "--f-min", "65"]).unwrap_err();
        assert_eq!(e.to_string(), "--f-min 65 is larger than --f-max 64");
        let e = make(&[
            "--budget",
            "64MiB",
            "--batch-min",
            "20",
            "--batch-max",
            "23",
        ])
        .unwrap_err();
        assert!(e.to_string().starts_with("planner options"), "{e}");
    }

    #[allow(unreachable_patterns)]
    fn plan_args(cli: Cli) -> PlanArgs {
        match cli.cmd {
            Command::Plan(a) => *a,
            _ => panic!("not `nf plan`"),
        }
    }
}
