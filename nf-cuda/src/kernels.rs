//! The kernel sources (`nf-cuda/kernels/*.cu`, embedded at build time), the list of kernels
//! the backend launches, and their parameter lists as parsed from the sources.
//!
//! The same source text is compiled by NVRTC for the device ([`crate::cuda`]) and by the host
//! C++ compiler under `kernels/host_shim.h` for the CPU emulation ([`crate::emu`]). Both
//! launch a kernel through one generic argument list ([`Arg`]), checked here against the
//! parameter list parsed from the source, so a launch with the wrong arity or argument kind is
//! an error on both paths (and is caught by the emulated tests before it can reach a GPU).
use std::sync::OnceLock;

use nf_core::region::Region;

use crate::error::{failed, CudaError};

/// The kernel files in program order (the prelude first), with their text.
pub const SOURCES: &[(&str, &str)] = &[
    ("prelude.cuh", include_str!("../kernels/prelude.cuh")),
    ("buffer.cu", include_str!("../kernels/buffer.cu")),
    ("activation.cu", include_str!("../kernels/activation.cu")),
    ("linear.cu", include_str!("../kernels/linear.cu")),
    ("optim.cu", include_str!("../kernels/optim.cu")),
    ("conv2d.cu", include_str!("../kernels/conv2d.cu")),
    ("reduce.cu", include_str!("../kernels/reduce.cu")),
    ("batchnorm.cu", include_str!("../kernels/batchnorm.cu")),
    ("pool.cu", include_str!("../kernels/pool.cu")),
    ("loss.cu", include_str!("../kernels/loss.cu")),
];

/// The host shim that lets the host C++ compiler build the kernel sources.
pub const HOST_SHIM: &str = include_str!("../kernels/host_shim.h");

/// The whole program: every file of [`SOURCES`] in order, each preceded by a `#line`
/// directive so that compiler messages name the right file and line.
pub fn program_source() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str(&format!("#line 1 \"{name}\"\n"));
        s.push_str(text);
        if !text.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

macro_rules! kernels {
    ($($(#[$doc:meta])* $id:ident => $name:literal,)*) => {
        /// A kernel of the backend (its entry point in `kernels/*.cu`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $($(#[$doc])* $id,)*
        }
        impl Kernel {
            /// Every kernel, in declaration order (the index of a kernel in this list is
            /// `kernel as usize`).
            pub const ALL: &'static [Kernel] = &[$(Kernel::$id,)*];
            /// The entry point's name in the sources.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Kernel::$id => $name,)*
                }
            }
        }
    };
}

kernels! {
    /// `x[i] = v`.
    Fill => "nf_fill",
    /// `dst[i] = src[i]`.
    Copy => "nf_copy",
    /// f32 to bf16 (nearest even), two to a word: the operands of a bf16 GEMM.
    RoundBf16 => "nf_round_bf16",
    /// ReLU in place.
    ReluForward => "nf_relu_forward",
    /// ReLU backward in place on `dy`.
    ReluBackward => "nf_relu_backward",
    /// `y += x`.
    AddAssign => "nf_add_assign",
    /// Per-channel bias addition.
    BiasAdd => "nf_bias_add",
    /// SGD with momentum, weight decay and Nesterov.
    Sgd => "nf_sgd",
    /// im2col of a chunk of samples, side by side (one GEMM per chunk).
    Im2col => "nf_im2col",
    /// col2im (gather) of a chunk of samples.
    Col2im => "nf_col2im",
    /// NCHW to channel-major (`[c][sample·pixel]`) for a chunk.
    NchwToCn => "nf_nchw_to_cn",
    /// Channel-major to NCHW for a chunk, with an optional bias.
    CnToNchw => "nf_cn_to_nchw",
    /// Per-channel partial sums (or sums of squared deviations).
    ChanPartial => "nf_chan_partial",
    /// Per-channel partial sums of `a` and of `a·b`.
    ChanPartial2 => "nf_chan_partial2",
    /// Per-channel total of the partial sums, divided.
    ChanFinish => "nf_chan_finish",
    /// Batch-norm statistics and running-statistics update.
    BnStats => "nf_bn_stats",
    /// Batch-norm normalisation and affine transform (training).
    BnNormalize => "nf_bn_normalize",
    /// Batch norm in evaluation mode.
    BnEval => "nf_bn_eval",
    /// Batch-norm input gradient.
    BnBackwardDx => "nf_bn_backward_dx",
    /// 2×2 max pooling.
    MaxPool2Forward => "nf_maxpool2_forward",
    /// 2×2 max pooling backward.
    MaxPool2Backward => "nf_maxpool2_backward",
    /// Adaptive average pooling.
    AvgPoolForward => "nf_avgpool_forward",
    /// Adaptive average pooling backward.
    AvgPoolBackward => "nf_avgpool_backward",
    /// Softmax cross-entropy, per row.
    SoftmaxXent => "nf_softmax_xent",
    /// Adds a batch's losses and correct flags to a device accumulator (deferred scores).
    ScoreAdd => "nf_score_add",
}

