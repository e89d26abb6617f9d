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
    /// nf train: the convolutions' and linear layers' GEMMs on bf16 operands with f32
    /// accumulation and the activation cache in bf16; on the fast CPU backend also the tensors
    /// a step streams stored in bf16 in the arena (input, carry buffers, activations kept for
    /// backward, activation gradients), on the CUDA backend the operands rounded by a kernel
    /// into planned scratch (tensor cores) and the arena f32; weights, momentum, gradients,
    /// BN statistics and the loss f32 everywhere. nf eval: the GEMMs in bf16. nf plan: the
    /// plan with bf16 storage.
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

    /// The element types nf train plans for this precision on the fast CPU backend, for
    /// `model` on `input`: bf16 storage under bf16, unless a sample of some unit's input or
    /// output has an odd number of values (samples are moved between host and arena at
    /// sample offsets, which must fall on whole 4-byte words; such a run keeps f32 storage
    /// and its GEMMs in bf16).
    pub fn storage(
        self,
        model: &nf_core::model::ModelSpec,
        input: nf_core::model::Shape,
    ) -> nf_core::layout::Precision {
        let even =
            (0..=model.units.len()).all(|u| model.unit_input(input, u).len().is_multiple_of(2));
        match self {
            PrecisionArg::Bf16 if even => nf_core::layout::Precision::Bf16,
            _ => nf_core::layout::Precision::F32,
        }
    }
}
