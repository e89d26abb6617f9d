//! The plan of a run: its memory contract, and the plan that keeps it.
//!
//! `--budget` bounds everything a training step and its inputs touch: the arena of the largest
//! block (its parameters, optimiser state, activations, gradients, the kernel workspace sized
//! for the backend's kernels and worker threads, and, when the activation cache is off, the
//! forward-only chain of frozen units that recomputes its inputs) plus the feed's staging
//! buffer. Beside it, host memory that no step owns, with its own bound (`--host-budget`): the
//! data set as stored, the activation caches, and the model's weights held on the host (the
//! frozen units, the checkpoint being written). The planned total is the sum; the process's
//! peak resident memory stays within it plus a fixed overhead (binary, runtime, thread stacks;
//! `tests/memory.rs` holds it to 16 MiB).
//!
//! The fast CPU backend's kernels pack their GEMM operands into the workspace, in amounts only
//! they know ([`nf_cpu::workspace`]). [`host_plan`] therefore plans with a fixed
//! workspace per block, asks the kernels what every call of each block needs (by running its
//! steps over [`nf_core::probe::Probe`], which computes nothing), and plans again with those
//! amounts until they agree. [`cuda_plan`] does the same with the CUDA backend's chunked
//! convolutions ([`nf_cuda::workspace`]), then grows each block's workspace into what the
//! budget leaves at its batch size.
use nf_core::layout::{Precision, ELEM_BYTES, GEMM_ALIGN};
use nf_core::model::{ModelSpec, Shape, MAX_UNITS};
use nf_core::plan::{plan, BlockWorkspace, Mode, Plan, PlanError, PlanOptions};
use nf_core::probe::{block_workspace, chain_workspace, KernelCall};
use nf_cpu::workspace::floats_for;
use nf_cpu::{isa, Isa, Pool};
use nf_cuda::ChunkPolicy;

use crate::data::DataInfo;
use crate::error::CliError;
use crate::feed::{staging_bytes, CacheDtype};
use crate::plan_args::{explain_bad_input, HostArgs, PlanSpecArgs, Target};
use crate::size::format_size;

/// Host memory beside the budget, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostMemory {
    /// The data set as stored (pixels, labels, the sample order), at its peak while the
    /// validation split is taken out.
    pub data: u64,
    /// The activation caches alive at once (largest over the blocks; 0 when recomputing).
    pub cache: u64,
    /// Model weights on the host: every trained unit and head, and the block being
    /// checkpointed (its parameters, momentum and statistics).
    pub model: u64,
    /// A data-parallel rank's reduction buffers ([`Plan::reduce_bytes`]; 0 in a world of one).
    pub reduce: u64,
    /// Resident memory MPI added when it started, measured (0 without MPI).
    pub mpi: u64,
}

impl HostMemory {
    /// Sum of the parts.
    pub fn total(&self) -> u64 {
        self.data
            .saturating_add(self.cache)
            .saturating_add(self.model)
            .saturating_add(self.reduce)
            .saturating_add(self.mpi)
    }
}

/// Bytes of the model's weights a run holds on the host for `plan`, at their peak: while
/// block `i` is checkpointed, the frozen tensors of the blocks before it (units, heads;
/// parameters and statistics) and block `i`'s parameters, momentum and statistics read out of
/// the arena. (At the end the frozen tensors of every block are held, which is less.)
pub fn model_bytes(p: &Plan) -> u64 {
    let mut frozen = 0;
    let mut peak = 0;
    for i in 0..p.n_blocks {
        let b = p.layout(i).breakdown;
        peak = peak.max(frozen + b.params + b.optimizer + b.bn_state);
        frozen += b.params + b.bn_state;
    }
    peak as u64 * ELEM_BYTES
}

/// Bytes of the activation caches alive at once when every block's outputs are cached:
/// while block `i` trains from the cache of its input it fills the cache of its output
/// (`samples` per sample-split total, `dtype_bytes` per value).
pub fn cache_bytes(p: &Plan, samples: u64, dtype_bytes: u64) -> u64 {
    let per = |u: usize| p.model.unit_input(p.input, u).len() as u64;
    (0..p.n_blocks.saturating_sub(1))
        .map(|i| {
            let b = &p.blocks[i];
            let input = if b.first == 0 { 0 } else { per(b.first) };
            // Saturating: `samples` comes from the data's description (a synthetic spec may
            // claim billions), and a saturated size is refused by the host budget.
            (input + per(b.last + 1))
                .saturating_mul(samples)
                .saturating_mul(dtype_bytes)
        })
        .max()
        .unwrap_or(0)
}

