//! Fork-join over a fixed team of threads, and disjoint splitting of one `&mut [f32]` among
//! them. This module, the GEMM (`gemm/`) and `wide.rs` hold all of the fast CPU backend's
//! `unsafe` code.
//!
//! Why not rayon: a rayon job started from outside its pool goes through the pool's global
//! injector queue, which allocates a new block every 63 jobs, and a training step runs far more
//! kernels than that. [`Pool`] needs nothing per job: the caller is worker 0, the other
//! `threads - 1` workers wait on a condition variable, and one job is a borrowed closure that
//! every worker calls with its index. Both sides spin for a few microseconds ([`SPIN`]) before
//! they sleep: a step posts jobs back to back, and a futex wake-up and context switch per job
//! cost more than the spinning (measured: 11% of a bf16 run's samples were the scheduler's). The pool never allocates after [`Pool::new`], and
//! workers keep no memory of their own: kernels take everything they need from the workspace
//! their caller passes (see `workspace.rs`).
//!
//! [`Parts`] and [`Cuts`] hand out disjoint parts of a slice to the workers of one job; each
//! part can be taken once, which is checked at run time, so the interface is safe.
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::isa::{self, Isa};

/// Most threads one pool can have (the size of the claim mask that checks, at run time, that
/// each worker takes its part of a split slice once).
pub const MAX_THREADS: usize = 256;

/// Element-wise loops over fewer values run on the calling thread alone (waking a worker costs
/// a few microseconds; a core streams about 2^15 floats in that time).
const ELEMENTWISE_SERIAL_BELOW: usize = 1 << 16;

