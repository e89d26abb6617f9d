//! The instruction sets the host kernels are compiled for, the one run-time check that every
//! `#[target_feature]` copy relies on, and the `NF_GEMM_ISA` override.
//!
//! Each instruction set is a list of CPU features; the copies of the kernels compiled for it
//! enable exactly that list (the attribute is written once, in the `avx512_fn!` and `avx2_fn!`
//! macros next to the lists here), and
//! [`Isa::available`] detects every feature of the list. A [`Pool`](crate::Pool) carries the
//! instruction set its kernels use: [`active`] for [`Pool::new`](crate::Pool::new) (the best
//! this CPU has, or the one `NF_GEMM_ISA` names), any [available](available_isas) one for
//! [`Pool::with_isa`](crate::Pool::with_isa). Kernels read it once per call, so packed operands,
//! workspace sizes and micro-kernels of one call always agree.
use std::sync::OnceLock;

/// An instruction set of the host kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// [`Isa::Avx512Bf16`] plus AMX-BF16 tiles (Sapphire Rapids and later): the bf16 GEMM
    /// runs `tdpbf16ps` on 16×32 tiles ([`amx`](crate::amx)); every other kernel is the
    /// [`Isa::Avx512Bf16`] one. Needs the operating system's permission for the tile state,
    /// requested once per process.
    Amx,
    /// [`Isa::Avx512`] plus AVX512-BF16: the bf16 GEMM runs `vdpbf16ps` (two bf16 products
    /// per f32 lane); every f32 kernel is the [`Isa::Avx512`] one.
    Avx512Bf16,
    /// AVX-512 (F, BW, VL) with AVX2 and FMA: 12×32 GEMM tiles, 16-lane element-wise loops.
    Avx512,
    /// AVX2 with FMA: 6×16 GEMM tiles, 8-lane loops.
    Avx2,
    /// Plain Rust (SSE2 on x86-64): 4×8 GEMM tiles.
    Portable,
}

/// The CPU features of [`Isa::Avx512Bf16`], as `#[target_feature(enable = …)]` spells them.
pub const AVX512BF16_FEATURES: &str = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma";
/// The CPU features of [`Isa::Avx512`].
pub const AVX512_FEATURES: &str = "avx512f,avx512bw,avx512vl,avx2,fma";
/// The CPU features of [`Isa::Avx2`].
pub const AVX2_FEATURES: &str = "avx2,fma";

/// Marks a function as compiled for [`Isa::Avx512Bf16`]: `#[target_feature]` with exactly
/// [`AVX512BF16_FEATURES`]. Use only on `unsafe fn`s whose `# Safety` section asks for
/// `Isa::Avx512Bf16.available()`.
macro_rules! avx512bf16_fn {
    ($($item:tt)*) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
        $($item)*
    };
}
pub(crate) use avx512bf16_fn;

/// Marks a function as compiled for [`Isa::Avx512`]: `#[target_feature]` with exactly
/// [`AVX512_FEATURES`], the features [`Isa::available`] checks. Use only on `unsafe fn`s whose
/// `# Safety` section asks for `Isa::Avx512.available()`.
macro_rules! avx512_fn {
    ($($item:tt)*) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
        $($item)*
    };
}
pub(crate) use avx512_fn;

/// Marks a function as compiled for [`Isa::Avx2`]: `#[target_feature]` with exactly
/// [`AVX2_FEATURES`].
macro_rules! avx2_fn {
    ($($item:tt)*) => {
        #[target_feature(enable = "avx2,fma")]
        $($item)*
    };
}
pub(crate) use avx2_fn;

impl Isa {
    /// Every instruction set, widest first.
    pub const ALL: [Isa; 5] = [
        Isa::Amx,
        Isa::Avx512Bf16,
        Isa::Avx512,
        Isa::Avx2,
        Isa::Portable,
    ];