/// The process's peak resident set so far (`VmHWM` of `/proc/self/status`), where the
/// platform reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The host kernels a plan is for: a pool of `threads` workers running instruction set `isa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostKernels {
    /// Worker threads.
    pub threads: usize,
    /// Instruction set (packed sizes follow its register tile).
    pub isa: Isa,
}

impl HostKernels {
    /// `threads` workers on the instruction set a [`nf_cpu::Pool::new`] uses.
    pub fn active(threads: usize) -> Self {
        HostKernels {
            threads,
            isa: isa::active(),
        }
    }

    /// The kernels of `pool`.
    pub fn of(pool: &Pool) -> Self {
        HostKernels {
            threads: pool.threads(),
            isa: pool.isa(),
        }
    }
}

impl HostKernels {
    /// The workspace the host kernels need for `k` on `f32` tensors.
    pub fn need(&self, k: &KernelCall) -> usize {
        floats_for(k, self.threads, self.isa)
    }

    /// The workspace the host kernels need for `k` in a layout of `storage`: under bf16
    /// storage a convolution or linear layer also stages a part of its batch in `f32`
    /// ([`nf_cpu::staged`]); the f32 need is kept as a floor, for the calls of the same block
    /// on `f32` tensors (the recompute chain).
    pub fn need_for(&self, k: &KernelCall, storage: Precision) -> usize {
        let f = self.need(k);
        match storage {
            Precision::F32 => f,
            Precision::Bf16 => f.max(nf_cpu::staged::floats_for(k, self.threads, self.isa)),
        }
    }
}

/// The workspace the calls of block `i` of `p` (its steps and its recompute chain) need, as
/// `need` sizes each call.
pub fn block_need(p: &Plan, i: usize, need: impl Fn(&KernelCall) -> usize + Copy) -> usize {
    let chain = p.chain(i).map_or(0, |c| chain_workspace(&c, need));
    block_workspace(&p.layout(i), need).max(chain)
}

/// Plan `model` for the host kernels `kernels` (`o.workers` is set to their threads): the
/// workspace is fixed at what the plan's own calls need (see the module documentation). Fails
/// as [`plan`] does; a budget too small names the smallest that plans, workspace included.
pub fn host_plan(
    model: &ModelSpec<'static>,
    input: Shape,
    classes: usize,
    budget: u64,
    mode: Mode,
    o: &PlanOptions,
    kernels: HostKernels,
) -> Result<Plan<'static>, PlanError> {
    let o = &PlanOptions {
        workers: kernels.threads,
        ..*o
    };
    let need = |k: &KernelCall| kernels.need_for(k, o.precision);
    or_smallest(budget, |b| {
        settled_plan(model, input, classes, b, mode, o, need)
    })
}

/// Plan `model` for the CUDA backend: each block's workspace holds its convolutions in at
/// most `policy.parts` chunks at its batch size (which the budget then decides), grown, where
/// the budget leaves room at that batch, to the fewest chunks (1, 2, 4, ...) that keep every
/// block's batch size and heads: bigger GEMMs and fewer launches wherever memory allows
/// ([`nf_cuda::workspace`]). Every region starts on [`GEMM_ALIGN`] bytes (cuBLAS's fastest
/// kernels want aligned operands), and so does each convolution's channel-major block in its
/// workspace (`nf_cuda::Engine::set_region_align`): the padding is planned. Fails as
/// [`host_plan`] does.
#[allow(clippy::too_many_arguments)]
pub fn cuda_plan(
    model: &ModelSpec<'static>,
    input: Shape,
    classes: usize,
    budget: u64,
    mode: Mode,
    o: &PlanOptions,
    policy: ChunkPolicy,
) -> Result<Plan<'static>, PlanError> {
    let o = &PlanOptions {
        workers: 1,
        region_align: GEMM_ALIGN,
        ..*o
    };
    let align = GEMM_ALIGN / ELEM_BYTES as usize;
    let need = |k: &KernelCall| policy.need_aligned(k, align);
    let base = or_smallest(budget, |b| {
        settled_plan(model, input, classes, b, mode, o, need)
    })?;
    let BlockWorkspace::Fixed(mut ws) = base.options.workspace else {
        return Ok(base);
    };
    let same = |p: &Plan| {
        p.heads == base.heads
            && p.blocks().len() == base.blocks().len()
            && p.blocks()
                .iter()
                .zip(base.blocks())
                .all(|(a, b)| (a.first, a.last, a.batch) == (b.first, b.last, b.batch))
    };
    let mut best = base;
    for i in 0..base.blocks().len() {
        let first = base.blocks()[i].first;
        let mut parts = 1;
        while parts < policy.parts {
            let wider = ChunkPolicy { parts, ..policy };
            let mut trial = ws;
            trial[first] = block_need(&base, i, |k| wider.need_aligned(k, align));
            let opts = PlanOptions {
                workspace: BlockWorkspace::Fixed(trial),
                ..*o
            };
            if let Ok(p) = plan(model, input, classes, budget, mode, &opts) {
                if same(&p) {
                    ws = trial;
                    best = p;
                    break;
                }
            }
            parts *= 2;
        }
    }
    Ok(best)
}

