//! Every kernel compiles with NVRTC for sm_90 (the H100/H200 architecture). Needs only the
//! NVRTC library (no driver, no GPU): the PyPI wheel `nvidia-cuda-nvrtc` (13.0) provides it;
//! `scripts/test.sh` installs it and puts its `nvidia/cu13/lib` on `LD_LIBRARY_PATH`.
//! Without the library the test says it was skipped, unless `NF_REQUIRE_NVRTC=1` (set by
//! `scripts/test.sh` in CI, where the wheel must be installed): then a missing library fails.
use std::io::Write;

/// Whether the environment demands that the NVRTC test really runs.
fn required() -> bool {
    std::env::var("NF_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

use nf_cuda::kernels::Kernel;

#[test]
fn every_kernel_compiles_for_sm_90() {
    if let Err(e) = nf_cuda::probe_nvrtc() {
        assert!(!required(), "NF_REQUIRE_NVRTC=1 but no libnvrtc: {e}");
        let _ = writeln!(std::io::stderr(), "skipped: no libnvrtc ({e})");
        return;
    }
    let (major, minor) = nf_cuda::cuda::nvrtc_version().unwrap();
    for arch in ["sm_90", "sm_80"] {
        let cubin = nf_cuda::compile_kernels(arch).unwrap_or_else(|e| panic!("{e}"));
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
            "NVRTC {major}.{minor}: all {} kernels compiled for {arch} ({} bytes of CUBIN)",
            Kernel::ALL.len(),
            cubin.len()
        );
    }
}

/// A kernel that does not compile is an error carrying the compiler's log, not a panic.
#[test]
fn compile_errors_carry_the_log() {
    if nf_cuda::probe_nvrtc().is_err() {
        let _ = writeln!(std::io::stderr(), "skipped: no libnvrtc");
        return;
    }
    let e = nf_cuda::compile_kernels("sm_1").unwrap_err();
    assert!(e.contains("NVRTC could not compile"), "{e}");
}
