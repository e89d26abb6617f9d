//! Single-precision GEMM with packing (the BLIS loop order), general strides and no allocation.
//!
//! `C = alpha · A · B + beta · C` where every operand is a strided view ([`Mat`], [`MatMut`]:
//! element `(i, j)` at `i·rs + j·cs`), so transposed operands are just other strides. `A` or
//! `B` may also be given pre-packed ([`pack_a`], [`pack_b`]), which lets a convolution pack its
//! weights once and reuse them for every sample. All packing buffers live in a caller-owned
//! [`GemmScratch`], grown on first use and reused afterwards: after a warm-up call with the
//! largest shapes, no call allocates.
//!
//! The micro-kernel computes an `MR × NR` tile of `C` in registers (`NR` along the contiguous
//! direction of the packed `B`, `MR` broadcast from the packed `A`): 12×32 with AVX-512 (24 zmm
//! accumulators), 6×16 with AVX2 + FMA, and a portable 4×8 in plain Rust. The whole driver is
//! compiled once per instruction set and chosen at run time. Tiles at the bottom edge run a
//! kernel instantiated for exactly the rows left, so `M` is never padded; the right edge is
//! padded with zeros in the packed `B`. The `unsafe` here is confined to calling the
//! `#[target_feature]` copies after detecting the feature, and to the two intrinsic kernels.

/// A read-only strided matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix (row stride `cols`).
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    /// A view with explicit strides.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view {rows}x{cols} (rs {rs}, cs {cs}) exceeds {} elements",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }
    /// The transpose (same storage).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// A mutable strided matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing storage.
    pub data: &'a mut [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> MatMut<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    /// A view with explicit strides.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view {rows}x{cols} (rs {rs}, cs {cs}) exceeds {} elements",
            data.len()
        );
        MatMut {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }
}

/// An operand: a strided view, or the same matrix already packed by [`pack_a`] / [`pack_b`].
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    /// Packed on the fly, block by block.
    View(Mat<'a>),
    /// Packed in advance (the whole matrix, in the layout this kernel uses).
    Packed(&'a [f32]),
}

/// The register-tile shape of the kernel in use on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Rows of `C` per micro-tile (the broadcast direction).
    pub mr: usize,
    /// Columns of `C` per micro-tile (the vector direction).
    pub nr: usize,
}

/// Depth of one packed block: every convolution of the small VGG (K ≤ 1152) in one block, so
/// `C` is written once per tile. Measured on one core (batch 128): 128×7×7 → 128 forward 75 →
/// 83 GFLOP/s, a 1024³ product 88 → 104 GFLOP/s, against 384.
const KC: usize = 1152;
/// Rows of `A` packed per block.
const MC: usize = 96;
/// Columns of `B` packed per block.
const NC: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

// Register tiles per instruction set: 12x32 on AVX-512 (24 zmm accumulators), 6x16 on AVX2
// (12 ymm), 4x8 portable.
#[cfg(target_arch = "x86_64")]
const AVX512: (usize, usize) = (12, 32);
#[cfg(target_arch = "x86_64")]
const AVX2: (usize, usize) = (6, 16);
const PORTABLE: (usize, usize) = (4, 8);

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// The tile of the kernel this machine uses.
pub fn tile() -> Tile {
    let (mr, nr) = match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => AVX512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => AVX2,
        Isa::Portable => PORTABLE,
    };
    Tile { mr, nr }
}

/// Elements of a fully packed `A` (`m × k`): rows rounded up to whole tiles.
pub fn packed_a_len(m: usize, k: usize) -> usize {
    m.div_ceil(tile().mr) * tile().mr * k
}

/// Elements of a fully packed `B` (`k × n`): columns rounded up to whole tiles.
pub fn packed_b_len(k: usize, n: usize) -> usize {
    n.div_ceil(tile().nr) * tile().nr * k
}

/// Packing buffers of one thread. Grown on first use, never shrunk.
#[derive(Debug, Default)]
pub struct GemmScratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Alignment (in elements) of packed panels: one 64-byte cache line.
const ALIGN: usize = 16;