/// `settle(budget)`, or, when the budget is too small, the error naming the smallest budget
/// that settles: above the planner's own bound (which leaves the workspace out), found by
/// doubling then bisecting.
fn or_smallest(
    budget: u64,
    settle: impl Fn(u64) -> Result<Plan<'static>, PlanError>,
) -> Result<Plan<'static>, PlanError> {
    match settle(budget) {
        Err(PlanError::BudgetTooSmall { needed }) => {
            let (mut lo, mut hi) = (needed.max(budget + 1), needed.max(budget + 1));
            while let Err(PlanError::BudgetTooSmall { .. }) = settle(hi) {
                lo = hi + 1;
                hi = hi.saturating_mul(2);
            }
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match settle(mid) {
                    Err(PlanError::BudgetTooSmall { .. }) => lo = mid + 1,
                    _ => hi = mid,
                }
            }
            Err(PlanError::BudgetTooSmall { needed: lo })
        }
        other => other,
    }
}

/// Plan with a fixed workspace per block until each is what the block's calls need (`need`
/// sizes one call).
#[allow(clippy::too_many_arguments)]
fn settled_plan(
    model: &ModelSpec<'static>,
    input: Shape,
    classes: usize,
    budget: u64,
    mode: Mode,
    o: &PlanOptions,
    need: impl Fn(&KernelCall) -> usize + Copy,
) -> Result<Plan<'static>, PlanError> {
    // `ws[u]`: the workspace of a block starting at unit `u`.
    let at = |ws: [usize; MAX_UNITS]| {
        let opts = PlanOptions {
            workspace: BlockWorkspace::Fixed(ws),
            ..*o
        };
        plan(model, input, classes, budget, mode, &opts)
    };
    // What the blocks of `p` need, and whether `ws` covers it.
    let needs = |p: &Plan, ws: [usize; MAX_UNITS]| {
        let mut want = ws;
        for (i, b) in p.blocks().iter().enumerate() {
            want[b.first] = block_need(p, i, need);
        }
        let covered = p.blocks().iter().all(|b| want[b.first] <= ws[b.first]);
        (want, covered)
    };
    let mut ws = [0usize; MAX_UNITS];
    let mut seen = Vec::new();
    let mut valid = None;
    loop {
        let p = at(ws)?;
        let (want, covered) = needs(&p, ws);
        if want == ws {
            return Ok(p);
        }
        if covered {
            // Enough workspace, but more than needed: a smaller reserve may give a larger batch.
            valid = Some(p);
        }
        seen.push(ws);
        if seen.contains(&want) || seen.len() > 12 {
            // A cycle: the last plan whose reserve covered its needs, or one above every need.
            if let Some(p) = valid {
                return Ok(p);
            }
            let mut top = want;
            for w in &seen {
                for (t, v) in top.iter_mut().zip(w) {
                    *t = (*t).max(*v);
                }
            }
            let p = at(top)?;
            return if needs(&p, top).1 {
                Ok(p)
            } else {
                Err(PlanError::BadOptions(
                    "the kernels' workspace does not settle for this plan",
                ))
            };
        }
        ws = want;
    }
}

/// The data a run loads, as it will sit in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataMemory {
    /// Bytes at the peak of loading (every sample as stored, labels, the validation part while
    /// it is split off, the sample order of an epoch).
    pub bytes: u64,
    /// Samples the run uses (train, validation and test together), which the caches hold.
    pub samples: u64,
    /// Training samples an epoch goes through (the training split without the validation
    /// part), which the step cap of the plan divides.
    pub train: u64,
}

impl DataMemory {
    /// The data set `info` with a `val` fraction split off its training samples and `limit`
    /// samples of each split used: the set as loaded, the larger of the transient extras of
    /// loading and of splitting, and the sample order of an epoch (4 bytes a sample).
    pub fn new(info: &DataInfo, val: f32, limit: Option<u64>) -> Self {
        let used = |n: usize| limit.map_or(n as u64, |l| (n as u64).min(l));
        let train = used(info.train);
        let held_out = crate::data::val_count(train as usize, val) as u64;
        let transient = info.load_overhead().max(info.split_overhead(val));
        DataMemory {
            bytes: info
                .bytes()
                .saturating_add(transient)
                .saturating_add(4u64.saturating_mul(info.train as u64)),
            samples: train + used(info.test),
            train: train - held_out,
        }
    }
}

