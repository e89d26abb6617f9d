//! Every kernel compiles with NVRTC for sm_90 (the H100/H200 architecture). Needs only the
//! NVRTC library (no driver, no GPU): the PyPI wheel `nvidia-cuda-nvrtc` (13.0) provides it;
//! `scripts/test.sh` installs it and puts its `nvidia/cu13/lib` on `LD_LIBRARY_PATH`.
//! Without the library the tests say they were skipped, unless `NF_REQUIRE_TOOLS=1` (set by
//! `scripts/test.sh`, which installs the wheel) or `NF_REQUIRE_NVRTC=1`: then a missing library
//! fails them.
use std::io::Write;

/// Whether the environment demands that the NVRTC tests really run.
fn required() -> bool {
    ["NF_REQUIRE_TOOLS", "NF_REQUIRE_NVRTC"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| v == "1"))
}

/// `false` (and a visible skip) when NVRTC cannot be loaded and nothing requires it; a failure
/// when something does.
fn nvrtc_present() -> bool {
    match nf_cuda::detect_nvrtc() {
        Ok(()) => true,
        Err(e @ nf_cuda::CudaError::Failed(_)) => panic!("NVRTC is broken: {e}"),
        Err(nf_cuda::CudaError::Unavailable(e)) => {
            assert!(
                !required(),
                "NVRTC is required here but cannot be loaded: {e}"
            );
            let _ = writeln!(std::io::stderr(), "skipped: no libnvrtc ({e})");
            false
        }
    }
}

use nf_cuda::kernels::Kernel;

#[test]
fn every_kernel_compiles_for_sm_90() {
    if !nvrtc_present() {
        return;
    }
    let (major, minor) = nf_cuda::cuda::nvrtc_version().unwrap();
    for (arch, fmad) in [("sm_90", true), ("sm_90", false), ("sm_80", true)] {
        let cubin =
            nf_cuda::cuda::compile_kernels_with(arch, fmad).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "{arch}: not an ELF CUBIN");
        for k in Kernel::ALL {
            let name = k.name().as_bytes();
            assert!(
                cubin.windows(name.len()).any(|w| w == name),
                "{arch}: kernel {} missing from the CUBIN",
                k.name()
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "NVRTC {major}.{minor}: all {} kernels compiled for {arch}, --fmad={fmad} ({} bytes of CUBIN)",
            Kernel::ALL.len(),
            cubin.len()
        );
    }
}

/// A kernel that does not compile is an error carrying the compiler's log, not a panic.
#[test]
fn compile_errors_carry_the_log() {
    if !nvrtc_present() {
        return;
    }
    let e = nf_cuda::compile_kernels("sm_1").unwrap_err();
    assert!(!e.is_unavailable(), "{e:?}");
    assert!(e.message().contains("NVRTC could not compile"), "{e}");
}

/// The preflight's pieces that need no driver: the NVRTC (and, where it loads, cuBLAS) version,
/// and the library files this process mapped, read from `/proc/self/maps`.
#[test]
fn library_versions_and_mapped_files() {
    if !nvrtc_present() {
        return;
    }
    let (major, _) = nf_cuda::cuda::nvrtc_version().unwrap();
    // detect_nvrtc refuses another major version (a CUDA 12 libnvrtc.so earlier on the path).
    assert_eq!(major, nf_cuda::cuda::CUDA_MAJOR);
    let files = nf_cuda::cuda::mapped_cuda_libraries();
    assert!(
        files.iter().any(|f| f.contains("libnvrtc.so")),
        "libnvrtc is not among the mapped files {files:?}"
    );
    let mut line = format!("NVRTC {major}: {}", files.join(", "));
    if nf_cuda::detect_cublas().is_ok() {
        let (bmaj, bmin, bpatch) = nf_cuda::cuda::cublas_version().unwrap();
        assert_eq!(
            bmaj,
            nf_cuda::cuda::CUDA_MAJOR,
            "cuBLAS {bmaj}.{bmin}.{bpatch}"
        );
        let files = nf_cuda::cuda::mapped_cuda_libraries();
        assert!(
            files.iter().any(|f| f.contains("libcublas.so")),
            "{files:?}"
        );
        line = format!(
            "{line}; cuBLAS {bmaj}.{bmin}.{bpatch}: {}",
            files.join(", ")
        );
    }
    let _ = writeln!(std::io::stderr(), "{line}");
}