/// A 64-byte-aligned window of `len` elements of `v`, growing `v` when needed.
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len + ALIGN {
        v.resize(len + ALIGN, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(ALIGN - 1);
    &mut v[off..off + len]
}

impl GemmScratch {
    /// Empty scratch (grows on first use).
    pub fn new() -> Self {
        Self::default()
    }
}

/// `C = alpha · A · B + beta · C` (`A`: `m × k`, `B`: `k × n`, `C`: `m × n`). With `beta == 0`
/// `C` is overwritten without being read.
///
/// # Panics
/// If the shapes disagree or a packed operand is too short.
pub fn gemm(
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut GemmScratch,
    k: usize,
) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { gemm_avx512(alpha, a, b, beta, c, scratch, k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 and FMA (checked by `isa`).
        Isa::Avx2 => unsafe { gemm_avx2(alpha, a, b, beta, c, scratch, k) },
        Isa::Portable => {
            gemm_generic::<{ PORTABLE.0 }, { PORTABLE.1 }, false>(alpha, a, b, beta, c, scratch, k)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn gemm_avx512(
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut GemmScratch,
    k: usize,
) {
    gemm_generic::<{ AVX512.0 }, { AVX512.1 }, true>(alpha, a, b, beta, c, scratch, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gemm_avx2(
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut GemmScratch,
    k: usize,
) {
    gemm_generic::<{ AVX2.0 }, { AVX2.1 }, true>(alpha, a, b, beta, c, scratch, k)
}

/// Pack all of `a` (`m × k`) into `out` (at least [`packed_a_len`] elements).
pub fn pack_a(a: Mat<'_>, out: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => pack_a_full::<{ AVX512.0 }>(a, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pack_a_full::<{ AVX2.0 }>(a, out),
        Isa::Portable => pack_a_full::<{ PORTABLE.0 }>(a, out),
    }
}

/// Pack all of `b` (`k × n`) into `out` (at least [`packed_b_len`] elements).
pub fn pack_b(b: Mat<'_>, out: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => pack_b_full::<{ AVX512.1 }>(b, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pack_b_full::<{ AVX2.1 }>(b, out),
        Isa::Portable => pack_b_full::<{ PORTABLE.1 }>(b, out),
    }
}

/// Full packed layout of `A`: for each depth block `[k0, k0 + kc)` (of `KC`), for each panel of
/// `MR` rows, `kc × MR` values (`[kk][ii]`). Block `k0` starts at `k0 · m_pad`.
fn pack_a_full<const MR: usize>(a: Mat<'_>, out: &mut [f32]) {
    let (m, k) = (a.rows, a.cols);
    let m_pad = m.div_ceil(MR) * MR;
    assert!(out.len() >= m_pad * k, "packed A buffer too short");
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let block = &mut out[k0 * m_pad..k0 * m_pad + m_pad * kc];
        for (p, panel) in block.chunks_exact_mut(kc * MR).enumerate() {
            let i0 = p * MR;
            pack_a_panel::<MR, false>(&a, i0, MR.min(m - i0), k0, kc, panel);
        }
        k0 += kc;
    }
}

/// Full packed layout of `B`: for each depth block, for each panel of `NR` columns, `kc × NR`
/// values (`[kk][jj]`). Block `k0` starts at `k0 · n_pad`.
fn pack_b_full<const NR: usize>(b: Mat<'_>, out: &mut [f32]) {
    let (k, n) = (b.rows, b.cols);
    let n_pad = n.div_ceil(NR) * NR;
    assert!(out.len() >= n_pad * k, "packed B buffer too short");
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let block = &mut out[k0 * n_pad..k0 * n_pad + n_pad * kc];
        for (p, panel) in block.chunks_exact_mut(kc * NR).enumerate() {
            let j0 = p * NR;
            pack_b_panel::<NR, false>(&b, k0, kc, j0, NR.min(n - j0), panel);
        }
        k0 += kc;
    }
}

/// Rows `i0..i0 + mr` and depth `k0..k0 + kc` of `a` into `out[kk·MR + ii]`, zero-padded to
/// `MR` rows.
#[inline(always)]
fn pack_a_panel<const MR: usize, const AVX: bool>(
    a: &Mat<'_>,
    i0: usize,
    mr: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) {
    let out = &mut out[..kc * MR];
    if mr < MR {
        out.fill(0.0);
    }
    if a.rs == 1 {
        // Columns are contiguous: one copy of `mr` values per depth step.
        for (kk, dst) in out.chunks_exact_mut(MR).enumerate() {
            let at = (k0 + kk) * a.cs + i0;
            dst[..mr].copy_from_slice(&a.data[at..at + mr]);
        }
    } else if a.cs == 1 {
        // Rows are contiguous: a transposition.
        transpose_into::<AVX>(&a.data[i0 * a.rs + k0..], a.rs, mr, kc, out, MR);
    } else {
        for (kk, dst) in out.chunks_exact_mut(MR).enumerate() {
            for (ii, d) in dst[..mr].iter_mut().enumerate() {
                *d = a.data[(i0 + ii) * a.rs + (k0 + kk) * a.cs];
            }
        }
    }
}

/// Depth `k0..k0 + kc` and columns `j0..j0 + nr` of `b` into `out[kk·NR + jj]`, zero-padded to
/// `NR` columns.
#[inline(always)]
fn pack_b_panel<const NR: usize, const AVX: bool>(
    b: &Mat<'_>,
    k0: usize,
    kc: usize,
    j0: usize,
    nr: usize,
    out: &mut [f32],
) {
    let out = &mut out[..kc * NR];
    if nr < NR {
        out.fill(0.0);
    }
    if b.cs == 1 {
        for (kk, dst) in out.chunks_exact_mut(NR).enumerate() {
            let at = (k0 + kk) * b.rs + j0;
            dst[..nr].copy_from_slice(&b.data[at..at + nr]);
        }
    } else if b.rs == 1 {
        // Columns are contiguous: a transposition.
        transpose_into::<AVX>(&b.data[j0 * b.cs + k0..], b.cs, nr, kc, out, NR);
    } else {
        for (kk, dst) in out.chunks_exact_mut(NR).enumerate() {
            for (jj, d) in dst[..nr].iter_mut().enumerate() {
                *d = b.data[(k0 + kk) * b.rs + (j0 + jj) * b.cs];
            }
        }
    }
}

/// `dst[k·d + l] = src[l·stride + k]` for `l < lines`, `k < kc` (`lines ≤ d`): `lines`
/// contiguous source lines become the columns of `dst`. Done in 8×8 blocks held in registers
/// (with `AVX`, only valid where the caller runs with AVX enabled, the 24-shuffle AVX transpose);
/// a plain loop would be vectorised into scatters, which are slow. [`transpose`] chooses for
/// the caller.
#[inline(always)]
fn transpose_into<const AVX: bool>(
    src: &[f32],
    stride: usize,
    lines: usize,
    kc: usize,
    dst: &mut [f32],
    d: usize,
) {
    for l0 in (0..lines).step_by(8) {
        let nl = (lines - l0).min(8);
        for k0 in (0..kc).step_by(8) {
            let nk = (kc - k0).min(8);
            let mut blk = [[0f32; 8]; 8];
            #[cfg(target_arch = "x86_64")]
            if AVX && nl == 8 && nk == 8 {
                x86::transpose8(&src[l0 * stride + k0..], stride, &mut dst[k0 * d + l0..], d);
                continue;
            }
            if nl == 8 && nk == 8 {
                for (l, b) in blk.iter_mut().enumerate() {
                    let at = (l0 + l) * stride + k0;
                    *b = src[at..at + 8].try_into().unwrap();
                }
                for (k, row) in dst[k0 * d + l0..].chunks_mut(d).take(8).enumerate() {
                    let t: [f32; 8] = std::array::from_fn(|l| blk[l][k]);
                    row[..8].copy_from_slice(&t);
                }
            } else {
                for (l, b) in blk.iter_mut().enumerate().take(nl) {
                    let at = (l0 + l) * stride + k0;
                    b[..nk].copy_from_slice(&src[at..at + nk]);
                }
                for (k, row) in dst[k0 * d + l0..].chunks_mut(d).take(nk).enumerate() {
                    let t: [f32; 8] = std::array::from_fn(|l| blk[l][k]);
                    row[..nl].copy_from_slice(&t[..nl]);
                }
            }
        }
    }
}

/// [`transpose_into`] with the AVX block transpose when this CPU has AVX2 (the instruction sets
/// the GEMM kernels also require).
pub fn transpose(src: &[f32], stride: usize, lines: usize, kc: usize, dst: &mut [f32], d: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx(src: &[f32], stride: usize, lines: usize, kc: usize, dst: &mut [f32], d: usize) {
            transpose_into::<true>(src, stride, lines, kc, dst, d)
        }
        if isa() != Isa::Portable {
            // SAFETY: AVX2 and FMA are present (`isa` checked them, directly or via AVX-512F
            // hardware, which has both).
            return unsafe { avx(src, stride, lines, kc, dst, d) };
        }
    }
    transpose_into::<false>(src, stride, lines, kc, dst, d)
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The `MR × NR` register tile: `Σ_kk a[kk][i] · b[kk][j]`.
#[inline(always)]
fn kernel<const MR: usize, const NR: usize, const FMA: bool, const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
) -> [[f32; NR]; R] {
    let mut acc = [[0f32; NR]; R];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        let ap: &[f32; MR] = ap.try_into().unwrap();
        let bp: &[f32; NR] = bp.try_into().unwrap();
        for i in 0..R {
            let ai = ap[i];
            for j in 0..NR {
                acc[i][j] = madd::<FMA>(ai, bp[j], acc[i][j]);
            }
        }
    }
    acc
}