/// A borrowed job with its lifetime erased; see [`Pool::run`] for why that is sound.
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync`, so calling it from other threads through a shared reference is
// allowed; the pointer is only dereferenced while `Pool::run` keeps the closure alive.
unsafe impl Send for JobRef {}

struct State {
    /// Incremented for every job; a worker runs a job once per epoch.
    epoch: u64,
    job: Option<JobRef>,
    /// Workers `0..parts` take part in the current job.
    parts: usize,
    /// Workers (other than the caller) still running the current job.
    pending: usize,
    /// Whether a worker's part of the current job panicked.
    panicked: bool,
    shutdown: bool,
}

/// How long a worker waits for the next job, and the caller for its workers, before sleeping.
const SPIN: Duration = Duration::from_micros(50);

/// Spins until `ready()` or [`SPIN`] has passed (the clock read every 64 rounds).
fn spin_until(ready: impl Fn() -> bool) {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN {
            return;
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// The epoch of the latest job (`State::epoch`, mirrored for spinning workers).
    posted: AtomicU64,
    /// `State::pending`, mirrored for a spinning caller.
    left: AtomicUsize,
    /// Signalled when a job is posted (or at shutdown).
    work: Condvar,
    /// Signalled when the last worker finishes a job.
    done: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Jobs run outside the lock, so it is never poisoned by a job; recover regardless.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A team of `threads` workers (the calling thread, worker 0, and `threads - 1` spawned ones)
/// and the instruction set the kernels run on it use.
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    /// Held while a job runs: serialises jobs from several callers.
    caller: Mutex<()>,
    threads: usize,
    isa: Isa,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .field("isa", &self.isa)
            .finish()
    }
}

impl Pool {
    /// A pool of `threads` workers (at least 1, at most [`MAX_THREADS`]) whose kernels use
    /// [`isa::active`] (the best instruction set of this CPU, or `NF_GEMM_ISA`'s); spawns
    /// `threads - 1` OS threads.
    ///
    /// # Panics
    /// If `threads` is 0 or above [`MAX_THREADS`], if `NF_GEMM_ISA` is invalid, or if a thread
    /// cannot be spawned.
    pub fn new(threads: usize) -> Pool {
        Self::with_isa(threads, isa::active())
    }

    /// [`Pool::new`] with the kernels on instruction set `isa` (size their workspaces with
    /// `workspace::floats_for` and this `isa`).
    ///
    /// # Panics
    /// As [`Pool::new`], and if the CPU cannot run `isa`.
    pub fn with_isa(threads: usize, isa: Isa) -> Pool {
        assert!(
            (1..=MAX_THREADS).contains(&threads),
            "a pool needs 1..={MAX_THREADS} threads, not {threads}"
        );
        isa.check();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                epoch: 0,
                job: None,
                parts: 0,
                pending: 0,
                panicked: false,
                shutdown: false,
            }),
            posted: AtomicU64::new(0),
            left: AtomicUsize::new(0),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let handles = (1..threads)
            .map(|id| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("nf-worker-{id}"))
                    .spawn(move || worker(&shared, id))
                    .expect("spawning a worker thread")
            })
            .collect();
        let pool = Pool {
            shared,
            handles,
            caller: Mutex::new(()),
            threads,
            isa,
        };
        // Wait until every worker runs (a thread's start-up may allocate): afterwards the pool
        // allocates nothing.
        pool.run(threads, |_| {});
        pool
    }

    /// Number of workers, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The instruction set of the kernels run on this pool.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The parts an element-wise kernel over `len` values is split into: one below
    /// [`ELEMENTWISE_SERIAL_BELOW`], every worker otherwise.
    pub(crate) fn elementwise_parts(&self, len: usize) -> usize {
        if len < ELEMENTWISE_SERIAL_BELOW {
            1
        } else {
            self.threads
        }
    }

    /// Run `f(w)` for every worker `w` in `0..parts` (`parts` is clamped to `1..=threads`),
    /// worker 0 on the calling thread, and return when all are done. A panic in any part is
    /// re-raised here after every part has finished.
    pub fn run<F>(&self, parts: usize, f: F)
    where
        F: Fn(usize) + Sync,
    {
        let parts = parts.clamp(1, self.threads);
        let _serial = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        if parts == 1 {
            f(0);
            return;
        }
        let job: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: the lifetime of `job` is erased so that worker threads can hold it. It stays
        // valid: `f` lives until this function returns, and the `Wait` guard below (dropped on
        // return and on unwinding) blocks until every worker has finished calling it; a worker
        // never touches a job after decrementing `pending`.
        let job = JobRef(unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(job as *const _)
        });
        {
            let mut st = lock(&self.shared.state);
            st.epoch = st.epoch.wrapping_add(1);
            st.job = Some(job);
            st.parts = parts;
            st.pending = parts - 1;
            st.panicked = false;
            self.shared.left.store(parts - 1, Ordering::Release);
            self.shared.posted.store(st.epoch, Ordering::Release);
        }
        self.shared.work.notify_all();
        let wait = Wait(&self.shared);
        f(0);
        drop(wait);
        let mut st = lock(&self.shared.state);
        st.job = None;
        if std::mem::take(&mut st.panicked) {
            drop(st);
            panic!("a worker thread panicked in a host kernel");
        }
    }
}

/// Blocks until the current job's workers are done (also while unwinding).
struct Wait<'a>(&'a Shared);

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        spin_until(|| self.0.left.load(Ordering::Acquire) == 0);
        let mut st = lock(&self.0.state);
        while st.pending > 0 {
            st = self.0.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn worker(shared: &Shared, id: usize) {
    let mut seen = 0u64;
    loop {
        spin_until(|| shared.posted.load(Ordering::Acquire) != seen);
        let job = {
            let mut st = lock(&shared.state);
            loop {
                if st.shutdown {
                    return;
                }
                if st.epoch != seen {
                    seen = st.epoch;
                    break;
                }
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if id < st.parts {
                st.job
            } else {
                None
            }
        };
        let Some(job) = job else { continue };
        // SAFETY: `Pool::run` keeps the closure alive until `pending` reaches 0, which happens
        // only after this call returns (see `Pool::run`).
        let ok = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(id) })).is_ok();
        let mut st = lock(&shared.state);
        if !ok {
            st.panicked = true;
        }
        st.pending -= 1;
        shared.left.store(st.pending, Ordering::Release);
        if st.pending == 0 {
            shared.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The number of threads to use by default: `std::thread::available_parallelism()` (1 when
/// unknown), at most [`MAX_THREADS`].
pub fn threads() -> usize {
    clamp_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `n` within `1..=MAX_THREADS`.
fn clamp_threads(n: usize) -> usize {
    n.clamp(1, MAX_THREADS)
}

/// Where part `w` of `parts` starts, splitting `units` as evenly as possible.
pub fn part_start(units: usize, parts: usize, w: usize) -> usize {
    // In 128 bits: `units · w` must not overflow.
    (units as u128 * w as u128 / parts as u128) as usize
}

/// One `&mut [T]` (an arena tensor: `f32` unless told) divided among the workers of a job.
///
/// The data is viewed as `outer` rows of `stride` elements; in every row, `units` units of
/// `unit` elements start at the row's beginning. Part `w` of `parts` owns units
/// `part_start(units, parts, w)..part_start(units, parts, w + 1)` of every row. Each part can
/// be [taken](Parts::take) once.
pub struct Parts<'a, T = f32> {
    ptr: *mut T,
    outer: usize,
    stride: usize,
    unit: usize,
    units: usize,
    parts: usize,
    claimed: [AtomicU64; MAX_THREADS / 64],
    _data: PhantomData<&'a mut [T]>,
}

// SAFETY: a `Parts` only hands out disjoint parts (each at most once, enforced by `claimed`),
// so sharing it between threads cannot create aliasing `&mut` views; `T` is `Send`, so its
// values may be reached from another thread.
unsafe impl<T: Send> Sync for Parts<'_, T> {}

impl<'a, T> Parts<'a, T> {
    /// `data` as one row of `units` units of `unit` elements (the common case: samples,
    /// planes, channels), in `parts` parts.
    pub fn new(data: &'a mut [T], unit: usize, units: usize, parts: usize) -> Self {
        let row = unit.checked_mul(units).expect("split layout overflows");
        Self::rows(data, 1, row, unit, units, parts)
    }

    /// `data` as `outer` rows of `stride` elements, each holding `units` units of `unit`
    /// elements, in `parts` parts (the channels of an NCHW tensor: rows are samples).
    ///
    /// # Panics
    /// If the layout does not fit in `data` or `parts` is 0 or above [`MAX_THREADS`].
    pub fn rows(
        data: &'a mut [T],
        outer: usize,
        stride: usize,
        unit: usize,
        units: usize,
        parts: usize,
    ) -> Self {
        assert!(
            (1..=MAX_THREADS).contains(&parts),
            "split into {parts} parts"
        );
        // Checked arithmetic: an overflow must not pass the bound check (the parts are built
        // from these numbers with raw pointers).
        let row = unit.checked_mul(units).expect("split layout overflows");
        assert!(row <= stride || outer <= 1, "units overlap rows");
        let end = match outer {
            0 => Some(0),
            _ => (outer - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(row)),
        };
        assert!(
            end.is_some_and(|e| e <= data.len()),
            "split layout exceeds the slice"
        );
        Parts {
            ptr: data.as_mut_ptr(),
            outer,
            stride,
            unit,
            units,
            parts,
            claimed: Default::default(),
            _data: PhantomData,
        }
    }

    /// Part `w`.
    ///
    /// # Panics
    /// If `w >= parts` or part `w` was already taken.
    pub fn take(&self, w: usize) -> Part<'_, T> {
        assert!(w < self.parts, "part {w} of {}", self.parts);
        let bit = 1u64 << (w % 64);
        let prev = self.claimed[w / 64].fetch_or(bit, Ordering::Relaxed);
        assert!(prev & bit == 0, "part {w} taken twice");
        Part {
            split: self,
            lo: part_start(self.units, self.parts, w),
            hi: part_start(self.units, self.parts, w + 1),
        }
    }
}

/// The units a worker owns in every row of a [`Parts`].
pub struct Part<'s, T = f32> {
    split: &'s Parts<'s, T>,
    lo: usize,
    hi: usize,
}

impl<'s, T> Part<'s, T> {
    /// The units owned (in every row).
    pub fn units(&self) -> std::ops::Range<usize> {
        self.lo..self.hi
    }

    /// The owned units of row `r`, contiguous.
    pub fn row(&mut self, r: usize) -> &mut [T] {
        let s = self.split;
        assert!(r < s.outer, "row {r} of {}", s.outer);
        let start = r * s.stride + self.lo * s.unit;
        let len = (self.hi - self.lo) * s.unit;
        // SAFETY: `Parts::rows` checked that the layout lies inside the borrowed slice; parts
        // own disjoint unit ranges of every row and each part exists once, and this `&mut self`
        // borrow keeps two rows of the same part from being alive at once.
        unsafe { std::slice::from_raw_parts_mut(s.ptr.add(start), len) }
    }

    /// The owned units of a one-row split, for as long as the split is borrowed.
    ///
    /// # Panics
    /// If the split has more than one row.
    pub fn into_slice(self) -> &'s mut [T] {
        let s = self.split;
        assert!(s.outer <= 1, "into_slice on a split of {} rows", s.outer);
        if s.outer == 0 {
            return &mut [];
        }
        let len = (self.hi - self.lo) * s.unit;
        // SAFETY: as in `row`; consuming the part leaves no other way to reach these units.
        unsafe { std::slice::from_raw_parts_mut(s.ptr.add(self.lo * s.unit), len) }
    }
}

/// One `&mut [f32]` cut into consecutive parts of different lengths, one per worker: part `w`
/// is `bounds[w]..bounds[w + 1]`. Each part can be [taken](Cuts::take) once.
pub struct Cuts<'a> {
    ptr: *mut f32,
    bounds: [usize; MAX_THREADS + 1],
    parts: usize,
    claimed: [AtomicU64; MAX_THREADS / 64],
    _data: PhantomData<&'a mut [f32]>,
}

// SAFETY: as for `Parts`: parts are disjoint and each is handed out at most once.
unsafe impl Sync for Cuts<'_> {}

impl<'a> Cuts<'a> {
    /// `data` cut into `parts` consecutive parts from its start, part `w` of `len(w)` elements.
    ///
    /// # Panics
    /// If `parts` is 0 or above [`MAX_THREADS`], or the parts do not fit in `data`.
    pub fn new(data: &'a mut [f32], parts: usize, len: impl Fn(usize) -> usize) -> Self {
        assert!((1..=MAX_THREADS).contains(&parts), "cut into {parts} parts");
        let mut bounds = [0usize; MAX_THREADS + 1];
        for w in 0..parts {
            bounds[w + 1] = bounds[w].checked_add(len(w)).expect("cut lengths overflow");
        }
        assert!(
            bounds[parts] <= data.len(),
            "cuts {:?} do not fit a slice of {}",
            &bounds[..=parts],
            data.len()
        );
        Cuts {
            ptr: data.as_mut_ptr(),
            bounds,
            parts,
            claimed: Default::default(),
            _data: PhantomData,
        }
    }

    /// Part `w` (for as long as the slice was lent to [`Cuts::new`]).
    ///
    /// # Panics
    /// If `w >= parts` or part `w` was already taken.
    pub fn take(&self, w: usize) -> &'a mut [f32] {
        assert!(w < self.parts, "part {w} of {}", self.parts);
        let bit = 1u64 << (w % 64);
        let prev = self.claimed[w / 64].fetch_or(bit, Ordering::Relaxed);
        assert!(prev & bit == 0, "part {w} taken twice");
        let (lo, hi) = (self.bounds[w], self.bounds[w + 1]);
        // SAFETY: `new` made the bounds non-decreasing and checked the last against the slice
        // borrowed for `'a`, so the parts are disjoint sub-slices of it; each is handed out once
        // (the claim bit), and nothing else can reach the slice while `'a` lasts.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(lo), hi - lo) }
    }
}

