//! The `nf` command line: argument definitions (clap derive) and the commands behind them.
//!
//! `main.rs` only parses, calls [`run`] and turns a [`CliError`] into one `error: ...` line on
//! stderr and an exit code. Subcommands are variants of [`Command`]; the model, budget, mode and
//! planner flags live in [`PlanSpecArgs`] so that every subcommand that needs a plan can
//! `#[command(flatten)]` them and call [`PlanSpecArgs::make_plan`].
//!
//! Exit codes: 0 on success, 2 for a usage error (bad flag value, a budget too small for the
//! model, an input the model does not accept; clap's own usage errors also exit 2), 1 when a
//! command fails for another reason.
use std::fmt;
use std::io::{self, Write};

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nf_core::model::{chain_shape, chain_valid, classifier_ops, head_ops, ModelSpec, Shape};
use nf_core::plan::{plan, Mode, Plan, PlanError, PlanOptions, MIN_HEAD};
use nf_core::zoo;

use crate::feed::CacheDtype;
use crate::memory::{cuda_plan, host_plan, HostKernels};
use crate::plan_report;
use crate::size::{format_size, parse_size, parse_size_or_zero, SIZE_SYNTAX};

/// Largest channel count accepted by `--input` (keeps every planned size far from overflow).
pub const MAX_INPUT_CHANNELS: usize = 4096;
/// Largest height or width accepted by `--input`.
pub const MAX_INPUT_SIDE: usize = 8192;
/// Largest `--classes`.
pub const MAX_CLASSES: usize = 65536;
/// Largest head width (`--f-max`, `--f-min`, `--ll-filters`).
pub const MAX_FILTERS: usize = 4096;
/// Default `--head-pool`: the grid auxiliary heads pool a unit's output to (0: none).
pub const DEFAULT_HEAD_POOL: usize = 0;
/// Largest batch size (`--batch-min`, `--batch-max`).
pub const MAX_BATCH: usize = 65536;

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
    Plan(PlanArgs),
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
    /// Host memory beside the budget.
    #[command(flatten)]
    pub host: HostArgs,
}

/// Training mode on the command line (see [`Mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// NeuroFlux: adaptive head widths, memory-homogeneous blocks, a batch size per block.
    Neuroflux,
    /// Classic local learning: every head equally wide, all units in one block, one batch size.
    Ll,
    /// Backpropagation: all units and the classifier at once, one batch size.
    Bp,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Neuroflux => Mode::NeuroFlux,
            ModeArg::Ll => Mode::Ll,
            ModeArg::Bp => Mode::Bp,
        }
    }
}

/// Everything a plan is made from; flatten it into any subcommand that plans.
#[derive(Args, Debug, Clone)]
pub struct PlanSpecArgs {
    /// Zoo model
    #[arg(long, value_name = "NAME", default_value = "vgg-small", value_parser = model_parser())]
    pub model: String,
    /// Memory budget, e.g. 64MiB, 1.5GiB or 4096 (binary units)
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_size, long_help = budget_long_help(),
          allow_hyphen_values = true)]
    pub budget: u64,
    /// Training mode
    #[arg(long, value_enum, default_value_t = ModeArg::Neuroflux)]
    pub mode: ModeArg,
    /// Input shape per sample, channels x height x width (default: the model's own, e.g.
    /// 3x32x32)
    #[arg(long, value_name = "CxHxW", value_parser = parse_shape)]
    pub input: Option<Shape>,
    /// Number of classes
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = parse_classes)]
    pub classes: usize,
    /// Planner options.
    #[command(flatten)]
    pub options: PlannerOptionArgs,
}

