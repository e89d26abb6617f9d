// ReLU and the residual addition (ops::activation).

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
