//! The C types and constants of the ABI: limits, return codes, op kinds, modes, and the structs
//! the caller fills or reads (`include/neuroflux.h` declares them as they are here).
use core::ffi::c_void;

// --- Limits and codes ----------------------------------------------------------------------------

/// Most units a model may have in the C ABI.
pub const NF_MAX_UNITS: usize = 8;
/// Most ops a model may have in all (units only: heads and the classifier are added by the
/// library).
pub const NF_MAX_OPS: usize = 48;
/// Size of [`nf_trainer`] in 64-bit words: it holds the trainer's layouts, whose sizes follow
/// the target's pointer width (32-bit: 5,376 bytes for 4,944 used; 64-bit: 10,240 for 9,536:
/// room for nf-core's layouts to grow a little). The header defines it with the preprocessor
/// from `UINTPTR_MAX` (`cbindgen.toml`); [`nf_trainer_bytes`] gives the library's value, which
/// a C program may compare with `sizeof(nf_trainer)`.
#[cfg(target_pointer_width = "64")]
pub const NF_TRAINER_WORDS: usize = 1280;
/// Size of [`nf_trainer`] in 64-bit words (see the 64-bit definition).
#[cfg(not(target_pointer_width = "64"))]
pub const NF_TRAINER_WORDS: usize = 672;

/// Success.
pub const NF_OK: i32 = 0;
/// Nothing left to do: every block is trained (a success code).
pub const NF_DONE: i32 = 1;
/// A required pointer is NULL.
pub const NF_E_NULL: i32 = -1;
/// A pointer is not aligned for its type (the memory: `float`).
pub const NF_E_ALIGN: i32 = -2;
/// The model description is invalid (an op kind or field out of range, a unit of no ops, op
/// counts that do not add up, an op that does not accept its input shape).
pub const NF_E_MODEL: i32 = -3;
/// The model exceeds a capacity (units, ops, ops of a training segment).
pub const NF_E_CAPACITY: i32 = -4;
/// The planner options are invalid.
pub const NF_E_OPTIONS: i32 = -5;
/// The schedule is invalid (epochs, learning rate, momentum, weight decay, schedule kind).
pub const NF_E_SCHEDULE: i32 = -6;
/// The data description is invalid (no read callback, no training or held-out samples).
pub const NF_E_DATA_CONFIG: i32 = -7;
/// The budget is too small for any plan (`nf_plan_info.needed_bytes` says what would do).
pub const NF_E_BUDGET: i32 = -8;
/// The memory given to [`nf_init`] is smaller than the plan's `memory_bytes`.
pub const NF_E_MEMORY: i32 = -9;
/// The model's training memory exceeds what the C ABI accepts (2^27 floats at the largest
/// batch).
pub const NF_E_TOO_LARGE: i32 = -10;
/// The read callback failed, or returned a label outside `0..classes`.
pub const NF_E_DATA: i32 = -11;
/// The call does not fit the trainer's state (not initialised; the block's epochs are not all
/// done, or already done; a previous error stopped training).
pub const NF_E_STATE: i32 = -12;
/// A call on a trainer that is already running one (from inside a callback).
pub const NF_E_BUSY: i32 = -13;
/// A training or evaluation step was refused (an internal error: the layout does not fit the
/// arena).
pub const NF_E_STEP: i32 = -14;
/// An argument is out of range.
pub const NF_E_ARG: i32 = -15;
/// `nf_init`'s memory overlaps its `nf_trainer` (training would write over the trainer).
pub const NF_E_OVERLAP: i32 = -16;
/// `nf_load_model`: the bytes are not a model file of this trainer's model and plan (magic,
/// version, sizes or checksum).
pub const NF_E_FORMAT: i32 = -17;
/// `nf_init_planned`: the plan is not one of this model and options (its blocks, head widths
/// or batches are out of range, or a size it gives is not the one the library computes).
pub const NF_E_PLAN: i32 = -18;

/// Op kind: 2-D convolution (`out` filters of `k` x `k`, `stride`, `pad` zeros on every side,
/// `bias` 0 or 1).
pub const NF_OP_CONV: u32 = 1;
/// Op kind: batch normalisation (affine, running statistics).
pub const NF_OP_BATCHNORM: u32 = 2;
/// Op kind: ReLU.
pub const NF_OP_RELU: u32 = 3;
/// Op kind: 2x2 max-pool, stride 2.
pub const NF_OP_MAXPOOL2: u32 = 4;
/// Op kind: adaptive average pool to `out` x `out` (1: global average pooling).
pub const NF_OP_AVGPOOL: u32 = 5;
/// Op kind: flatten to `c*h*w` x 1 x 1.
pub const NF_OP_FLATTEN: u32 = 6;
/// Op kind: fully connected layer with `out` outputs and a bias.
pub const NF_OP_LINEAR: u32 = 7;
/// Op kind: ResNet basic block with `out` channels and `stride`.
pub const NF_OP_BASICBLOCK: u32 = 8;

