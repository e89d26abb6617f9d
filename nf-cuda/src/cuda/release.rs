//! Releasing the device, in the one order that neither faults nor panics.
//!
//! The cuBLAS workspace lives inside the backend's allocation. Freeing the allocation while the
//! cuBLAS handle still points into it, then destroying the handle, is the order a struct's
//! fields would drop in; after a sticky fault (a kernel that read out of bounds) the destroy
//! then fails, and a destroy that panics, while a failing test unwinds, aborts the whole test
//! binary. So: wait for queued work, detach the workspace, destroy the handle, free the memory;
//! every step runs whatever the earlier ones returned, and nothing panics.
use crate::error::CudaError;

/// The steps of releasing a device.
pub(crate) trait Release {
    /// Wait for the queued work.
    fn wait(&mut self) -> Result<(), CudaError>;
    /// Make cuBLAS forget its workspace (it then points into no memory of ours).
    fn detach_workspace(&mut self) -> Result<(), CudaError>;
    /// Destroy the cuBLAS handle (once).
    fn destroy_blas(&mut self) -> Result<(), CudaError>;
    /// Free the allocation (once).
    fn free(&mut self) -> Result<(), CudaError>;
}

/// Run every step of [`Release`] in order, each whatever the earlier ones returned; the errors,
/// in order.
pub(crate) fn release(d: &mut impl Release) -> Vec<CudaError> {
    [d.wait(), d.detach_workspace(), d.destroy_blas(), d.free()]
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::failed;

    /// A device after a sticky fault: every call fails.
    #[derive(Default)]
    struct Faulted(Vec<&'static str>);

    impl Release for Faulted {
        fn wait(&mut self) -> Result<(), CudaError> {
            self.0.push("wait");
            Err(failed("cuStreamSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS"))
        }
        fn detach_workspace(&mut self) -> Result<(), CudaError> {
            self.0.push("detach workspace");
            Err(failed("cublasSetWorkspace: CUBLAS_STATUS_EXECUTION_FAILED"))
        }
        fn destroy_blas(&mut self) -> Result<(), CudaError> {
            self.0.push("destroy cuBLAS");
            Err(failed("cublasDestroy: CUBLAS_STATUS_INTERNAL_ERROR"))
        }
        fn free(&mut self) -> Result<(), CudaError> {
            self.0.push("free");
            Err(failed("cuMemFree: CUDA_ERROR_ILLEGAL_ADDRESS"))
        }
    }

    #[test]
    fn every_step_runs_in_order_after_a_fault_and_nothing_panics() {
        let mut d = Faulted::default();
        let errors = release(&mut d);
        assert_eq!(d.0, ["wait", "detach workspace", "destroy cuBLAS", "free"]);
        assert_eq!(errors.len(), 4);
        assert!(errors[2].message().starts_with("cublasDestroy"));
    }
}
