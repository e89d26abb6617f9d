// Element-wise kernels: fill, copy, ReLU, residual add, bias add and SGD. References: nf-core ops::activation, optim::Sgd::update.

// x[i] = v
extern "C" __global__ void nf_fill(float* x, long long n, float v) {
    NF_FOR(i, n) { x[i] = v; }
}

// dst[i] = src[i] (disjoint)
extern "C" __global__ void nf_copy(const float* src, float* dst, long long n) {
    NF_FOR(i, n) { dst[i] = src[i]; }
}

// x = max(x, 0) in place; NaN stays NaN (ops::activation::relu_forward).
extern "C" __global__ void nf_relu_forward(float* x, long long n) {
    NF_FOR(i, n) {
        if (x[i] < 0.0f) x[i] = 0.0f;
    }
}

// dy = 0 where the ReLU output y <= 0 (ops::activation::relu_backward).
extern "C" __global__ void nf_relu_backward(const float* y, float* dy, long long n) {
    NF_FOR(i, n) {
        if (y[i] <= 0.0f) dy[i] = 0.0f;
    }
}

// y += x (ops::activation::add_assign).
extern "C" __global__ void nf_add_assign(float* y, const float* x, long long n) {
    NF_FOR(i, n) { y[i] += x[i]; }
}

// y[s, ch, p] += b[ch] over `total` elements of c channels of hw pixels (conv bias; linear bias
// with hw = 1).
extern "C" __global__ void nf_bias_add(float* y, const float* b, long long total, int c, int hw) {
    NF_FOR(i, total) { y[i] += b[(int)((i / hw) % c)]; }
}

// One SGD step (optim::Sgd::update): g = grad + wd*p; buf = mu*buf + g;
// step = nesterov ? g + mu*buf : buf; p -= lr*step.
extern "C" __global__ void nf_sgd(float* p, const float* grad, float* mom, long long n, float lr, float mu, float wd, int nesterov) {
    NF_FOR(i, n) {
        float g = grad[i] + wd * p[i];
        float b = mu * mom[i] + g;
        mom[i] = b;
        float step = nesterov ? g + mu * b : b;
        p[i] -= lr * step;
    }
}
