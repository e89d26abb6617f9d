// Pooling over `planes` = n*c planes of h x w (ops::pool).

// Index in the plane of the first maximum of the 2x2 window at (oy, ox), row-major scan.
static __device__ __forceinline__ int nf_argmax2(const float* plane, int w, int oy, int ox) {
    int i0 = 2 * oy * w + 2 * ox;
    int best = i0;
    if (plane[i0 + 1] > plane[best]) best = i0 + 1;
    if (plane[i0 + w] > plane[best]) best = i0 + w;
    if (plane[i0 + w + 1] > plane[best]) best = i0 + w + 1;
    return best;
}

// 2x2 max pooling, stride 2, floor: one thread per output.
extern "C" __global__ void nf_maxpool2_forward(const float* x, float* y, int planes, int h, int w) {
    int ho = h / 2, wo = w / 2;
    NF_FOR(i, (long long)planes * ho * wo) {
        int ox = (int)(i % wo);
        long long t = i / wo;
        int oy = (int)(t % ho);
        long long pl = t / ho;
        const float* plane = x + pl * h * (long long)w;
        y[i] = plane[nf_argmax2(plane, w, oy, ox)];
    }
}

// Backward: one thread per input pixel, which receives its window's gradient when it is the
// window's first maximum, else 0 (also in a dropped last row or column).
extern "C" __global__ void nf_maxpool2_backward(const float* x, const float* dy, float* dx, int planes, int h, int w) {
    int ho = h / 2, wo = w / 2;
    NF_FOR(i, (long long)planes * h * w) {
        int ix = (int)(i % w);
        long long t = i / w;
        int iy = (int)(t % h);
        long long pl = t / h;
        int oy = iy / 2, ox = ix / 2;
        float v = 0.0f;
        if (oy < ho && ox < wo) {
            const float* plane = x + pl * h * (long long)w;
            if (nf_argmax2(plane, w, oy, ox) == iy * w + ix) v = dy[(pl * ho + oy) * wo + ox];
        }
        dx[i] = v;
    }
}

// PyTorch's adaptive pooling bin i of s over len: [floor(i*len/s), ceil((i+1)*len/s)).
static __device__ __forceinline__ int nf_bin_lo(int i, int len, int s) { return (int)((long long)i * len / s); }
static __device__ __forceinline__ int nf_bin_hi(int i, int len, int s) { return (int)(((long long)(i + 1) * len + s - 1) / s); }

// Adaptive average pooling to s x s: one thread per output; each row of the bin is summed,
// then added to the total (the reference's order).
extern "C" __global__ void nf_avgpool_forward(const float* x, float* y, int planes, int h, int w, int s) {
    NF_FOR(i, (long long)planes * s * s) {
        int ox = (int)(i % s);
        long long t = i / s;
        int oy = (int)(t % s);
        long long pl = t / s;
        const float* plane = x + pl * h * (long long)w;
        int y0 = nf_bin_lo(oy, h, s), y1 = nf_bin_hi(oy, h, s);
        int x0 = nf_bin_lo(ox, w, s), x1 = nf_bin_hi(ox, w, s);
        float acc = 0.0f;
        for (int yy = y0; yy < y1; ++yy) {
            float row = 0.0f;
            for (int xx = x0; xx < x1; ++xx) row += plane[yy * w + xx];
            acc += row;
        }
        y[i] = acc / (float)((y1 - y0) * (x1 - x0));
    }
}

// Backward: one thread per input pixel, gathering dy/bin-size from every bin that contains it,
// bins in row-major order (the reference's order of additions).
extern "C" __global__ void nf_avgpool_backward(const float* dy, float* dx, int planes, int h, int w, int s) {
    NF_FOR(i, (long long)planes * h * w) {
        int ix = (int)(i % w);
        long long t = i / w;
        int iy = (int)(t % h);
        long long pl = t / h;
        const float* g = dy + pl * s * (long long)s;
        float v = 0.0f;
        for (int oy = 0; oy < s; ++oy) {
            int y0 = nf_bin_lo(oy, h, s), y1 = nf_bin_hi(oy, h, s);
            if (iy < y0 || iy >= y1) continue;
            for (int ox = 0; ox < s; ++ox) {
                int x0 = nf_bin_lo(ox, w, s), x1 = nf_bin_hi(ox, w, s);
                if (ix < x0 || ix >= x1) continue;
                v += g[oy * s + ox] / (float)((y1 - y0) * (x1 - x0));
            }
        }
        dx[i] = v;
    }
}