/// The kind of a kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// `float*` or `const float*`.
    Ptr,
    /// `int`.
    I32,
    /// `long long`.
    I64,
    /// `float`.
    F32,
}

/// One parameter of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its kind.
    pub kind: ParamKind,
    /// Its C type as written (whitespace normalised), e.g. `const float*`.
    pub c_type: String,
    /// Its name.
    pub name: String,
}

/// The signature of a kernel entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The entry point's name.
    pub name: String,
    /// Its parameters, in order.
    pub params: Vec<Param>,
}

const ENTRY: &str = "extern \"C\" __global__ void ";

/// Every `extern "C" __global__ void name(...)` of `src`, in order of appearance.
///
/// # Errors
/// An unterminated parameter list or a parameter type other than `float*`, `const float*`,
/// `int`, `long long` and `float`.
pub fn parse_signatures(src: &str) -> Result<Vec<Signature>, CudaError> {
    let src = strip_comments(src);
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(at) = rest.find(ENTRY) {
        rest = &rest[at + ENTRY.len()..];
        let open = rest
            .find('(')
            .ok_or_else(|| failed("kernel without parameter list"))?;
        let name = rest[..open].trim().to_string();
        let close = rest[open..]
            .find(')')
            .ok_or_else(|| failed(format!("{name}: unterminated parameter list")))?;
        let list = &rest[open + 1..open + close];
        let mut params = Vec::new();
        for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p = p.replace('*', " * ");
            let words: Vec<&str> = p.split_whitespace().collect();
            let (pname, ty) = words
                .split_last()
                .ok_or_else(|| failed(format!("{name}: empty parameter")))?;
            let c_type = ty.join(" ").replace(" *", "*");
            let kind = match c_type.as_str() {
                "float*" | "const float*" => ParamKind::Ptr,
                "int" => ParamKind::I32,
                "long long" => ParamKind::I64,
                "float" => ParamKind::F32,
                other => {
                    return Err(failed(format!(
                        "{name}: parameter `{pname}` has type `{other}`; only float*, const \
                         float*, int, long long and float are supported"
                    )))
                }
            };
            params.push(Param {
                kind,
                c_type,
                name: pname.to_string(),
            });
        }
        out.push(Signature { name, params });
        rest = &rest[open + close..];
    }
    Ok(out)
}

/// `src` without its `//` and `/* */` comments (string literals are not special-cased: the
/// kernel sources have none containing comment markers).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        let (at, is_block) = match (line, block) {
            (None, None) => break,
            (Some(l), Some(b)) => (l.min(b), b < l),
            (Some(l), None) => (l, false),
            (None, Some(b)) => (b, true),
        };
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = if is_block {
            rest.find("*/").map_or("", |e| &rest[e + 2..])
        } else {
            // Keep the newline.
            rest.find('\n').map_or("", |e| &rest[e..])
        };
    }
    out.push_str(rest);
    out
}

/// The signatures of [`Kernel::ALL`], in that order, parsed from the embedded sources.
///
/// # Panics
/// If a kernel of [`Kernel::ALL`] has no entry point in the sources or the sources do not
/// parse: a build of this crate is broken (the tests check it).
pub fn signatures() -> &'static [Signature] {
    static SIGS: OnceLock<Vec<Signature>> = OnceLock::new();
    SIGS.get_or_init(|| {
        let all = parse_signatures(&program_source()).expect("kernel sources parse");
        Kernel::ALL
            .iter()
            .map(|k| {
                all.iter()
                    .find(|s| s.name == k.name())
                    .unwrap_or_else(|| panic!("kernel {} is not in the sources", k.name()))
                    .clone()
            })
            .collect()
    })
}

/// The signature of `k`.
pub fn signature(k: Kernel) -> &'static Signature {
    &signatures()[k as usize]
}

/// A kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A pointer to the first element of a region of the device memory (arena offsets); the
    /// empty region is the null pointer.
    Buf(Region),
    /// An `int`.
    I32(i32),
    /// A `long long`.
    I64(i64),
    /// A `float`.
    F32(f32),
}

impl Arg {
    /// The parameter kind this argument fills.
    pub const fn kind(&self) -> ParamKind {
        match self {
            Arg::Buf(_) => ParamKind::Ptr,
            Arg::I32(_) => ParamKind::I32,
            Arg::I64(_) => ParamKind::I64,
            Arg::F32(_) => ParamKind::F32,
        }
    }
}

/// Most parameters of a kernel.
pub const MAX_ARGS: usize = 16;

