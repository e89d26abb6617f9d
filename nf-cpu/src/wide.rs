//! Wider vectors for the element-wise kernels without a `target-cpu` build flag: [`wide`] runs
//! a closure inside a copy of a function compiled for AVX-512 (or AVX2 + FMA), so the loops
//! inlined into the closure vectorise with 16 (8) lanes instead of SSE2's 4. The arithmetic is
//! the same operations in the same order (no fused multiply-add is introduced by the compiler),
//! so results do not depend on the instruction set.
use crate::isa::{avx2_fn, avx512_fn, Isa};

/// Run `f` compiled for `isa` (the kernel's [`Pool::isa`](crate::Pool::isa)).
///
/// # Panics
/// If the CPU cannot run `isa` ([`Isa::available`]).
#[inline(always)]
pub fn wide<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        avx512_fn! {
            /// # Safety
            /// The CPU must run [`Isa::Avx512`].
            unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
        }
        avx2_fn! {
            /// # Safety
            /// The CPU must run [`Isa::Avx2`].
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
        }
        match isa.f32_kernels() {
            Isa::Avx512 => {
                isa.check();
                // SAFETY: `check` verified that the CPU runs `isa`, which has every feature
                // `avx512` enables (`Avx512Bf16` includes all of `Avx512`'s).
                return unsafe { avx512(f) };
            }
            Isa::Avx2 => {
                isa.check();
                // SAFETY: `check` verified that the CPU has every feature `avx2` enables.
                return unsafe { avx2(f) };
            }
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    isa.check();
    f()
}
