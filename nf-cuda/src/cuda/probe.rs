//! Finding out, without panicking, whether the CUDA pieces are there, and which: the driver,
//! a device, NVRTC and cuBLAS ([`probe`]), their versions, and the library files the process
//! loaded for them ([`preflight`]: they may come from a CUDA toolkit or from the pip wheels
//! PyTorch brings).
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{result as drv, sys as drv_sys};
use cudarc::nvrtc::sys as rtc_sys;

/// What [`probe`] found.
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

/// Checks, without panicking, whether NVRTC can be loaded; when it cannot and `NF_NVRTC_DIR`
/// names a directory holding `libnvrtc.so.13` (such as `nvidia/cu13/lib` of the PyPI wheel
/// `nvidia-cuda-nvrtc`), loads it from there first (cudarc then finds it by its soname).
///
/// # Errors
/// `no NVRTC library found (libnvrtc.so.13): ...`.
pub fn probe_nvrtc() -> Result<(), String> {
    // SAFETY: only tries to load the library (its initialisers have no preconditions).
    if unsafe { rtc_sys::is_culib_present() } {
        return Ok(());
    }
    if let Some(dir) = std::env::var_os("NF_NVRTC_DIR") {
        let dir = std::path::PathBuf::from(dir);
        let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        // The builtins first (libnvrtc loads them by name), then libnvrtc itself.
        names.retain(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("libnvrtc") && n.contains(".so") && !n.contains(".alt.")
        });
        names.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
        for p in names {
            use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
            // SAFETY: as above; the library stays loaded for the life of the process.
            if let Ok(lib) = unsafe { Library::open(Some(&p), RTLD_NOW | RTLD_GLOBAL) } {
                std::mem::forget(lib);
            }
        }
        // SAFETY: as above.
        if unsafe { rtc_sys::is_culib_present() } {
            return Ok(());
        }
    }
    Err(
        "no NVRTC library found (libnvrtc.so.13): install the CUDA 13 toolkit or the PyPI \
         wheel `nvidia-cuda-nvrtc` (13.0) and put its nvidia/cu13/lib on LD_LIBRARY_PATH \
         (or set NF_NVRTC_DIR to it)"
            .to_string(),
    )
}

/// Checks, without panicking, whether cuBLAS can be loaded.
///
/// # Errors
/// `no cuBLAS library found (libcublas.so.13): ...`.
pub fn probe_cublas() -> Result<(), String> {
    // SAFETY: only tries to load the library.
    if unsafe { blas_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(
            "no cuBLAS library found (libcublas.so.13): install the CUDA 13 toolkit or the \
             PyPI wheel `nvidia-cublas` and put its lib directory on LD_LIBRARY_PATH"
                .to_string(),
        )
    }
}

pub(crate) fn drv_err(what: &str, e: drv::DriverError) -> String {
    let name = e.error_string().map(|s| s.to_string_lossy().into_owned());
    format!(
        "{what}: {:?}{}",
        e.0,
        name.map(|n| format!(" ({n})")).unwrap_or_default()
    )
}

/// Checks that the driver, a device with ordinal `ordinal`, NVRTC and cuBLAS are all
/// available, without panicking, and describes the device.
///
/// # Errors
/// One line saying what is missing: `no CUDA driver found (libcuda.so): ...`,
/// `no CUDA device found`, or the errors of [`probe_nvrtc`] and [`probe_cublas`].
pub fn probe(ordinal: usize) -> Result<DeviceInfo, String> {
    crate::probe_driver()?;
    drv::init().map_err(|e| drv_err("no usable CUDA driver (cuInit failed)", e))?;
    let count = drv::device::get_count().map_err(|e| drv_err("cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err("no CUDA device found".to_string());
    }
    if ordinal >= count as usize {
        return Err(format!(
            "no CUDA device {ordinal} (found {count} device{})",
            if count == 1 { "" } else { "s" }
        ));
    }
    probe_nvrtc()?;
    probe_cublas()?;
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
/// When the library reports an error (call [`probe_nvrtc`] first).
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { rtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("nvrtcVersion: {e:?}"))?;
    Ok((major, minor))
}

/// The cuBLAS version (major, minor, patch).
///
/// # Errors
/// When the library reports an error (call [`probe_cublas`] first).
pub fn cublas_version() -> Result<(i32, i32, i32), String> {
    use blas_sys::libraryPropertyType as P;
    let get = |p| {
        let mut v = 0;
        // SAFETY: a plain out-parameter; no handle is needed.
        unsafe { blas_sys::cublasGetProperty(p, &mut v) }
            .result()
            .map(|()| v)
            .map_err(|e| format!("cublasGetProperty: {e:?}"))
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
/// When the driver reports an error (call [`crate::probe_driver`] first).
pub fn driver_version() -> Result<(i32, i32), String> {
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
/// What [`probe`] reports when a piece is missing, or a version query that failed.
pub fn preflight(ordinal: usize) -> Result<String, String> {
    let info = probe(ordinal)?;
    let (dmaj, dmin) = driver_version()?;
    let (nmaj, nmin) = nvrtc_version()?;
    let (bmaj, bmin, bpatch) = cublas_version()?;
    let libs = mapped_cuda_libraries();
    Ok(format!(
        "preflight: {} (sm_{}{}, {} SMs, {:.1} GiB); CUDA driver API {dmaj}.{dmin}, NVRTC          {nmaj}.{nmin}, cuBLAS {bmaj}.{bmin}.{bpatch}; files: {}",
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
