//! GEMMs: the row-major products the backend needs, their mapping onto cuBLAS's column-major
//! `cublasSgemmStridedBatched` (or, with bf16 operands, `cublasGemmStridedBatchedEx`), and a
//! column-major reference with cuBLAS's exact semantics that runs them on the CPU (the emulated
//! device, and the tests of the mapping).
//!
//! Operands are f32 or bf16 ([`GemmPrecision`]); C is always f32 and the products are summed
//! in f32 or wider. A bf16 operand lies in the same device memory as everything else (a buffer
//! of f32 elements): its offset counts bf16 elements (2 bytes) from the memory's start, so the
//! bf16 element at offset `o` is the low (even `o`) or high (odd `o`) half of the f32 element
//! `o / 2`, as on the little-endian GPU.
//!
//! The mapping: a row-major `r×c` matrix with leading dimension `c` is, read column-major, its
//! `c×r` transpose. So row-major `C = op(A)·op(B)` is column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`: cuBLAS is
//! called with the operands swapped (its A is our B), `m ↔ n` swapped, and each operand's
//! transpose flag and leading dimension taken from how that operand is stored.
use crate::error::{failed, CudaError};

/// The element type of a GEMM's A and B operands (C is f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GemmPrecision {
    /// f32 operands (`cublasSgemmStridedBatched`; TF32 tensor cores only behind an option).
    #[default]
    F32,
    /// bf16 operands, f32 accumulation and output (`cublasGemmStridedBatchedEx` with A and B
    /// `CUDA_R_16BF`, C `CUDA_R_32F`, `CUBLAS_COMPUTE_32F`: tensor cores). The engine rounds
    /// its f32 operands to bf16 (nearest even) into planned scratch first.
    Bf16,
}

impl GemmPrecision {
    /// Every precision.
    pub const ALL: [GemmPrecision; 2] = [GemmPrecision::F32, GemmPrecision::Bf16];

    /// Bytes of one operand element.
    pub const fn operand_bytes(self) -> usize {
        match self {
            GemmPrecision::F32 => 4,
            GemmPrecision::Bf16 => 2,
        }
    }

    /// `f32` or `bf16`, as on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            GemmPrecision::F32 => "f32",
            GemmPrecision::Bf16 => "bf16",
        }
    }
}

/// `x` rounded to the nearest bf16, ties to even, as its 16 bits (NaN stays a quiet NaN):
/// what `kernels/buffer.cu`'s `nf_round_bf16` computes, and nf-cpu's `Bf16::from_f32`.
pub const fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if (b & 0x7fff_ffff) > 0x7f80_0000 {
        return ((b >> 16) as u16) | 0x0040;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to the nearest bf16 (ties to even), widened back to f32 (exactly).
pub const fn round_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// The bf16 element at bf16 offset `o` of a memory of f32 elements, widened to f32.
pub fn bf16_at(mem: &[f32], o: usize) -> f32 {
    let w = mem[o / 2].to_bits();
    let half = if o.is_multiple_of(2) {
        w & 0xffff
    } else {
        w >> 16
    };
    f32::from_bits(half << 16)
}

/// `C[p] = alpha·op(A[p])·op(B[p]) + beta·C[p]` for `p` in `0..batch`, all row-major, as in
/// `nf_core::ops::gemm::gemm` (same `ta`, `tb`, `m`, `n`, `k`). Matrices are element offsets
/// into the device memory (A and B in elements of `operands`, see the module documentation);
/// batch `p` of X starts at `x + p·stride_x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowGemm {
    /// The element type of A and B.
    pub operands: GemmPrecision,
    /// A is stored `k×m` (transposed) instead of `m×k`.
    pub ta: bool,
    /// B is stored `n×k` (transposed) instead of `k×n`.
    pub tb: bool,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Offset of A.
    pub a: usize,
    /// Elements between consecutive A matrices (0: the same A for every batch).
    pub stride_a: usize,
    /// Offset of B.
    pub b: usize,
    /// Elements between consecutive B matrices.
    pub stride_b: usize,
    /// Scale of the old C (0: C is overwritten without being read).
    pub beta: f32,
    /// Offset of C.
    pub c: usize,
    /// Elements between consecutive C matrices.
    pub stride_c: usize,
    /// Number of products.
    pub batch: usize,
}

