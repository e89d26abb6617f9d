//! Which way one convolution is computed on one instruction set ([`Paths`]), decided in one
//! place for the two readers that must agree: the convolution kernels (`conv2d/mod.rs`) and the
//! workspace model (`workspace.rs`), which lays out the memory those ways use.
use nf_core::ops::conv2d::ConvGeom;

use super::small::small_weights;
use super::taps::TAP_MAX_PIXELS;
use super::unroll::is_same;
use crate::gemm;
use crate::isa::Isa;

/// How many more lanes (as a fraction) a transposed product must fill to be chosen: it writes
/// its result column by column (a register transpose per tile), which costs about that much.
/// Measured on one core: at 14×14 (196 pixels, 87.5% of the lanes, against 100% along 64
/// channels) the plain product is ~5% faster forward and ~4% backward; at 7×7 (77%) the
/// transposed one is ~8% faster.
const LANE_MARGIN: f64 = 0.15;

/// Fraction of useful lanes when `len` values are laid along the vector direction of `isa`.
fn lane_use(isa: Isa, len: usize) -> f64 {
    let nr = gemm::tile(isa).nr;
    len as f64 / (len.div_ceil(nr) * nr) as f64
}

/// The ways one convolution is computed on one instruction set (the workspace layout follows
/// them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Paths {
    /// Per tap (small maps).
    pub tapwise: bool,
    /// The small-weight paths (forward, weight gradient).
    pub small: bool,
    /// Forward: `Yᵀ = colsᵀ · Wᵀ` (vector along the output channels).
    pub transposed: bool,
    /// Weight gradient: `dWᵀ = cols · dYᵀ` (vector along the output channels).
    pub dw_transposed: bool,
    /// Input gradient: `dcolsᵀ = dYᵀ · W` (vector along `c_in·k²`).
    pub dx_transposed: bool,
    /// Input gradient as a convolution of `dY` with the flipped kernel.
    pub flip: bool,
    /// That convolution as the transposed product.
    pub flip_transposed: bool,
}

impl Paths {
    /// The paths for `g` on `isa`.
    pub fn new(g: &ConvGeom, isa: Isa) -> Self {
        let (ckk, hwo) = (g.c_in * g.k * g.k, g.h_out() * g.w_out());
        // On AMX only the plain products: a transposed one's per-sample operand is a strided
        // `A`, which the AMX packing must transpose into rows of 32 depths, while a plain one
        // packs it as a row-major `B`. Measured (nf train --limit 8000, 2 threads, Sapphire
        // Rapids): bf16 7% faster, f32 (the same AVX-512 kernels) within the noise (3 rounds).
        let plain = isa == Isa::Amx;
        let lanes = |x| lane_use(isa, x);
        let wider = |x, y| !plain && lanes(x) > lanes(y) + LANE_MARGIN;
        Paths {
            tapwise: hwo <= TAP_MAX_PIXELS && !g.is_pointwise(),
            small: small_weights(g),
            transposed: wider(g.c_out, hwo),
            dw_transposed: wider(g.c_out, ckk),
            dx_transposed: !g.is_pointwise() && wider(ckk, hwo),
            // A same-size convolution that narrows the channels (an auxiliary head: 32 → 16,
            // 128 → 16): dY's columns (c_out·k² rows) fit in those of x (c_in·k² rows).
            flip: is_same(g) && !g.is_pointwise() && g.c_out <= g.c_in,
            flip_transposed: wider(g.c_in, hwo),
        }
    }
}
