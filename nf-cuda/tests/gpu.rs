//! The CUDA backend on a GPU, compared with nf-core's reference backend: every op on random
//! shapes, whole training steps, and the device memory the driver reports against the plan.
//! Skipped, with a visible message, where there is no CUDA driver or device (or no NVRTC or
//! cuBLAS library), unless `NF_REQUIRE_GPU=1`: then a missing piece fails every test (the GPU
//! check sets it, so a machine without a usable GPU cannot pass it).
use std::io::Write;

use nf_conformance::{conformance_suite, Subject, Tol};
use nf_core::backend::Backend;
use nf_core::plan::{Mode, PlanOptions};
use nf_core::probe::KernelCall;
use nf_core::region::Region;
use nf_cuda::{CudaBackend, CudaError, CudaOptions};

/// Print a line straight to stderr (the harness captures `println!` of passing tests; these
/// lines are the evidence in CI logs).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The CUDA engine on the GPU: reductions split into at most `parts` partial sums (`None`:
/// the default), waiting after every call when `sync_each` (with `NF_CUDA_SYNC_EACH=1` in the
/// environment every subject does: the engine keeps it on), convolution workspace of `chunk`
/// samples.
struct Gpu {
    parts: Option<usize>,
    sync_each: bool,
    chunk: usize,
}

impl Subject for Gpu {
    type B<'a> = CudaBackend;
    fn name(&self) -> String {
        format!(
            "CUDA GPU parts {:?} sync each {} chunk {}",
            self.parts, self.sync_each, self.chunk
        )
    }
    /// FP32 cuBLAS sums in another order than the reference: 1e-5 of the output scale per
    /// op (2e-5 for batch norm's reductions); 1e-4 after whole steps.
    fn tol(&self) -> Tol {
        Tol {
            gemm: 1e-5,
            bn: 2e-5,
            exact: 1e-5,
            steps: 1e-4,
        }
    }
    /// The worst error per output, printed by every op test (evidence in the CI log).
    fn error_table(&self) -> bool {
        true
    }
    fn workspace(&self, k: &KernelCall) -> usize {
        nf_cuda::workspace_floats(k, self.chunk)
    }
    fn backend<'a>(&'a self, arena: &'a mut [f32]) -> CudaBackend {
        let mut be = backend(arena.len(), CudaOptions::default())
            .unwrap_or_else(|| panic!("the GPU went away between two tests"));
        if let Some(p) = self.parts {
            be.set_max_parts(p);
        }
        be.set_sync_each(self.sync_each);
        be
    }
}

/// The GPU subjects, none (after saying why) without a usable GPU.
fn gpu_subjects() -> Vec<Gpu> {
    let Some(be) = backend(1024, CudaOptions::default()) else {
        return Vec::new();
    };
    let info = be.device().info().clone();
    say(&format!(
        "GPU: {} (sm_{}{}, {} SMs, {:.1} GiB)",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.multiprocessors,
        info.total_bytes as f64 / f64::from(1u32 << 30)
    ));
    vec![
        Gpu {
            parts: None,
            sync_each: false,
            chunk: 4,
        },
        Gpu {
            parts: Some(3),
            sync_each: true,
            chunk: 1,
        },
    ]
}

conformance_suite!(gpu_subjects());

/// Say why the test is skipped, or fail when `NF_REQUIRE_GPU=1`.
fn skip(why: &str) {
    assert!(
        !nf_cuda::gpu_required(),
        "{}=1 but the GPU tests cannot run: {why}",
        nf_cuda::REQUIRE_GPU_ENV
    );
    say(&format!("skipped: no CUDA device ({why})"));
}

/// The backend, or `None` after printing why the test is skipped: no usable GPU is a skip,
/// a GPU that fails is a failure (told apart by the error's kind, not its text).
fn backend(arena: usize, opts: CudaOptions) -> Option<CudaBackend> {
    match CudaBackend::new(arena, &opts) {
        Ok(be) => Some(be),
        Err(CudaError::Unavailable(why)) => {
            skip(&why);
            None
        }
        Err(e) => panic!("a CUDA device is present but the backend failed: {e}"),
    }
}

