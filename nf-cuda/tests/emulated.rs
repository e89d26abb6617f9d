//! The CUDA backend's kernels and host logic, run on the CPU: the kernel sources compiled by
//! the host C++ compiler under `kernels/host_shim.h`, cuBLAS replaced by a column-major
//! reference with cuBLAS's semantics, compared with nf-core's reference backend.
use std::io::Write;

use nf_conformance::{conformance_suite, Subject, Tol};
use nf_core::backend::Backend;
use nf_core::layout::SegMode;
use nf_core::ops::conv2d::ConvGeom;
use nf_core::probe::KernelCall;
use nf_core::region::Region;
use nf_cuda::emu::{EmuBackend, EmuOptions};

/// Arena of the tests here that build their own backend.
const CAPACITY: usize = 1 << 16;

/// Print a line straight to stderr (the harness captures `println!` of passing tests; these
/// lines are the evidence in CI logs).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn backend(opts: EmuOptions) -> EmuBackend {
    EmuBackend::emulated(CAPACITY, opts).unwrap_or_else(|e| {
        panic!("cannot build the emulated kernels (a host C++ compiler is required): {e}")
    })
}

/// The emulated engine: launch options, reductions split into at most `parts` partial sums
/// per channel (`None`: the engine's default), and a convolution workspace of `chunk` samples
/// (plus half a sample to spare when `spare`).
struct Emu {
    opts: EmuOptions,
    parts: Option<usize>,
    chunk: usize,
    spare: bool,
}

impl Subject for Emu {
    type B<'a> = EmuBackend;
    fn name(&self) -> String {
        format!(
            "CUDA emulated {:?} parts {:?} chunk {} spare {}",
            self.opts, self.parts, self.chunk, self.spare
        )
    }
    /// FP32 GEMMs and reductions in another order than the reference: 2e-5 of each buffer's
    /// scale per op; 1e-4 after whole steps.
    fn tol(&self) -> Tol {
        Tol {
            gemm: 2e-5,
            bn: 2e-5,
            exact: 2e-5,
            steps: 1e-4,
        }
    }
    /// The emulated kernels run Small VGG and larger too slowly for every test run.
    fn full_size(&self) -> bool {
        false
    }
    /// The worst error per output, printed by every op test (evidence in the CI log).
    fn error_table(&self) -> bool {
        true
    }
    fn workspace(&self, k: &KernelCall) -> usize {
        let half = match *k {
            KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } if self.spare => {
                nf_cuda::workspace::conv_sample_floats(&g) / 2
            }
            _ => 0,
        };
        nf_cuda::workspace_floats(k, self.chunk) + half
    }
    fn backend<'a>(&'a self, arena: &'a mut [f32]) -> EmuBackend {
        let mut be = EmuBackend::emulated(arena.len(), self.opts).unwrap_or_else(|e| {
            panic!("cannot build the emulated kernels (a host C++ compiler is required): {e}")
        });
        if let Some(p) = self.parts {
            be.set_max_parts(p);
        }
        be
    }
}

/// The ops: threads in launch order with reductions split into at most 3 partial sums per
/// channel (every partial walks several planes) and one sample's workspace; and every launch's
/// blocks and threads in reverse order, one thread per block, the default reduction split and
/// 2.5 samples' workspace (a kernel that depends on the order of its threads, or reads what
/// another thread of the launch writes, gives different results).
fn op_subjects() -> [Emu; 2] {
    [
        Emu {
            opts: EmuOptions::default(),
            parts: Some(3),
            chunk: 1,
            spare: false,
        },
        Emu {
            opts: EmuOptions {
                block: 1,
                max_grid: 3,
                reverse: true,
            },
            parts: None,
            chunk: 2,
            spare: true,
        },
    ]
}

/// Whole steps with convolution chunks of one sample and of 4 (a short last chunk).
fn step_subjects() -> [Emu; 2] {
    [1, 4].map(|chunk| Emu {
        opts: EmuOptions::default(),
        parts: None,
        chunk,
        spare: false,
    })
}

