// Whole-buffer kernels of the backend's own (Backend::fill, Backend::copy): no op of nf-core.

// x[i] = v
extern "C" __global__ void nf_fill(float* x, long long n, float v) {
    NF_FOR(i, n) { x[i] = v; }
}

// dst[i] = src[i] (disjoint)
extern "C" __global__ void nf_copy(const float* src, float* dst, long long n) {
    NF_FOR(i, n) { dst[i] = src[i]; }
}

// f32 to bf16, round to nearest even (NaN stays a quiet NaN; overflow rounds to infinity), as
// nf-cpu's Bf16::from_f32 and nf-cuda's gemm::bf16_bits: the upper 16 bits of the f32.
static __device__ __forceinline__ unsigned nf_bf16_bits(float x) {
    unsigned b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16) | 0x0040u;
    }
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

// The n f32 of x rounded to bf16, packed two to a 32-bit word of y (element 2i in the low
// half, as a little-endian bf16 array; the high half of the last word is 0 when n is odd):
// the operands of a bf16 GEMM (cublasGemmStridedBatchedEx, CUDA_R_16BF). One thread per word.
extern "C" __global__ void nf_round_bf16(const float* x, float* y, long long n) {
    NF_FOR(i, (n + 1) / 2) {
        unsigned lo = nf_bf16_bits(x[2 * i]);
        unsigned hi = 2 * (long long)i + 1 < n ? nf_bf16_bits(x[2 * i + 1]) : 0u;
        y[i] = __uint_as_float(lo | (hi << 16));
    }
}
