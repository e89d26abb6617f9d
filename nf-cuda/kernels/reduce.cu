// Per-channel reductions over NCHW tensors (batch norm statistics, bias gradients), in two
// launches without atomics: `parts` partial sums per channel, accumulated in double by one
// thread each, then one thread per channel adds its partials in order. Element i (0 <= i <
// n*hw) of channel ch is x[((i / hw)*c + ch)*hw + i % hw]; partial j of channel ch takes the
// elements i = j, j + parts, j + 2*parts, ... (neighbouring threads read neighbouring pixels).

// Walks the elements of channel `ch` assigned to partial `j`, calling BODY with the flat
// NCHW index `at`.
#define NF_CHANNEL_WALK(at, n, c, hw, ch, j, parts, BODY)                       \
    {                                                                          \
        long long s_ = (j) / (hw);                                             \
        long long p_ = (j) % (hw);                                             \
        while (s_ < (n)) {                                                     \
            long long at = (s_ * (c) + (ch)) * (long long)(hw) + p_;           \
            BODY;                                                              \
            p_ += (parts);                                                     \
            if (p_ >= (hw)) {                                                  \
                s_ += p_ / (hw);                                               \
                p_ = p_ % (hw);                                                \
            }                                                                  \
        }                                                                      \
    }

// part[ch*parts + j] = partial sum of x (mean == null) or of (x - mean[ch])^2.
extern "C" __global__ void nf_chan_partial(const float* x, const float* mean, float* part, int n, int c, int hw, int parts) {
    NF_FOR(t, (long long)c * parts) {
        int ch = (int)(t / parts), j = (int)(t % parts);
        double acc = 0.0;
        if (mean != nullptr) {
            double mu = (double)mean[ch];
            NF_CHANNEL_WALK(at, n, c, hw, ch, j, parts, {
                double d = (double)x[at] - mu;
                acc += d * d;
            })
        } else {
            NF_CHANNEL_WALK(at, n, c, hw, ch, j, parts, { acc += (double)x[at]; })
        }
        part[t] = (float)acc;
    }
}

// pa[ch*parts + j] = partial sum of a; pb[ch*parts + j] = partial sum of a*b
// (batch-norm backward: a = dy, b = x-hat).
extern "C" __global__ void nf_chan_partial2(const float* a, const float* b, float* pa, float* pb, int n, int c, int hw, int parts) {
    NF_FOR(t, (long long)c * parts) {
        int ch = (int)(t / parts), j = (int)(t % parts);
        double sa = 0.0, sab = 0.0;
        NF_CHANNEL_WALK(at, n, c, hw, ch, j, parts, {
            double av = (double)a[at];
            sa += av;
            sab += av * (double)b[at];
        })
        pa[t] = (float)sa;
        pb[t] = (float)sab;
    }
}

// out[ch] = (sum over j of part[ch*parts + j]) / div, summed in double in order of j.
extern "C" __global__ void nf_chan_finish(const float* part, float* out, int c, int parts, long long div) {
    NF_FOR(ch, c) {
        double acc = 0.0;
        for (int j = 0; j < parts; ++j) acc += (double)part[ch * (long long)parts + j];
        out[ch] = (float)(acc / (double)div);
    }
}
