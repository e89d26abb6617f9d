//! Optional accounting of where the GEMMs' time goes (the f32 [`gemm`] and the bf16
//! [`bf16::gemm_mixed`] alike), per thread: time inside GEMM calls, the part of it spent
//! packing operands block by block, and the time of [`pack_a`] / [`pack_b`] (and the bf16
//! ones: operands packed in advance, a convolution's weights). Off unless a thread calls
//! [`start`] with a clock (`benches/efficiency.rs` passes the thread's CPU time); while off,
//! each entry point costs one thread-local read.
//!
//! [`gemm`]: super::gemm
//! [`bf16::gemm_mixed`]: super::bf16::gemm_mixed
//! [`pack_a`]: super::pack_a
//! [`pack_b`]: super::pack_b
use std::cell::Cell;

/// What this thread's GEMM calls cost since [`start`], in the clock's units (nanoseconds for
/// the clocks the benchmarks pass).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Inside [`gemm`](super::gemm) calls, their packing included.
    pub gemm: u64,
    /// Of which packing blocks of operands given as views.
    pub pack: u64,
    /// Inside [`pack_a`](super::pack_a) and [`pack_b`](super::pack_b).
    pub prepack: u64,
    /// [`gemm`](super::gemm) calls.
    pub calls: u64,
    /// Floating-point operations of those calls (`2·m·n·k`).
    pub flop: u64,
}

const ZERO: Counters = Counters {
    gemm: 0,
    pack: 0,
    prepack: 0,
    calls: 0,
    flop: 0,
};

thread_local! {
    static CLOCK: Cell<Option<fn() -> u64>> = const { Cell::new(None) };
    static COUNTS: Cell<Counters> = const { Cell::new(ZERO) };
}

/// Start accounting this thread's GEMM calls with `clock` (any monotonic count, read twice per
/// call and per packed block), from zero.
pub fn start(clock: fn() -> u64) {
    COUNTS.with(|c| c.set(ZERO));
    CLOCK.with(|c| c.set(Some(clock)));
}

/// Stop accounting on this thread and return what was counted since [`start`].
pub fn stop() -> Counters {
    CLOCK.with(|c| c.set(None));
    COUNTS.with(|c| c.replace(ZERO))
}

/// The clock's reading when accounting is on.
#[inline]
pub(super) fn now() -> Option<u64> {
    CLOCK.with(|c| c.get()).map(|f| f())
}

/// Add the time since `t0` (from [`now`]) to the counter `f` picks, and with `flop` one call
/// of that many operations.
#[inline]
pub(super) fn add(t0: Option<u64>, flop: Option<u64>, f: fn(&mut Counters) -> &mut u64) {
    let Some(t0) = t0 else { return };
    let Some(clock) = CLOCK.with(|c| c.get()) else {
        return;
    };
    let dt = clock().saturating_sub(t0);
    COUNTS.with(|c| {
        let mut v = c.get();
        *f(&mut v) += dt;
        if let Some(flop) = flop {
            v.calls += 1;
            v.flop += flop;
        }
        c.set(v);
    });
}

#[cfg(test)]
mod tests {
    use super::super::Operand;
    use super::super::{gemm, pack_a, packed_a_len, scratch_len, GemmScratch, Mat, MatMut};
    use super::*;
    use crate::isa::Isa;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock that advances by one per reading.
    fn ticks() -> u64 {
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed) + 1
    }

    #[test]
    fn counts_calls_flop_and_packing_only_while_on() {
        let isa = Isa::Portable;
        let (m, n, k) = (5, 7, 3);
        let (a, b) = (vec![1f32; m * k], vec![1f32; k * n]);
        let mut c = vec![0f32; m * n];
        let (la, lb) = scratch_len(isa, m, n, k, true, true);
        let (mut sa, mut sb) = (vec![0f32; la], vec![0f32; lb]);
        let mut run = |c: &mut [f32]| {
            gemm(
                isa,
                1.0,
                Operand::View(Mat::rows(&a, m, k)),
                Operand::View(Mat::rows(&b, k, n)),
                0.0,
                &mut MatMut::rows(c, m, n),
                &mut GemmScratch::new(&mut sa, &mut sb),
                k,
            )
        };
        run(&mut c);
        start(ticks);
        run(&mut c);
        run(&mut c);
        let mut packed = vec![0f32; packed_a_len(isa, m, k)];
        pack_a(isa, Mat::rows(&a, m, k), &mut packed);
        let got = stop();
        assert_eq!(got.calls, 2);
        assert_eq!(got.flop, 2 * 2 * (m * n * k) as u64);
        // Each call packs one block of A and one of B, each read between the call's readings.
        assert!(got.pack >= 4 && got.gemm > got.pack, "{got:?}");
        assert!(got.prepack >= 1, "{got:?}");
        run(&mut c);
        assert_eq!(stop(), Counters::default(), "nothing counted while off");
        assert!(c.iter().all(|&v| v == k as f32));
    }
}
