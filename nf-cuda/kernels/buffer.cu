// Whole-buffer kernels of the backend's own (Backend::fill, Backend::copy): no op of nf-core.

// x[i] = v
extern "C" __global__ void nf_fill(float* x, long long n, float v) {
    NF_FOR(i, n) { x[i] = v; }
}

// dst[i] = src[i] (disjoint)
extern "C" __global__ void nf_copy(const float* src, float* dst, long long n) {
    NF_FOR(i, n) { dst[i] = src[i]; }
}
