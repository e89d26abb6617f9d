//! A counting global allocator for tests that bound what a call allocates: per thread, the
//! bytes live and their peak, and [`peak_during`] to measure one call.
//!
//! Accounting: `alloc`/`dealloc` count their size. A growing `realloc` is counted as a new
//! block allocated before the old one is freed (the worst case, a copy); a shrinking one as
//! done in place (glibc shrinks in place: it splits a heap chunk or `mremap`s a mapped one).
//! Counters are thread-local (const-initialised `Cell`s, no destructor), so tests running in
//! parallel do not disturb each other. A test binary installs it with
//! `#[global_allocator] static GLOBAL: Counting = Counting;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator (forwards everything to [`System`]).
pub struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn note(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let v = live.get() + delta;
        live.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe
// sizes and never touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (layout.size() as i64, new_size as i64);
        if new > old {
            note(new);
        }
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        match (p.is_null(), new > old) {
            (true, true) => note(-new),
            (true, false) => {}
            (false, true) => note(-old),
            (false, false) => note(new - old),
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes live on this thread at any point
/// during it, beyond those live when it started.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get) - start;
    (r, peak.max(0) as u64)
}