/// Planner mode: NeuroFlux (adaptive heads, blocks, batch sizes per block).
pub const NF_MODE_NEUROFLUX: u32 = 0;
/// Planner mode: classic local learning (one block, fixed heads).
pub const NF_MODE_LL: u32 = 1;
/// Planner mode: backpropagation (one block, one segment).
pub const NF_MODE_BP: u32 = 2;

/// Learning-rate schedule: constant.
pub const NF_LR_CONSTANT: u32 = 0;
/// Learning-rate schedule: one-cycle (warm-up then cosine anneal) over each block's epochs.
pub const NF_LR_ONECYCLE: u32 = 1;
/// Learning-rate schedule: cosine from the peak to 0.
pub const NF_LR_COSINE: u32 = 2;
/// Learning-rate schedule: multiply by `step_gamma` every `step_every` steps.
pub const NF_LR_STEP: u32 = 3;

/// `nf_predict_unit`: the early exit.
pub const NF_UNIT_EXIT: u32 = u32::MAX;
/// `nf_predict_unit`: the full model (the last unit and the classifier).
pub const NF_UNIT_FULL: u32 = u32::MAX - 1;

/// Split: training samples.
pub const NF_SPLIT_TRAIN: u32 = 0;
/// Split: validation samples (the exit is chosen on them when there are any).
pub const NF_SPLIT_VAL: u32 = 1;
/// Split: test samples.
pub const NF_SPLIT_TEST: u32 = 2;

// --- Types ---------------------------------------------------------------------------------------

/// One op of a unit. Fields an op kind does not use are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_op {
    /// `NF_OP_*`.
    pub kind: u32,
    /// Output channels (conv, basic block), outputs (linear), output side (average pool).
    pub out: u32,
    /// Kernel size (conv).
    pub k: u32,
    /// Stride (conv, basic block).
    pub stride: u32,
    /// Zero padding on every side (conv).
    pub pad: u32,
    /// 1 for a bias (conv).
    pub bias: u32,
}

/// A CNN as a chain of units. Each unit is trained on its own auxiliary head (added by the
/// library); after the last unit come global average pooling and a linear classifier.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_model {
    /// All ops, unit after unit.
    pub ops: *const nf_op,
    /// Number of ops in `ops` (at most `NF_MAX_OPS`).
    pub n_ops: u32,
    /// Number of ops of each unit (`n_units` entries, summing to `n_ops`).
    pub unit_ops: *const u32,
    /// Number of units (at most `NF_MAX_UNITS`).
    pub n_units: u32,
    /// Input channels.
    pub in_c: u32,
    /// Input height.
    pub in_h: u32,
    /// Input width.
    pub in_w: u32,
    /// Number of classes.
    pub classes: u32,
    /// Heads first average-pool a unit output larger than this to this size (0: never).
    pub head_pool: u32,
    /// The normalisation the read callback applies to each input value (`(x - in_mean) /
    /// in_std`, `x` scaled to 0..1 first), recorded in the saved model ([`crate::nf_export_model`])
    /// so that a host can evaluate it (`nf eval --model`); the library never applies it. Both 0
    /// (a zero-initialised struct): not recorded.
    pub in_mean: f32,
    /// See `in_mean`: positive, or 0 when not recorded.
    pub in_std: f32,
}

/// Planner options ([`nf_options_default`] gives the microcontroller defaults).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_options {
    /// `NF_MODE_*`.
    pub mode: u32,
    /// Head filters of the first unit (NeuroFlux).
    pub f_max: u32,
    /// Head filters of the last unit with a head (NeuroFlux).
    pub f_min: u32,
    /// Head filters of every unit (classic local learning).
    pub ll_filters: u32,
    /// Smallest batch size.
    pub b_min: u32,
    /// Largest batch size.
    pub b_max: u32,
    /// Units join a block while their per-sample memory is within this factor of its first.
    pub homogeneity: u32,
    /// 1: a block's recompute chain (the frozen units that compute its inputs) lies over the
    /// block's scratch instead of after it, its weights copied in before every pass: a block
    /// costs the larger of its step and its chain instead of their sum. 0 (the default): after.
    pub chain_in_scratch: u32,
}

/// One block of a plan.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_block_info {
    /// First unit.
    pub first: u32,
    /// Last unit (inclusive).
    pub last: u32,
    /// Batch size.
    pub batch: u32,
    /// Samples per pass of the chain that recomputes the block's inputs (0: none).
    pub chunk: u32,
    /// Arena bytes of the block (with its recompute chain).
    pub bytes: u64,
}