conformance_suite!(ops = op_subjects(), steps = step_subjects());

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
    assert!(
        e.message().contains("cannot hold one sample's columns"),
        "{e}"
    );
    // One element short of a sample; one sample exactly is enough.
    let per = nf_cuda::workspace::conv_sample_floats(&g);
    assert!(per > g.cols_len());
    be.conv_forward(&g, x, w, Region::NONE, y, Region::new(y.end(), per - 1));
    assert!(be.sync().is_err());
    be.conv_forward(&g, x, w, Region::NONE, y, Region::new(y.end(), per));
    be.sync().unwrap();
    // The error is cleared: the backend works again.
    be.fill(y, 2.0);
    be.read(y.prefix(3), &mut out);
    be.sync().unwrap();
    assert_eq!(out, [2.0; 3]);
    // Out-of-arena writes are errors, not panics.
    be.write(Region::new(CAPACITY - 1, 2), &[0.0, 0.0]);
    assert!(be.sync().is_err());
}

/// A training step queues its work and never waits for the host: no download, no wait, one
/// non-blocking error check; the scores wait once, when read. With `set_sync_each` (what
/// `NF_CUDA_SYNC_EACH=1` sets) every launch, GEMM and upload waits, and the results are the
/// same.
#[test]
fn a_step_never_waits_and_sync_each_waits_after_every_call() {
    use nf_core::layout::{BlockLayout, Kernels, Workspace};
    use nf_core::model::MAX_UNITS;
    use nf_core::optim::Sgd;
    use nf_core::step;
    let l0 = |ws| {
        BlockLayout::with_kernels(
            &nf_conformance::TINY,
            nf_conformance::TINY.input,
            3,
            SegMode::Local,
            0,
            1,
            &[5; MAX_UNITS],
            6,
            &Kernels {
                workers: 1,
                workspace: ws,
                ..Kernels::REFERENCE
            },
        )
    };
    let ws = nf_core::probe::block_workspace(&l0(Workspace::Columns), |k| {
        nf_cuda::workspace_floats(k, 6)
    });
    let l = l0(Workspace::Fixed(ws));
    let mut losses = Vec::new();
    for sync_each in [false, true] {
        let mut be = backend(EmuOptions::default());
        be.set_sync_each(sync_each);
        step::init_block(&mut be, &l, &mut nf_core::rng::Rng::new(3)).unwrap();
        let x: Vec<f32> = (0..6 * 2 * 10 * 9).map(|i| (i % 13) as f32 * 0.1).collect();
        be.write(l.input.prefix(x.len()), &x);
        be.write(l.labels.prefix(6), &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
        let before = be.device().profile().clone();
        let mut st = [step::SegStats::default(); 2];
        step::train_step(&mut be, &l, 6, &Sgd::default(), 0.05, &mut st).unwrap();
        let p = be.device().profile().since(&before);
        let calls = p.total_launches() + p.gemms.len() as u64;
        if sync_each {
            assert_eq!(
                p.waits,
                calls + 1,
                "a wait after every call and at the step's end"
            );
        } else {
            assert_eq!((p.waits, p.downloads, p.polls), (0, 0, 1), "{p:?}");
            assert_eq!(st.map(|s| (s.loss, s.correct, s.samples)), [(0.0, 0, 6); 2]);
        }
        let before = be.device().profile().clone();
        step::collect_scores(&mut be, &mut st);
        assert_eq!(be.device().profile().since(&before).downloads, 1);
        assert!(st.iter().all(|s| s.loss > 0.0 && s.samples == 6), "{st:?}");
        // Read and cleared: a second read adds nothing.
        let again = st;
        step::collect_scores(&mut be, &mut st);
        assert_eq!(st, again);
        losses.push(st.map(|s| s.loss));
        say(&format!(
            "emulated step (sync each {sync_each}): {} launches, {} GEMMs, {} waits, {} polls; losses {:?}",
            p.total_launches(),
            p.gemms.len(),
            p.waits,
            p.polls,
            st.map(|s| s.loss)
        ));
    }
    assert_eq!(losses[0], losses[1]);
}

/// The GPU memory test's path (VGG-11 planned for the CUDA backend under 256 MiB, block 0
/// initialised, trained for 6 steps, scores read) on the counting device: every call is
/// accepted (regions, workspace, argument lists), so the GPU test can only fail on the GPU.
#[test]
fn the_gpu_memory_test_path_runs_on_the_counting_device() {
    // The cuBLAS workspace the GPU test gives an A100 (4 MiB) and an H100 (32 MiB).
    for cc in [(8, 0), (9, 0)] {
        let budget = 256 << 20;
        let opts = nf_cuda::CudaOptions {
            cublas_workspace_bytes: nf_cuda::cublas_workspace_bytes(cc, budget),
            ..Default::default()
        };
        let p = vgg11_cuda_plan(budget, nf_cuda::reserved_bytes(&opts));
        assert!(p.peak_bytes() + nf_cuda::reserved_bytes(&opts) <= budget);
        memory_test_path(&p, cc);
    }
}

/// VGG-11 planned for the CUDA backend as `nf train` plans it under `budget` (each block's
/// workspace what its calls need under the default chunk policy).
fn vgg11_cuda_plan(budget: u64, reserve: u64) -> nf_core::plan::Plan<'static> {
    let o = nf_core::plan::PlanOptions {
        reserve,
        ..nf_core::plan::PlanOptions::DEFAULT
    };
    let policy = nf_cuda::ChunkPolicy::DEFAULT;
    nf_conformance::settled_plan(
        &nf_core::zoo::VGG11,
        nf_core::plan::Mode::NeuroFlux,
        Some(budget),
        &o,
        |k| policy.need(k),
    )
}

