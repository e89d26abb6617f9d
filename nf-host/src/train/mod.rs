//! `nf train`: block-sequential training under a memory budget, with the activation cache (or
//! recomputation), early exit, checkpoints, model files and the report.
//!
//! One run: read the data set's description; plan the whole run's memory ([`plan_run`]: the
//! arena under `--budget`, the data set, caches and weights under `--host-budget`); load the
//! data and hold out a validation split; then for every block of the plan, in order:
//! initialise it (or restore it from the checkpoint), train it for `--epochs` epochs
//! (checkpointing after each), score every head on the validation and test splits while
//! computing the block's outputs for the next block, and freeze it. Finally pick the early exit
//! and write `model.safetensors`, `exit.safetensors` and `report.json` into `--out`. The same
//! loop runs the `ll` and `bp` baselines: their plans have a single block.
//!
//! - `args`: the flags and their checks;
//! - `state`: the run's progress and the checkpoint;
//! - `blocks`: the block loop;
//! - `finish`: the early exit, the model files and the report.
mod args;
mod blocks;
mod finish;
mod state;

use std::path::Path;

use nf_core::model::{ModelSpec, Shape};
use nf_core::optim::{Schedule, Sgd};
use nf_core::plan::Plan;
use nf_core::schedule::TrainConfig;
use serde_json::{json, Value};

pub use crate::model_meta::in_exit_model;
pub use args::{DeviceArg, ScheduleArg, TrainArgs};

use crate::data::transform::Augment;
use crate::data::{self, Dataset};
use crate::error::{usage, CliError};
use crate::output::{self, Inputs, RunDir};
use crate::parallel::World;
use crate::plan_args::Target;
use crate::plan_report;
use crate::precision::PrecisionArg;
use crate::run_plan::{plan_run, DataMemory, RunPlan};
use crate::store::TensorStore;
use nf_core::collective::Collective;
use nf_cpu::{threads as host_threads, FastCpuBackend, Pool};
use state::{RunState, PLAN};

/// Name of the checkpoint file inside the run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

fn failed(m: impl Into<String>) -> CliError {
    CliError::Failed(m.into())
}

/// Everything a run works on, fixed at its start.
struct Run {
    args: TrainArgs,
    argv: Vec<String>,
    model: ModelSpec<'static>,
    memory: RunPlan,
    train: Dataset,
    val: Dataset,
    test: Dataset,
    cfg: TrainConfig,
    /// The training augmentation (`--augment`), if any.
    augment: Option<Augment>,
    /// The class names of the data, if it has them (image folders).
    class_names: Option<Vec<String>>,
    /// Samples of the training, validation and test splits over all ranks (each rank holds
    /// its shard of each in `train`, `val` and `test`).
    global: [usize; 3],
}

impl Run {
    fn plan(&self) -> &Plan<'static> {
        &self.memory.plan
    }
}

/// `nf train` with the command line `argv` (saved in checkpoints so `--resume` can rebuild
/// the run). Progress goes to stdout; the result to `args.out`.
///
/// Data-parallel: under an MPI launcher (the `mpi` feature) or with `--virtual-ranks N`, every
/// rank runs this on its shard of the data (see [`crate::parallel`]).
pub fn train_command(args: &TrainArgs, argv: &[String]) -> Result<(), CliError> {
    if let Some(n) = args.virtual_ranks.filter(|&n| n > 1) {
        return crate::parallel::threads::run(n as usize, |world| train_rank(args, argv, world));
    }
    let mut world = World::start()?;
    crate::progress::set_quiet(world.rank() > 0);
    train_rank(args, argv, &mut world)
}

/// What a rank trains: the run, its state, the checkpoint it resumes, the backend, and on rank 0
/// the run directory, locked for the run.
type Setup = (Run, RunState, Option<TensorStore>, Dev, Option<RunDir>);

/// One rank's run: set up (every rank's outcome compared), then trained.
fn train_rank(args: &TrainArgs, argv: &[String], world: &mut World) -> Result<(), CliError> {
    let setup = set_up(args, argv, world);
    // `_dir` holds the run directory's lock until the run ends.
    let (run, state, ckpt, dev, _dir) = world.agree(setup)?;
    train_on(&run, state, ckpt, dev, world).map_err(|e| world.fail(e))
}

