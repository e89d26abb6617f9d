// Softmax cross-entropy (ops::loss::softmax_xent): one thread per row. out[r] receives the
// row's loss and out[rows + r] 1 when its first maximal logit is at the label (else 0);
// nf_score_add then adds them to a device accumulator. A label that is not an integer in
// 0..classes gives loss 0, not correct, and a zero gradient row. When dlogits is not null it
// receives (softmax - onehot) * inv_n, the gradient of the mean loss over the whole batch of
// n = 1/inv_n rows.
extern "C" __global__ void nf_softmax_xent(const float* logits, const float* labels, float* dlogits, float* out, int rows, int classes, float inv_n) {
    NF_FOR(r, rows) {
        const float* row = logits + r * (long long)classes;
        float lab = labels[r];
        bool valid = lab >= 0.0f && lab < (float)classes && lab == truncf(lab);
        int arg = 0;
        float mx = row[0];
        for (int j = 1; j < classes; ++j) {
            if (row[j] > mx) {
                mx = row[j];
                arg = j;
            }
        }
        double sum = 0.0;
        for (int j = 0; j < classes; ++j) sum += (double)expf(row[j] - mx);
        float* g = dlogits != nullptr ? dlogits + r * (long long)classes : nullptr;
        if (!valid) {
            out[r] = 0.0f;
            out[rows + r] = 0.0f;
            if (g != nullptr)
                for (int j = 0; j < classes; ++j) g[j] = 0.0f;
            continue;
        }
        int label = (int)lab;
        out[r] = (float)(log(sum) - (double)(row[label] - mx));
        out[rows + r] = arg == label ? 1.0f : 0.0f;
        if (g != nullptr) {
            double inv_sum = 1.0 / sum;
            for (int j = 0; j < classes; ++j) g[j] = (float)((double)expf(row[j] - mx) * inv_sum) * inv_n;
            g[label] -= inv_n;
        }
    }
}

// Deferred scores: adds the `rows` losses and correct flags that nf_softmax_xent left in `out`
// to the accumulator `acc` (4 floats: the running loss sum as a hi + lo pair of floats, then
// the running correct count likewise, so that sums over an epoch keep about 48 bits). One
// thread; the rows are added in order, in double.
extern "C" __global__ void nf_score_add(const float* out, float* acc, int rows) {
    NF_FOR(t, 1) {
        double loss = 0.0, correct = 0.0;
        for (int r = 0; r < rows; ++r) {
            loss += (double)out[r];
            correct += (double)out[rows + r];
        }
        double l = (double)acc[0] + (double)acc[1] + loss;
        float lh = (float)l;
        acc[0] = lh;
        acc[1] = (float)(l - (double)lh);
        double c = (double)acc[2] + (double)acc[3] + correct;
        float ch = (float)c;
        acc[2] = ch;
        acc[3] = (float)(c - (double)ch);
    }
}
