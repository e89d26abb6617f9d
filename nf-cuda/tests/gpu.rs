//! The CUDA backend on a GPU, compared with nf-core's reference backend: every op on random
//! shapes, whole training steps, and the device memory the driver reports against the plan.
//! Skipped, with a visible message, where there is no CUDA driver or device (or no NVRTC or
//! cuBLAS library).
mod common;

use common::{check_all_ops, check_training, say, TINY, TINY_RES};
use nf_core::backend::Backend;
use nf_core::layout::SegMode;
use nf_core::plan::{plan, Mode, PlanOptions};
use nf_core::region::Region;
use nf_core::zoo::VGG11;
use nf_cuda::{CudaBackend, CudaOptions};

/// The backend, or `None` after printing why the test is skipped.
fn backend(arena: usize, opts: CudaOptions) -> Option<CudaBackend> {
    if let Err(e) = nf_cuda::probe(opts.ordinal) {
        say(&format!("skipped: no CUDA device ({e})"));
        return None;
    }
    match CudaBackend::new(arena, &opts) {
        Ok(be) => Some(be),
        Err(e) => panic!("a CUDA device is present but the backend failed: {e}"),
    }
}

#[test]
fn gpu_ops_match_the_reference() {
    let cap = 1 << 16;
    let Some(mut be) = backend(cap, CudaOptions::default()) else {
        return;
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
    // FP32 cuBLAS sums in another order than the reference: 1e-5 of the output scale.
    let report = check_all_ops(&mut be, cap, 40, 1e-5, 1);
    report.print("GPU kernels vs nf-core reference (40 random shapes per op)");
    be.set_max_parts(3);
    let report = check_all_ops(&mut be, cap, 10, 1e-5, 3);
    report.print("GPU kernels vs reference, reductions split into 3 partials");
}

#[test]
fn gpu_training_steps_match_the_reference() {
    let cap = 1 << 16;
    let Some(mut be) = backend(cap, CudaOptions::default()) else {
        return;
    };
    let cases = [
        ("tiny VGG, local", &TINY, SegMode::Local, 0, 1, 1),
        ("tiny VGG, bp, 3 workers", &TINY, SegMode::Global, 0, 1, 3),
        (
            "tiny ResNet, local, 2 workers",
            &TINY_RES,
            SegMode::Local,
            0,
            2,
            2,
        ),
        ("tiny ResNet, bp", &TINY_RES, SegMode::Global, 0, 2, 1),
    ];
    for (name, model, mode, first, last, workers) in cases {
        let (state, loss) = check_training(&mut be, cap, model, mode, first, last, workers, 3);
        say(&format!(
            "GPU training, {name}: 3 steps + eval: state error {state:.2e}, loss error {loss:.2e}"
        ));
        assert!(state < 1e-4 && loss < 1e-4, "{name}: {state} {loss}");
    }
}

/// VGG-11 under 256 MiB (NeuroFlux plan, first block): the driver's count of what the backend
/// took (kernels, cuBLAS, the allocation) after a few steps, against the plan.
#[test]
fn gpu_memory_matches_the_plan() {
    let budget = 256u64 << 20;
    let opts = CudaOptions::default();
    if let Err(e) = nf_cuda::probe(0) {
        say(&format!("skipped: no CUDA device ({e})"));
        return;
    }
    let p = plan(
        &VGG11,
        VGG11.input,
        10,
        budget - nf_cuda::reserved_bytes(&opts),
        Mode::NeuroFlux,
        &PlanOptions {
            workers: nf_cuda::PLAN_WORKERS,
            ..PlanOptions::DEFAULT
        },
    )
    .expect("VGG-11 plans under 256 MiB");
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
    let t = std::time::Instant::now();
    for _ in 0..5 {
        nf_core::step::train_step(&mut be, &l, n, &opt, 0.05, &mut stats).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let m = be.memory();
    say(&format!(
        "GPU memory, VGG-11 block 0 at batch {n}: plan {} B, allocation {} B, driver-measured peak {} B ({:.0} images/s)",
        p.peak_bytes(),
        m.allocation_bytes,
        m.peak_bytes,
        5.0 * n as f64 / secs
    ));
    assert!(m.allocation_bytes <= budget);
    let mut out = vec![0f32; 4];
    be.read(Region::new(0, 4), &mut out);
    be.sync().unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
}

/// Without a driver (or device), creating the backend is a one-line error, never a panic.
#[test]
fn no_device_is_a_one_line_error() {
    match CudaBackend::new(1024, &CudaOptions::default()) {
        Ok(be) => say(&format!(
            "CUDA device present: {} (this test checks the error path only without one)",
            be.device().info().name
        )),
        Err(e) => {
            assert!(!e.contains('\n'), "multi-line error: {e}");
            assert!(
                e.starts_with("no CUDA driver found (libcuda.so)")
                    || e.starts_with("no CUDA device")
                    || e.starts_with("no NVRTC library found")
                    || e.starts_with("no cuBLAS library found")
                    || e.starts_with("no usable CUDA driver"),
                "unexpected error: {e}"
            );
            say(&format!("CudaBackend::new without a GPU: {e}"));
        }
    }
}