/// The planner's tunables ([`PlanOptions`]), defaults from [`PlanOptions::DEFAULT`].
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Planner options")]
pub struct PlannerOptionArgs {
    /// Head filters of the first unit (neuroflux; decays linearly to --f-min; every head is then
    /// capped at half its unit's output channels and rounded down to a multiple of 8)
    #[arg(long, value_name = "F", default_value_t = PlanOptions::DEFAULT.f_max,
          value_parser = parse_filters)]
    pub f_max: usize,
    /// Head filters of the last unit with a head (neuroflux)
    #[arg(long, value_name = "F", default_value_t = PlanOptions::DEFAULT.f_min,
          value_parser = parse_filters)]
    pub f_min: usize,
    /// Head filters of every unit (ll)
    #[arg(long, value_name = "F", default_value_t = PlanOptions::DEFAULT.ll_filters,
          value_parser = parse_filters)]
    pub ll_filters: usize,
    /// Smallest batch size a block may use
    #[arg(long, value_name = "B", default_value_t = PlanOptions::DEFAULT.b_min,
          value_parser = parse_batch)]
    pub batch_min: usize,
    /// Largest batch size a block may use (sizes from 16 up are multiples of 8)
    #[arg(long, value_name = "B", default_value_t = PlanOptions::DEFAULT.b_max,
          value_parser = parse_batch)]
    pub batch_max: usize,
    /// Auxiliary heads first average-pool a unit output larger than SxS to SxS, so that their
    /// convolution is cheap at any resolution (0: heads see the full unit output)
    #[arg(long, value_name = "S", default_value_t = DEFAULT_HEAD_POOL, value_parser = parse_head_pool)]
    pub head_pool: usize,
    /// Units join a block while their per-sample memory is within this factor of the block's
    /// first unit (neuroflux)
    #[arg(long, value_name = "X", default_value_t = PlanOptions::DEFAULT.homogeneity,
          value_parser = parse_homogeneity)]
    pub homogeneity: usize,
}

impl PlannerOptionArgs {
    /// The planner options, checked flag by flag.
    pub fn to_options(&self) -> Result<PlanOptions, CliError> {
        if self.f_min > self.f_max {
            return Err(CliError::Usage(format!(
                "--f-min {} is larger than --f-max {}",
                self.f_min, self.f_max
            )));
        }
        if self.batch_min > self.batch_max {
            return Err(CliError::Usage(format!(
                "--batch-min {} is larger than --batch-max {}",
                self.batch_min, self.batch_max
            )));
        }
        Ok(PlanOptions {
            f_max: self.f_max,
            f_min: self.f_min,
            ll_filters: self.ll_filters,
            b_min: self.batch_min,
            b_max: self.batch_max,
            homogeneity: self.homogeneity,
            ..PlanOptions::DEFAULT
        })
    }
}

impl PlanSpecArgs {
    /// The zoo model named by `--model`, its heads pooled as `--head-pool` says.
    pub fn model_spec(&self) -> Result<ModelSpec, CliError> {
        let m = zoo::by_name(&self.model).ok_or_else(|| {
            CliError::Usage(format!(
                "--model '{}' is not a zoo model; choose one of {}",
                self.model,
                zoo_names()
            ))
        })?;
        Ok(ModelSpec {
            head_pool: self.options.head_pool,
            ..*m
        })
    }

    /// Plan with these arguments for the kernels of `target`, leaving `reserved` bytes of the
    /// budget to what runs beside the arena (the feed's staging buffer, a device backend's own
    /// workspace); with `recompute`, blocks after the first recompute their inputs (no
    /// activation cache). Every planner error becomes a one-line usage error naming the flag
    /// at fault.
    pub fn make_plan(
        &self,
        target: Target,
        reserved: u64,
        recompute: bool,
    ) -> Result<Plan, CliError> {
        let model = &self.model_spec()?;
        let input = self.input.unwrap_or(model.input);
        let mut options = self.options.to_options()?;
        options.recompute = recompute;
        options.workers = match target {
            Target::Host(t) | Target::Columns(t) => t,
            Target::Cuda(_) => 1,
        };
        let mode = Mode::from(self.mode);
        options.reserve = reserved;
        let too_small = |needed: u64| {
            let reserve = if reserved > 0 {
                format!(
                    ", of which {} is kept beside the arena",
                    format_size(reserved)
                )
            } else {
                String::new()
            };
            CliError::Usage(format!(
                "--budget {} is too small for {} in {} mode: at least {} ({} bytes) is needed \
                 (at --batch-min {}{reserve})",
                format_size(self.budget),
                model.name,
                mode.name(),
                format_size(needed),
                needed,
                options.b_min
            ))
        };
        let (budget, classes) = (self.budget, self.classes);
        let planned = match target {
            Target::Host(t) => host_plan(
                model,
                input,
                classes,
                budget,
                mode,
                &options,
                HostKernels::active(t),
            ),
            Target::Columns(_) => plan(model, input, classes, budget, mode, &options),
            Target::Cuda(policy) => {
                cuda_plan(model, input, classes, budget, mode, &options, policy)
            }
        };
        planned.map_err(|e| match e {
            PlanError::BudgetTooSmall { needed } => too_small(needed),
            PlanError::BadInput => CliError::Usage(explain_bad_input(model, input, self.classes)),
            PlanError::BadOptions(msg) => CliError::Usage(format!(
                "planner options (--f-max, --f-min, --ll-filters, --batch-min, --batch-max, \
                 --homogeneity): {msg}"
            )),
        })
    }
}

