// Batch normalisation over NCHW, PyTorch semantics (ops::batchnorm). The per-channel sums come
// from reduce.cu; `gb` holds gamma then beta, `running` the running mean then variance.

// From the partial sums of squared deviations: invstd[ch] = 1/sqrt(var + eps) with the biased
// variance, and the running statistics move by `momentum` towards the batch mean and the
// unbiased variance (the biased one when m = 1).
extern "C" __global__ void nf_bn_stats(const float* part, const float* mean, float* invstd, float* running, int c, int parts, int n, int hw, float eps, float momentum) {
    NF_FOR(ch, c) {
        double m = (double)n * (double)hw;
        double ss = 0.0;
        for (int j = 0; j < parts; ++j) ss += (double)part[ch * (long long)parts + j];
        double var = ss / m;
        invstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
        double unbiased = m > 1.0 ? var * m / (m - 1.0) : var;
        double mom = (double)momentum;
        running[ch] = (float)((1.0 - mom) * (double)running[ch] + mom * (double)mean[ch]);
        running[c + ch] = (float)((1.0 - mom) * (double)running[c + ch] + mom * unbiased);
    }
}

// x becomes x-hat = (x - mean)*invstd, and y = gamma*x-hat + beta.
extern "C" __global__ void nf_bn_normalize(float* x, float* y, const float* mean, const float* invstd, const float* gb, int n, int c, int hw) {
    NF_FOR(i, (long long)n * c * hw) {
        int ch = (int)((i / hw) % c);
        float xh = (float)(((double)x[i] - (double)mean[ch]) * (double)invstd[ch]);
        x[i] = xh;
        y[i] = gb[ch] * xh + gb[c + ch];
    }
}

// Evaluation mode: y = gamma*(x - running_mean)/sqrt(running_var + eps) + beta.
extern "C" __global__ void nf_bn_eval(const float* x, float* y, const float* gb, const float* running, int n, int c, int hw, float eps) {
    NF_FOR(i, (long long)n * c * hw) {
        int ch = (int)((i / hw) % c);
        float scale = gb[ch] / sqrtf(running[c + ch] + eps);
        float shift = gb[c + ch] - running[ch] * scale;
        y[i] = scale * x[i] + shift;
    }
}

// Backward, in place on dy, once dgb holds dgamma = sum(dy*x-hat) then dbeta = sum(dy):
// dx = gamma*invstd*(dy - dbeta/m - x-hat*dgamma/m).
extern "C" __global__ void nf_bn_backward_dx(float* dy, const float* xhat, const float* gb, const float* invstd, const float* dgb, int n, int c, int hw) {
    double m = (double)n * (double)hw;
    NF_FOR(i, (long long)n * c * hw) {
        int ch = (int)((i / hw) % c);
        double k = (double)gb[ch] * (double)invstd[ch];
        double mean_dy = (double)dgb[c + ch] / m;
        double mean_dyx = (double)dgb[ch] / m;
        dy[i] = (float)(k * ((double)dy[i] - mean_dy - (double)xhat[i] * mean_dyx));
    }
}
