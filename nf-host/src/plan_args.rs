//! The argument groups every planning command shares (model, budget, mode, input, classes,
//! planner options, host memory), the limits that keep every planned size far from overflow,
//! and the value parsers behind them: each refuses a bad value in one line naming it.
use clap::{Args, ValueEnum};
use nf_core::model::{chain_valid, classifier_ops, head_ops, ModelSpec, Op, Shape};
use nf_core::plan::{Mode, PlanOptions, MIN_HEAD};

use crate::error::CliError;
use crate::feed::CacheDtype;
pub use crate::limits::{MAX_BATCH, MAX_CLASSES, MAX_FILTERS, MAX_INPUT_CHANNELS, MAX_INPUT_SIDE};
use crate::size::{parse_size, parse_size_or_zero, SIZE_SYNTAX};

/// Default `--head-pool`: the grid auxiliary heads pool a unit's output to (0: none).
pub const DEFAULT_HEAD_POOL: usize = 0;
/// Default `--min-steps`: the steps an epoch keeps at least (see `nf_core::plan::step_cap`).
pub const DEFAULT_MIN_STEPS: u32 = 200;

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
    /// Model: a zoo name (vgg-small, vgg11, vgg16, vgg19, resnet18), a description such as
    /// 'vgg:32,M,64,M,128,128,M' or '64,R64,R128s2', or a JSON file (see --help)
    #[arg(long, value_name = "MODEL", default_value = "vgg-small", value_parser = parse_model,
          long_help = model_long_help())]
    pub model: ModelSpec<'static>,
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
    /// Largest batch size a block may use (sizes from 16 up are multiples of 8). Given
    /// explicitly, it replaces the step cap of --min-steps [default: 512]
    #[arg(long, value_name = "B", value_parser = parse_batch)]
    pub batch_max: Option<usize>,
    /// Steps every epoch keeps at least: no block trains at a batch larger than the training
    /// samples / N (never below --batch-min), so that a small data set does not starve the
    /// deep blocks of updates. Needs the data's size (nf train, nf plan --data); 0: no cap; an
    /// explicit --batch-max turns it off
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MIN_STEPS,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub min_steps: u32,
    /// Auxiliary heads first average-pool a unit output larger than SxS to SxS, so that their
    /// convolution is cheap at any resolution (0: heads see the full unit output)
    #[arg(long, value_name = "S", default_value_t = DEFAULT_HEAD_POOL, value_parser = parse_head_pool)]
    pub head_pool: usize,
    /// Units join a block while their per-sample memory is within this factor of the block's
    /// first unit (neuroflux)
    #[arg(long, value_name = "X", default_value_t = PlanOptions::DEFAULT.homogeneity,
          value_parser = parse_homogeneity)]
    pub homogeneity: usize,
    /// Ranks of a data-parallel run (set by `nf train`, not a flag): the step cap applies to
    /// the global batch.
    #[arg(skip = 1usize)]
    pub world: usize,
    /// The element types the memory model sizes regions for (set from `--precision` by
    /// `nf plan` and by `nf train` on the CPU, not a flag of its own).
    #[arg(skip)]
    pub storage: nf_core::layout::Precision,
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
        let batch_max = self.batch_max.unwrap_or(PlanOptions::DEFAULT.b_max);
        if self.batch_min > batch_max {
            return Err(CliError::Usage(format!(
                "--batch-min {} is larger than --batch-max {batch_max}",
                self.batch_min
            )));
        }
        Ok(PlanOptions {
            f_max: self.f_max,
            f_min: self.f_min,
            ll_filters: self.ll_filters,
            b_min: self.batch_min,
            b_max: batch_max,
            homogeneity: self.homogeneity,
            min_steps: if self.batch_max.is_some() {
                0
            } else {
                self.min_steps as usize
            },
            world: self.world.max(1),
            precision: self.storage,
            ..PlanOptions::DEFAULT
        })
    }
}

impl PlanSpecArgs {
    /// The input shape: `--input` (set from the data by `nf train` and `nf plan --data`), else
    /// the zoo model's own. A described model has none of its own.
    pub fn input_shape(&self) -> Result<Shape, CliError> {
        match self.input {
            Some(s) => Ok(s),
            None if !self.model.input.is_empty() => Ok(self.model.input),
            None => Err(CliError::Usage(format!(
                "--model {}: a described model takes its input shape from the data; give \
                 --data or --input CxHxW",
                self.model.name
            ))),
        }
    }