/// Everything a run will hold, planned before anything is loaded.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// The training plan (its arena includes the kernel workspace and any recompute chain).
    pub plan: Plan<'static>,
    /// Bytes of the feed's staging buffer (host memory: under the budget on the CPU, beside
    /// it when the arena is on a device).
    pub staging: u64,
    /// Bytes a device backend keeps beside its arena in its one allocation (0 on the CPU,
    /// where the arena is host memory).
    pub device_reserve: u64,
    /// Host memory beside the budget.
    pub host: HostMemory,
    /// Whether blocks after the first recompute their inputs, and why (`None`: they read the
    /// activation cache).
    pub recompute: Option<String>,
    /// Whether the data set is known (`nf plan` without `--data` cannot size it or the cache).
    pub data_known: bool,
    /// When backpropagation cannot train under the budget: the budget it needs on the same
    /// kernels ([`bp_needed`]).
    pub bp_needed: Option<u64>,
}

impl RunPlan {
    /// Whether the arena is a device allocation (the budget is then device memory).
    pub fn on_device(&self) -> bool {
        self.device_reserve > 0
    }

    /// Bytes `--budget` covers: the arena and, on a device, the backend's reserve beside it in
    /// the same allocation, or, on the CPU, the staging buffer.
    pub fn budget_bytes(&self) -> u64 {
        let beside = if self.on_device() {
            self.device_reserve
        } else {
            self.staging
        };
        self.plan.peak_bytes() + beside
    }

    /// Host memory beside the budget: data set, caches, weights, and on a device the staging
    /// buffer.
    pub fn host_bytes(&self) -> u64 {
        let staging = if self.on_device() { self.staging } else { 0 };
        self.host.total().saturating_add(staging)
    }

    /// The planned total: the budget's part and the host's.
    pub fn total_bytes(&self) -> u64 {
        self.budget_bytes().saturating_add(self.host_bytes())
    }
}

/// Plan `spec` for the kernels of `target`, leaving `reserved` bytes of the
/// budget to what runs beside the arena (the feed's staging buffer, a device backend's own
/// workspace); with `recompute`, blocks after the first recompute their inputs (no
/// activation cache). Every planner error becomes a one-line usage error naming the flag
/// at fault.
/// Plan for the kernels of `target` (the planner [`make_plan`] uses).
pub(crate) fn plan_on(
    target: Target,
    model: &ModelSpec<'static>,
    input: Shape,
    classes: usize,
    budget: u64,
    mode: Mode,
    options: &PlanOptions,
) -> Result<Plan<'static>, PlanError> {
    match target {
        Target::Host(t) => host_plan(
            model,
            input,
            classes,
            budget,
            mode,
            options,
            HostKernels::active(t),
        ),
        Target::Columns(_) => plan(model, input, classes, budget, mode, options),
        Target::Cuda(policy) => cuda_plan(model, input, classes, budget, mode, options, policy),
    }
}

/// The smallest budget under which backpropagation trains `spec` on `target` with `reserved`
/// bytes beside the arena: what `nf plan --mode bp` says it needs (kernel workspace included),
/// for the BP line of a plan in another mode. `None` if the planner cannot say.
pub fn bp_needed(spec: &PlanSpecArgs, target: Target, reserved: u64) -> Option<u64> {
    let model = spec.model_spec().ok()?;
    let input = spec.input_shape().ok()?;
    let mut options = spec.options.to_options().ok()?;
    options.workers = match target {
        Target::Host(t) | Target::Columns(t) => t,
        Target::Cuda(_) => 1,
    };
    options.reserve = reserved;
    match plan_on(target, &model, input, spec.classes, 0, Mode::Bp, &options) {
        Err(PlanError::BudgetTooSmall { needed }) => Some(needed),
        _ => None,
    }
}

