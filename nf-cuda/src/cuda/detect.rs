//! Finding out, without panicking, whether the CUDA pieces are there, and which: the driver,
//! a device, NVRTC and cuBLAS ([`detect`]), their versions, and the library files the process
//! loaded for them ([`preflight`]: they may come from a CUDA toolkit or from the pip wheels
//! PyTorch brings).
//!
//! cudarc panics when it cannot load a library, and loads the first file that answers to one of
//! its candidate names, the unversioned `libnvrtc.so` / `libcublas.so` first and CUDA 12's
//! after CUDA 13's. The bindings are CUDA 13's, so a library of another major version is
//! reported as unavailable here ([`CUDA_MAJOR`]) instead of being used; the GPU check pins the
//! files by putting a folder of links to CUDA 13's first on the library path.
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{result as drv, sys as drv_sys};
use cudarc::nvrtc::sys as rtc_sys;

use crate::error::{failed, CudaError};

/// The CUDA major version of the bindings (cudarc's `cuda-13000`): NVRTC and cuBLAS must be of
/// this major version.
pub const CUDA_MAJOR: i32 = 13;

/// Library file names tried, in order, for the CUDA driver API (`libcuda`).
///
/// `libcuda.so.1` is the name the NVIDIA driver installs (the unversioned `libcuda.so` usually
/// exists only where the CUDA toolkit's development files are installed).
pub const DRIVER_LIBRARY_NAMES: &[&str] = &["libcuda.so.1", "libcuda.so"];

/// What [`detect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_bytes: u64,
    /// Number of multiprocessors.
    pub multiprocessors: u32,
}

/// Checks, without panicking, whether the CUDA driver library can be loaded.
///
/// Tries each name of [`DRIVER_LIBRARY_NAMES`] and checks that the library it opens exports
/// `cuInit`, the driver API's entry point. It does not initialise the driver or look for a
/// device; it only tells whether calling into cudarc's driver API is safe from panics caused by
/// a missing library.
///
/// # Errors
/// [`CudaError::Unavailable`]: `no CUDA driver found (libcuda.so): ...`, followed by the
/// loader's message for each name tried.
pub fn detect_driver() -> Result<(), CudaError> {
    let mut reasons: Vec<String> = Vec::new();
    for &name in DRIVER_LIBRARY_NAMES {
        // SAFETY: loading a shared library runs its initialisers. The only libraries loaded here
        // are the CUDA driver's, which cudarc itself loads the same way in order to work at all;
        // their initialisers have no preconditions on this process.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(lib) => lib,
            Err(e) => {
                reasons.push(format!("{name}: {}", error_chain(&e)));
                continue;
            }
        };
        // SAFETY: the symbol is only looked up, never called, so its type does not matter.
        let has_entry = unsafe { lib.get::<unsafe extern "C" fn()>(b"cuInit\0") }.is_ok();
        if has_entry {
            // Keep the driver loaded for the life of the process, as cudarc does: unloading and
            // reloading libcuda gains nothing and some driver versions dislike `dlclose`.
            std::mem::forget(lib);
            return Ok(());
        }
        reasons.push(format!("{name}: loaded, but it does not export cuInit"));
    }
    Err(CudaError::Unavailable(format!(
        "no CUDA driver found (libcuda.so): {}",
        reasons.join("; ")
    )))
}

/// `e` followed by its sources (libloading puts the loader's own message in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Refuses a library of another major version than the bindings' ([`CUDA_MAJOR`]): `version`
/// is what the library reported, `prefix` the file-name prefix of the library (its files are
/// named from what this process mapped).
///
/// # Errors
/// [`CudaError::Unavailable`] naming the version, the files and the way out.
pub fn check_major(what: &str, version: &str, major: i32, prefix: &str) -> Result<(), CudaError> {
    if major == CUDA_MAJOR {
        return Ok(());
    }
    let files: Vec<String> = mapped_cuda_libraries()
        .into_iter()
        .filter(|f| f.rsplit('/').next().is_some_and(|n| n.starts_with(prefix)))
        .collect();
    Err(CudaError::Unavailable(format!(
        "{what} {version} was loaded ({}), but nf-cuda is built for CUDA {CUDA_MAJOR}: put a \
         folder holding {what} {CUDA_MAJOR}'s files first on LD_LIBRARY_PATH (the GPU check \
         makes one)",
        if files.is_empty() {
            "file unknown".to_string()
        } else {
            files.join(", ")
        }
    )))
}

