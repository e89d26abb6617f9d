// The bias of a linear layer (ops::linear; the GEMMs go to cuBLAS, src/gemm.rs).

// y[s, ch, p] += b[ch] over `total` elements of c channels of hw pixels (the linear layer's bias:
// hw = 1; a convolution adds its bias in nf_cn_to_nchw, conv2d.cu).
extern "C" __global__ void nf_bias_add(float* y, const float* b, long long total, int c, int hw) {
    NF_FOR(i, total) { y[i] += b[(int)((i / hw) % c)]; }
}
