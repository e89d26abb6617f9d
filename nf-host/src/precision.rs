//! `--precision f32|bf16` of `nf train`, `nf eval` and `nf plan`: the operand precision of the
//! convolution's and the linear layer's GEMMs on the fast CPU backend
//! ([`nf_cpu::Precision`]) and the CUDA backend ([`nf_cuda::GemmPrecision`]); see the README's
//! "Precision" section for which buffers are which.
use clap::ValueEnum;

/// A value of `--precision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// Everything in f32.
    #[default]
    F32,
    /// nf train and nf eval: the convolutions' and linear layers' GEMM operands rounded to
    /// bf16 (as they are packed on the fast CPU backend; by a kernel into planned scratch on
    /// the CUDA backend, whose GEMMs run on tensor cores), f32 accumulation, the activation
    /// cache in bf16, every buffer of the arena f32; nf plan: the memory model's figure for
    /// bf16 storage of the streamed tensors.
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

    /// The CUDA backend's GEMM operand precision (also on the emulated device).
    pub fn cuda(self) -> nf_cuda::GemmPrecision {
        match self {
            PrecisionArg::F32 => nf_cuda::GemmPrecision::F32,
            PrecisionArg::Bf16 => nf_cuda::GemmPrecision::Bf16,
        }
    }

    /// The name on the command line and in reports (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        self.cpu().name()
    }
}