/// Checks, without panicking, that NVRTC can be loaded and is CUDA 13's. When it cannot be
/// loaded and `NF_NVRTC_DIR` names a directory holding `libnvrtc.so.13` (such as
/// `nvidia/cu13/lib` of the PyPI wheel `nvidia-cuda-nvrtc`), loads it from there first (cudarc
/// then finds it by its soname).
///
/// # Errors
/// [`CudaError::Unavailable`]: `no NVRTC library found (libnvrtc.so.13): ...`, or the library
/// that loaded is of another major version ([`check_major`]).
pub fn detect_nvrtc() -> Result<(), CudaError> {
    // SAFETY: only tries to load the library (its initialisers have no preconditions).
    let mut present = unsafe { rtc_sys::is_culib_present() };
    if !present {
        if let Some(dir) = std::env::var_os("NF_NVRTC_DIR") {
            preload_nvrtc_from(std::path::Path::new(&dir));
            // SAFETY: as above.
            present = unsafe { rtc_sys::is_culib_present() };
        }
    }
    if !present {
        return Err(CudaError::Unavailable(
            "no NVRTC library found (libnvrtc.so.13): install the CUDA 13 toolkit or the PyPI \
             wheel `nvidia-cuda-nvrtc` (13.0) and put its nvidia/cu13/lib on LD_LIBRARY_PATH \
             (or set NF_NVRTC_DIR to it)"
                .to_string(),
        ));
    }
    let (major, minor) = nvrtc_version()?;
    check_major("NVRTC", &format!("{major}.{minor}"), major, "libnvrtc")
}

/// Loads the NVRTC files of `dir` (the builtins first: libnvrtc loads them by name) for the life
/// of the process.
fn preload_nvrtc_from(dir: &std::path::Path) {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.retain(|p| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        n.starts_with("libnvrtc") && n.contains(".so") && !n.contains(".alt.")
    });
    names.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
    for p in names {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // SAFETY: as in `detect_nvrtc`; the library stays loaded for the life of the process.
        if let Ok(lib) = unsafe { Library::open(Some(&p), RTLD_NOW | RTLD_GLOBAL) } {
            std::mem::forget(lib);
        }
    }
}

/// Checks, without panicking, that cuBLAS can be loaded and is CUDA 13's.
///
/// # Errors
/// [`CudaError::Unavailable`]: `no cuBLAS library found (libcublas.so.13): ...`, or the library
/// that loaded is of another major version ([`check_major`]).
pub fn detect_cublas() -> Result<(), CudaError> {
    // SAFETY: only tries to load the library.
    if !unsafe { blas_sys::is_culib_present() } {
        return Err(CudaError::Unavailable(
            "no cuBLAS library found (libcublas.so.13): install the CUDA 13 toolkit or the \
             PyPI wheel `nvidia-cublas` and put its lib directory on LD_LIBRARY_PATH"
                .to_string(),
        ));
    }
    let (major, minor, patch) = cublas_version()?;
    check_major(
        "cuBLAS",
        &format!("{major}.{minor}.{patch}"),
        major,
        "libcublas",
    )
}

/// A failed driver call, named, with the driver's own name of the error.
pub(crate) fn drv_err(what: &str, e: drv::DriverError) -> CudaError {
    let name = e.error_string().map(|s| s.to_string_lossy().into_owned());
    failed(format!(
        "{what}: {:?}{}",
        e.0,
        name.map(|n| format!(" ({n})")).unwrap_or_default()
    ))
}