/// A plan, as [`nf_plan`] reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_plan_info {
    /// Bytes of the memory [`nf_init`] needs: `arena_bytes + store_bytes + order_bytes`.
    pub memory_bytes: u64,
    /// The planner's arena: the largest block.
    pub arena_bytes: u64,
    /// The frozen-weight store in half precision (parameters and BN statistics of every unit
    /// but the last, and the heads of every block but the last), rounded up to 4 bytes.
    pub store_bytes: u64,
    /// The epoch order: 2 bytes per training sample (rounded up to 4 bytes in all) when there
    /// are at most 65,536 and `b_max` is at most 32, else 4.
    pub order_bytes: u64,
    /// With `NF_E_BUDGET`: the smallest budget that plans (0 otherwise).
    pub needed_bytes: u64,
    /// Number of units.
    pub n_units: u32,
    /// Number of blocks.
    pub n_blocks: u32,
    /// Head filters per unit (0 for the last unit, which has the classifier, and in BP).
    pub heads: [u32; NF_MAX_UNITS],
    /// The blocks (`n_blocks` of them).
    pub blocks: [nf_block_info; NF_MAX_UNITS],
}

/// Reads sample `index` of `split` (`NF_SPLIT_*`): writes its `n_values` input values (`c*h*w`,
/// channel-major, normalised as the caller wishes) to `values` and its class to `label`.
/// Returns 0, or non-zero on failure (training stops with `NF_E_DATA`). `values` points into
/// the training memory and is valid only during the call; the callback must not call the
/// library on the same trainer.
pub type nf_read_fn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        split: u32,
        index: u32,
        values: *mut f32,
        n_values: u32,
        label: *mut u32,
    ) -> i32,
>;

/// Called after every epoch with the block's training statistics (may be NULL).
pub type nf_epoch_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, stats: *const nf_epoch_stats)>;

/// Where the samples come from.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_data {
    /// Reads one sample (required).
    pub read: nf_read_fn,
    /// Progress after every epoch (optional).
    pub on_epoch: nf_epoch_fn,
    /// Passed to both callbacks.
    pub user: *mut c_void,
    /// Training samples (at least 1).
    pub n_train: u32,
    /// Validation samples (0: the exit is chosen on the test split).
    pub n_val: u32,
    /// Test (held-out) samples (at least 1).
    pub n_test: u32,
}

/// The training schedule ([`nf_schedule_default`] gives the firmware's).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nf_schedule {
    /// Epochs per block.
    pub epochs: u32,
    /// Learning rate at batch size `ref_batch` (each block scales it linearly to its batch).
    pub base_lr: f32,
    /// Reference batch size of the linear scaling rule.
    pub ref_batch: u32,
    /// `NF_LR_*`.
    pub lr_schedule: u32,
    /// `NF_LR_STEP`: steps between decays (0: never).
    pub step_every: u32,
    /// `NF_LR_STEP`: factor at each decay.
    pub step_gamma: f32,
    /// SGD momentum (0 <= m < 1).
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// 1 for Nesterov momentum.
    pub nesterov: u32,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// The exit is the earliest unit within this accuracy of the best (0.005: half a point).
    pub exit_tolerance: f32,
}

/// Training statistics of one epoch of a block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_epoch_stats {
    /// Block index.
    pub block: u32,
    /// Epoch just trained (from 0).
    pub epoch: u32,
    /// Epochs of the block.
    pub epochs: u32,
    /// First unit of the block.
    pub first: u32,
    /// Heads reported (`loss[0..n]`, `acc[0..n]`: units `first..first+n`; in BP, the classifier).
    pub n: u32,
    /// Mean training loss of each head over the epoch.
    pub loss: [f32; NF_MAX_UNITS],
    /// Training accuracy of each head over the epoch.
    pub acc: [f32; NF_MAX_UNITS],
}

/// Results so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nf_result {
    /// Number of units.
    pub n_units: u32,
    /// Number of blocks.
    pub n_blocks: u32,
    /// Blocks trained, evaluated and frozen.
    pub blocks_done: u32,
    /// Epochs done in the current block.
    pub epochs_done: u32,
    /// Validation accuracy of each unit's head (the last unit: the classifier); -1 where not
    /// evaluated. Without a validation split, the test accuracy.
    pub val_acc: [f32; NF_MAX_UNITS],
    /// Test accuracy of each unit's head; -1 where not evaluated.
    pub test_acc: [f32; NF_MAX_UNITS],
    /// The early exit among the evaluated units (by `val_acc`, `exit_tolerance`); -1 before
    /// the first block is done.
    pub exit: i32,
}

/// A trainer: declare one (static, global or on the stack) and pass it to [`nf_init`]. Its
/// contents are private; it may be copied only while no call runs on it.
#[repr(C)]
pub struct nf_trainer {
    /// Private.
    pub opaque: [u64; NF_TRAINER_WORDS],
}