mod bf16_common;

/// bf16 GEMM operands on the GPU (`nf train --device cuda --precision bf16`): the operands
/// rounded by `nf_round_bf16`, the products by `cublasGemmStridedBatchedEx` (bf16 inputs, f32
/// output and compute: tensor cores), held to the f32 reference within `(2⁻⁷ + 10⁻⁴)·Σ|a||b|`
/// and to the reference on bf16-rounded inputs within `10⁻⁴·Σ|a||b|`, as on the emulated
/// device (`tests/emulated_bf16.rs`).
#[test]
fn gpu_bf16_gemms_match_the_reference_on_rounded_operands() {
    if backend(1024, CudaOptions::default()).is_none() {
        return;
    }
    let make = |p, align| {
        let mut be = backend(bf16_common::ARENA, CudaOptions::default())
            .unwrap_or_else(|| panic!("the GPU went away between two tests"));
        be.set_region_align(align);
        be.set_gemm_precision(p);
        be
    };
    bf16_common::check_convolutions(make, |_, _, _| {});
    bf16_common::check_linear(make, |_| {});
}

/// The device, the CUDA driver, NVRTC and cuBLAS versions, and the library files loaded for
/// them (the GPU check prints this line first).
#[test]
fn gpu_preflight() {
    match nf_cuda::preflight(0) {
        Ok(line) => {
            say(&line);
            for lib in ["libcuda", "libnvrtc", "libcublas"] {
                assert!(
                    line.contains(lib),
                    "{lib} is not among the mapped files: {line}"
                );
            }
        }
        Err(CudaError::Unavailable(why)) => skip(&why),
        Err(e) => panic!("a CUDA device is present but the preflight failed: {e}"),
    }
}

/// VGG-11 under 256 MiB (NeuroFlux plan, first block): the driver's count of what the backend
/// took (kernels, cuBLAS, the allocation) after a few steps, against the plan.
#[test]
fn gpu_memory_matches_the_plan() {
    let budget = 256u64 << 20;
    let info = match nf_cuda::detect(0) {
        Ok(info) => info,
        Err(CudaError::Unavailable(why)) => return skip(&why),
        Err(e) => panic!("a CUDA device is present but its detection failed: {e}"),
    };
    // The cuBLAS workspace nf train gives this GPU under this budget.
    let opts = CudaOptions::for_device(&info, budget);
    let o = PlanOptions {
        reserve: nf_cuda::reserved_bytes(&opts),
        ..PlanOptions::DEFAULT
    };
    let policy = nf_cuda::ChunkPolicy::DEFAULT;
    let p = nf_conformance::settled_plan(
        &nf_core::zoo::VGG11,
        Mode::NeuroFlux,
        Some(budget),
        &o,
        |k| policy.need(k),
    );
    let Some(mut be) = backend(p.peak_floats(), opts) else {
        return;
    };
    let l = p.layout(0);
    nf_core::step::init_block(&mut be, &l, &mut nf_core::rng::Rng::new(1)).unwrap();
    let n = l.batch;
    let x: Vec<f32> = (0..n * 3 * 32 * 32).map(|i| (i % 7) as f32 * 0.1).collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
    be.write(l.input.prefix(x.len()), &x);
    be.write(l.labels.prefix(n), &y);
    let mut stats = vec![nf_core::step::SegStats::default(); l.n_segments()];
    let opt = nf_core::optim::Sgd::default();
    // One warm-up step (cuBLAS picks its kernels), then 5 timed steps; reading the scores
    // waits for the queued work.
    nf_core::step::train_step(&mut be, &l, n, &opt, 0.05, &mut stats).unwrap();
    nf_core::step::collect_scores(&mut be, &mut stats);
    let t = std::time::Instant::now();
    for _ in 0..5 {
        nf_core::step::train_step(&mut be, &l, n, &opt, 0.05, &mut stats).unwrap();
    }
    nf_core::step::collect_scores(&mut be, &mut stats);
    let secs = t.elapsed().as_secs_f64();
    let m = be.memory();
    let planned = p.peak_bytes() + nf_cuda::reserved_bytes(&opts);
    say(&format!(
        "GPU memory, VGG-11 block 0 at batch {n}: allocation {} B <= plan {planned} B <= budget          {budget} B; driver-seen peak beyond the context {} B ({:.0} images/s after warm-up)",
        m.allocation_bytes,
        m.peak_bytes,
        5.0 * n as f64 / secs
    ));
    assert!(m.allocation_bytes <= planned && planned <= budget);
    let mut out = vec![0f32; 4];
    be.read(Region::new(0, 4), &mut out);
    be.sync().unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
}

