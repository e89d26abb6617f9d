// im2col and its adjoint for a chunk of `ns` samples (ops::conv2d::im2col / col2im).
// The columns of sample s are cols[s][row][col] with row = (ci*k + ky)*k + kx and
// col = oy*wo + ox, i.e. sample-major blocks of one sample's `c_in*k*k x ho*wo` matrix.

// One thread per column entry; padding entries are 0.
extern "C" __global__ void nf_im2col(const float* x, float* cols, int ns, int c_in, int h, int w, int k, int stride, int pad, int ho, int wo) {
    long long hwo = (long long)ho * wo;
    long long rows = (long long)c_in * k * k;
    NF_FOR(i, (long long)ns * rows * hwo) {
        int p = (int)(i % hwo);
        long long t = i / hwo;
        int row = (int)(t % rows);
        long long s = t / rows;
        int ox = p % wo, oy = p / wo;
        int kx = row % k, ky = (row / k) % k, ci = row / (k * k);
        int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[((s * c_in + ci) * h + iy) * (long long)w + ix];
        cols[i] = v;
    }
}

// One thread per input pixel: dx[s, ci, iy, ix] = sum over the (ky, kx) taps, in increasing
// order, of the column entries that read this pixel (a gather: no atomics, same order of
// additions as the reference's scatter).
extern "C" __global__ void nf_col2im(const float* cols, float* dx, int ns, int c_in, int h, int w, int k, int stride, int pad, int ho, int wo) {
    long long hwo = (long long)ho * wo;
    long long rows = (long long)c_in * k * k;
    NF_FOR(i, (long long)ns * c_in * h * w) {
        int ix = (int)(i % w);
        long long t = i / w;
        int iy = (int)(t % h);
        t /= h;
        int ci = (int)(t % c_in);
        long long s = t / c_in;
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
                long long row = ((long long)ci * k + ky) * k + kx;
                acc += cols[(s * rows + row) * hwo + (long long)oy * wo + ox];
            }
        }
        dx[i] = acc;
    }
}