impl std::fmt::Debug for Cuts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuts")
            .field("bounds", &&self.bounds[..=self.parts])
            .finish()
    }
}

impl<T> std::fmt::Debug for Parts<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("outer", &self.outer)
            .field("stride", &self.stride)
            .field("unit", &self.unit)
            .field("units", &self.units)
            .field("parts", &self.parts)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_and_results_are_disjoint() {
        let pool = Pool::new(3);
        let mut v = vec![0f32; 10];
        for _ in 0..50 {
            let split = Parts::new(&mut v, 1, 10, 3);
            pool.run(3, |w| {
                for x in split.take(w).into_slice() {
                    *x += 1.0 + w as f32;
                }
            });
        }
        let want: Vec<f32> = (0..10)
            .map(|i| 50.0 * (1 + (0..3).find(|&w| part_start(10, 3, w + 1) > i).unwrap()) as f32)
            .collect();
        assert_eq!(v, want);
    }

    #[test]
    fn rows_split_channels() {
        let pool = Pool::new(2);
        // 2 samples x 3 channels x 2 elements.
        let mut v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let split = Parts::rows(&mut v, 2, 6, 2, 3, 2);
        pool.run(2, |w| {
            let mut p = split.take(w);
            for r in 0..2 {
                p.row(r).iter_mut().for_each(|x| *x = w as f32);
            }
        });
        assert_eq!(v, [0., 0., 1., 1., 1., 1., 0., 0., 1., 1., 1., 1.]);
    }

    #[test]
    #[should_panic(expected = "taken twice")]
    fn a_part_cannot_be_taken_twice() {
        let mut v = vec![0f32; 4];
        let split = Parts::new(&mut v, 1, 4, 2);
        let _a = split.take(1);
        let _b = split.take(1);
    }

    #[test]
    fn worker_panics_reach_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(2, |w| {
                if w == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let mut v = vec![0f32; 2];
        let split = Parts::new(&mut v, 1, 2, 2);
        pool.run(2, |w| split.take(w).into_slice()[0] = 1.0);
        assert_eq!(v, [1.0, 1.0]);
    }

    #[test]
    #[should_panic(expected = "split layout")]
    fn an_overflowing_split_layout_is_refused() {
        let mut v = vec![0f32; 4];
        // (outer - 1) · stride wraps around to a small number in unchecked arithmetic.
        let _ = Parts::rows(&mut v, 3, usize::MAX / 2 + 1, 1, 1, 1);
    }

    #[test]
    #[should_panic(expected = "split layout overflows")]
    fn an_overflowing_unit_count_is_refused() {
        let mut v = vec![0f32; 4];
        let _ = Parts::new(&mut v, 1 << 40, 1 << 40, 2);
    }

    #[test]
    fn threads_are_clamped() {
        assert_eq!(clamp_threads(0), 1);
        assert_eq!(clamp_threads(7), 7);
        assert_eq!(clamp_threads(1000), MAX_THREADS);
        assert!((1..=MAX_THREADS).contains(&threads()));
    }

    #[test]
    fn cuts_hand_out_disjoint_parts() {
        let pool = Pool::new(3);
        let mut v = vec![0f32; 9];
        let cuts = Cuts::new(&mut v, 3, |w| [1, 4, 2][w]);
        pool.run(3, |w| cuts.take(w).fill(1.0 + w as f32));
        assert_eq!(v, [1., 2., 2., 2., 2., 3., 3., 0., 0.]);
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn cuts_outside_the_slice_are_refused() {
        let mut v = vec![0f32; 4];
        let _ = Cuts::new(&mut v, 2, |w| [3, 2][w]);
    }
}