fn memory_test_path(p: &nf_core::plan::Plan, cc: (i32, i32)) {
    use nf_core::optim::Sgd;
    use nf_core::step;
    let mut be = nf_cuda::ProfileBackend::profiling(p.peak_floats());
    let l = p.layout(0);
    step::init_block(&mut be, &l, &mut nf_core::rng::Rng::new(1)).unwrap();
    let n = l.batch;
    be.write(l.input.prefix(n * 3 * 32 * 32), &vec![0.5; n * 3 * 32 * 32]);
    be.write(l.labels.prefix(n), &vec![1.0; n]);
    let mut stats = vec![step::SegStats::default(); l.n_segments()];
    for _ in 0..6 {
        step::train_step(&mut be, &l, n, &Sgd::default(), 0.05, &mut stats).unwrap();
    }
    step::collect_scores(&mut be, &mut stats);
    let mut out = vec![0f32; 4];
    be.read(Region::new(0, 4), &mut out);
    be.sync().unwrap();
    say(&format!(
        "VGG-11 block 0 under 256 MiB (sm_{}{}) at batch {n} on the counting device: {} launches, {} GEMMs",
        cc.0,
        cc.1,
        be.device().profile().total_launches(),
        be.device().profile().gemms.len()
    ));
}

/// The device's safe calls refuse whatever would reach outside its memory, including offsets
/// whose end overflows, and leave the memory as it was.
#[test]
fn the_device_refuses_accesses_outside_its_memory() {
    use nf_cuda::emu::EmuDevice;
    use nf_cuda::engine::Device;
    use nf_cuda::gemm::{gemm_call, CublasGemm, RowGemm};
    let mut d = EmuDevice::new(64, EmuOptions::default()).unwrap_or_else(|e| {
        panic!("cannot build the emulated kernels (a host C++ compiler is required): {e}")
    });
    d.upload(0, &[1.0; 64]).unwrap();
    for (offset, len) in [(61, 4), (64, 1), (usize::MAX - 1, 4)] {
        let e = d.upload(offset, &vec![2.0; len]).unwrap_err();
        assert!(e.message().contains("past the device memory"), "{e}");
        let e = d.download(offset, &mut vec![0.0; len]).unwrap_err();
        assert!(e.message().contains("past the device memory"), "{e}");
    }
    // C[2x3] = A[2x4] B[4x3] with C at 60: its last elements fall past the memory.
    let g = gemm_call(&RowGemm::single(false, false, 2, 3, 4, 0, 8, 60, 0.0)).unwrap();
    assert!(d
        .gemm(&g)
        .unwrap_err()
        .message()
        .contains("past the memory"));
    let far = CublasGemm { a: usize::MAX, ..g };
    assert!(d
        .gemm(&far)
        .unwrap_err()
        .message()
        .contains("past the memory"));
    let mut all = vec![0f32; 64];
    d.download(0, &mut all).unwrap();
    assert!(all.iter().all(|&v| v == 1.0));
}