/// Write `alpha · acc + beta · C` into the `mr × nr` corner of the tile at `(i0, j0)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store<const MR: usize, const NR: usize, const AVX: bool>(
    acc: &[[f32; NR]; MR],
    c: &mut MatMut<'_>,
    i0: usize,
    j0: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    if c.cs == 1 {
        for (i, row_acc) in acc.iter().enumerate().take(mr) {
            let at = (i0 + i) * c.rs + j0;
            let row = &mut c.data[at..at + nr];
            if beta == 0.0 {
                for (d, &v) in row.iter_mut().zip(row_acc) {
                    *d = alpha * v;
                }
            } else {
                for (d, &v) in row.iter_mut().zip(row_acc) {
                    *d = alpha * v + beta * *d;
                }
            }
        }
    } else if c.rs == 1 {
        // Column-major C: transpose the tile first, then store column by column.
        let mut t = [[0f32; MR]; NR];
        transpose_into::<AVX>(acc.as_flattened(), NR, mr, nr, t.as_flattened_mut(), MR);
        for (j, tj) in t.iter().enumerate().take(nr) {
            let at = (j0 + j) * c.cs + i0;
            let col = &mut c.data[at..at + mr];
            if beta == 0.0 {
                for (d, &v) in col.iter_mut().zip(tj) {
                    *d = alpha * v;
                }
            } else {
                for (d, &v) in col.iter_mut().zip(tj) {
                    *d = alpha * v + beta * *d;
                }
            }
        }
    } else {
        for (i, row_acc) in acc.iter().enumerate().take(mr) {
            for (j, &v) in row_acc.iter().enumerate().take(nr) {
                let d = &mut c.data[(i0 + i) * c.rs + (j0 + j) * c.cs];
                *d = if beta == 0.0 {
                    alpha * v
                } else {
                    alpha * v + beta * *d
                };
            }
        }
    }
}