impl RowGemm {
    /// A single (unbatched) product.
    #[allow(clippy::too_many_arguments)]
    pub const fn single(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: usize,
        b: usize,
        c: usize,
        beta: f32,
    ) -> RowGemm {
        RowGemm {
            operands: GemmPrecision::F32,
            ta,
            tb,
            m,
            n,
            k,
            alpha: 1.0,
            a,
            stride_a: 0,
            b,
            stride_b: 0,
            beta,
            c,
            stride_c: 0,
            batch: 1,
        }
    }
}

/// A cuBLAS transpose flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// `CUBLAS_OP_N`.
    N,
    /// `CUBLAS_OP_T`.
    T,
}

/// The arguments of one `cublasSgemmStridedBatched` call, or with bf16 operands one
/// `cublasGemmStridedBatchedEx` call (column-major; offsets are element offsets into the
/// device memory, A's and B's in elements of `operands`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CublasGemm {
    /// The element type of A and B (C is f32).
    pub operands: GemmPrecision,
    /// `transa`.
    pub transa: Trans,
    /// `transb`.
    pub transb: Trans,
    /// Rows of op(A) and C.
    pub m: i32,
    /// Columns of op(B) and C.
    pub n: i32,
    /// Columns of op(A), rows of op(B).
    pub k: i32,
    /// `alpha`.
    pub alpha: f32,
    /// Offset of A.
    pub a: usize,
    /// `lda`.
    pub lda: i32,
    /// `strideA`.
    pub stride_a: i64,
    /// Offset of B.
    pub b: usize,
    /// `ldb`.
    pub ldb: i32,
    /// `strideB`.
    pub stride_b: i64,
    /// `beta`.
    pub beta: f32,
    /// Offset of C.
    pub c: usize,
    /// `ldc`.
    pub ldc: i32,
    /// `strideC`.
    pub stride_c: i64,
    /// `batchCount`.
    pub batch: i32,
}

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| failed(format!("GEMM {what} = {v} does not fit cuBLAS's int")))
}

fn long(v: usize, what: &str) -> Result<i64, CudaError> {
    i64::try_from(v)
        .map_err(|_| failed(format!("GEMM {what} = {v} does not fit cuBLAS's long long")))
}

/// The cuBLAS call computing the row-major product `g` (see the module documentation).
///
/// # Errors
/// A dimension, leading dimension or stride that does not fit cuBLAS's integer types.
pub fn gemm_call(g: &RowGemm) -> Result<CublasGemm, CudaError> {
    let flag = |t: bool| if t { Trans::T } else { Trans::N };
    // cuBLAS's A is our B: stored k×n (ld n, used as is) or n×k (ld k, transposed).
    let lda = if g.tb { g.k } else { g.n };
    // cuBLAS's B is our A: stored m×k (ld k, used as is) or k×m (ld m, transposed).
    let ldb = if g.ta { g.m } else { g.k };
    Ok(CublasGemm {
        operands: g.operands,
        transa: flag(g.tb),
        transb: flag(g.ta),
        m: int(g.n, "n")?,
        n: int(g.m, "m")?,
        k: int(g.k, "k")?,
        alpha: g.alpha,
        a: g.b,
        lda: int(lda.max(1), "lda")?,
        stride_a: long(g.stride_b, "stride of B")?,
        b: g.a,
        ldb: int(ldb.max(1), "ldb")?,
        stride_b: long(g.stride_a, "stride of A")?,
        beta: g.beta,
        c: g.c,
        ldc: int(g.n.max(1), "ldc")?,
        stride_c: long(g.stride_c, "stride of C")?,
        batch: int(g.batch, "batch")?,
    })
}

/// The operands of `g`: rows and columns of the stored `A` and `B`.
fn stored_dims(g: &CublasGemm) -> ((usize, usize), (usize, usize)) {
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    let a = match g.transa {
        Trans::N => (m, k),
        Trans::T => (k, m),
    };
    let b = match g.transb {
        Trans::N => (k, n),
        Trans::T => (n, k),
    };
    (a, b)
}

