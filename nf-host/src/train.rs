//! `nf train`: block-sequential training under a memory budget, with the activation cache,
//! early exit, checkpoints, model files and the report.
//!
//! One run: load the data and hold out a validation split; plan; then for every block of the
//! plan, in order: initialise it (or restore it from the checkpoint), train it for `--epochs`
//! epochs (checkpointing after each), score every head on the validation and test splits while
//! computing the block's outputs for the next block (the activation cache), and freeze it.
//! Finally pick the early exit and write `model.safetensors`, `exit.safetensors` and
//! `report.json` into `--out`. The same loop runs the `ll` and `bp` baselines: their plans have
//! a single block.
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use nf_core::backend::Backend;
use nf_core::layout::BlockLayout;
use nf_core::model::{chain_params, classifier_ops, head_ops, ModelSpec, Shape, MAX_UNITS};
use nf_core::optim::{Schedule, Sgd};
use nf_core::plan::{Mode, Plan};
use nf_core::rng::Rng;
use nf_core::schedule::{self, epoch_order, Split, TrainConfig, TrainError};
use nf_core::step::{self, SegStats};
use serde_json::{json, Value};

use crate::cli::{CliError, PlanSpecArgs};
use crate::data::{self, Dataset};
use crate::feed::{CacheDtype, Frozen, HostFeed, Source};
use crate::host_backend::{threads as host_threads, HostBackend, Pool};
use crate::plan_report;
use crate::progress::{self, Progress};
use crate::size::{format_size, parse_size};
use crate::store::{read_block, write_block, TensorStore};

/// Learning-rate schedule over a block's epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// Warm-up then cosine annealing (one cycle per block).
    OneCycle,
    /// Cosine annealing from the peak.
    Cosine,
    /// Constant.
    Constant,
}

/// Where training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
    /// CUDA when a driver and a device exist, else the CPU.
    Auto,
    /// The CUDA backend's logic over its kernels compiled for the CPU (tests the CUDA path
    /// without a GPU; slow).
    #[value(hide = true)]
    CudaEmu,
}

/// `nf train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Data: a directory of IDX files (MNIST/Fashion-MNIST, .gz or raw) or CIFAR-10/100 binary
    /// batches, or `synthetic:CxHxW:N`. Default: the Fashion-MNIST subset bundled in fixtures/
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// Model, budget, mode and planner options (--input and --classes come from the data).
    #[command(flatten)]
    pub spec: PlanSpecArgs,
    /// Epochs per block
    #[arg(long, value_name = "E", default_value_t = 3)]
    pub epochs: u32,
    /// Learning rate at batch size 128 (each block scales it linearly with its batch size)
    #[arg(long, default_value_t = 0.3)]
    pub lr: f32,
    /// Learning-rate schedule over each block's epochs
    #[arg(long, value_enum, default_value_t = ScheduleArg::OneCycle)]
    pub schedule: ScheduleArg,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Weight decay
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f32,
    /// Seed of initialisation, validation split and shuffling (runs are reproducible)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N training and the first N test images (quick trials)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..))]
    pub limit: Option<u64>,
    /// Fraction of the training set held out for validation (early exit is chosen on it)
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1)]
    pub val: f32,
    /// Early exit: the earliest head within this many accuracy points of the best
    #[arg(long, value_name = "POINTS", default_value_t = 0.5)]
    pub exit_tolerance: f32,
    /// Stop training further blocks after this many units in a row brought no validation gain
    /// (0: train every block)
    #[arg(long, value_name = "UNITS", default_value_t = 0)]
    pub patience: usize,
    /// Element type of the activation cache
    #[arg(long, value_enum, default_value_t = CacheDtype::F32)]
    pub cache_dtype: CacheDtype,
    /// Host memory for the activation cache; beyond it block inputs are recomputed from the
    /// frozen blocks
    #[arg(long, value_name = "SIZE", default_value = "8GiB", value_parser = parse_size)]
    pub cache_budget: u64,
    /// Where training runs
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// CPU worker threads (default: all cores)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// CUDA: let cuBLAS use TF32 tensor cores (faster GEMMs, about 3 significant digits)
    #[arg(long)]
    pub tf32: bool,
    /// Directory for report.json, model.safetensors, exit.safetensors and the checkpoint
    /// (default: a new runs/YYYYMMDD-HHMMSS)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (with the options it was started with)
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
}