/// Everything before training: the flags, the world, the plan, the data, the checkpoint.
fn set_up(args: &TrainArgs, argv: &[String], world: &World) -> Result<Setup, CliError> {
    let (args, argv, ckpt) = match &args.resume {
        Some(dir) => {
            let (a, saved, store) = resumed(dir)?;
            if let Some(p) = args.precision.filter(|&p| p != a.precision()) {
                return Err(usage(format!(
                    "--precision {}: the run in {} was started with --precision {}; resume it \
                     in that precision (or start a new run)",
                    p.name(),
                    dir.display(),
                    a.precision().name()
                )));
            }
            (a, saved, Some(store))
        }
        None => {
            let mut a = args.clone();
            let out = a.out.take().unwrap_or_else(args::default_out);
            a.out = Some(out.clone());
            // Record the directory so that --resume rebuilds exactly this run.
            let mut argv = argv.to_vec();
            if args.out.is_none() {
                argv.extend(["--out".to_string(), out.display().to_string()]);
            }
            (a, argv, None)
        }
    };
    args::check_args(&args)?;
    world.check_ranks(args.ranks)?;
    let dev = Dev::choose(&args, world.gpu_ordinal())?;
    let mut argv = argv;
    if let (Dev::Cpu(t), None) = (&dev, args.threads) {
        // The plan depends on the thread count: --resume must replay this one.
        argv.extend(["--threads".to_string(), t.to_string()]);
    }
    let flag = args.out_flag();
    let out = args.out_dir().to_path_buf();
    let mut inputs = Inputs::new();
    inputs.data(&data_source(&args));
    output::dir_target(flag, &out, &RUN_FILES, &inputs)?;
    // Rank 0 writes the run's files; it takes the directory (created and locked) before it
    // writes anything, and holds it until the run ends. A run refused before it wrote anything
    // leaves no directory behind (RunDir's drop).
    let dir = match world.rank() {
        0 => Some(RunDir::take(flag, &out)?),
        _ => None,
    };
    match &ckpt {
        // Only under the lock: an unlocked directory may belong to a run writing them.
        Some(_) if dir.is_some() => crate::store::remove_stale_temporaries(&out),
        Some(_) => {}
        None => guard_out(&out)?,
    }
    let run = prepare(args, argv, &dev, world)?;
    let ckpt_path = run.args.out_dir().join(CHECKPOINT);
    let state = match &ckpt {
        Some(store) => resume_state(store, &run, &ckpt_path)?,
        None => RunState::default(),
    };
    Ok((run, state, ckpt, dev, dir))
}

/// The files a run writes into its directory.
const RUN_FILES: [&str; 4] = [
    "report.json",
    "model.safetensors",
    "exit.safetensors",
    CHECKPOINT,
];

/// `--budget SIZE`, as errors about what the budget asks for name it.
fn budget_flag(args: &TrainArgs) -> String {
    format!("--budget {}", crate::size::format_size(args.spec.budget))
}

/// `--data`, or the bundled data set.
fn data_source(args: &TrainArgs) -> String {
    args.data
        .clone()
        .unwrap_or_else(|| data::default_dir().display().to_string())
}

/// Train `run` on the backend `dev` names, from `state`.
fn train_on(
    run: &Run,
    state: RunState,
    ckpt: Option<TensorStore>,
    dev: Dev,
    world: &mut World,
) -> Result<(), CliError> {
    let floats = run.plan().peak_floats();
    match dev {
        Dev::Cpu(threads) => {
            let pool = Pool::new(threads);
            let mut arena = crate::capacity::alloc(&budget_flag(&run.args), "the arena", floats)?;
            let precision = run.args.precision().cpu();
            let mut be = FastCpuBackend::with_precision(&mut arena, &pool, precision);
            blocks::execute(
                run,
                state,
                ckpt,
                &mut be,
                world,
                |_| json!({"device": "cpu", "threads": threads}),
            )
        }
        Dev::CudaEmu => {
            let mut be = nf_cuda::EmuBackend::emulated(floats, Default::default())
                .map_err(|e| failed(format!("--device cuda-emu: {e}")))?;
            be.set_region_align(run.plan().options.region_align);
            be.set_gemm_precision(run.args.precision().cuda());
            blocks::execute(
                run,
                state,
                ckpt,
                &mut be,
                world,
                |_| json!({"device": "cuda-emu"}),
            )
        }
        Dev::Cuda(opts) => {
            let mut be = nf_cuda::CudaBackend::new(floats, &opts).map_err(|e| match e {
                nf_cuda::CudaError::Unavailable(m) => usage(format!("--device cuda: {m}")),
                e => failed(format!("--device cuda: {e}")),
            })?;
            be.set_region_align(run.plan().options.region_align);
            be.set_gemm_precision(run.args.precision().cuda());
            #[cfg(feature = "nccl")]
            world.attach_gpu(&be)?;
            let done = blocks::execute(run, state, ckpt, &mut be, world, |be| {
                let m = be.memory();
                json!({
                    "device": "cuda",
                    "device_name": be.device().info().name,
                    "device_peak_bytes": m.peak_bytes,
                    "device_allocation_bytes": m.allocation_bytes,
                    "device_reserved_bytes": nf_cuda::reserved_bytes(&opts),
                    "device_cublas_workspace_bytes": opts.cublas_workspace_bytes,
                    "device_libraries": nf_cuda::preflight(opts.ordinal)
                        .unwrap_or_else(|e| e.to_string()),
                })
            });
            // The communicator goes before the backend whose arena it reduces.
            #[cfg(feature = "nccl")]
            world.detach_gpu();
            done
        }
    }
}

