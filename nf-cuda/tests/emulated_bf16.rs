//! bf16 GEMM operands on the emulated device (`nf train --device cuda-emu --precision bf16`):
//! the engine rounds each f32 operand to bf16 with `nf_round_bf16` (the kernel source compiled
//! for the CPU) into the workspace, and the column-major reference runs the bf16 GEMM as
//! `cublasGemmStridedBatchedEx` would (bf16 inputs, f32 output). The convolution and linear
//! checks (`bf16_common`) hold each output to the f32 reference within `(2⁻⁷ + 10⁻⁴)·Σ|a||b|`
//! and to the reference on bf16-rounded inputs within `10⁻⁴·Σ|a||b|`.
use nf_core::backend::Backend;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_cuda::emu::{EmuBackend, EmuDevice, EmuOptions};
use nf_cuda::engine::Device;
use nf_cuda::gemm::{bf16_bits, GemmPrecision};
use nf_cuda::kernels::{Arg, Kernel};

mod bf16_common;

/// An emulated engine with GEMM operands of `p`, regions on `align_bytes`.
fn engine(p: GemmPrecision, align_bytes: usize) -> EmuBackend {
    let mut be = EmuBackend::emulated(bf16_common::ARENA, EmuOptions::default())
        .unwrap_or_else(|e| panic!("cannot build the emulated kernels: {e}"));
    be.set_region_align(align_bytes);
    be.set_gemm_precision(p);
    be
}

#[test]
fn bf16_convolutions_round_their_operands_and_accumulate_in_f32() {
    bf16_common::check_convolutions(engine, |be, g, chunk| {
        let prof = be.device().profile();
        if be.gemm_precision() == GemmPrecision::Bf16 {
            // Every GEMM had bf16 operands. Forward: W once, the columns per chunk;
            // backward: W once (for dx), dY and the columns per chunk.
            assert_eq!(prof.bf16_gemms, prof.gemms.len() as u64);
            let chunks = g.n.div_ceil(chunk) as u64;
            assert_eq!(prof.launches_of(Kernel::RoundBf16), 2 + 3 * chunks);
        } else {
            assert_eq!(prof.bf16_gemms, 0);
            assert_eq!(prof.launches_of(Kernel::RoundBf16), 0);
        }
    });
}

#[test]
fn bf16_linear_layers_round_their_operands_and_accumulate_in_f32() {
    bf16_common::check_linear(engine, |be| {
        let prof = be.device().profile();
        if be.gemm_precision() == GemmPrecision::Bf16 {
            assert_eq!((prof.bf16_gemms, prof.gemms.len()), (3, 3));
            // Forward: x and W; backward: dY, x and W.
            assert_eq!(prof.launches_of(Kernel::RoundBf16), 5);
        }
    });
}

/// A linear layer in bf16 given no scratch says so in one line (a plan sized for f32).
#[test]
fn bf16_without_planned_scratch_is_an_error() {
    let mut be = engine(GemmPrecision::Bf16, 4);
    let (x, wb, y) = (Region::new(0, 8), Region::new(8, 6), Region::new(14, 4));
    be.write(x, &[1.0; 8]);
    be.write(wb, &[1.0; 6]);
    be.linear_forward(2, 4, 1, x, wb, y, Region::NONE);
    let e = be.sync().unwrap_err().to_string();
    assert!(e.contains("bf16 operands") && !e.contains('\n'), "{e}");
}