/// Whether this machine can reserve `bytes` of address space that it commits only as touched
/// (a zeroed allocation under the kernel's heuristic overcommit).
fn can_reserve(bytes: u64) -> Result<(), String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    if read("/proc/sys/vm/overcommit_memory").trim() == "2" {
        return Err("strict overcommit (vm.overcommit_memory = 2)".into());
    }
    let kib = |key: &str| -> u64 {
        read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let have = (kib("MemTotal:") + kib("SwapTotal:")) << 10;
    if have < bytes + (2 << 30) {
        return Err(format!(
            "{have} bytes of memory and swap, {bytes} to reserve"
        ));
    }
    Ok(())
}

/// A convolution whose input chunk has more than 2^32 elements while its columns are few (a
/// 1x1 convolution with a large stride; the 1x1 stride-2 projections of a ResNet at a large
/// batch have 4x as many input elements as columns): im2col must read the input with 64-bit
/// offsets. One 65537x65537 plane, stride 65536: the four sampled pixels are (0,0), (0,65536),
/// (65536,0) and (65536,65536), the last at element 4295098368 = 2^32 + 131072; 32-bit
/// offsets would read elements 65536 and 131072 for the last two.
#[test]
fn im2col_reads_input_offsets_past_2_pow_32() {
    let side = 65537;
    let g = ConvGeom {
        n: 1,
        c_in: 1,
        h: side,
        w: side,
        c_out: 1,
        k: 1,
        stride: 65536,
        pad: 0,
    };
    assert_eq!((g.h_out(), g.w_out()), (2, 2));
    assert!(g.in_len() as u64 > 1 << 32);
    let x = Region::new(0, g.in_len());
    let w = Region::new(x.end(), g.weight_len());
    let y = Region::new(w.end(), g.out_len());
    let ws = Region::new(y.end(), nf_cuda::workspace::conv_sample_floats(&g));
    let arena = ws.end();
    let bytes = 4 * (arena + nf_cuda::engine::REDUCE_FLOATS) as u64;
    if let Err(why) = can_reserve(bytes) {
        // The test command (NF_REQUIRE_TOOLS=1) runs on machines that can: there a skip fails.
        assert!(
            std::env::var("NF_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "NF_REQUIRE_TOOLS=1: 64-bit im2col offsets need {bytes} bytes of address space ({why})"
        );
        say(&format!(
            "skipped: 64-bit im2col offsets need {bytes} bytes of address space ({why})"
        ));
        return;
    }
    let dev = nf_cuda::emu::EmuDevice::zeroed(
        arena + nf_cuda::engine::REDUCE_FLOATS,
        EmuOptions::default(),
    )
    .unwrap_or_else(|e| panic!("cannot build the emulated kernels: {e}"));
    let mut be = EmuBackend::from_device(dev, arena).unwrap();
    let at = |row: usize, col: usize| Region::new(row * side + col, 1);
    for (pixel, v) in [
        (at(0, 0), 1.0),
        (at(0, 65536), 2.0),
        (at(65536, 0), 3.0),
        (at(65536, 65536), 4.0),
    ] {
        be.write(pixel, &[v]);
    }
    // What 32-bit offsets would read for the last pixel: 2^32 + 131072 wraps to 131072.
    assert_eq!(at(65536, 65536).offset - (1 << 32), 131072);
    be.write(Region::new(131072, 1), &[-99.0]);
    be.write(w, &[1.0]);
    be.conv_forward(&g, x, w, Region::NONE, y, ws);
    let mut out = [0f32; 4];
    be.read(y, &mut out);
    be.sync().unwrap();
    assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
}