impl TrainArgs {
    /// The run directory (set once the command starts).
    pub fn out_dir(&self) -> &Path {
        self.out.as_deref().unwrap_or(Path::new("runs/latest"))
    }
}

/// `runs/YYYYMMDD-HHMMSS` (UTC) for a run started now.
fn default_out() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    PathBuf::from(format!(
        "runs/{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Name of the checkpoint file inside the run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// What one head (or the classifier) scored.
#[derive(Clone, Debug, PartialEq)]
struct HeadResult {
    unit: usize,
    filters: usize,
    val_acc: f32,
    test_acc: f32,
}

/// What one finished block took.
#[derive(Clone, Debug, PartialEq)]
struct BlockResult {
    seconds: f64,
    train_seconds: f64,
    images: u64,
    epochs: Vec<Value>,
}

/// Progress of a run, as saved in the checkpoint.
#[derive(Clone, Debug, Default)]
struct RunState {
    /// Block being trained (or the number of blocks when done).
    block: usize,
    /// Epochs of that block already done.
    epoch: u32,
    heads: Vec<HeadResult>,
    blocks: Vec<BlockResult>,
    /// Seconds spent training before the last resume.
    seconds_before: f64,
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

fn failed(m: impl Into<String>) -> CliError {
    CliError::Failed(m.into())
}

impl RunState {
    fn to_json(&self) -> Value {
        json!({
            "block": self.block,
            "epoch": self.epoch,
            "seconds_before": self.seconds_before,
            "heads": self.heads.iter().map(|h| json!([h.unit, h.filters, h.val_acc, h.test_acc])).collect::<Vec<_>>(),
            "blocks": self.blocks.iter().map(|b| json!({"seconds": b.seconds, "train_seconds": b.train_seconds, "images": b.images, "epochs": b.epochs})).collect::<Vec<_>>(),
        })
    }

    fn from_json(v: &Value) -> Option<RunState> {
        let heads = v["heads"]
            .as_array()?
            .iter()
            .map(|h| {
                Some(HeadResult {
                    unit: h[0].as_u64()? as usize,
                    filters: h[1].as_u64()? as usize,
                    val_acc: h[2].as_f64()? as f32,
                    test_acc: h[3].as_f64()? as f32,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let blocks = v["blocks"]
            .as_array()?
            .iter()
            .map(|b| {
                Some(BlockResult {
                    seconds: b["seconds"].as_f64()?,
                    train_seconds: b["train_seconds"].as_f64()?,
                    images: b["images"].as_u64()?,
                    epochs: b["epochs"].as_array()?.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RunState {
            block: v["block"].as_u64()? as usize,
            epoch: v["epoch"].as_u64()? as u32,
            heads,
            blocks,
            seconds_before: v["seconds_before"].as_f64()?,
        })
    }
}

/// Everything a run works on, fixed at its start.
struct Run {
    args: TrainArgs,
    argv: Vec<String>,
    model: &'static ModelSpec,
    plan: Plan,
    train: Dataset,
    val: Dataset,
    test: Dataset,
    cfg: TrainConfig,
}

/// `nf train` with the command line `argv` (saved in checkpoints so `--resume` can rebuild
/// the run). Progress goes to stdout; the result to `args.out`.
pub fn train_command(args: &TrainArgs, argv: &[String]) -> Result<(), CliError> {
    let (args, argv, ckpt) = match &args.resume {
        Some(dir) => {
            let path = dir.join(CHECKPOINT);
            let store = TensorStore::load(&path).map_err(|e| usage(format!("--resume: {e}")))?;
            let saved: Vec<String> = store
                .metadata
                .get("argv")
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| {
                    usage(format!(
                        "--resume: {}: not an nf checkpoint (no argv)",
                        path.display()
                    ))
                })?;
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&saved).map_err(|_| {
                usage(format!(
                    "--resume: {}: the saved command line no longer parses",
                    path.display()
                ))
            })?;
            let crate::cli::Command::Train(mut a) = cli.cmd else {
                return Err(usage(format!(
                    "--resume: {}: not a training checkpoint",
                    path.display()
                )));
            };
            a.out = Some(dir.clone());
            a.resume = Some(dir.clone());
            (*a, saved, Some(store))
        }
        None => {
            let mut a = args.clone();
            let out = a.out.take().unwrap_or_else(default_out);
            a.out = Some(out.clone());
            // Record the directory so that --resume rebuilds exactly this run.
            let mut argv = argv.to_vec();
            if args.out.is_none() {
                argv.extend(["--out".to_string(), out.display().to_string()]);
            }
            (a, argv, None)
        }
    };
    check_args(&args)?;
    let dev = Dev::choose(&args)?;
    if ckpt.is_none() {
        guard_out(args.out_dir())?;
    }
    let run = prepare(args, argv, &dev)?;
    std::fs::create_dir_all(run.args.out_dir()).map_err(|e| {
        usage(format!(
            "--out {}: cannot create the directory: {e}",
            run.args.out_dir().display()
        ))
    })?;
    let state = match &ckpt {
        Some(store) => {
            let v: Value = store
                .metadata
                .get("state")
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| {
                    usage(format!(
                        "--resume: {}: no run state in the checkpoint",
                        run.args.out_dir().join(CHECKPOINT).display()
                    ))
                })?;
            RunState::from_json(&v)
                .filter(|s| s.block <= run.plan.n_blocks && s.epoch <= run.args.epochs)
                .ok_or_else(|| {
                    usage(format!(
                        "--resume: {}: corrupt run state",
                        run.args.out_dir().join(CHECKPOINT).display()
                    ))
                })?
        }
        None => RunState::default(),
    };
    match dev {
        Dev::Cpu(threads) => {
            let pool = Pool::new(threads);
            let mut arena = vec![0.0f32; run.plan.peak_floats()];
            let mut be = HostBackend::new(&mut arena, &pool);
            execute(
                &run,
                state,
                ckpt,
                &mut be,
                |_| json!({"device": "cpu", "threads": threads}),
            )
        }
        Dev::CudaEmu => {
            let mut be = nf_cuda::EmuBackend::emulated(run.plan.peak_floats(), Default::default())
                .map_err(|e| failed(format!("--device cuda-emu: {e}")))?;
            execute(
                &run,
                state,
                ckpt,
                &mut be,
                |_| json!({"device": "cuda-emu"}),
            )
        }
        Dev::Cuda(opts) => {
            let mut be = nf_cuda::CudaBackend::new(run.plan.peak_floats(), &opts).map_err(usage)?;
            execute(&run, state, ckpt, &mut be, |be| {
                let m = be.memory();
                json!({
                    "device": "cuda",
                    "device_name": be.device().info().name,
                    "device_peak_bytes": m.peak_bytes,
                    "device_allocation_bytes": m.allocation_bytes,
                    "device_reserved_bytes": nf_cuda::reserved_bytes(&opts),
                })
            })
        }
    }
}

/// The backend a run trains on.
enum Dev {
    Cpu(usize),
    CudaEmu,
    Cuda(nf_cuda::CudaOptions),
}

impl Dev {
    /// `--device`: `auto` takes CUDA when a driver and a device answer.
    fn choose(a: &TrainArgs) -> Result<Dev, CliError> {
        let cuda = || nf_cuda::CudaOptions {
            tf32: a.tf32,
            ..Default::default()
        };
        let cpu_threads = a.threads.map_or_else(host_threads, |t| t as usize);
        match a.device {
            DeviceArg::Cpu => Ok(Dev::Cpu(cpu_threads)),
            DeviceArg::CudaEmu => Ok(Dev::CudaEmu),
            DeviceArg::Cuda => match nf_cuda::probe(0) {
                Ok(_) => Ok(Dev::Cuda(cuda())),
                Err(e) => Err(usage(format!("--device cuda: {e}"))),
            },
            DeviceArg::Auto => Ok(if nf_cuda::probe(0).is_ok() {
                Dev::Cuda(cuda())
            } else {
                Dev::Cpu(cpu_threads)
            }),
        }
    }

    /// Worker threads the plan sizes kernel workspace for, and bytes the backend reserves.
    fn plan_needs(&self) -> (usize, u64) {
        match self {
            Dev::Cpu(t) => (*t, 0),
            Dev::CudaEmu => (
                nf_cuda::PLAN_WORKERS,
                nf_cuda::reserved_bytes(&Default::default()),
            ),
            Dev::Cuda(o) => (nf_cuda::PLAN_WORKERS, nf_cuda::reserved_bytes(o)),
        }
    }
}

fn check_args(a: &TrainArgs) -> Result<(), CliError> {
    if a.epochs == 0 {
        return Err(usage("--epochs must be at least 1"));
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(usage(format!("--lr {}: must be a positive number", a.lr)));
    }
    if !(0.0..1.0).contains(&a.momentum) {
        return Err(usage(format!(
            "--momentum {}: must be in [0, 1)",
            a.momentum
        )));
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        return Err(usage(format!(
            "--weight-decay {}: must be >= 0",
            a.weight_decay
        )));
    }
    if !(0.0..0.9).contains(&a.val) || a.val.is_nan() {
        return Err(usage(format!(
            "--val {}: must be a fraction in [0, 0.9)",
            a.val
        )));
    }
    if !(a.exit_tolerance.is_finite() && a.exit_tolerance >= 0.0) {
        return Err(usage(format!(
            "--exit-tolerance {}: must be >= 0 points",
            a.exit_tolerance
        )));
    }
    Ok(())
}

/// Refuse to overwrite a finished or running run in `--out`.
fn guard_out(out: &Path) -> Result<(), CliError> {
    for f in ["report.json", CHECKPOINT] {
        if out.join(f).exists() {
            return Err(usage(format!(
                "--out {}: already holds a run ({f}); continue it with --resume {} or choose another --out",
                out.display(),
                out.display()
            )));
        }
    }
    Ok(())
}

fn prepare(args: TrainArgs, argv: Vec<String>, dev: &Dev) -> Result<Run, CliError> {
    let splits = match &args.data {
        Some(d) => data::load(d, u64::MAX), // lead: host budget
        None => data::load_dir(&data::default_dir(), u64::MAX), // lead: host budget
    }
    .map_err(|e| usage(format!("--data: {e}")))?;
    let (mut all_train, mut test) = (splits.train, splits.test);
    if let Some(n) = args.limit {
        all_train.truncate(n as usize);
        test.truncate(n as usize);
    }
    let (train, val) = all_train.split(args.val, args.seed);
    if train.is_empty() {
        return Err(usage("--data: the training split is empty"));
    }
    let mut spec = args.spec.clone();
    spec.input = Some(train.shape());
    spec.classes = train.classes();
    let (workers, reserved) = dev.plan_needs();
    let plan = spec.make_plan_for(workers, reserved)?;
    let model = spec.model_spec()?;
    let cfg = TrainConfig {
        sgd: Sgd {
            momentum: args.momentum,
            weight_decay: args.weight_decay,
            nesterov: false,
        },
        base_lr: args.lr,
        ref_batch: 128,
        schedule: match args.schedule {
            ScheduleArg::OneCycle => Schedule::OneCycle,
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Constant => Schedule::Constant,
        },
        epochs: args.epochs,
    };
    Ok(Run {
        args,
        argv,
        model,
        plan,
        train,
        val,
        test,
        cfg,
    })
}

fn stats_err<BE: std::fmt::Debug>(e: TrainError<BE, String>) -> CliError {
    match e {
        TrainError::Step(s) => failed(format!("training step failed: {s:?}")),
        TrainError::Feed(f) => failed(f),
    }
}

/// Evaluate block `layout` on all three splits, filling the next cache if the feed has one.
/// Returns the per-segment statistics of (val, test).
fn pass_block<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    feed: &mut HostFeed,
) -> Result<([SegStats; MAX_UNITS], [SegStats; MAX_UNITS]), CliError> {
    let mut idx = vec![0u32; layout.batch];
    let mut val = [SegStats::default(); MAX_UNITS];
    let mut test = [SegStats::default(); MAX_UNITS];
    schedule::evaluate(be, layout, feed, Split::Val, &mut idx, &mut val).map_err(stats_err)?;
    schedule::evaluate(be, layout, feed, Split::Test, &mut idx, &mut test).map_err(stats_err)?;
    if feed.next.is_some() {
        schedule::propagate(be, layout, feed, Split::Train, &mut idx).map_err(stats_err)?;
    }
    Ok((val, test))
}

/// Prepare the feed's source for block `i` (whose input is the output of unit `first - 1`):
/// the cache filled by the previous pass if there is one, else recomputation.
fn next_source(
    run: &Run,
    feed: &mut HostFeed,
    i: usize,
    frozen: &TensorStore,
) -> Result<(), CliError> {
    let l = run.plan.layout(i);
    let per = l.model.unit_input(run.plan.input, l.first).len();
    if l.first == 0 {
        feed.set_source(Source::Data, per);
    } else if let Some(c) = feed.next.take() {
        feed.set_source(Source::Cache(c), per);
    } else {
        let f = Frozen::new(
            run.model,
            run.plan.input,
            run.plan.classes,
            &run.plan.heads,
            l.first,
            l.batch,
            frozen,
        )
        .map_err(|e| failed(format!("rebuilding frozen blocks: {e}")))?;
        feed.set_source(Source::Recompute(Box::new(f)), per);
    }
    Ok(())
}

/// Decide whether block `i`'s outputs are cached for the next block.
fn plan_cache(run: &Run, feed: &mut HostFeed, i: usize) {
    if i + 1 >= run.plan.n_blocks {
        feed.next = None;
        return;
    }
    let l = run.plan.layout(i);
    let per = l.output_shape().len();
    let cur = match i {
        0 => 0,
        _ => feed.cache_bytes(
            run.args.cache_dtype,
            l.model.unit_input(run.plan.input, l.first).len(),
        ),
    };
    if cur + feed.cache_bytes(run.args.cache_dtype, per) <= run.args.cache_budget {
        feed.start_next(run.args.cache_dtype, per);
    } else {
        progress::log(&format!(
            "block {}: the activation cache ({}) exceeds --cache-budget {}; the next block recomputes its inputs",
            i + 1,
            format_size(feed.cache_bytes(run.args.cache_dtype, per)),
            format_size(run.args.cache_budget)
        ));
        feed.next = None;
    }
}

fn execute<B: Backend>(
    run: &Run,
    mut state: RunState,
    ckpt: Option<TensorStore>,
    be: &mut B,
    device_report: impl Fn(&B) -> Value,
) -> Result<(), CliError> {
    let start = Instant::now();
    let plan = &run.plan;
    let mut frozen = ckpt
        .clone()
        .map(|mut s| {
            s.tensors
                .retain(|k, _| !k.starts_with("momentum.") && !k.starts_with("current."));
            s
        })
        .unwrap_or_default();
    let mut feed = HostFeed::new(
        [&run.train, &run.val, &run.test],
        Source::Data,
        run.train.shape().len(),
    );
    progress::log(&format!(
        "nf train: {} on {} ({} train / {} val / {} test, {}x{}x{}), {} mode, budget {}, {} block(s), arena {}",
        run.model.name,
        run.args.data.as_deref().unwrap_or("the bundled Fashion-MNIST subset"),
        run.train.len(),
        run.val.len(),
        run.test.len(),
        plan.input.c,
        plan.input.h,
        plan.input.w,
        plan.mode.name(),
        format_size(plan.budget),
        plan.n_blocks,
        format_size(plan.peak_bytes())
    ));
    // On resume, rebuild the cache of the current block's input from the frozen blocks.
    if state.block > 0 && state.block < plan.n_blocks {
        progress::log("resuming: recomputing the activation cache from the frozen blocks");
        for j in 0..state.block {
            let l = plan.layout(j);
            next_source(run, &mut feed, j, &frozen)?;
            plan_cache(run, &mut feed, j);
            write_block(be, &l, &frozen, false).map_err(|e| usage(format!("--resume: {e}")))?;
            pass_block(be, &l, &mut feed)?;
        }
    }
    while state.block < plan.n_blocks {
        let i = state.block;
        let l = plan.layout(i);
        next_source(run, &mut feed, i, &frozen)?;
        let block_start = Instant::now();
        let resumed = state.epoch > 0;
        if resumed {
            let c = ckpt
                .as_ref()
                .expect("a resumed epoch comes from a checkpoint");
            let mut cur = TensorStore::default();
            for (k, t) in &c.tensors {
                if let Some(rest) = k.strip_prefix("current.") {
                    cur.tensors.insert(rest.to_string(), t.clone());
                }
            }
            write_block(be, &l, &cur, true).map_err(|e| usage(format!("--resume: {e}")))?;
        } else {
            step::init_block(be, &l, &mut Rng::new(run.args.seed ^ (0xB10C + i as u64)))
                .map_err(|e| failed(format!("{e:?}")))?;
            state.blocks.push(BlockResult {
                seconds: 0.0,
                train_seconds: 0.0,
                images: 0,
                epochs: Vec::new(),
            });
        }
        let mut order = vec![0u32; run.train.len()];
        let nb = schedule::batches(order.len(), l.batch) as u64;
        for epoch in state.epoch..run.args.epochs {
            epoch_order(run.args.seed, i, epoch, &mut order);
            let label = format!(
                "block {}/{} (units {}-{}, batch {}) epoch {}/{}",
                i + 1,
                plan.n_blocks,
                l.first,
                l.last,
                l.batch,
                epoch + 1,
                run.args.epochs
            );
            let mut bar = Progress::new(label, nb);
            let t0 = Instant::now();
            let mut seen = 0u64;
            let mut st = [SegStats::default(); MAX_UNITS];
            schedule::train_epoch(
                be,
                &l,
                &mut feed,
                &run.cfg,
                epoch,
                &order,
                &mut st,
                |done, _, s| {
                    seen = (done * l.batch).min(order.len()) as u64;
                    let last = s[s.len() - 1];
                    bar.update(
                        done as u64,
                        last.mean_loss(),
                        last.accuracy(),
                        seen as f64 / t0.elapsed().as_secs_f64(),
                    );
                },
            )
            .map_err(stats_err)?;
            let secs = t0.elapsed().as_secs_f64();
            let nseg = l.n_segments();
            let summary: Vec<String> = (0..nseg)
                .map(|k| {
                    format!(
                        "u{} loss {:.3} acc {:.1}%",
                        l.first + k.min(l.last - l.first),
                        st[k].mean_loss(),
                        100.0 * st[k].accuracy()
                    )
                })
                .collect();
            bar.finish(&format!(
                "{:.1}s, {:.0} img/s: {}",
                secs,
                order.len() as f64 / secs,
                summary.join(", ")
            ));
            let b = state.blocks.last_mut().expect("block result");
            b.train_seconds += secs;
            b.images += order.len() as u64;
            b.epochs.push(json!({
                "epoch": epoch + 1,
                "seconds": secs,
                "loss": (0..nseg).map(|k| st[k].mean_loss()).collect::<Vec<_>>(),
                "train_acc": (0..nseg).map(|k| st[k].accuracy()).collect::<Vec<_>>(),
            }));
            state.epoch = epoch + 1;
            // Checkpoint the block in progress (unless this was its last epoch: the block's end
            // below checkpoints the frozen result instead).
            if state.epoch < run.args.epochs {
                let mut cur = TensorStore::default();
                read_block(be, &l, &mut cur, true);
                save_checkpoint(run, &state, &frozen, Some(&cur), start)?;
            }
        }
        // Freeze: score the heads and compute the next block's inputs.
        plan_cache(run, &mut feed, i);
        let (val, test) = pass_block(be, &l, &mut feed)?;
        read_block(be, &l, &mut frozen, false);
        for k in 0..l.n_segments() {
            let unit = if plan.mode == Mode::Bp {
                l.last
            } else {
                l.first + k
            };
            state.heads.push(HeadResult {
                unit,
                filters: plan.heads[unit],
                val_acc: val[k].accuracy(),
                test_acc: test[k].accuracy(),
            });
            progress::log(&format!(
                "  unit {unit} {}: val {:.2}% test {:.2}%",
                head_label(plan, unit),
                100.0 * val[k].accuracy(),
                100.0 * test[k].accuracy()
            ));
        }
        state.blocks.last_mut().expect("block result").seconds +=
            block_start.elapsed().as_secs_f64();
        state.block += 1;
        state.epoch = 0;
        let accs: Vec<f32> = state.heads.iter().map(|h| h.val_acc).collect();
        let stop = plan.mode == Mode::NeuroFlux
            && schedule::no_gain(&accs, run.args.patience)
            && state.block < plan.n_blocks;
        if stop {
            progress::log(&format!(
                "patience: {} unit(s) without validation gain; stopping after block {}",
                run.args.patience,
                i + 1
            ));
            state.block = plan.n_blocks;
        }
        save_checkpoint(run, &state, &frozen, None, start)?;
    }
    be.sync().map_err(|e| failed(format!("device: {e:?}")))?;
    finish(run, &state, &frozen, start, device_report(be))
}

fn head_label(plan: &Plan, unit: usize) -> String {
    if unit + 1 == plan.model.units.len() {
        "(classifier)".to_string()
    } else {
        format!("(head, {} filters)", plan.heads[unit])
    }
}

fn metadata(run: &Run) -> Vec<(String, String)> {
    let p = &run.plan;
    vec![
        ("format".into(), "neuroflux".into()),
        ("model".into(), p.model.name.into()),
        (
            "input".into(),
            format!("{}x{}x{}", p.input.c, p.input.h, p.input.w),
        ),
        ("classes".into(), p.classes.to_string()),
        ("mode".into(), p.mode.name().into()),
        (
            "heads".into(),
            json!(p.heads[..p.model.units.len()]).to_string(),
        ),
        ("mean".into(), json!(run.train.mean()).to_string()),
        ("std".into(), json!(run.train.std()).to_string()),
    ]
}

fn save_checkpoint(
    run: &Run,
    state: &RunState,
    frozen: &TensorStore,
    current: Option<&TensorStore>,
    start: Instant,
) -> Result<(), CliError> {
    let mut s = frozen.clone();
    if let Some(c) = current {
        for (k, t) in &c.tensors {
            s.tensors.insert(format!("current.{k}"), t.clone());
        }
    }
    let mut st = state.clone();
    st.seconds_before += start.elapsed().as_secs_f64();
    s.metadata.extend(metadata(run));
    s.metadata
        .insert("argv".into(), json!(run.argv).to_string());
    s.metadata.insert("state".into(), st.to_json().to_string());
    let path = run.args.out_dir().join(CHECKPOINT);
    s.save(&path)
        .map_err(|e| failed(format!("writing the checkpoint: {e}")))
}

/// Parameters of units `0..=k` plus head `k` (or the classifier when `k` is the last unit).
fn exit_params(plan: &Plan, k: usize) -> usize {
    let m = &plan.model;
    let s = m.unit_input(plan.input, k + 1);
    let tail = if k + 1 == m.units.len() {
        chain_params(&classifier_ops(plan.classes), s)
    } else {
        chain_params(&head_ops(plan.heads[k], plan.classes), s)
    };
    m.trunk_params(plan.input, k) + tail
}

/// The tensors of the early-exit model ending at unit `k`.
pub fn exit_store(full: &TensorStore, n_units: usize, k: usize) -> TensorStore {
    let mut s = TensorStore::default();
    for (name, t) in &full.tensors {
        let keep = match name.split('.').collect::<Vec<_>>().as_slice() {
            ["units", u, ..] => u.parse::<usize>().is_ok_and(|u| u <= k),
            ["heads", u, ..] => u.parse::<usize>() == Ok(k),
            ["classifier", ..] => k + 1 == n_units,
            _ => false,
        };
        if keep {
            s.tensors.insert(name.clone(), t.clone());
        }
    }
    s
}

fn finish(
    run: &Run,
    state: &RunState,
    frozen: &TensorStore,
    start: Instant,
    device: Value,
) -> Result<(), CliError> {
    let plan = &run.plan;
    let accs: Vec<f32> = state.heads.iter().map(|h| h.val_acc).collect();
    let e = schedule::select_exit(&accs, run.args.exit_tolerance / 100.0);
    let exit = &state.heads[e];
    let last = state.heads.last().expect("at least one unit trained");
    let n_units = plan.model.units.len();
    let mut full = frozen.clone();
    full.metadata.extend(metadata(run));
    // The full model ends at the last trained unit (its head if --patience stopped early).
    full.metadata.insert("exit".into(), last.unit.to_string());
    let mut ex = exit_store(frozen, n_units, exit.unit);
    ex.metadata.extend(metadata(run));
    ex.metadata.insert("exit".into(), exit.unit.to_string());
    let out = run.args.out_dir();
    full.save(&out.join("model.safetensors"))
        .map_err(|e| failed(format!("writing the model: {e}")))?;
    ex.save(&out.join("exit.safetensors"))
        .map_err(|e| failed(format!("writing the exit model: {e}")))?;
    let seconds_total = state.seconds_before + start.elapsed().as_secs_f64();
    let full_params = plan.model.full_params(plan.input, plan.classes);
    let blocks: Vec<Value> = state
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let pb = &plan.blocks[i];
            json!({
                "index": i,
                "units": [pb.first, pb.last],
                "batch_size": pb.batch,
                "bytes": pb.bytes,
                "seconds": b.seconds,
                "train_seconds": b.train_seconds,
                "images_per_sec": b.images as f64 / b.train_seconds.max(1e-9),
                "epochs": b.epochs,
            })
        })
        .collect();
    let heads: Vec<Value> = state
        .heads
        .iter()
        .map(|h| {
            json!({
                "unit": h.unit,
                "filters": if h.unit + 1 == n_units { Value::Null } else { json!(h.filters) },
                "kind": if h.unit + 1 == n_units { "classifier" } else { "head" },
                "val_acc": h.val_acc,
                "test_acc": h.test_acc,
            })
        })
        .collect();
    let report = json!({
        "mode": plan.mode.name(),
        "model": plan.model.name,
        "data": run.args.data.clone().unwrap_or_else(|| data::default_dir().display().to_string()),
        "input": [plan.input.c, plan.input.h, plan.input.w],
        "classes": plan.classes,
        "samples": {"train": run.train.len(), "val": run.val.len(), "test": run.test.len()},
        "budget_bytes": plan.budget,
        "epochs_per_block": run.args.epochs,
        "seed": run.args.seed,
        "plan": plan_report::json(plan),
        "blocks": blocks,
        "heads": heads,
        "exit": {"unit": exit.unit, "val_acc": exit.val_acc, "test_acc": exit.test_acc, "params": exit_params(plan, exit.unit)},
        "full_params": full_params,
        "last_unit": last.unit,
        "test_acc": last.test_acc,
        "seconds_total": seconds_total,
        "peak_arena_bytes": plan.peak_bytes(),
        "workers": plan.options.workers,
    });
    let mut report = report;
    if let (Some(r), Value::Object(d)) = (report.as_object_mut(), device) {
        r.extend(d);
    }
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    crate::store::atomic_write(&out.join("report.json"), text.as_bytes())
        .map_err(|e| failed(format!("writing report.json: {e}")))?;
    progress::log(&format!(
        "done in {:.1}s: last unit {} test {:.2}%; exit at unit {} test {:.2}% with {} of {} parameters ({:.1}x fewer); wrote {}",
        seconds_total,
        last.unit,
        100.0 * last.test_acc,
        exit.unit,
        100.0 * exit.test_acc,
        exit_params(plan, exit.unit),
        full_params,
        full_params as f64 / exit_params(plan, exit.unit) as f64,
        out.display()
    ));
    Ok(())
}

/// Model metadata read back from a model file.
#[derive(Clone, Debug)]
pub struct ModelMeta {
    /// The zoo model.
    pub model: &'static ModelSpec,
    /// Input shape.
    pub input: Shape,
    /// Classes.
    pub classes: usize,
    /// Head widths per unit.
    pub heads: [usize; MAX_UNITS],
    /// The unit whose head (or the classifier) ends this model.
    pub exit: usize,
}

impl ModelMeta {
    /// Read the metadata of a model file (`path` only names it in errors).
    pub fn from_store(store: &TensorStore, path: &Path) -> Result<ModelMeta, CliError> {
        let bad = |what: &str| usage(format!("{}: not an nf model file ({what})", path.display()));
        let md = &store.metadata;
        let model = md
            .get("model")
            .and_then(|m| nf_core::zoo::by_name(m))
            .ok_or_else(|| bad("unknown model"))?;
        let input = md
            .get("input")
            .and_then(|s| crate::cli::parse_shape(s).ok())
            .ok_or_else(|| bad("input shape"))?;
        let classes: usize = md
            .get("classes")
            .and_then(|s| s.parse().ok())
            .filter(|&c| c >= 2)
            .ok_or_else(|| bad("classes"))?;
        let hv: Vec<usize> = md
            .get("heads")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("heads"))?;
        let exit: usize = md
            .get("exit")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("exit"))?;
        if hv.len() != model.units.len()
            || exit >= model.units.len()
            || !model.accepts(input, classes)
        {
            return Err(bad("inconsistent model description"));
        }
        let mut heads = [0usize; MAX_UNITS];
        heads[..hv.len()].copy_from_slice(&hv);
        Ok(ModelMeta {
            model,
            input,
            classes,
            heads,
            exit,
        })
    }
}