    /// The model `--model` describes, its heads pooled as `--head-pool` says.
    pub fn model_spec(&self) -> Result<ModelSpec<'static>, CliError> {
        Ok(ModelSpec {
            head_pool: self.options.head_pool,
            ..self.model
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
    /// ([`crate::run_plan::cuda_plan`]).
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
    /// Element type of the activation cache (default: bf16 under --precision bf16, else f32)
    #[arg(long, value_enum, value_name = "TYPE")]
    pub cache_dtype: Option<CacheDtype>,
}

impl HostArgs {
    /// The activation cache's element type: `--cache-dtype`, else bf16 where the run's
    /// precision is bf16 (its GEMMs round block inputs to bf16 anyway), else f32.
    pub fn cache_dtype(&self, precision: crate::precision::PrecisionArg) -> CacheDtype {
        self.cache_dtype.unwrap_or(match precision {
            crate::precision::PrecisionArg::F32 => CacheDtype::F32,
            crate::precision::PrecisionArg::Bf16 => CacheDtype::Bf16,
        })
    }
}

/// Parse `--model` ([`crate::architecture::resolve`]).
fn parse_model(s: &str) -> Result<ModelSpec<'static>, String> {
    crate::architecture::resolve(s)
}

fn model_long_help() -> String {
    let zoo: Vec<String> = crate::architecture::zoo_descriptions()
        .into_iter()
        .map(|(m, text)| format!("  {:<10} {text}\n  {:<10} ({})", m.name, "", m.about))
        .collect();
    format!(
        "The model to train: a zoo name, a compact description or a JSON file. Input channels, \
         size and classes come from the data; every model ends in global average pooling and a \
         linear classifier.\n\n\
         Zoo (name, then its description):\n{}\n\n\
         Compact description: [NAME:]LAYER,LAYER,... with layers\n  \
         64        conv 3x3 (stride 1, padding 1) -> batch norm -> ReLU\n  \
         64k5s2p2  the same with kernel 5, stride 2, padding 2 (defaults k3 s1 p=k/2)\n  \
         M         2x2 max-pool\n  \
         A2        adaptive average pool to 2x2 (A1: global)\n  \
         R128s2    residual basic block, 128 channels, stride 2 (s1 by default)\n\
         Every conv or residual layer starts a unit, pools join it; or cut units yourself with \
         '|': 32,M|64,64,M is 2 units.\n\n\
         JSON file (*.json): {{\"name\": ..., \"units\": [...]}}, each unit a list of ops \
         ({{\"op\": \"conv\", \"out\": 64, \"k\": 3, \"stride\": 1, \"pad\": 1, \"bias\": \
         false}}, batchnorm, relu, maxpool2, avgpool with size, flatten, linear with out, \
         basicblock with out and stride) or a string of compact layers; see the README.",
        zoo.join("\n")
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
        for (i, op) in unit.iter().enumerate() {
            if !op.accepts(s) {
                return format!(
                    "{flag} is too small for {}: unit {u} layer {i} ({}) cannot run on its {} \
                     input{smallest}",
                    model.name,
                    crate::architecture::op_name(op),
                    shape_str(s)
                );
            }
            s = op.out_shape(s);
        }
        let flattens = unit
            .iter()
            .any(|op| matches!(op, Op::Flatten | Op::Linear(_)));
        if u + 1 < n && flattens {
            return format!(
                "--model {}: unit {u} flattens its output (a flatten or linear layer), which only \
                 the last unit may do: the auxiliary head after it needs a 2x2 or larger input",
                model.name
            );
        }
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

/// How an image folder given as `--data` becomes a data set (`nf train`, `nf eval`); the
/// other formats refuse these flags.
#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// Image folders: resize every image to HxW pixels (bilinear, the aspect ratio is not
    /// kept). Default: the size all images share (differing sizes are refused)
    #[arg(long, value_name = "HxW", value_parser = parse_hw)]
    pub size: Option<(usize, usize)>,
    /// Image folders: convert every image to 1 (grey) or 3 (RGB) channels. Default: 1 when
    /// every image is grey, 3 when every image is colour (a mix is refused)
    #[arg(long, value_name = "C", value_parser = parse_channels)]
    pub channels: Option<u32>,
    /// Image folders without a test/ folder: the share of the images held out as the test
    /// split (chosen by a fixed seed: nf train and nf eval hold out the same images)
    #[arg(long, value_name = "FRACTION", default_value_t = crate::data::DEFAULT_TEST_SPLIT)]
    pub test_split: f32,
}

impl ImageArgs {
    /// The loader's options, decoding on `threads` threads; refuses a --test-split outside
    /// (0, 1).
    pub fn options(&self, threads: usize) -> Result<crate::data::DataOptions, CliError> {
        if !(self.test_split > 0.0 && self.test_split < 1.0) {
            return Err(CliError::Usage(format!(
                "--test-split {}: must be a fraction in (0, 1)",
                self.test_split
            )));
        }
        Ok(crate::data::DataOptions {
            size: self.size,
            channels: self.channels.map(|c| c as usize),
            test_split: self.test_split,
            threads,
        })
    }
}

/// `--channels`: 1 or 3.
fn parse_channels(s: &str) -> Result<u32, String> {
    match s.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!(
            "'{}' is not 1 (grey) or 3 (RGB)",
            crate::size::printable(s)
        )),
    }
}

/// `HxW` (e.g. `224x224`): both 1 to [`MAX_INPUT_SIDE`].
fn parse_hw(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not HxW (e.g. 64x64)"))?;
    Ok((
        parse_bounded(h, 1, MAX_INPUT_SIDE)?,
        parse_bounded(w, 1, MAX_INPUT_SIDE)?,
    ))
}
