//! The kernel sources compiled by NVRTC to a CUBIN for one GPU architecture.
use std::ffi::CStr;

use cudarc::nvrtc::{result as rtc, sys as rtc_sys};

use crate::error::{failed, CudaError};
use crate::kernels::program_source;

/// Compile every kernel with NVRTC for `arch` (e.g. `sm_90`) and return the CUBIN, with FMA
/// contraction (the backend's default, [`super::CudaOptions::fmad`]).
///
/// Needs only NVRTC (no driver, no device); call [`super::detect_nvrtc`] first, since cudarc
/// panics when the library is missing.
///
/// # Errors
/// [`CudaError::Failed`] with the compiler's log when a kernel does not compile.
pub fn compile_kernels(arch: &str) -> Result<Vec<u8>, CudaError> {
    compile_kernels_with(arch, true)
}

/// [`compile_kernels`], with FMA contraction (`--fmad=true`) or without (the kernels then round
/// exactly like the reference ops and the emulation, which is compiled with
/// `-ffp-contract=off`).
///
/// # Errors
/// [`CudaError::Failed`] with the compiler's log when a kernel does not compile.
pub fn compile_kernels_with(arch: &str, fmad: bool) -> Result<Vec<u8>, CudaError> {
    let src = std::ffi::CString::new(program_source()).map_err(|e| failed(e.to_string()))?;
    let prog = rtc::create_program(&src, Some(c"nf_kernels.cu"))
        .map_err(|e| failed(format!("nvrtcCreateProgram: {e:?}")))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        format!("--fmad={fmad}"),
    ];
    // SAFETY: `prog` was created above and is destroyed once, at the end.
    let result = unsafe {
        match rtc::compile_program(prog, &opts) {
            Ok(()) => {
                let mut size = 0usize;
                let r = rtc_sys::nvrtcGetCUBINSize(prog, &mut size).result();
                let mut bin = vec![0u8; size];
                r.and_then(|()| rtc_sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast()).result())
                    .map(|()| bin)
                    .map_err(|e| failed(format!("nvrtcGetCUBIN: {e:?}")))
            }
            Err(e) => {
                let log = rtc::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(failed(format!(
                    "NVRTC could not compile the kernels for {arch} ({e:?}):\n{log}"
                )))
            }
        }
    };
    // SAFETY: as above.
    let _ = unsafe { rtc::destroy_program(prog) };
    result
}
