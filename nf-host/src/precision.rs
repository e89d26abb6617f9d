//! `--precision f32|bf16` of `nf train`, `nf eval` and `nf plan`: the operand precision of the
//! convolution's and the linear layer's GEMMs on the fast CPU backend
//! ([`nf_cpu::Precision`]); see the README's "Precision" section for which buffers are which.
use clap::ValueEnum;

use crate::error::{usage, CliError};

/// A value of `--precision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// Everything in f32.
    #[default]
    F32,
    /// nf train and nf eval: the convolutions' and linear layers' GEMM operands rounded to
    /// bf16 as they are packed, f32 accumulation, the activation cache in bf16, every buffer of
    /// the arena f32 (fast CPU backend only); nf plan: the memory model's figure for bf16
    /// storage of the streamed tensors.
    Bf16,
}

impl PrecisionArg {
    /// The fast CPU backend's precision.
    pub fn cpu(self) -> nf_cpu::Precision {
        match self {
            PrecisionArg::F32 => nf_cpu::Precision::F32,
            PrecisionArg::Bf16 => nf_cpu::Precision::Bf16,
        }
    }

    /// The name on the command line and in reports (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        self.cpu().name()
    }

    /// Refuse bf16 on a backend that runs f32 only (`what`: the backend and the flag that
    /// chose it, e.g. "the CUDA backend (--device cuda)").
    pub fn require_f32(self, what: &str) -> Result<(), CliError> {
        match self {
            PrecisionArg::F32 => Ok(()),
            p => Err(p.f32_only(what)),
        }
    }

    /// The error of [`PrecisionArg::require_f32`] for this precision.
    pub fn f32_only(self, what: &str) -> CliError {
        usage(format!(
            "--precision {}: {what} runs in f32 only; bf16 runs on the fast CPU backend \
             (--device cpu)",
            self.name()
        ))
    }
}