pub fn make_plan(
    spec: &PlanSpecArgs,
    target: Target,
    reserved: u64,
    recompute: bool,
    train_samples: u64,
) -> Result<Plan<'static>, CliError> {
    let model = &spec.model_spec()?;
    let input = spec.input_shape()?;
    let mut options = spec.options.to_options()?;
    options.recompute = recompute;
    options.samples = usize::try_from(train_samples).unwrap_or(usize::MAX);
    options.workers = match target {
        Target::Host(t) | Target::Columns(t) => t,
        Target::Cuda(_) => 1,
    };
    let mode = Mode::from(spec.mode);
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
            format_size(spec.budget),
            model.name,
            mode.name(),
            format_size(needed),
            needed,
            options.b_min
        ))
    };
    let (budget, classes) = (spec.budget, spec.classes);
    let mut planned = plan_on(target, model, input, classes, budget, mode, &options);
    if let (Err(PlanError::BudgetTooSmall { .. }), Precision::Bf16) = (&planned, options.precision)
    {
        // bf16 storage stages part of a batch in f32 (at least a few samples per worker): at
        // the smallest budgets f32 storage can fit where it does not (vgg-small NF, 2 threads:
        // 4.1 MiB against 4.5), so a run that bf16 storage cannot plan keeps f32 storage (its
        // GEMMs still in bf16; `storage` in the plan says which).
        options.precision = Precision::F32;
        planned = plan_on(target, model, input, classes, budget, mode, &options);
    }
    planned.map_err(|e| match e {
        PlanError::BudgetTooSmall { needed } => too_small(needed),
        PlanError::BadInput => CliError::Usage(explain_bad_input(model, input, spec.classes)),
        PlanError::BadOptions(msg) => CliError::Usage(format!(
            "planner options (--f-max, --f-min, --ll-filters, --batch-min, --batch-max, \
             --homogeneity): {msg}"
        )),
    })
}

/// Plan a run of `spec` on `target` (a device reserving `device_reserve` bytes of the budget)
/// with host memory `host` and the data `data` (if known): the activation cache (of element type
/// `cache`) when it fits
/// `--cache-budget` and what `--host-budget` leaves, else recomputation. Refuses a host
/// budget that the data set and the model's weights alone exceed.
pub fn plan_run(
    spec: &PlanSpecArgs,
    target: Target,
    device_reserve: u64,
    host: &HostArgs,
    cache: CacheDtype,
    data: Option<DataMemory>,
) -> Result<RunPlan, CliError> {
    let model = &spec.model_spec()?;
    let input = spec.input_shape()?;
    if !model.accepts(input, spec.classes) {
        return Err(CliError::Usage(explain_bad_input(
            model,
            input,
            spec.classes,
        )));
    }
    let staging = staging_bytes(model, input);
    // On a device the budget is device memory: the staging buffer is host memory there.
    let reserved = if device_reserve > 0 {
        device_reserve
    } else {
        staging
    };
    let data_bytes = data.map_or(0, |d| d.bytes);
    let train = data.map_or(0, |d| d.train);
    let cached = |p: &Plan| data.map_or(0, |d| cache_bytes(p, d.samples, cache.bytes()));
    let mut recompute = None;
    let mut p = if host.cache_budget == Some(0) {
        recompute = Some("--cache-budget 0".to_string());
        make_plan(spec, target, reserved, true, train)?
    } else {
        make_plan(spec, target, reserved, false, train)?
    };
    if recompute.is_none() && p.n_blocks > 1 {
        let cache = cached(&p);
        let left = host
            .host_budget
            .saturating_sub(data_bytes.saturating_add(model_bytes(&p)));
        let allowed = host.cache_budget.map_or(left, |c| c.min(left));
        if cache > allowed {
            recompute = Some(format!(
                "the activation cache ({}) exceeds {}",
                format_size(cache),
                match host.cache_budget {
                    Some(c) if c <= left => format!("--cache-budget {}", format_size(c)),
                    _ => format!(
                        "what --host-budget {} leaves ({})",
                        format_size(host.host_budget),
                        format_size(left)
                    ),
                }
            ));
            p = make_plan(spec, target, reserved, true, train)?;
        }
    }
    let memory = HostMemory {
        data: data_bytes,
        cache: if recompute.is_some() { 0 } else { cached(&p) },
        model: model_bytes(&p),
        reduce: p.reduce_bytes(),
        mpi: 0,
    };
    if memory.total() > host.host_budget {
        return Err(CliError::Usage(format!(
            "--host-budget {} is too small: the data set needs {} and the model's weights {} \
             (at least {} in all)",
            format_size(host.host_budget),
            format_size(memory.data),
            format_size(memory.model),
            format_size(memory.data.saturating_add(memory.model))
        )));
    }
    Ok(RunPlan {
        staging,
        device_reserve,
        host: memory,
        recompute,
        data_known: data.is_some(),
        bp_needed: (p.bp_batch == 0)
            .then(|| bp_needed(spec, target, reserved))
            .flatten(),
        plan: p,
    })
}
