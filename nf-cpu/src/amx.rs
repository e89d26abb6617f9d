//! Intel AMX for the bf16 GEMM: whether this process may use the tile registers, and one
//! safe tile kernel.
//!
//! AMX needs three things beyond the CPU's flags: the tile palette the kernel assumes
//! (8 tiles of 16 rows × 64 bytes), the operating system's support, and this process's
//! permission to use the tile data state, which Linux grants on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, once per process, for every
//! thread). [`missing`] checks all three once and says which is lacking.
//!
//! `Tiles` is the tile configuration loaded on the current thread (released when dropped);
//! `Tiles::product` computes one `16 × 32` f32 tile from operands packed as
//! `gemm::bf16` packs them for AMX. The tile instructions are inline assembly (Rust has no
//! stable AMX intrinsics), reached only through a `Tiles`, which exists only where
//! [`missing`] is `None`.
use crate::bf16::Bf16;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// Rows of the `C` tile (and of the `A` tile).
pub(crate) const ROWS: usize = 16;
/// Columns of the `C` tile: two 16-column tiles side by side.
pub(crate) const COLS: usize = 32;
/// Depth of one step: 16 pairs of depth per tile row.
pub(crate) const DEPTH: usize = 32;

/// What this CPU, operating system or process lacks for AMX (`None`: the tiles may be used).
/// Detected, and the permission requested, once per process.
pub fn missing() -> Option<&'static str> {
    static MISSING: OnceLock<Option<&'static str>> = OnceLock::new();
    *MISSING.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> Option<&'static str> {
    use std::arch::x86_64::__cpuid_count;
    if __cpuid_count(0, 0).eax < 0x1d {
        return Some("amx-tile");
    }
    let l7 = __cpuid_count(7, 0);
    if l7.edx & (1 << 24) == 0 {
        return Some("amx-tile");
    }
    if l7.edx & (1 << 22) == 0 {
        return Some("amx-bf16");
    }
    // Palette 1: 8 tiles of 1024 bytes, 64 bytes and at most 16 rows each.
    let p = __cpuid_count(0x1d, 1);
    if p.eax >> 16 != 1024 || p.ebx & 0xffff != 64 || p.ebx >> 16 < 8 || p.ecx & 0xffff < 16 {
        return Some("amx tile palette 1 (8 tiles of 16 x 64 bytes)");
    }
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;
    let ret: i64;
    // SAFETY: the `arch_prctl` system call with a request that only changes this process's
    // permitted extended states (it reads no memory of ours); the kernel clobbers rcx and r11
    // on `syscall`, declared here. Kernels without dynamic states answer with an error.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    (ret != 0).then_some("permission for the amx tile state (arch_prctl)")
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> Option<&'static str> {
    Some("amx-tile (x86-64 Linux only)")
}

/// The tile configuration of the kernel, loaded on this thread: every tile 16 rows of 64
/// bytes (`tmm0`, `tmm1`: `C`; `tmm2`: `A`; `tmm3`, `tmm4`: `B`). Not `Send`: a
/// configuration belongs to the thread that loaded it. Dropping it releases the tiles.
pub(crate) struct Tiles {
    _thread: PhantomData<*const ()>,
}

#[repr(C, align(64))]
struct Config([u8; 64]);

/// Palette 1, every tile 16 rows × 64 bytes.
const CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    Config(c)
};