/// Check `g` the way cuBLAS does (`CUBLAS_STATUS_INVALID_VALUE`) and its memory accesses
/// against a device memory of `mem_len` elements: every operand of every batch inside it, the
/// batches' outputs disjoint, and no output overlapping the operands it is computed from
/// (undefined in cuBLAS). A call that passes reads and writes only inside `0..mem_len`.
///
/// cuBLAS semantics: for each `p < batch`, with `A_p = mem[a + p·strideA..]` and so on,
/// `op(A)` is `m×k` (`A` stored `m×k` with `lda ≥ max(1, m)` for `N`, `k×m` with
/// `lda ≥ max(1, k)` for `T`), `op(B)` is `k×n` (`ldb ≥ max(1, k)` for `N`, `max(1, n)` for
/// `T`), `ldc ≥ max(1, m)`, and `C_p = alpha·op(A_p)·op(B_p) + beta·C_p` where `C_p` is not
/// read when `beta == 0`. Quick return when `m`, `n` or `batch` is 0.
///
/// # Errors
/// The first rule `g` breaks, in one line.
pub fn check_gemm(g: &CublasGemm, mem_len: usize) -> Result<(), CudaError> {
    if g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0 {
        return Err(failed(format!("negative dimension in {g:?}")));
    }
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    let ((ar, ac), (br, bc)) = stored_dims(g);
    if i64::from(g.lda) < ar.max(1) as i64 {
        return Err(failed(format!("lda {} < {} in {g:?}", g.lda, ar.max(1))));
    }
    if i64::from(g.ldb) < br.max(1) as i64 {
        return Err(failed(format!("ldb {} < {} in {g:?}", g.ldb, br.max(1))));
    }
    if i64::from(g.ldc) < m.max(1) as i64 {
        return Err(failed(format!("ldc {} < {} in {g:?}", g.ldc, m.max(1))));
    }
    if g.stride_a < 0 || g.stride_b < 0 || g.stride_c < 0 {
        return Err(failed(format!("negative stride in {g:?}")));
    }
    if m == 0 || n == 0 || g.batch == 0 {
        return Ok(());
    }
    // In 128 bits: offsets, strides and spans come from the caller and must not wrap.
    let w = |v: usize| v as u128;
    let (lda, ldb, ldc) = (w(g.lda as usize), w(g.ldb as usize), w(g.ldc as usize));
    let (sa, sb, sc) = (g.stride_a as u128, g.stride_b as u128, g.stride_c as u128);
    // Elements spanned by a column-major `rows × cols` matrix with leading dimension `ld`.
    let span = |rows: usize, cols: usize, ld: u128| {
        if rows == 0 || cols == 0 {
            0
        } else {
            w(cols - 1) * ld + w(rows)
        }
    };
    let batch = w(g.batch as usize);
    let (a_span, b_span, c_span) = (span(ar, ac, lda), span(br, bc, ldb), span(m, n, ldc));
    if batch > 1 && sc < c_span {
        return Err(failed(format!("outputs of the batches overlap in {g:?}")));
    }
    // The memory in elements of the operands' type (C is f32).
    let eb = g.operands.operand_bytes() as u128;
    let mem_ops = w(mem_len) * 4 / eb;
    let last = batch - 1;
    let ends = [
        (w(g.a) + last * sa + a_span, mem_ops, "A"),
        (w(g.b) + last * sb + b_span, mem_ops, "B"),
        (w(g.c) + last * sc + c_span, w(mem_len), "C"),
    ];
    for (end, len, what) in ends {
        if end > len {
            return Err(failed(format!(
                "{what} ends at {end}, past the memory ({len} elements) in {g:?}"
            )));
        }
    }
    if k > 0 {
        for p in 0..batch {
            // In bytes: the operands' elements may be narrower than C's.
            let (a0, b0) = ((w(g.a) + p * sa) * eb, (w(g.b) + p * sb) * eb);
            let (c0, c_len) = ((w(g.c) + p * sc) * 4, c_span * 4);
            let (a_span, b_span) = (a_span * eb, b_span * eb);
            let overlaps = |x0: u128, len: u128| x0 < c0 + c_len && c0 < x0 + len;
            if overlaps(a0, a_span) || overlaps(b0, b_span) {
                return Err(failed(format!(
                    "C overlaps an operand in batch {p} of {g:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Run `g` on `mem` with the semantics of `cublasSgemmStridedBatched` (column-major, see
/// [`check_gemm`]), or with bf16 operands of `cublasGemmStridedBatchedEx` with f32 output and
/// compute type, refusing what cuBLAS would reject and any access past `mem`. Products (exact
/// for bf16 operands) are accumulated in `f64` and rounded to f32 once.
///
/// # Errors
/// `g` fails [`check_gemm`]; `mem` is then unchanged.
pub fn sgemm_colmajor_reference(mem: &mut [f32], g: &CublasGemm) -> Result<(), CudaError> {
    check_gemm(g, mem.len())?;
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
    let (lda, ldb, ldc) = (g.lda as usize, g.ldb as usize, g.ldc as usize);
    let (sa, sb, sc) = (
        g.stride_a as usize,
        g.stride_b as usize,
        g.stride_c as usize,
    );
    for p in 0..g.batch as usize {
        let (a0, b0, c0) = (g.a + p * sa, g.b + p * sb, g.c + p * sc);
        for j in 0..n {
            for i in 0..m {
                let mut s = 0f64;
                for l in 0..k {
                    let at_a = match g.transa {
                        Trans::N => a0 + i + l * lda,
                        Trans::T => a0 + l + i * lda,
                    };
                    let at_b = match g.transb {
                        Trans::N => b0 + l + j * ldb,
                        Trans::T => b0 + j + l * ldb,
                    };
                    let (av, bv) = match g.operands {
                        GemmPrecision::F32 => (mem[at_a], mem[at_b]),
                        GemmPrecision::Bf16 => (bf16_at(mem, at_a), bf16_at(mem, at_b)),
                    };
                    s += f64::from(av) * f64::from(bv);
                }
                let at = c0 + i + j * ldc;
                let old = if g.beta == 0.0 {
                    0.0
                } else {
                    f64::from(g.beta) * f64::from(mem[at])
                };
                mem[at] = (f64::from(g.alpha) * s + old) as f32;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_core::ops::gemm::gemm;
    use nf_core::rng::Rng;

    /// Largest |x - y| relative to the largest |y| (1 when y is all zero).
    fn err(x: &[f32], y: &[f32]) -> f32 {
        let scale = y.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-30);
        x.iter().zip(y).fold(0f32, |a, (p, q)| a.max((p - q).abs())) / scale
    }

    /// Run `g` through the mapping and the column-major reference on a memory holding the
    /// operands at their offsets, and compare every batch with nf-core's row-major GEMM.
    fn check(g: RowGemm, rng: &mut Rng) -> f32 {
        let a_len = g.m * g.k;
        let b_len = g.k * g.n;
        let c_len = g.m * g.n;
        let end = [
            g.a + (g.batch - 1) * g.stride_a + a_len,
            g.b + (g.batch - 1) * g.stride_b + b_len,
            g.c + (g.batch - 1) * g.stride_c + c_len,
        ]
        .into_iter()
        .max()
        .unwrap();
        let mut mem: Vec<f32> = (0..end + 3).map(|_| rng.normal()).collect();
        if g.beta == 0.0 {
            for p in 0..g.batch {
                let c0 = g.c + p * g.stride_c;
                mem[c0..c0 + c_len].fill(f32::NAN);
            }
        }
        let mut want = mem.clone();
        for p in 0..g.batch {
            let (a0, b0, c0) = (
                g.a + p * g.stride_a,
                g.b + p * g.stride_b,
                g.c + p * g.stride_c,
            );
            let a = want[a0..a0 + a_len].to_vec();
            let b = want[b0..b0 + b_len].to_vec();
            gemm(
                g.ta,
                g.tb,
                g.m,
                g.n,
                g.k,
                g.alpha,
                &a,
                &b,
                g.beta,
                &mut want[c0..c0 + c_len],
            );
        }
        let call = gemm_call(&g).unwrap();
        sgemm_colmajor_reference(&mut mem, &call).unwrap_or_else(|e| panic!("{g:?}: {e}"));
        assert!(
            mem.iter().all(|v| v.is_finite()),
            "{g:?}: non-finite output"
        );
        err(&mem, &want)
    }

    /// Random shapes, transposes, scales and batch strides (operands placed one after
    /// another, A shared by the batch when its stride is 0).
    #[test]
    fn mapping_matches_row_major_gemm() {
        let mut rng = Rng::new(42);
        let mut worst = 0f32;
        for case in 0..400 {
            let m = 1 + rng.below(9) as usize;
            let n = 1 + rng.below(9) as usize;
            let k = 1 + rng.below(9) as usize;
            let batch = 1 + rng.below(4) as usize;
            let ta = rng.below(2) == 1;
            let tb = rng.below(2) == 1;
            let (alpha, beta) = [(1.0, 0.0), (1.0, 1.0), (0.5, -2.0), (-1.0, 0.0)][case % 4];
            let shared_a = rng.below(2) == 1;
            let gap = rng.below(3) as usize;
            let a = rng.below(5) as usize;
            let stride_a = if shared_a { 0 } else { m * k + gap };
            let b = a + stride_a * batch + m * k + gap;
            let stride_b = k * n + gap;
            let c = b + stride_b * batch + gap;
            let stride_c = m * n + gap;
            let g = RowGemm {
                operands: GemmPrecision::F32,
                ta,
                tb,
                m,
                n,
                k,
                alpha,
                a,
                stride_a,
                b,
                stride_b,
                beta,
                c,
                stride_c,
                batch,
            };
            let e = check(g, &mut rng);
            assert!(e < 1e-5, "{g:?}: error {e}");
            worst = worst.max(e);
        }
        println!("row-major -> cuBLAS mapping: 400 random GEMMs, worst error {worst:e}");
    }

    /// Every GEMM the backend issues, with the operands laid out as the backend lays them out
    /// (see `engine.rs`), at shapes where the dimensions differ from one another.
    #[test]
    fn every_gemm_of_the_backend() {
        let mut rng = Rng::new(7);
        // Convolution: c_out = 5, ckk = c_in·k·k = 3·9 = 27, hwo = 6·7 = 42, chunk of 3
        // samples; in_s = 3·8·9 (input 8×9), out_s = 5·42.
        let (c_out, ckk, hwo, ns, in_s) = (5, 27, 42, 3, 3 * 8 * 9);
        let out_s = c_out * hwo;
        let cols_len = ckk * hwo;
        let w = 0;
        let cols = w + c_out * ckk;
        let dy = cols + ns * cols_len;
        let parts = dy + ns * out_s;
        let x = parts + ns * c_out * ckk;
        let cases = [
            // conv forward: y_s = W · cols_s (W shared).
            (
                "conv forward",
                RowGemm {
                    operands: GemmPrecision::F32,
                    ta: false,
                    tb: false,
                    m: c_out,
                    n: hwo,
                    k: ckk,
                    alpha: 1.0,
                    a: w,
                    stride_a: 0,
                    b: cols,
                    stride_b: cols_len,
                    beta: 0.0,
                    c: dy,
                    stride_c: out_s,
                    batch: ns,
                },
            ),
            // conv weight gradient, batched into per-sample partials: dW_s = dy_s · cols_sᵀ.
            (
                "conv dW (partials)",
                RowGemm {
                    operands: GemmPrecision::F32,
                    ta: false,
                    tb: true,
                    m: c_out,
                    n: ckk,
                    k: hwo,
                    alpha: 1.0,
                    a: dy,
                    stride_a: out_s,
                    b: cols,
                    stride_b: cols_len,
                    beta: 0.0,
                    c: parts,
                    stride_c: c_out * ckk,
                    batch: ns,
                },
            ),
            // conv weight gradient, one sample accumulated into dW (beta = 1).
            (
                "conv dW (accumulate)",
                RowGemm::single(false, true, c_out, ckk, hwo, dy, cols, w, 1.0),
            ),
            // conv column gradient: dcols_s = Wᵀ · dy_s.
            (
                "conv dx (columns)",
                RowGemm {
                    operands: GemmPrecision::F32,
                    ta: true,
                    tb: false,
                    m: ckk,
                    n: hwo,
                    k: c_out,
                    alpha: 1.0,
                    a: w,
                    stride_a: 0,
                    b: dy,
                    stride_b: out_s,
                    beta: 0.0,
                    c: cols,
                    stride_c: cols_len,
                    batch: ns,
                },
            ),
            // 1×1 convolution: the input is its own column matrix (c_in = ckk = 27, hw = 42).
            (
                "pointwise conv dx",
                RowGemm {
                    operands: GemmPrecision::F32,
                    ta: true,
                    tb: false,
                    m: ckk,
                    n: hwo,
                    k: c_out,
                    alpha: 1.0,
                    a: w,
                    stride_a: 0,
                    b: dy,
                    stride_b: out_s,
                    beta: 0.0,
                    c: x,
                    stride_c: in_s.max(ckk * hwo),
                    batch: ns,
                },
            ),
        ];
        // Linear: n = 6 samples, fin = 11, fout = 4.
        let (nn, fin, fout) = (6, 11, 4);
        let (lx, lw, ly, ldw) = (
            0,
            nn * fin,
            nn * fin + fout * fin,
            nn * fin + fout * fin + nn * fout,
        );
        let linear = [
            (
                "linear forward",
                RowGemm::single(false, true, nn, fout, fin, lx, lw, ly, 0.0),
            ),
            (
                "linear dW",
                RowGemm::single(true, false, fout, fin, nn, ly, lx, ldw, 0.0),
            ),
            (
                "linear dx",
                RowGemm::single(false, false, nn, fin, fout, ly, lw, ldw, 0.0),
            ),
        ];
        for (name, g) in cases.into_iter().chain(linear) {
            let e = check(g, &mut rng);
            println!("{name}: {:?} -> error {e:e}", gemm_call(&g).unwrap());
            assert!(e < 1e-5, "{name}: error {e}");
        }
    }

    #[test]
    fn mapping_by_hand() {
        // Row-major C[2×3] = A[2×4] · B[4×3]: cuBLAS computes Cᵀ[3×2] = Bᵀ·Aᵀ with no
        // transposes, lda = 3 (B's row length), ldb = 4 (A's row length), ldc = 3.
        let c = gemm_call(&RowGemm::single(false, false, 2, 3, 4, 0, 8, 20, 0.0)).unwrap();
        assert_eq!((c.transa, c.transb), (Trans::N, Trans::N));
        assert_eq!((c.m, c.n, c.k), (3, 2, 4));
        assert_eq!((c.a, c.lda, c.b, c.ldb, c.c, c.ldc), (8, 3, 0, 4, 20, 3));
        // Linear forward y = x · Wᵀ (tb): cuBLAS's A is W (stored fout×fin), transposed, lda = fin.
        let c = gemm_call(&RowGemm::single(false, true, 5, 3, 7, 0, 100, 200, 0.0)).unwrap();
        assert_eq!(
            (c.transa, c.transb, c.lda, c.ldb),
            (Trans::T, Trans::N, 7, 7)
        );
        // Linear dW = dyᵀ · x (ta): cuBLAS's B is dy (stored n×fout), transposed, ldb = m.
        let c = gemm_call(&RowGemm::single(true, false, 3, 7, 5, 0, 100, 200, 0.0)).unwrap();
        assert_eq!(
            (c.transa, c.transb, c.lda, c.ldb, c.ldc),
            (Trans::N, Trans::T, 7, 3, 7)
        );
    }

    #[test]
    fn reference_rejects_what_cublas_rejects() {
        let mut mem = vec![0f32; 100];
        let ok = gemm_call(&RowGemm::single(false, false, 2, 3, 4, 0, 8, 20, 0.0)).unwrap();
        sgemm_colmajor_reference(&mut mem, &ok).unwrap();
        let bad_lda = CublasGemm { lda: 2, ..ok };
        assert!(sgemm_colmajor_reference(&mut mem, &bad_lda)
            .unwrap_err()
            .message()
            .contains("lda"));
        let bad_ldc = CublasGemm { ldc: 2, ..ok };
        assert!(sgemm_colmajor_reference(&mut mem, &bad_ldc)
            .unwrap_err()
            .message()
            .contains("ldc"));
        let past = CublasGemm { c: 98, ..ok };
        assert!(sgemm_colmajor_reference(&mut mem, &past)
            .unwrap_err()
            .message()
            .contains("past the memory"));
        let overlap = CublasGemm {
            batch: 2,
            stride_c: 3,
            ..ok
        };
        assert!(sgemm_colmajor_reference(&mut mem, &overlap)
            .unwrap_err()
            .message()
            .contains("overlap"));
        let aliased = CublasGemm { c: 8, ..ok };
        assert!(sgemm_colmajor_reference(&mut mem, &aliased)
            .unwrap_err()
            .message()
            .contains("overlaps an operand"));
        // Offsets and strides that would wrap in 64 bits are refused, not wrapped.
        let huge = CublasGemm {
            batch: i32::MAX,
            stride_a: i64::MAX,
            stride_c: 6,
            ..ok
        };
        assert!(check_gemm(&huge, 100)
            .unwrap_err()
            .message()
            .contains("past the memory"));
        let far = CublasGemm {
            b: usize::MAX,
            ..ok
        };
        assert!(check_gemm(&far, 100)
            .unwrap_err()
            .message()
            .contains("past the memory"));
        // The aliasing of a later batch is found before the first batch is written.
        let mut mem: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let late = CublasGemm {
            batch: 3,
            stride_a: 30,
            stride_c: 6,
            c: 60,
            ..ok
        };
        assert!(sgemm_colmajor_reference(&mut mem, &late)
            .unwrap_err()
            .message()
            .contains("overlaps an operand in batch 2"));
        assert!(mem.iter().enumerate().all(|(i, &v)| v == i as f32));
    }
}