/// Which kernels a plan sizes its workspace for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// nf-host's CPU backend with this many worker threads (its own packed-GEMM workspace).
    Host(usize),
    /// The reference kernels' im2col workspace for this many workers.
    Columns(usize),
    /// The CUDA backend (also emulated): chunked convolutions, the chunk from the budget
    /// ([`crate::memory::cuda_plan`]).
    Cuda(nf_cuda::ChunkPolicy),
}

/// Host memory beside the budget (`nf plan`, `nf train`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Host memory")]
pub struct HostArgs {
    /// Host memory for the data set (as stored), the activation caches and the model's weights
    /// held on the host. A data set that does not fit is refused; caches that do not fit are
    /// replaced by recomputing block inputs with the frozen units
    #[arg(long, value_name = "SIZE", default_value = "8GiB", value_parser = parse_size)]
    pub host_budget: u64,
    /// The most the activation caches may take of the host budget (0: never cache; later
    /// blocks recompute their inputs). Default: whatever the host budget leaves
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero)]
    pub cache_budget: Option<u64>,
    /// Element type of the activation cache
    #[arg(long, value_enum, default_value_t = CacheDtype::F32)]
    pub cache_dtype: CacheDtype,
}

/// An error of a command: its message (one line, without the `error: ` prefix) and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The arguments cannot work (exit code 2).
    Usage(String),
    /// The command failed while running (exit code 1).
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

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
    }
}

