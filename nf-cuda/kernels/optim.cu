// The SGD update (optim::Sgd::update).

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