/// The command line a checkpoint saved: `nf train` and its flags, parsed as `nf` parses them.
#[derive(clap::Parser)]
#[command(name = "nf")]
enum SavedCommand {
    #[command(allow_negative_numbers = true)]
    Train(Box<TrainArgs>),
}

/// The arguments, command line and checkpoint of the run in `dir` (its stale temporary files are
/// removed once the run holds the directory's lock).
fn resumed(dir: &Path) -> Result<(TrainArgs, Vec<String>, TensorStore), CliError> {
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
    let SavedCommand::Train(mut a) = <SavedCommand as clap::Parser>::try_parse_from(&saved)
        .map_err(|e| {
            // A value that no longer reads (a --model JSON file moved or removed) is named.
            match crate::error::value_error_line(&e) {
                Some(line) => usage(format!(
                    "--resume: {}: the saved command line no longer parses: {}",
                    path.display(),
                    line.trim_start_matches("error: ")
                )),
                None => usage(format!(
                    "--resume: {}: the saved command line is not an `nf train` this version \
                     parses",
                    path.display()
                )),
            }
        })?;
    a.out = Some(dir.to_path_buf());
    a.resume = Some(dir.to_path_buf());
    Ok((*a, saved, store))
}

/// The run state of checkpoint `store`, checked against the run's plan: the plan must be the
/// one the run started with, and the state one that plan can produce.
fn resume_state(store: &TensorStore, run: &Run, path: &Path) -> Result<RunState, CliError> {
    let saved_world = store
        .metadata
        .get(state::WORLD)
        .map_or(Some(1), |w| w.parse::<usize>().ok());
    let world = run.plan().options.world;
    if saved_world != Some(world) {
        return Err(usage(format!(
            "--resume: {}: the run was started with {} rank(s) and this one has {world}; \
             resume it with as many ranks as it started with",
            path.display(),
            saved_world.map_or_else(|| "an unreadable number of".to_string(), |w| w.to_string())
        )));
    }
    let plan_now = plan_report::json(run.plan()).to_string();
    match store.metadata.get(PLAN) {
        Some(saved) if *saved == plan_now => {}
        Some(_) => {
            return Err(usage(format!(
                "--resume: {}: this machine plans the run differently than the one that \
                 started it (another CPU instruction set, GPU generation or library version); \
                 resume it there, or start a new run",
                path.display()
            )))
        }
        None => {
            return Err(usage(format!(
                "--resume: {}: the checkpoint holds no plan (written by an older nf)",
                path.display()
            )))
        }
    }
    let v: Value = store
        .metadata
        .get("state")
        .and_then(|s| crate::strict_json::from_str(s).ok())
        .ok_or_else(|| {
            usage(format!(
                "--resume: {}: no run state in the checkpoint",
                path.display()
            ))
        })?;
    RunState::from_json(&v)
        .filter(|s| s.fits(run.plan(), run.args.epochs))
        .ok_or_else(|| usage(format!("--resume: {}: corrupt run state", path.display())))
}

/// The backend a run trains on.
enum Dev {
    Cpu(usize),
    CudaEmu,
    Cuda(nf_cuda::CudaOptions),
}