/// `nf_round_bf16` rounds to nearest even, keeps infinities, signed zeros and subnormals,
/// overflows to infinity, quietens NaN, and packs two values to a word (the low half first; an
/// odd count leaves the last high half 0), exactly as `gemm::bf16_bits`.
#[test]
fn the_rounding_kernel_rounds_to_nearest_even() {
    let e = |k: i32| 2f32.powi(k);
    let special = [
        1.0,
        1.0 + e(-8),            // a tie: to even, 1
        1.0 + e(-7) + e(-8),    // a tie: to even, 1 + 2^-6
        1.0 + e(-8) + e(-20),   // above the tie: up
        -(1.0 + e(-7) + e(-8)), // the sign is kept
        f32::MAX,               // rounds to infinity
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(1),       // the smallest subnormal
        f32::from_bits(0x8000),  // a subnormal tie (to even: 0)
        f32::from_bits(0x18000), // a subnormal tie (to even: up)
        f32::NAN,
        f32::from_bits(0x7f80_0001), // a NaN whose payload is only in the low half
        3.0e38,
        1e-40,
    ];
    let want: [u16; 17] = [
        0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf82, 0x7f80, 0x7f80, 0xff80, 0x0000, 0x8000, 0x0000,
        0x0000, 0x0002, 0x7fc0, 0x7fc0, 0x7f62, 0x0001,
    ];
    for (x, w) in special.iter().zip(want) {
        assert_eq!(bf16_bits(*x), w, "{x:e} ({:#010x})", x.to_bits());
    }
    let mut rng = Rng::new(3);
    let mut xs: Vec<f32> = special.to_vec();
    xs.extend((0..1000).map(|_| rng.normal() * e(rng.below(60) as i32 - 30)));
    for n in [xs.len(), xs.len() - 1] {
        let words = n.div_ceil(2);
        let mut dev = EmuDevice::new(n + words + 1, EmuOptions::default()).unwrap();
        dev.upload(0, &xs[..n]).unwrap();
        let args = [
            Arg::Buf(Region::new(0, n)),
            Arg::Buf(Region::new(n, words)),
            Arg::I64(n as i64),
        ];
        nf_cuda::kernels::check_args(Kernel::RoundBf16, &args, dev.mem_len()).unwrap();
        // SAFETY: the arguments pass check_args; the kernel reads the n values at 0 and writes
        // ⌈n/2⌉ words at n, inside the device memory.
        unsafe { dev.launch(Kernel::RoundBf16, words, &args).unwrap() };
        let mut out = vec![0.0; words + 1];
        dev.download(n, &mut out).unwrap();
        for i in 0..n {
            let word = out[i / 2].to_bits();
            let half = if i.is_multiple_of(2) {
                word & 0xffff
            } else {
                word >> 16
            } as u16;
            assert_eq!(half, bf16_bits(xs[i]), "element {i} of {n}: {:e}", xs[i]);
        }
        if n % 2 == 1 {
            assert_eq!(out[words - 1].to_bits() >> 16, 0, "the last high half");
        }
        // Nothing written past the words (the memory starts as NaN).
        assert!(out[words].is_nan());
    }
}

/// The column-major reference with bf16 operands: offsets count bf16 elements (an odd one is
/// the high half of an f32 element), the memory holds twice as many of them as f32 elements,
/// and an f32 C overlapping a bf16 operand's bytes is refused, as cuBLAS leaves it undefined.
#[test]
fn the_bf16_reference_reads_halves_and_checks_bytes() {
    use nf_cuda::gemm::{check_gemm, gemm_call, sgemm_colmajor_reference, CublasGemm, RowGemm};
    let pack = |lo: f32, hi: f32| {
        f32::from_bits(u32::from(bf16_bits(lo)) | (u32::from(bf16_bits(hi)) << 16))
    };
    // Row-major C[1×1] = A[1×3] · B[3×1]: A at bf16 offset 1 (1, 2, 3), B at 5 (4, 5, 6).
    let mut mem = vec![
        pack(9.0, 1.0),
        pack(2.0, 3.0),
        pack(9.0, 4.0),
        pack(5.0, 6.0),
        0.0,
    ];
    let g = RowGemm {
        operands: GemmPrecision::Bf16,
        ..RowGemm::single(false, false, 1, 1, 3, 1, 5, 4, 0.0)
    };
    let call = gemm_call(&g).unwrap();
    sgemm_colmajor_reference(&mut mem, &call).unwrap();
    assert_eq!(mem[4], 1.0 * 4.0 + 2.0 * 5.0 + 3.0 * 6.0);
    // In a memory of 8 f32 elements (16 bf16): C at f32 element 3 (bytes 12..16), our A at
    // bf16 2..5 (bytes 4..10), our B (cuBLAS's A) at bf16 13..16 ends exactly at the end.
    let ok = CublasGemm {
        a: 13,
        b: 2,
        c: 3,
        ..call
    };
    check_gemm(&ok, 8).unwrap();
    let e = check_gemm(&CublasGemm { a: 14, ..ok }, 8)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("A ends at 17, past the memory (16 elements)"),
        "{e}"
    );
    // C at f32 element 2 (bytes 8..12) covers our A's last element (bf16 4, bytes 8..10):
    // refused (at element 3, as above, it is clear of both operands).
    let e = check_gemm(&CublasGemm { c: 2, ..ok }, 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overlaps an operand"), "{e}");
}
