//! The flags of `nf train` and their checks.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::data::transform::Augment;
use crate::error::{usage, CliError};
use crate::plan_args::{HostArgs, ImageArgs, PlanSpecArgs};

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
    /// Data: a directory of IDX files (MNIST/Fashion-MNIST, .gz or raw), CIFAR-10/100 binary
    /// batches, NumPy arrays (x_train.npy, y_train.npy, x_test.npy, y_test.npy) or image
    /// folders (one folder of PNG/JPEG files per class, optionally under train/ and test/),
    /// or `synthetic:CxHxW:N`. Default: the Fashion-MNIST subset bundled in fixtures/
    #[arg(long, value_name = "DIR")]
    pub data: Option<String>,
    /// How an image folder becomes a data set.
    #[command(flatten)]
    pub images: ImageArgs,
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
    /// Pad every image with N black pixels on each side (e.g. 2: 28x28 Fashion-MNIST to the
    /// 32x32 of the CIFAR-sized zoo models); the model's input is the padded size
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub pad: u32,
    /// Augment the training images: each epoch, every image is cropped at a random offset
    /// from itself padded by --crop-pad black pixels, and flipped left-right with probability
    /// 1/2 (validation and test images never are). Blocks that read the activation cache see
    /// the features of the images as they are; with --cache-budget 0 every block recomputes
    /// its inputs from the augmented images
    #[arg(long)]
    pub augment: bool,
    /// The crop padding of --augment in pixels (default: an eighth of the image height, so 4
    /// for 32x32 and 3 for 28x28; 0: no crop)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    pub crop_pad: Option<u32>,
    /// --augment without the flip (for images whose mirror image is another class, such as
    /// digits)
    #[arg(long)]
    pub no_flip: bool,
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
    /// Host memory beside the budget: data set, activation cache, model weights.
    #[command(flatten)]
    pub host: HostArgs,
    /// Where training runs
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// CPU worker threads (default: all cores)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Precision of the GEMMs and of the activations: f32 (the default) or bf16 (GEMM operands
    /// rounded to bf16 as they are packed, products accumulated in f32 on AMX tiles or with
    /// vdpbf16ps where the CPU has them; on the CPU the activations, carry buffers and
    /// activation gradients stored in bf16; weights, gradients, momentum, batch norm and the
    /// loss stay f32; the activation cache is bf16 unless --cache-dtype says otherwise). On
    /// the CUDA backend the GEMMs run on tensor cores (cuBLAS, bf16 inputs, f32 compute), their
    /// operands rounded into workspace the plan counts, and the activations stay f32. A resumed
    /// run keeps its precision
    #[arg(long, value_enum, value_name = "P")]
    pub precision: Option<crate::precision::PrecisionArg>,
    /// CUDA: let cuBLAS use TF32 tensor cores (faster GEMMs, about 3 significant digits)
    #[arg(long)]
    pub tf32: bool,
    /// Directory for report.json, model.safetensors, exit.safetensors and the checkpoint
    /// (default: a new runs/YYYYMMDD-HHMMSS)
    #[arg(long, value_name = "DIR", help_heading = crate::output::OUTPUT)]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (with the options it was started with)
    #[arg(long, value_name = "DIR", help_heading = crate::output::OUTPUT)]
    pub resume: Option<PathBuf>,
    /// Refuse to start unless the run has N ranks (processes under an MPI launcher, built
    /// with the mpi feature): catches a binary started by another MPI's launcher, which gives
    /// N worlds of one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub ranks: Option<u32>,
    /// Train as N ranks simulated by threads of this process, summing in rank order: the
    /// single-process reference of an N-rank run (tests)
    #[arg(long, value_name = "N", hide = true,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub virtual_ranks: Option<u32>,
}

impl TrainArgs {
    /// The run directory (set once the command starts).
    pub fn out_dir(&self) -> &Path {
        self.out.as_deref().unwrap_or(Path::new("runs/latest"))
    }

    /// The flag that names the run directory: `--resume` when continuing a run, else `--out`.
    pub fn out_flag(&self) -> &'static str {
        if self.resume.is_some() {
            "--resume"
        } else {
            "--out"
        }
    }

    /// `--precision` (f32 when not given).
    pub fn precision(&self) -> crate::precision::PrecisionArg {
        self.precision.unwrap_or_default()
    }

    /// The augmentation of images `height` pixels high (after --pad), if --augment.
    pub fn augmentation(&self, height: usize) -> Option<Augment> {
        self.augment.then(|| Augment {
            crop: self
                .crop_pad
                .map_or_else(|| Augment::default_crop(height), |c| c as usize),
            flip: !self.no_flip,
        })
    }
}

/// `runs/YYYYMMDD-HHMMSS` (UTC) for a run started now.
pub(super) fn default_out() -> PathBuf {
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

/// Refuse flag values that cannot train, naming the flag.
pub(super) fn check_args(a: &TrainArgs) -> Result<(), CliError> {
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
    if !a.augment && (a.crop_pad.is_some() || a.no_flip) {
        let flag = if a.no_flip { "--no-flip" } else { "--crop-pad" };
        return Err(usage(format!(
            "{flag} changes --augment, which is not given"
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
