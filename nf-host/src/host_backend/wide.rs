//! Wider vectors for the element-wise kernels without a `target-cpu` build flag: [`wide`] runs
//! a closure inside a copy of a function compiled for AVX-512 (or AVX2 + FMA) when the CPU has
//! it, so the loops inlined into the closure vectorise with 16 (8) lanes instead of SSE2's 4.
//! The arithmetic is the same operations in the same order (no fused multiply-add is introduced
//! by the compiler), so results do not depend on the instruction set.

/// Instruction sets [`wide`] chooses between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Avx512,
    Avx2,
    Base,
}

fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Base
}

/// Run `f` compiled for the widest vector instructions this CPU has.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level() {
            // SAFETY: the features these copies are compiled for were detected at run time.
            Level::Avx512 => return unsafe { avx512(f) },
            Level::Avx2 => return unsafe { avx2(f) },
            Level::Base => {}
        }
    }
    f()
}