/// Without a driver (or device), creating the backend is a one-line "unavailable" error, never
/// a panic.
#[test]
fn no_device_is_a_one_line_error() {
    match CudaBackend::new(1024, &CudaOptions::default()) {
        Ok(be) => say(&format!(
            "CUDA device present: {} (this test checks the error path only without one)",
            be.device().info().name
        )),
        Err(CudaError::Unavailable(e)) => {
            assert!(!e.contains('\n'), "multi-line error: {e}");
            say(&format!("CudaBackend::new without a GPU: {e}"));
        }
        Err(e) => panic!("a CUDA device is present but the backend failed: {e}"),
    }
}

/// NCCL in a world of one (the `nccl` feature; the GPU check runs this test alone, with
/// `NF_REQUIRE_NCCL=1`, as its NCCL smoke run: two ranks cannot share one GPU under NCCL). A
/// communicator on the backend's GPU and stream averages a region of the arena in place (the
/// mean of one rank is its own values) and reduces and broadcasts host buffers through the
/// device. Without NCCL: skipped with the one-line refusal, or failed under `NF_REQUIRE_NCCL=1`.
#[cfg(feature = "nccl")]
#[test]
fn nccl_world_of_one() {
    use nf_core::collective::Collective;
    use nf_cuda::nccl;
    let required = std::env::var("NF_REQUIRE_NCCL").is_ok_and(|v| v == "1");
    let version = match nccl::nccl_version() {
        Ok(v) => v,
        Err(e) => {
            assert!(!required, "NF_REQUIRE_NCCL=1 but NCCL cannot be used: {e}");
            assert!(!e.message().contains('\n'), "{e}");
            return say(&format!("skipped: no NCCL ({e})"));
        }
    };
    let Some(mut be) = backend(4096, CudaOptions::default()) else {
        return;
    };
    let id = nccl::unique_id().expect("an NCCL id");
    let mut comm = nccl::Nccl::new(&be, 0, 1, &id).expect("an NCCL communicator of one");
    assert_eq!((comm.rank(), comm.world()), (0, 1));
    // In the arena, on the backend's stream: written by the backend, averaged, read back.
    let r = Region::new(100, 1000);
    let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    be.write(r, &x);
    assert!(comm.all_reduce_mean_in_arena(r).expect("the in-arena mean"));
    let mut back = vec![0f32; 1000];
    be.read(r, &mut back);
    be.sync().unwrap();
    assert_eq!(back, x);
    // A region past the arena is refused, not reduced.
    assert!(comm
        .all_reduce_mean_in_arena(Region::new(4000, 1 << 30))
        .is_err());
    // Host buffers through the device.
    let mut s = vec![1.5f32, -2.0, 3.25];
    comm.all_reduce_sum(&mut s).unwrap();
    assert_eq!(s, [1.5, -2.0, 3.25]);
    let mut st = vec![10.0f64, 0.125];
    comm.all_reduce_stats(&mut st).unwrap();
    assert_eq!(st, [10.0, 0.125]);
    let mut b = *b"neuroflux";
    comm.broadcast(&mut b, 0).unwrap();
    assert_eq!(&b, b"neuroflux");
    say(&format!(
        "nccl: NCCL {}.{}.{}, a world of one on {}: in-arena mean, all-reduce and broadcast ok",
        version.0,
        version.1,
        version.2,
        be.device().info().name
    ));
}
