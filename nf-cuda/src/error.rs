//! The one error type of nf-cuda: every fallible function of the crate returns a [`CudaError`],
//! and its two variants say what a caller needs to decide: there is no usable GPU here
//! ([`CudaError::Unavailable`]: skip, or fall back to the CPU) or there is one and something
//! failed ([`CudaError::Failed`]: a bug or a broken device, to be reported).

/// An error of the CUDA backend, as one line of text in one of two kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaError {
    /// The CUDA pieces this backend needs are not there: no driver library, no usable driver,
    /// no device (or not the one asked for), no NVRTC or cuBLAS library or one of another major
    /// version than the bindings' (13), or, for the CPU emulation, no host C++ compiler.
    Unavailable(String),
    /// They are there and something failed: a driver, NVRTC or cuBLAS call, a kernel that does
    /// not compile, an allocation, a kernel fault, or a call the backend refuses (a region past
    /// its memory, a size a kernel cannot take, a GEMM cuBLAS would reject).
    Failed(String),
}

impl CudaError {
    /// Whether this says that no usable GPU is here (rather than that one failed).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CudaError::Unavailable(_))
    }

    /// The line of text, without the kind.
    pub fn message(&self) -> &str {
        match self {
            CudaError::Unavailable(m) | CudaError::Failed(m) => m,
        }
    }

    /// The same kind with `context: ` before the message.
    pub fn context(self, context: &str) -> Self {
        match self {
            CudaError::Unavailable(m) => CudaError::Unavailable(format!("{context}: {m}")),
            CudaError::Failed(m) => CudaError::Failed(format!("{context}: {m}")),
        }
    }
}

impl std::fmt::Display for CudaError {
    /// The message alone (one line; the kind is the variant, not part of the text).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CudaError {}

/// A failure (the common case inside the backend) from its message.
pub(crate) fn failed(message: impl Into<String>) -> CudaError {
    CudaError::Failed(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_messages_and_context() {
        let e = CudaError::Unavailable("no CUDA device found".into());
        assert!(e.is_unavailable());
        assert_eq!(e.to_string(), "no CUDA device found");
        let e = failed("cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY").context("arena");
        assert!(!e.is_unavailable());
        assert_eq!(e.message(), "arena: cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY");
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert_eq!(
            boxed.to_string(),
            "arena: cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY"
        );
    }
}
