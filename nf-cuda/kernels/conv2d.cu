// Convolution as GEMMs over a chunk of `ns` samples (ops::conv2d::forward / backward).
//
// The columns of a chunk are one matrix of c_in*k*k rows and ns*ho*wo columns, so that a whole
// chunk is one GEMM with the samples side by side (its N is ns*ho*wo, not ho*wo):
// cols[row][s*hwo + p] with row = (ci*k + ky)*k + kx and p = oy*wo + ox. Outputs and output
// gradients of the chunk are used in the same channel-major form ("CN": [c][s*hwo + p]), and
// the two permutes below move them to and from the arena's NCHW.
//
// Offsets into the buffer a thread does not own are 64-bit: the thread count bounds the
// buffer each thread writes (below 2^31 elements), not the one it reads. The input of a 1x1
// stride-2 convolution has 4x as many elements as its columns, so a chunk whose columns are
// just under 2^31 reads past 2^32 input elements; the columns that col2im gathers from have
// k*k times as many elements as its input.

// One thread per column entry; padding entries are 0.
extern "C" __global__ void nf_im2col(const float* x, float* cols, int ns, int c_in, int h, int w, int k, int stride, int pad, int ho, int wo) {
    unsigned hwo = (unsigned)ho * (unsigned)wo;
    unsigned width = (unsigned)ns * hwo;
    unsigned rows = (unsigned)c_in * (unsigned)k * (unsigned)k;
    NF_FOR(i, (long long)rows * width) {
        unsigned col = i % width, row = i / width;
        unsigned s = col / hwo, p = col % hwo;
        int ox = (int)(p % (unsigned)wo), oy = (int)(p / (unsigned)wo);
        int kx = (int)(row % (unsigned)k), ky = (int)((row / (unsigned)k) % (unsigned)k);
        unsigned ci = row / ((unsigned)k * (unsigned)k);
        int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
            unsigned long long plane = (unsigned long long)s * (unsigned)c_in + ci;
            v = x[(plane * (unsigned)h + (unsigned)iy) * (unsigned)w + (unsigned)ix];
        }
        cols[i] = v;
    }
}

// One thread per input pixel: dx[s, ci, iy, ix] = sum over the (ky, kx) taps, in increasing
// order, of the column entries that read this pixel (a gather: no atomics, same order of
// additions as the reference's scatter).
extern "C" __global__ void nf_col2im(const float* cols, float* dx, int ns, int c_in, int h, int w, int k, int stride, int pad, int ho, int wo) {
    unsigned hwo = (unsigned)ho * (unsigned)wo;
    unsigned long long width = (unsigned long long)ns * hwo;
    NF_FOR(i, (long long)ns * c_in * h * w) {
        int ix = (int)(i % (unsigned)w);
        unsigned t = i / (unsigned)w;
        int iy = (int)(t % (unsigned)h);
        t /= (unsigned)h;
        unsigned ci = t % (unsigned)c_in;
        unsigned s = t / (unsigned)c_in;
        float acc = 0.0f;
        for (int ky = 0; ky < k; ++ky) {
            int ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0) continue;
            int oy = ty / stride;
            if (oy >= ho) continue;
            for (int kx = 0; kx < k; ++kx) {
                int tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0) continue;
                int ox = tx / stride;
                if (ox >= wo) continue;
                unsigned row = (ci * (unsigned)k + (unsigned)ky) * (unsigned)k + (unsigned)kx;
                acc += cols[row * width + (unsigned long long)s * hwo + (unsigned)(oy * wo + ox)];
            }
        }
        dx[i] = acc;
    }
}

// NCHW -> CN for a chunk: cn[ch][s*hw + p] = x[s][ch][p] (output gradients before the GEMMs).
extern "C" __global__ void nf_nchw_to_cn(const float* x, float* cn, int ns, int c, int hw) {
    unsigned width = (unsigned)ns * (unsigned)hw;
    NF_FOR(i, (long long)ns * c * hw) {
        unsigned col = i % width, ch = i / width;
        unsigned s = col / (unsigned)hw, p = col % (unsigned)hw;
        cn[i] = x[(s * (unsigned)c + ch) * (unsigned)hw + p];
    }
}

// CN -> NCHW for a chunk, adding the per-channel bias when `bias` is not null:
// y[s][ch][p] = cn[ch][s*hw + p] (+ bias[ch]) (convolution outputs after the GEMM).
extern "C" __global__ void nf_cn_to_nchw(const float* cn, const float* bias, float* y, int ns, int c, int hw) {
    unsigned width = (unsigned)ns * (unsigned)hw;
    NF_FOR(i, (long long)ns * c * hw) {
        unsigned p = i % (unsigned)hw, t = i / (unsigned)hw;
        unsigned ch = t % (unsigned)c, s = t / (unsigned)c;
        float v = cn[ch * width + s * (unsigned)hw + p];
        y[i] = bias != nullptr ? v + bias[ch] : v;
    }
}