impl Dev {
    /// `--device`: `auto` takes CUDA when a driver and a device answer; GPU `gpu` (one per rank
    /// of a node under the `nccl` feature, else the first).
    fn choose(a: &TrainArgs, gpu: usize) -> Result<Dev, CliError> {
        // The cuBLAS workspace depends on the GPU's generation and the budget, and so does
        // the plan (the workspace is part of the reserve the planner subtracts).
        let cuda = |info: &nf_cuda::DeviceInfo| nf_cuda::CudaOptions {
            tf32: a.tf32,
            ordinal: gpu,
            ..nf_cuda::CudaOptions::for_device(info, a.spec.budget)
        };
        let cpu_threads = a.threads.map_or_else(host_threads, |t| t as usize);
        match a.device {
            DeviceArg::Cpu => Ok(Dev::Cpu(cpu_threads)),
            DeviceArg::CudaEmu => Ok(Dev::CudaEmu),
            DeviceArg::Cuda => match nf_cuda::detect(gpu) {
                Ok(info) => Ok(Dev::Cuda(cuda(&info))),
                Err(e) => Err(usage(format!("--device cuda: {e}"))),
            },
            DeviceArg::Auto => match nf_cuda::detect(gpu) {
                Ok(info) => Ok(Dev::Cuda(cuda(&info))),
                Err(_) => Ok(Dev::Cpu(cpu_threads)),
            },
        }
    }

    /// The kernels the plan sizes workspace for (on the CUDA backend with the bf16 scratch of
    /// the GEMM operands under `--precision bf16`), and the bytes the backend keeps beside its
    /// arena.
    fn target(&self, p: PrecisionArg) -> (Target, u64) {
        let policy = nf_cuda::ChunkPolicy::DEFAULT.with_precision(p.cuda());
        match self {
            Dev::Cpu(t) => (Target::Host(*t), 0),
            Dev::CudaEmu => (
                Target::Cuda(policy),
                nf_cuda::reserved_bytes(&Default::default()),
            ),
            Dev::Cuda(o) => (Target::Cuda(policy), nf_cuda::reserved_bytes(o)),
        }
    }
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

/// Plan the run from the data set's description, then load the data within the plan.
fn prepare(args: TrainArgs, argv: Vec<String>, dev: &Dev, world: &World) -> Result<Run, CliError> {
    let (rank, ranks) = (world.rank(), world.world());
    let source = data_source(&args);
    let threads = args.threads.map_or_else(host_threads, |t| t as usize);
    let opts = args.images.options(threads)?;
    let info = data::describe_with(&source, &opts).map_err(|e| usage(format!("--data: {e}")))?;
    let mut spec = args.spec.clone();
    let pad = args.pad as usize;
    let input = Shape::new(info.shape.c, info.shape.h + 2 * pad, info.shape.w + 2 * pad);
    spec.input = Some(input);
    spec.classes = info.classes;
    spec.options.world = ranks;
    if let Dev::Cpu(_) = dev {
        spec.options.storage = args.precision().storage(&spec.model_spec()?, input);
    }
    let mut data_memory = DataMemory::new(&info, args.val, args.limit);
    if ranks > 1 {
        // Each rank caches its shards only: a share of every split, rounded up.
        data_memory.samples = data_memory.samples.div_ceil(ranks as u64) + 2;
    }
    let (target, reserve) = dev.target(args.precision());
    let mut memory = plan_run(
        &spec,
        target,
        reserve,
        &args.host,
        args.host.cache_dtype(args.precision()),
        Some(data_memory),
    )?;
    memory.host.mpi = world.resident_bytes();
    // Before anything is loaded: a plan the process cannot get is refused, not aborted.
    let host_total = if memory.on_device() {
        memory.host_bytes()
    } else {
        memory.total_bytes()
    };
    if let Some(warning) = crate::capacity::check_plan(&budget_flag(&args), host_total)? {
        eprintln!("{warning}");
    }
    let limit = args.host.host_budget.saturating_sub(memory.host.model);
    let splits =
        data::load_with(&source, limit, &opts).map_err(|e| usage(format!("--data: {e}")))?;
    let (mut all_train, mut test, class_names) = (splits.train, splits.test, splits.class_names);
    if let Some(n) = args.limit {
        all_train.truncate(n as usize);
        test.truncate(n as usize);
    }
    let (mut train, mut val) = all_train.split(args.val, args.seed);
    let global = [train.len(), val.len(), test.len()];
    if train.len() < ranks {
        return Err(usage(format!(
            "--data: the training split has {} sample(s), fewer than the {ranks} ranks",
            train.len()
        )));
    }
    // Static shards: equal ones of the training split (the last len % ranks samples are
    // left out), every sample of the validation and test splits to some rank.
    train.shard(rank, ranks, true);
    val.shard(rank, ranks, false);
    test.shard(rank, ranks, false);
    if train.is_empty() {
        return Err(usage("--data: the training split is empty"));
    }
    for d in [&mut train, &mut val, &mut test] {
        d.set_pad(pad).map_err(|e| usage(format!("--pad: {e}")))?;
    }
    let augment = args.augmentation(input.h);
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
        global,
        args,
        argv,
        model,
        memory,
        train,
        val,
        test,
        cfg,
        augment,
        class_names,
    })
}