/// `nf plan`: the table (or, with `--json`, the JSON object and a newline).
pub fn plan_command(args: &PlanArgs) -> Result<String, CliError> {
    let workers = args
        .threads
        .map_or_else(crate::fast_cpu::threads, |t| t as usize);
    let mut spec = args.spec.clone();
    let data = match &args.data {
        Some(d) => {
            let info =
                crate::data::describe(d).map_err(|e| CliError::Usage(format!("--data: {e}")))?;
            spec.input = Some(info.shape);
            spec.classes = info.classes;
            Some(crate::memory::DataMemory::new(&info, 0.1, None))
        }
        None => None,
    };
    let rp = crate::memory::plan_run(&spec, Target::Host(workers), 0, &args.host, data)?;
    Ok(if args.json {
        let mut v = plan_report::json(&rp.plan);
        v["memory"] = plan_report::contract_json(&rp);
        let mut s = v.to_string();
        s.push('\n');
        s
    } else {
        let mut s = plan_report::table(&rp.plan);
        s.push_str(&plan_report::contract(&rp));
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

/// The one-line message for a clap error about a flag's value (unknown model, bad size, bad
/// shape, ...), or `None` for the errors clap should report itself (help, version, unknown or
/// missing flags, which print their usage).
pub fn value_error_line(e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let rendered = e.render().to_string();
    // Split at lone carriage returns too: a value quoted in the message may hold one.
    let line = rendered
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ");
    Some(line)
}

/// The zoo names, comma-separated.
pub fn zoo_names() -> String {
    zoo::ALL
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--model` values: the zoo, each with its one-line description (shown by `--help`).
fn model_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(
        zoo::ALL
            .iter()
            .map(|m| PossibleValue::new(m.name).help(m.about)),
    )
}

fn budget_long_help() -> String {
    format!(
        "Memory budget: the most bytes one training step may use (the arena of the largest \
         block). SIZE is {SIZE_SYNTAX}."
    )
}

/// Parse `CxHxW` (e.g. `3x32x32`; `X` and `*` also separate).
pub fn parse_shape(s: &str) -> Result<Shape, String> {
    let t = s.trim();
    let shown = crate::size::printable(t);
    let parts: Vec<&str> = t.split(['x', 'X', '*']).map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!(
            "'{shown}' is not a shape; expected CxHxW (channels x height x width), e.g. 3x32x32"
        ));
    }
    let mut dims = [0usize; 3];
    for (i, (part, name)) in parts.iter().zip(["C", "H", "W"]).enumerate() {
        let max = if i == 0 {
            MAX_INPUT_CHANNELS
        } else {
            MAX_INPUT_SIDE
        };
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "'{shown}': {name} '{}' is not a whole number; expected CxHxW, e.g. 3x32x32",
                crate::size::printable(part)
            ));
        }
        match part.parse::<usize>() {
            Ok(v) if (1..=max).contains(&v) => dims[i] = v,
            _ => return Err(format!("'{shown}': {name} must be between 1 and {max}")),
        }
    }
    Ok(Shape::new(dims[0], dims[1], dims[2]))
}

fn parse_bounded(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{}' is not a whole number",
            crate::size::printable(t)
        ));
    }
    match t.parse::<usize>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("must be between {lo} and {hi}")),
    }
}

fn parse_classes(s: &str) -> Result<usize, String> {
    parse_bounded(s, 2, MAX_CLASSES)
}

fn parse_filters(s: &str) -> Result<usize, String> {
    parse_bounded(s, MIN_HEAD, MAX_FILTERS)
}

fn parse_batch(s: &str) -> Result<usize, String> {
    parse_bounded(s, 1, MAX_BATCH)
}

fn parse_head_pool(s: &str) -> Result<usize, String> {
    match parse_bounded(s, 0, MAX_INPUT_SIDE)? {
        1 => Err("must be 0 (no pooling) or at least 2 (the head pools to 2x2 at its end)".into()),
        v => Ok(v),
    }
}

fn parse_homogeneity(s: &str) -> Result<usize, String> {
    parse_bounded(s, 1, 1 << 20)
}

fn shape_str(s: Shape) -> String {
    format!("{}x{}x{}", s.c, s.h, s.w)
}

/// Why `model` does not accept `input` with `classes` classes, as one line naming the flag.
pub fn explain_bad_input(model: &ModelSpec, input: Shape, classes: usize) -> String {
    if classes < 2 {
        return format!("--classes {classes}: at least 2 classes are needed");
    }
    let flag = format!("--input {}", shape_str(input));
    let smallest = (1..=MAX_INPUT_SIDE)
        .find(|&n| model.accepts(Shape::new(input.c, n, n), classes))
        .map(|n| {
            format!(
                " (the smallest square input it accepts is {}x{n}x{n})",
                input.c
            )
        })
        .unwrap_or_default();
    let n = model.units.len();
    let mut s = input;
    for (u, unit) in model.units.iter().enumerate() {
        if !chain_valid(unit, s) {
            return format!(
                "{flag} is too small for {}: unit {u} cannot run on its {} input{smallest}",
                model.name,
                shape_str(s)
            );
        }
        s = chain_shape(unit, s);
        if u + 1 < n && !chain_valid(&head_ops(MIN_HEAD, classes), s) {
            return format!(
                "{flag} is too small for {}: the auxiliary head of unit {u} needs at least a \
                 2x2 input but unit {u} outputs {}{smallest}",
                model.name,
                shape_str(s)
            );
        }
    }
    if !chain_valid(&classifier_ops(classes), s) {
        return format!(
            "{flag} is too small for {}: its classifier cannot run on {}{smallest}",
            model.name,
            shape_str(s)
        );
    }
    format!(
        "{flag} with --classes {classes} is not accepted by {}{smallest}",
        model.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
        assert_eq!(a.spec.model, "vgg-small");
        assert_eq!(a.spec.budget, 64 << 20);
        assert_eq!(a.spec.mode, ModeArg::Neuroflux);
        assert_eq!(a.spec.input, None);
        assert_eq!(a.spec.classes, 10);
        assert!(!a.json);
        assert_eq!(a.spec.options.to_options().unwrap(), PlanOptions::DEFAULT);
        let p = a.spec.make_plan(Target::Host(1), 0, false).unwrap();
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
            plan_args(parse(&args).unwrap())
                .spec
                .make_plan(Target::Columns(1), 0, false)
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
            Command::Plan(a) => a,
            _ => panic!("not `nf plan`"),
        }
    }
}