/// Check `args` against the parameters of `k` and that every buffer lies within `mem_len`
/// elements.
///
/// # Errors
/// A message naming the kernel and the mismatch.
pub fn check_args(k: Kernel, args: &[Arg], mem_len: usize) -> Result<(), CudaError> {
    let sig = signature(k);
    if args.len() != sig.params.len() || args.len() > MAX_ARGS {
        return Err(failed(format!(
            "{}: {} arguments for {} parameters",
            k.name(),
            args.len(),
            sig.params.len()
        )));
    }
    for (i, (a, p)) in args.iter().zip(&sig.params).enumerate() {
        if a.kind() != p.kind {
            return Err(failed(format!(
                "{}: argument {i} ({}) is {:?}, the parameter is `{}`",
                k.name(),
                p.name,
                a.kind(),
                p.c_type
            )));
        }
        if let Arg::Buf(r) = a {
            if r.end() > mem_len {
                return Err(failed(format!(
                    "{}: argument {i} ({}) {r:?} ends past the device memory ({mem_len})",
                    k.name(),
                    p.name
                )));
            }
        }
    }
    Ok(())
}

/// Pack `args` the way `cuLaunchKernel` reads them: one 8-byte slot per argument holding its
/// value in the low bytes (device pointers are `base + 4·offset`, the null pointer for an empty
/// region). `kernelParams[i]` must point at slot `i`.
pub fn pack_args(args: &[Arg], base: u64, slots: &mut [u64; MAX_ARGS]) {
    // The slot's low bytes are the value's bytes on a little-endian machine (every CUDA host).
    const _: () = assert!(cfg!(target_endian = "little"));
    for (slot, a) in slots.iter_mut().zip(args) {
        *slot = match *a {
            Arg::Buf(r) if r.is_empty() => 0,
            Arg::Buf(r) => base + 4 * r.offset as u64,
            Arg::I32(v) => u64::from(v as u32),
            Arg::I64(v) => v as u64,
            Arg::F32(v) => u64::from(v.to_bits()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_in_the_sources_and_every_entry_point_is_a_kernel() {
        let all = parse_signatures(&program_source()).unwrap();
        for k in Kernel::ALL {
            assert_eq!(signature(*k).name, k.name());
        }
        for s in &all {
            assert!(
                Kernel::ALL.iter().any(|k| k.name() == s.name),
                "entry point {} has no Kernel",
                s.name
            );
        }
        assert_eq!(all.len(), Kernel::ALL.len(), "duplicate entry points");
        assert!(all.iter().all(|s| s.params.len() <= MAX_ARGS));
    }

    #[test]
    fn signature_parsing() {
        let src = "extern \"C\" __global__ void k(const float* a, float *b, int n, long long m, float v) {}\n\
                   extern \"C\" __global__ void z() {}";
        let s = parse_signatures(src).unwrap();
        assert_eq!(s.len(), 2);
        let kinds: Vec<ParamKind> = s[0].params.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                ParamKind::Ptr,
                ParamKind::Ptr,
                ParamKind::I32,
                ParamKind::I64,
                ParamKind::F32
            ]
        );
        assert_eq!(s[0].params[0].c_type, "const float*");
        assert_eq!(s[0].params[1].c_type, "float*");
        assert_eq!(s[0].params[3].name, "m");
        assert!(s[1].params.is_empty());
        let commented = "// extern \"C\" __global__ void nf_x(...)\n/* extern \"C\" __global__ void y(double) */\n\
                         extern \"C\" __global__ void k(int n /* count */) {}";
        let s = parse_signatures(commented).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].params[0].name, "n");
        let bad = "extern \"C\" __global__ void k(double x) {}";
        assert!(parse_signatures(bad)
            .unwrap_err()
            .message()
            .contains("double"));
    }

    #[test]
    fn argument_checks() {
        let ok = [Arg::Buf(Region::new(0, 4)), Arg::I64(4), Arg::F32(1.0)];
        check_args(Kernel::Fill, &ok, 4).unwrap();
        assert!(check_args(Kernel::Fill, &ok, 3)
            .unwrap_err()
            .message()
            .contains("past the device memory"));
        assert!(check_args(Kernel::Fill, &ok[..2], 4)
            .unwrap_err()
            .message()
            .contains("2 arguments for 3"));
        let wrong = [Arg::Buf(Region::new(0, 4)), Arg::I32(4), Arg::F32(1.0)];
        assert!(check_args(Kernel::Fill, &wrong, 4)
            .unwrap_err()
            .message()
            .contains("long long"));
    }

    #[test]
    fn packing() {
        let mut slots = [0u64; MAX_ARGS];
        pack_args(
            &[
                Arg::Buf(Region::new(3, 1)),
                Arg::Buf(Region::NONE),
                Arg::I32(-1),
                Arg::I64(-2),
                Arg::F32(1.5),
            ],
            0x1000,
            &mut slots,
        );
        assert_eq!(slots[0], 0x100c);
        assert_eq!(slots[1], 0);
        assert_eq!(slots[2], 0xffff_ffff);
        assert_eq!(slots[3] as i64, -2);
        assert_eq!(f32::from_bits(slots[4] as u32), 1.5);
    }
}