impl Tiles {
    /// Loads the configuration on this thread; `None` where [`missing`] says AMX cannot run.
    pub(crate) fn load() -> Option<Tiles> {
        if missing().is_some() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AMX-TILE and this process may use the tile state (`missing`);
        // `ldtilecfg` reads the 64 bytes of `CONFIG`, a valid palette-1 configuration.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const Config,
                options(nostack, readonly));
        }
        Some(Tiles {
            _thread: PhantomData,
        })
    }

    /// `out = Σ` over `steps` depth steps of `A`'s 16 rows times `B`'s 32 columns, in f32:
    /// step `s` of `a` is 16 rows of 32 consecutive depths (`a[(s·16 + i)·32 + t]`,
    /// 1024 bytes), step `s` of `b` 16 pairs of depth for 32 columns
    /// (`b[((s·16 + p)·32 + j)·2 + t]`, 2048 bytes), the layouts of `gemm::bf16`'s AMX packing.
    ///
    /// # Panics
    /// If `a` or `b` is shorter than `steps` steps.
    pub(crate) fn product(&self, steps: usize, a: &[Bf16], b: &[Bf16]) -> [[f32; COLS]; ROWS] {
        let mut out = [[0f32; COLS]; ROWS];
        self.product_into(steps, a, b, out.as_flattened_mut(), COLS, false);
        out
    }

    /// [`Tiles::product`] written into the 16 rows of 32 floats of `c` that start at
    /// `c[i·ldc]`, or, with `accumulate`, added to them (the tiles start from `c`'s values):
    /// the tile's store straight into a row-major `C`, without a pass through a temporary.
    ///
    /// # Panics
    /// If `a` or `b` is shorter than `steps` steps, `ldc < 32`, or `c` shorter than
    /// `15·ldc + 32`.
    pub(crate) fn product_into(
        &self,
        steps: usize,
        a: &[Bf16],
        b: &[Bf16],
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        assert!(a.len() >= steps * ROWS * DEPTH && b.len() >= steps * DEPTH * COLS);
        assert!(ldc >= COLS && c.len() >= (ROWS - 1) * ldc + COLS);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self` proves the configuration above is loaded on this thread (AMX usable).
        // Per step the loads read `a[s·512 ..][..512]` (16 rows of 64 bytes, stride 64) and
        // `b[s·1024 ..][..1024]` (16 rows of 64 bytes at strides of 128, from byte 0 and 64),
        // in bounds by the first assert; the loads (with `accumulate`) and stores of `C` touch
        // 16 rows of 128 bytes at a stride of `4·ldc` bytes from `c`'s start, in bounds by the
        // second. Tile loads and stores have no alignment requirement. The tiles used are
        // declared clobbered; the loop is only entered with `steps > 0`.
        unsafe {
            std::arch::asm!(
                "test {acc}, {acc}",
                "jz 4f",
                "tileloadd tmm0, [{c} + {ldc}*1]",
                "tileloadd tmm1, [{c} + {ldc}*1 + 64]",
                "jmp 5f",
                "4:",
                "tilezero tmm0",
                "tilezero tmm1",
                "5:",
                "test {n}, {n}",
                "jz 3f",
                "2:",
                "tileloadd tmm2, [{a} + {s64}*1]",
                "tileloadd tmm3, [{b} + {s128}*1]",
                "tileloadd tmm4, [{b} + {s128}*1 + 64]",
                "tdpbf16ps tmm0, tmm2, tmm3",
                "tdpbf16ps tmm1, tmm2, tmm4",
                "add {a}, 1024",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                "3:",
                "tilestored [{c} + {ldc}*1], tmm0",
                "tilestored [{c} + {ldc}*1 + 64], tmm1",
                acc = in(reg) usize::from(accumulate),
                n = inout(reg) steps => _,
                a = inout(reg) a.as_ptr() => _,
                b = inout(reg) b.as_ptr() => _,
                c = in(reg) c.as_mut_ptr(),
                ldc = in(reg) ldc * 4,
                s64 = in(reg) 64usize,
                s128 = in(reg) 128usize,
                out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _,
                options(nostack),
            );
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AMX is usable (a `Tiles` exists); `tilerelease` returns the tiles to their
        // initial state and touches no memory.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tile_product_matches_the_sums() {
        let Some(t) = Tiles::load() else {
            eprintln!("skipped: {}", missing().unwrap());
            return;
        };
        let steps = 3;
        let a: Vec<Bf16> = (0..steps * ROWS * DEPTH)
            .map(|x| Bf16::from_f32((x % 7) as f32 - 3.0))
            .collect();
        let b: Vec<Bf16> = (0..steps * DEPTH * COLS)
            .map(|x| Bf16::from_f32((x % 5) as f32 - 2.0))
            .collect();
        let out = t.product(steps, &a, &b);
        for (i, row) in out.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let mut want = 0f32;
                for s in 0..steps {
                    for p in 0..DEPTH / 2 {
                        for q in 0..2 {
                            let av = a[(s * ROWS + i) * DEPTH + 2 * p + q].to_f32();
                            let bv = b[((s * DEPTH / 2 + p) * COLS + j) * 2 + q].to_f32();
                            want += av * bv;
                        }
                    }
                }
                assert_eq!(v, want, "({i}, {j})");
            }
        }
        assert_eq!(t.product(0, &[], &[]), [[0f32; COLS]; ROWS]);
        // Into a wider C, on top of its values, leaving the rest alone.
        let ldc = 40;
        let mut c: Vec<f32> = (0..ROWS * ldc).map(|x| (x % 11) as f32).collect();
        let c0 = c.clone();
        t.product_into(steps, &a, &b, &mut c, ldc, true);
        for i in 0..ROWS {
            for j in 0..ldc {
                let add = if j < COLS { out[i][j] } else { 0.0 };
                assert_eq!(c[i * ldc + j], c0[i * ldc + j] + add, "({i}, {j})");
            }
        }
    }
}