    /// The name `NF_GEMM_ISA` uses: `amx`, `avx512bf16`, `avx512`, `avx2` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Amx => "amx",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The instruction set called `name` (see [`Isa::name`]).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The first feature of this instruction set that the CPU lacks (`None`: it has them all).
    pub fn missing_feature(self) -> Option<&'static str> {
        let feats = match self {
            Isa::Amx => {
                return Isa::Avx512Bf16
                    .missing_feature()
                    .or_else(crate::amx::missing)
            }
            Isa::Avx512Bf16 => AVX512BF16_FEATURES,
            Isa::Avx512 => AVX512_FEATURES,
            Isa::Avx2 => AVX2_FEATURES,
            Isa::Portable => return None,
        };
        feats.split(',').find(|&f| !detected(f))
    }

    /// Whether the CPU has every feature of this instruction set (detected once per process).
    #[inline]
    pub fn available(self) -> bool {
        static AVAILABLE: OnceLock<[bool; 5]> = OnceLock::new();
        let av = AVAILABLE.get_or_init(|| Isa::ALL.map(|i| i.missing_feature().is_none()));
        av[self as usize]
    }

    /// The instruction set of this one's f32 kernels: [`Isa::Amx`] and [`Isa::Avx512Bf16`]
    /// run the [`Isa::Avx512`] ones (they add bf16 instructions only), every other is itself.
    #[inline]
    pub fn f32_kernels(self) -> Isa {
        match self {
            Isa::Amx | Isa::Avx512Bf16 => Isa::Avx512,
            i => i,
        }
    }

    /// Panics unless [`Isa::available`]: the check in front of every `#[target_feature]` copy.
    #[inline]
    #[track_caller]
    pub(crate) fn check(self) {
        assert!(
            self.available(),
            "instruction set {} used on a CPU that lacks {}",
            self.name(),
            self.missing_feature().unwrap_or("a feature")
        );
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the CPU has feature `f` (one of the names in [`AVX512_FEATURES`]).
fn detected(f: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match f {
            "avx512f" => has!("avx512f"),
            "avx512bw" => has!("avx512bw"),
            "avx512vl" => has!("avx512vl"),
            "avx512bf16" => has!("avx512bf16"),
            "avx2" => has!("avx2"),
            "fma" => has!("fma"),
            _ => unreachable!("unknown feature {f}"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = f;
        false
    }
}

/// The instruction sets this CPU can run, widest first (always ends with
/// [`Isa::Portable`]).
pub fn available_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.available()).collect()
}

/// The widest instruction set this CPU can run.
pub fn best() -> Isa {
    Isa::ALL
        .into_iter()
        .find(|i| i.available())
        .unwrap_or(Isa::Portable)
}

/// The name of the override variable.
pub const ENV: &str = "NF_GEMM_ISA";

/// The instruction set `NF_GEMM_ISA` asks for: `Ok(None)` when it is unset or empty, an error
/// (`NF_GEMM_ISA=foo: expected amx, avx512bf16, avx512, avx2 or portable`, `NF_GEMM_ISA=avx512:
/// this CPU lacks avx512vl`) when it names no instruction set or one this CPU cannot run. Reads the
/// environment on every call; [`active`] reads it once.
pub fn isa_from_env() -> Result<Option<Isa>, String> {
    let v = match std::env::var(ENV) {
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(format!(
                "{ENV}={v:?}: expected amx, avx512bf16, avx512, avx2 or portable"
            ))
        }
    };
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let isa = Isa::from_name(&v.to_ascii_lowercase())
        .ok_or_else(|| format!("{ENV}={v}: expected amx, avx512bf16, avx512, avx2 or portable"))?;
    match isa.missing_feature() {
        Some(f) => Err(format!("{ENV}={v}: this CPU lacks {f}")),
        None => Ok(Some(isa)),
    }
}

/// The instruction set of [`Pool::new`](crate::Pool::new) and `workspace::floats`: the one
/// `NF_GEMM_ISA` names, else [`best`]. Decided on the first call, for the whole process.
///
/// # Panics
/// If `NF_GEMM_ISA` is set to something [`isa_from_env`] refuses (with its message); a program
/// that wants to report that itself calls [`isa_from_env`] first.
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| match isa_from_env() {
        Ok(i) => i.unwrap_or_else(best),
        Err(e) => panic!("{e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_is_always_available() {
        for i in Isa::ALL {
            assert_eq!(Isa::from_name(i.name()), Some(i));
        }
        assert!(Isa::Portable.available());
        assert_eq!(available_isas().last(), Some(&Isa::Portable));
        assert_eq!(available_isas()[0], best());
    }

    #[test]
    fn avx512bf16_includes_every_feature_of_avx512() {
        // The f32 kernels of `Avx512Bf16` are the `Avx512` copies: sound only if every
        // feature those enable is also checked for `Avx512Bf16`.
        for f in AVX512_FEATURES.split(',') {
            assert!(AVX512BF16_FEATURES.split(',').any(|g| g == f), "{f}");
        }
        assert_eq!(Isa::Avx512Bf16.f32_kernels(), Isa::Avx512);
        if Isa::Avx512Bf16.available() {
            assert!(Isa::Avx512.available());
        }
    }

    #[test]
    fn every_feature_name_is_detectable() {
        // `detected` panics on a name it does not know.
        for f in [AVX512BF16_FEATURES, AVX512_FEATURES, AVX2_FEATURES]
            .iter()
            .flat_map(|s| s.split(','))
        {
            let _ = detected(f);
        }
    }
}