#[inline(always)]
fn gemm_generic<const MR: usize, const NR: usize, const FMA: bool>(
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    scratch: &mut GemmScratch,
    k: usize,
) {
    let (m, n) = (c.rows, c.cols);
    if let Operand::View(a) = a {
        assert!(a.rows == m && a.cols == k, "gemm: A is not {m}x{k}");
    }
    if let Operand::View(b) = b {
        assert!(b.rows == k && b.cols == n, "gemm: B is not {k}x{n}");
    }
    let m_pad = m.div_ceil(MR) * MR;
    let n_pad = n.div_ceil(NR) * NR;
    if let Operand::Packed(p) = a {
        assert!(p.len() >= m_pad * k, "gemm: packed A too short");
    }
    if let Operand::Packed(p) = b {
        assert!(p.len() >= n_pad * k, "gemm: packed B too short");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale(c, beta);
        return;
    }
    let GemmScratch { a: abuf, b: bbuf } = scratch;
    let abuf = if matches!(a, Operand::View(_)) {
        aligned(abuf, MC.min(m_pad) * KC.min(k))
    } else {
        &mut []
    };
    let bbuf = if matches!(b, Operand::View(_)) {
        aligned(bbuf, NC.min(n_pad) * KC.min(k))
    } else {
        &mut []
    };
    let mut jc = 0;
    while jc < n {
        let nc = NC.min(n - jc);
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            // The B block: kc × nc, as panels of NR columns.
            let (bblock, b_stride): (&[f32], usize) = match b {
                Operand::View(bv) => {
                    let panels = nc.div_ceil(NR);
                    for (p, panel) in bbuf[..panels * kc * NR]
                        .chunks_exact_mut(kc * NR)
                        .enumerate()
                    {
                        let j0 = jc + p * NR;
                        pack_b_panel::<NR, FMA>(&bv, pc, kc, j0, NR.min(n - j0), panel);
                    }
                    (&bbuf[..panels * kc * NR], kc * NR)
                }
                Operand::Packed(p) => {
                    let start = pc * n_pad + (jc / NR) * kc * NR;
                    (&p[start..start + nc.div_ceil(NR) * kc * NR], kc * NR)
                }
            };
            let mut ic = 0;
            while ic < m {
                let mc = MC.min(m - ic);
                let (ablock, a_stride): (&[f32], usize) = match a {
                    Operand::View(av) => {
                        let panels = mc.div_ceil(MR);
                        for (p, panel) in abuf[..panels * kc * MR]
                            .chunks_exact_mut(kc * MR)
                            .enumerate()
                        {
                            let i0 = ic + p * MR;
                            pack_a_panel::<MR, FMA>(&av, i0, MR.min(m - i0), pc, kc, panel);
                        }
                        (&abuf[..panels * kc * MR], kc * MR)
                    }
                    Operand::Packed(p) => {
                        let start = pc * m_pad + (ic / MR) * kc * MR;
                        (&p[start..start + mc.div_ceil(MR) * kc * MR], kc * MR)
                    }
                };
                for (jp, bpanel) in bblock.chunks_exact(b_stride).enumerate() {
                    let j0 = jc + jp * NR;
                    let nr = NR.min(n - j0);
                    for (ip, apanel) in ablock.chunks_exact(a_stride).enumerate() {
                        let i0 = ic + ip * MR;
                        let mr = MR.min(m - i0);
                        if mr == MR {
                            let acc = micro::<MR, NR, FMA, MR>(kc, apanel, bpanel);
                            store::<MR, NR, FMA>(&acc, c, i0, j0, mr, nr, alpha, beta_eff);
                        } else {
                            edge::<MR, NR, FMA>(
                                kc, apanel, bpanel, c, i0, j0, mr, nr, alpha, beta_eff,
                            );
                        }
                    }
                }
                ic += mc;
            }
            pc += kc;
        }
        jc += nc;
    }
}