/// Checks that the driver, a device with ordinal `ordinal`, NVRTC and cuBLAS are all
/// available, without panicking, and describes the device.
///
/// # Errors
/// [`CudaError::Unavailable`] saying what is missing: `no CUDA driver found (libcuda.so): ...`,
/// `no usable CUDA driver (cuInit failed) ...`, `no CUDA device found`, `no CUDA device N`, or
/// the errors of [`detect_nvrtc`] and [`detect_cublas`]; [`CudaError::Failed`] when a device
/// query fails.
pub fn detect(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    detect_driver()?;
    drv::init().map_err(|e| {
        CudaError::Unavailable(
            drv_err("no usable CUDA driver (cuInit failed)", e)
                .message()
                .to_string(),
        )
    })?;
    let count = drv::device::get_count().map_err(|e| drv_err("cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err(CudaError::Unavailable("no CUDA device found".to_string()));
    }
    if ordinal >= count as usize {
        return Err(CudaError::Unavailable(format!(
            "no CUDA device {ordinal} (found {count} device{})",
            if count == 1 { "" } else { "s" }
        )));
    }
    detect_nvrtc()?;
    detect_cublas()?;
    let dev = drv::device::get(ordinal as i32).map_err(|e| drv_err("cuDeviceGet", e))?;
    let attr = |a| {
        // SAFETY: `dev` is a valid device handle.
        unsafe { drv::device::get_attribute(dev, a) }
            .map_err(|e| drv_err("cuDeviceGetAttribute", e))
    };
    use drv_sys::CUdevice_attribute as A;
    let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let sms = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    // SAFETY: `dev` is a valid device handle.
    let total =
        unsafe { drv::device::total_mem(dev) }.map_err(|e| drv_err("cuDeviceTotalMem", e))?;
    let name = drv::device::get_name(dev).map_err(|e| drv_err("cuDeviceGetName", e))?;
    Ok(DeviceInfo {
        name,
        compute_capability: (major, minor),
        total_bytes: total as u64,
        multiprocessors: sms.max(1) as u32,
    })
}

/// The NVRTC version (major, minor).
///
/// # Errors
/// [`CudaError::Failed`] when the library reports an error (call [`detect_nvrtc`] first:
/// cudarc panics when the library is missing).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { rtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| failed(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// The cuBLAS version (major, minor, patch).
///
/// # Errors
/// [`CudaError::Failed`] when the library reports an error (call [`detect_cublas`] first).
pub fn cublas_version() -> Result<(i32, i32, i32), CudaError> {
    use blas_sys::libraryPropertyType as P;
    let get = |p| {
        let mut v = 0;
        // SAFETY: a plain out-parameter; no handle is needed.
        unsafe { blas_sys::cublasGetProperty(p, &mut v) }
            .result()
            .map(|()| v)
            .map_err(|e| failed(format!("cublasGetProperty: {e:?}")))
    };
    Ok((
        get(P::MAJOR_VERSION)?,
        get(P::MINOR_VERSION)?,
        get(P::PATCH_LEVEL)?,
    ))
}

/// The CUDA driver API version the driver supports (major, minor), e.g. (13, 0).
///
/// # Errors
/// [`CudaError::Failed`] when the driver reports an error (call [`detect_driver`] first).
pub fn driver_version() -> Result<(i32, i32), CudaError> {
    let mut v = 0;
    // SAFETY: a plain out-parameter.
    unsafe { drv_sys::cuDriverGetVersion(&mut v) }
        .result()
        .map_err(|e| drv_err("cuDriverGetVersion", e))?;
    Ok((v / 1000, (v % 1000) / 10))
}

/// The files of the CUDA libraries this process has mapped (from `/proc/self/maps`): the
/// driver (`libcuda`), NVRTC (`libnvrtc`, `libnvrtc-builtins`) and cuBLAS (`libcublas`,
/// `libcublasLt`), each once, in the order they appear. Empty where the platform has no
/// `/proc`.
pub fn mapped_cuda_libraries() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or("");
        let ours = ["libcuda.so", "libnvrtc", "libcublas"]
            .iter()
            .any(|p| name.starts_with(p));
        if ours && !out.iter().any(|o| o == path) {
            out.push(path.to_string());
        }
    }
    out
}

/// One line naming what the backend would run on: the device, the CUDA driver, NVRTC and
/// cuBLAS versions, and the library files the process loaded for them (they may come from a
/// CUDA toolkit or from the pip wheels PyTorch brings).
///
/// # Errors
/// What [`detect`] reports when a piece is missing, or a version query that failed.
pub fn preflight(ordinal: usize) -> Result<String, CudaError> {
    let info = detect(ordinal)?;
    let (dmaj, dmin) = driver_version()?;
    let (nmaj, nmin) = nvrtc_version()?;
    let (bmaj, bmin, bpatch) = cublas_version()?;
    let libs = mapped_cuda_libraries();
    Ok(format!(
        "preflight: {} (sm_{}{}, {} SMs, {:.1} GiB); CUDA driver API {dmaj}.{dmin}, NVRTC \
         {nmaj}.{nmin}, cuBLAS {bmaj}.{bmin}.{bpatch}; files: {}",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.multiprocessors,
        info.total_bytes as f64 / f64::from(1u32 << 30),
        if libs.is_empty() {
            "(no /proc/self/maps)".to_string()
        } else {
            libs.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_driver_reports_instead_of_panicking() {
        match detect_driver() {
            Ok(()) => println!("CUDA driver found ({})", DRIVER_LIBRARY_NAMES.join(" or ")),
            Err(CudaError::Unavailable(e)) => {
                assert!(
                    e.starts_with("no CUDA driver found (libcuda.so): "),
                    "unexpected message: {e}"
                );
                // Written straight to the stderr handle: the test harness captures `println!`
                // and `eprintln!` of passing tests, and a skip must be visible in CI logs.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: no CUDA driver ({e})");
            }
            Err(e @ CudaError::Failed(_)) => panic!("a missing driver is not a failure: {e:?}"),
        }
    }

    /// A CUDA 12 library that cudarc found first (an unversioned `libnvrtc.so` of a CUDA 12
    /// toolkit earlier on the path) is "unavailable", not used with CUDA 13's bindings.
    #[test]
    fn another_major_version_is_unavailable() {
        check_major("NVRTC", "13.0", 13, "libnvrtc").unwrap();
        let e = check_major("NVRTC", "12.4", 12, "libnvrtc").unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        let m = e.message();
        assert!(
            m.starts_with("NVRTC 12.4 was loaded (") && m.contains("built for CUDA 13"),
            "{m}"
        );
        assert!(!m.contains('\n'));
        let e = check_major("cuBLAS", "14.0.1", 14, "libcublas").unwrap_err();
        assert!(e.is_unavailable() && e.message().starts_with("cuBLAS 14.0.1 was loaded"));
    }
}
