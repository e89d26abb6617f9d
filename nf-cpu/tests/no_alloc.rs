//! A training step on the fast CPU backend allocates nothing, not even the first one.
//!
//! A counting global allocator wraps the system one. For every zoo model and every mode, at
//! the smallest budget that plans (with two workers), every block's first training step,
//! evaluation and inference run with counting on: they must not allocate, on any thread. The
//! kernels take all their temporaries from the planned workspace; nothing grows on first use.
//! Both GEMM precisions run (`--precision bf16` packs its bf16 operands into the same planned
//! packing buffers).
//!
//! Plans come from `nf_host::run_plan::host_plan`, which sizes the workspace region with
//! `nf_cpu::workspace::floats` for the plan's own calls.
//!
//! It runs without the test harness (`harness = false` in Cargo.toml), as a plain `main`: the
//! harness runs a test on a thread of its own while its main thread keeps the time, and after
//! 60 seconds that thread prints (allocating) "has been running for over 60 seconds", which a
//! loaded machine made land in a counting window. Now nothing else runs while it counts.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nf_core::backend::Backend;
use nf_core::layout::Precision as Storage;
use nf_core::model::MAX_UNITS;
use nf_core::optim::Sgd;
use nf_core::plan::{Mode, PlanError, PlanOptions};
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo;
use nf_cpu::{FastCpuBackend, Pool, Precision};
use nf_host::run_plan::{host_plan, HostKernels};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    first_steps_of_every_zoo_model_do_not_allocate();
    println!("no_alloc: the first steps of every zoo model allocate nothing");
}

fn first_steps_of_every_zoo_model_do_not_allocate() {
    // The counter counts (so that a zero below means something).
    COUNTING.store(true, Ordering::SeqCst);
    let probe = std::hint::black_box(vec![1u8; 16]);
    COUNTING.store(false, Ordering::SeqCst);
    drop(probe);
    assert!(
        ALLOCATIONS.swap(0, Ordering::SeqCst) >= 1,
        "the counting allocator is not in use"
    );
    let pool = Pool::new(2);
    let hk = HostKernels::of(&pool);
    // f32 storage with either GEMM precision, and bf16 storage (bf16 GEMMs).
    for storage in [Storage::F32, Storage::Bf16] {
        let opts = PlanOptions {
            precision: storage,
            ..PlanOptions::DEFAULT
        };
        every_model(&pool, &opts, hk);
    }
}

fn every_model(pool: &Pool, opts: &PlanOptions, hk: HostKernels) {
    let (pool, opts) = (pool, *opts);
    for m in zoo::ALL {
        for mode in [Mode::NeuroFlux, Mode::Ll, Mode::Bp] {
            let needed = match host_plan(m, m.input, 10, 1, mode, &opts, hk) {
                Err(PlanError::BudgetTooSmall { needed }) => needed,
                other => panic!("{}: a 1-byte budget: {other:?}", m.name),
            };
            let p = host_plan(m, m.input, 10, needed, mode, &opts, hk).unwrap();
            for i in 0..p.n_blocks {
                let l = p.layout(i);
                let n = l.batch.min(4);
                let mut arena = vec![0f32; l.floats];
                let s = m.unit_input(p.input, l.first);
                let mut rng = Rng::new(i as u64);
                let x: Vec<f32> = (0..n * s.len()).map(|_| rng.normal()).collect();
                let labels: Vec<f32> = (0..n).map(|j| (j % 10) as f32).collect();
                for prec in Precision::ALL {
                    if opts.precision == Storage::Bf16 && prec == Precision::F32 {
                        continue;
                    }
                    let mut be = FastCpuBackend::with_precision(&mut arena, pool, prec);
                    step::init_block(&mut be, &l, &mut Rng::new(1)).unwrap();
                    be.write(l.input.prefix(x.len()), &x);
                    be.write(l.labels.prefix(n), &labels);
                    let mut st = [SegStats::default(); MAX_UNITS];
                    let opt = Sgd::default();
                    ALLOCATIONS.store(0, Ordering::SeqCst);
                    COUNTING.store(true, Ordering::SeqCst);
                    step::train_step(&mut be, &l, n, &opt, 0.01, &mut st).unwrap();
                    step::eval_step(&mut be, &l, n, &mut st).unwrap();
                    step::infer_step(&mut be, &l, n).unwrap();
                    step::train_step(&mut be, &l, n, &opt, 0.01, &mut st).unwrap();
                    COUNTING.store(false, Ordering::SeqCst);
                    let count = ALLOCATIONS.load(Ordering::SeqCst);
                    assert_eq!(
                        count,
                        0,
                        "{} {mode:?} block {i} (batch {n}, {}, {} storage): {count} \
                         allocations in the first steps",
                        m.name,
                        prec.name(),
                        opts.precision.name()
                    );
                    assert!(st[0].loss.is_finite());
                }
            }
        }
    }
}