/// `C = beta · C` (`beta == 0` writes zeros without reading).
fn scale(c: &mut MatMut<'_>, beta: f32) {
    for i in 0..c.rows {
        for j in 0..c.cols {
            let d = &mut c.data[i * c.rs + j * c.cs];
            *d = if beta == 0.0 { 0.0 } else { beta * *d };
        }
    }
}

/// The micro-kernel for this tile: hand-written AVX-512 / AVX2 where the tile matches, the
/// portable one otherwise.
#[inline(always)]
fn micro<const MR: usize, const NR: usize, const FMA: bool, const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
) -> [[f32; NR]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        if FMA && NR == 32 {
            let mut out = [[0f32; NR]; R];
            let r = x86::kernel_16x2::<MR, R>(kc, a, b);
            for (o, v) in out.iter_mut().zip(r.iter()) {
                o.copy_from_slice(v);
            }
            return out;
        }
        if FMA && NR == 16 {
            let mut out = [[0f32; NR]; R];
            let r = x86::kernel_8x2::<MR, R>(kc, a, b);
            for (o, v) in out.iter_mut().zip(r.iter()) {
                o.copy_from_slice(v);
            }
            return out;
        }
    }
    kernel::<MR, NR, FMA, R>(kc, a, b)
}

/// A tile with `mr < MR` valid rows: the kernel instantiated for exactly `mr` rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn edge<const MR: usize, const NR: usize, const FMA: bool>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut MatMut<'_>,
    i0: usize,
    j0: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    macro_rules! rows {
        ($($r:literal)*) => {
            match mr {
                $($r if $r < MR => {
                    let acc = micro::<MR, NR, FMA, $r>(kc, a, b);
                    store::<$r, NR, FMA>(&acc, c, i0, j0, mr, nr, alpha, beta);
                })*
                _ => unreachable!("edge tile of {mr} rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `MR × 32` tile with AVX-512: two zmm accumulators per row.
    #[inline(always)]
    pub fn kernel_16x2<const MR: usize, const R: usize>(
        kc: usize,
        a: &[f32],
        b: &[f32],
    ) -> [[f32; 32]; R] {
        assert!(R <= MR && a.len() >= kc * MR && b.len() >= kc * 32);
        let mut out = [[0f32; 32]; R];
        // SAFETY: the caller runs this only on AVX-512F hardware (inside a
        // `#[target_feature(enable = "avx512f")]` function); every load reads
        // `a[kk*MR + i]` and `b[kk*32 .. kk*32 + 32]` for kk < kc, in bounds by the assert; the
        // stores write `out`, which has 32 floats per row.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
            for _ in 0..kc {
                let b0 = _mm512_loadu_ps(pb);
                let b1 = _mm512_loadu_ps(pb.add(16));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*pa.add(i));
                    acc_i[0] = _mm512_fmadd_ps(ai, b0, acc_i[0]);
                    acc_i[1] = _mm512_fmadd_ps(ai, b1, acc_i[1]);
                }
                pa = pa.add(MR);
                pb = pb.add(32);
            }
            for (o, acc_i) in out.iter_mut().zip(acc.iter()) {
                _mm512_storeu_ps(o.as_mut_ptr(), acc_i[0]);
                _mm512_storeu_ps(o.as_mut_ptr().add(16), acc_i[1]);
            }
        }
        out
    }

    /// `dst[k·d + l] = src[l·stride + k]` for `l, k < 8`: an 8×8 transpose in registers
    /// (unpack, shuffle, 128-bit permute).
    #[inline(always)]
    pub fn transpose8(src: &[f32], stride: usize, dst: &mut [f32], d: usize) {
        assert!(src.len() >= 7 * stride + 8 && dst.len() >= 7 * d + 8);
        // SAFETY: the caller runs this only where AVX is enabled (inside a
        // `#[target_feature]` function with AVX2); the loads read `src[l·stride .. l·stride + 8]`
        // and the stores write `dst[k·d .. k·d + 8]` for l, k < 8, in bounds by the assert.
        unsafe {
            let ps = src.as_ptr();
            let r: [__m256; 8] = std::array::from_fn(|l| _mm256_loadu_ps(ps.add(l * stride)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let c = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            let pd = dst.as_mut_ptr();
            for (k, ck) in c.iter().enumerate() {
                _mm256_storeu_ps(pd.add(k * d), *ck);
            }
        }
    }

    /// `MR × 16` tile with AVX2: two ymm accumulators per row.
    #[inline(always)]
    pub fn kernel_8x2<const MR: usize, const R: usize>(
        kc: usize,
        a: &[f32],
        b: &[f32],
    ) -> [[f32; 16]; R] {
        assert!(R <= MR && a.len() >= kc * MR && b.len() >= kc * 16);
        let mut out = [[0f32; 16]; R];
        // SAFETY: as in `kernel_16x2`, for AVX2 + FMA and 16-wide panels.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
            for _ in 0..kc {
                let b0 = _mm256_loadu_ps(pb);
                let b1 = _mm256_loadu_ps(pb.add(8));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ai = _mm256_set1_ps(*pa.add(i));
                    acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
                    acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
                }
                pa = pa.add(MR);
                pb = pb.add(16);
            }
            for (o, acc_i) in out.iter_mut().zip(acc.iter()) {
                _mm256_storeu_ps(o.as_mut_ptr(), acc_i[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), acc_i[1]);
            }
        }
        out
    }
}
