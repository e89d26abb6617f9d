//! The CUDA backend's kernels and host logic, run on the CPU: the kernel sources compiled by
//! the host C++ compiler under `kernels/host_shim.h`, cuBLAS replaced by a column-major
//! reference with cuBLAS's semantics, compared with nf-core's reference backend.
mod common;

use common::{check_all_ops, check_training, say, TINY, TINY_RES};
use nf_core::backend::Backend;
use nf_core::layout::SegMode;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::region::Region;
use nf_cuda::emu::{EmuBackend, EmuOptions};

/// Arena of the op tests (every random case fits).
const CAPACITY: usize = 1 << 16;

fn backend(opts: EmuOptions) -> EmuBackend {
    EmuBackend::emulated(CAPACITY, opts).unwrap_or_else(|e| {
        panic!("cannot build the emulated kernels (a host C++ compiler is required): {e}")
    })
}

/// Every op on random shapes, threads in launch order and with reductions split into at most
/// 3 partial sums per channel (every partial walks several planes).
#[test]
fn every_op_matches_the_reference() {
    let mut be = backend(EmuOptions::default());
    be.set_max_parts(3);
    let report = check_all_ops(&mut be, CAPACITY, 40, 2e-5, 1);
    report.print("emulated kernels vs nf-core reference (40 random shapes per op)");
    let (launches, gemms) = be.device().counts();
    say(&format!(
        "  ({launches} kernel launches, {gemms} cuBLAS-semantics GEMM calls)"
    ));
}

/// The same with every launch's blocks and threads run in reverse order, one thread per block
/// and the default reduction split: a kernel that depends on the order of its threads, or that
/// reads what another thread of the launch writes, gives different results.
#[test]
fn results_do_not_depend_on_thread_order() {
    let mut be = backend(EmuOptions {
        block: 1,
        max_grid: 3,
        reverse: true,
    });
    let report = check_all_ops(&mut be, CAPACITY, 12, 2e-5, 2);
    report.print("emulated kernels, reversed thread order");
}

/// Whole training steps (forward, loss, backward, SGD for every segment), then evaluation,
/// in local-learning and backpropagation modes, with one and three workers' workspace.
#[test]
fn training_steps_match_the_reference() {
    let cap = 1 << 16;
    let mut be = EmuBackend::emulated(cap, EmuOptions::default()).unwrap();
    let cases = [
        ("tiny VGG, local", &TINY, SegMode::Local, 0, 1, 1),
        ("tiny VGG, local, 3 workers", &TINY, SegMode::Local, 0, 1, 3),
        ("tiny VGG, bp", &TINY, SegMode::Global, 0, 1, 1),
        ("tiny ResNet, local", &TINY_RES, SegMode::Local, 0, 2, 1),
        (
            "tiny ResNet, bp, 2 workers",
            &TINY_RES,
            SegMode::Global,
            0,
            2,
            2,
        ),
        (
            "tiny ResNet, block 1..=2",
            &TINY_RES,
            SegMode::Local,
            1,
            2,
            3,
        ),
    ];
    for (name, model, mode, first, last, workers) in cases {
        let (state, loss) = check_training(&mut be, cap, model, mode, first, last, workers, 3);
        say(&format!(
            "emulated training, {name}: 3 steps + eval: params/momentum/BN state error {state:.2e}, loss error {loss:.2e}"
        ));
        assert!(state < 1e-4, "{name}: state error {state}");
        assert!(loss < 1e-4, "{name}: loss error {loss}");
    }
}

/// Errors are recorded, later work is skipped, reads give NaN, and sync reports the first one.
#[test]
fn errors_are_reported_by_sync() {
    let mut be = backend(EmuOptions::default());
    let g = ConvGeom {
        n: 2,
        c_in: 3,
        h: 5,
        w: 5,
        c_out: 4,
        k: 3,
        stride: 1,
        pad: 1,
    };
    let x = Region::new(0, g.in_len());
    let w = Region::new(x.end(), g.weight_len());
    let y = Region::new(w.end(), g.out_len());
    // A workspace smaller than one sample's columns.
    let cols = Region::new(y.end(), g.cols_len() - 1);
    be.fill(Region::new(0, cols.end()), 1.0);
    be.conv_forward(&g, x, w, Region::NONE, y, cols);
    be.fill(y, 2.0);
    let mut out = vec![0f32; 3];
    be.read(y.prefix(3), &mut out);
    assert!(out.iter().all(|v| v.is_nan()));
    let e = be.sync().unwrap_err();
    assert!(e.0.contains("cannot hold one sample's columns"), "{e}");
    // The error is cleared: the backend works again.
    be.fill(y, 2.0);
    be.read(y.prefix(3), &mut out);
    be.sync().unwrap();
    assert_eq!(out, [2.0; 3]);
    // Out-of-arena writes are errors, not panics.
    be.write(Region::new(CAPACITY - 1, 2), &[0.0, 0.0]);
    assert!(be.sync().is_err());
}
