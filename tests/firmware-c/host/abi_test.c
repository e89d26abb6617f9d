/* Host test of the NeuroFlux C ABI (libneuroflux_c.a built for the host): every error code on
 * bad input (NULL pointers, misaligned memory, invalid descriptions, options and schedules, a
 * budget or memory too small, failing callbacks, calls out of order or from a callback), then a
 * small CNN trained on synthetic data block by block, twice, with identical results, whose
 * predictions through nf_predict reproduce the trainer's evaluation of every head, also after
 * the model is saved and loaded into a new trainer. Prints
 * "abi_test: N checks passed" and exits 0, or the failed checks and exits 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuroflux.h"

static int checks, failures;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        checks++;                                                                            \
        if (!(cond)) {                                                                       \
            failures++;                                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
        }                                                                                    \
    } while (0)

#define CHECK_RC(call, want)                                                                 \
    do {                                                                                     \
        int32_t rc_ = (call);                                                                \
        checks++;                                                                            \
        if (rc_ != (want)) {                                                                 \
            failures++;                                                                      \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__,       \
                    __LINE__, #call, (int)rc_, nf_strerror(rc_), (int)(want),                 \
                    nf_strerror(want));                                                      \
        }                                                                                    \
    } while (0)

/* --- A small model and synthetic data ---------------------------------------------------- */

#define SIDE 12u
#define CLASSES 3u
#define N_TRAIN 96u
#define N_VAL 24u
#define N_TEST 48u

static const nf_op OPS[] = {
    {NF_OP_CONV, 8, 3, 1, 1, 0}, {NF_OP_BATCHNORM, 0, 0, 0, 0, 0}, {NF_OP_RELU, 0, 0, 0, 0, 0},
    {NF_OP_MAXPOOL2, 0, 0, 0, 0, 0},
    {NF_OP_CONV, 16, 3, 1, 1, 0}, {NF_OP_BATCHNORM, 0, 0, 0, 0, 0}, {NF_OP_RELU, 0, 0, 0, 0, 0},
};
static const uint32_t UNITS[] = {4, 3};

static nf_model model(void) {
    nf_model m = {OPS, 7, UNITS, 2, 1, SIDE, SIDE, CLASSES, 0, 0.0f, 0.0f};
    return m;
}

typedef struct {
    int fail_at;        /* read fails at this training index (-1: never) */
    int bad_label_at;   /* returns label CLASSES at this index (-1: never) */
    nf_trainer *self;   /* the trainer, to call back into from on_epoch */
    int32_t reentry_rc; /* what the call from inside the callback returned */
    int epochs_seen;
    unsigned reads[3];
} source;

/* Class c lights up one third of the image (rows), plus deterministic noise. */
static int32_t read_sample(void *user, uint32_t split, uint32_t index, float *values,
                           uint32_t n_values, uint32_t *label) {
    source *s = user;
    if (split > NF_SPLIT_TEST || n_values != SIDE * SIDE || !values || !label) return 7;
    s->reads[split]++;
    if (split == NF_SPLIT_TRAIN && (int)index == s->fail_at) return 5;
    uint32_t c = (index * 7u + split) % CLASSES;
    uint32_t x = index * 2654435761u + split * 97u + 1u;
    for (uint32_t i = 0; i < n_values; i++) {
        x = x * 1664525u + 1013904223u;
        float noise = (float)(x >> 8) / 16777216.0f - 0.5f;
        uint32_t row = i / SIDE;
        values[i] = (row / (SIDE / CLASSES) == c ? 1.0f : -0.3f) + 0.6f * noise;
    }
    *label = (split == NF_SPLIT_TRAIN && (int)index == s->bad_label_at) ? CLASSES : c;
    return 0;
}

static void on_epoch(void *user, const nf_epoch_stats *st) {
    source *s = user;
    s->epochs_seen++;
    if (s->self) s->reentry_rc = nf_train_epoch(s->self, NULL);
    printf("  block %u epoch %u/%u:", (unsigned)st->block, (unsigned)(st->epoch + 1),
           (unsigned)st->epochs);
    for (uint32_t k = 0; k < st->n; k++)
        printf(" unit %u loss %.3f acc %.3f", (unsigned)(st->first + k), (double)st->loss[k],
               (double)st->acc[k]);
    printf("\n");
}

static nf_data data_of(source *s) {
    nf_data d = {read_sample, on_epoch, s, N_TRAIN, N_VAL, N_TEST};
    return d;
}

static nf_schedule schedule(void) {
    nf_schedule s;
    nf_schedule_default(&s);
    s.epochs = 2;
    s.base_lr = 0.8f;
    return s;
}

/* --- Error codes on bad input ------------------------------------------------------------- */

static void test_strings_and_defaults(void) {
    for (int32_t c = -17; c <= 1; c++) {
        const char *s = nf_strerror(c);
        CHECK(s != NULL && strlen(s) > 0 && strcmp(s, "unknown error code") != 0);
    }
    CHECK(strcmp(nf_strerror(-1000), "unknown error code") == 0);
    CHECK_RC(nf_options_default(NULL), NF_E_NULL);
    CHECK_RC(nf_schedule_default(NULL), NF_E_NULL);
    /* Misaligned non-NULL pointers are NF_E_ALIGN everywhere, not NF_E_NULL. */
    static uint64_t raw[64];
    CHECK_RC(nf_options_default((nf_options *)((char *)raw + 2)), NF_E_ALIGN);
    CHECK_RC(nf_schedule_default((nf_schedule *)((char *)raw + 4)), NF_E_ALIGN);
}

static void test_plan_errors(void) {
    nf_model m = model();
    nf_options o;
    nf_plan_info p;
    nf_options_default(&o);
    CHECK_RC(nf_plan(&m, &o, 1u << 20, N_TRAIN, &p), NF_OK);
    CHECK_RC(nf_plan(NULL, &o, 1u << 20, N_TRAIN, &p), NF_E_NULL);
    CHECK_RC(nf_plan(&m, NULL, 1u << 20, N_TRAIN, &p), NF_E_NULL);
    CHECK_RC(nf_plan(&m, &o, 1u << 20, N_TRAIN, NULL), NF_E_NULL);
    CHECK_RC(nf_plan(&m, &o, 1u << 20, 0, &p), NF_E_DATA_CONFIG);
    static uint64_t raw[64];
    memcpy((char *)raw + 2, &m, sizeof m);
    CHECK_RC(nf_plan((const nf_model *)((char *)raw + 2), &o, 1u << 20, N_TRAIN, &p), NF_E_ALIGN);
    memcpy((char *)raw + 2, &o, sizeof o);
    CHECK_RC(nf_plan(&m, (const nf_options *)((char *)raw + 2), 1u << 20, N_TRAIN, &p), NF_E_ALIGN);
    CHECK_RC(nf_plan(&m, &o, 1u << 20, N_TRAIN, (nf_plan_info *)((char *)raw + 4)), NF_E_ALIGN);

    nf_model bad = m;
    bad.ops = NULL;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_NULL);
    bad = m;
    bad.unit_ops = NULL;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_NULL);
    bad = m;
    bad.ops = (const nf_op *)((const char *)OPS + 1);
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_ALIGN);
    /* Counts: no units, units that do not add up to n_ops, too many units or ops. */
    bad = m;
    bad.n_units = 0;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    bad = m;
    bad.n_ops = 6;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    static const uint32_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 0, 0};
    bad = m;
    bad.unit_ops = nine;
    bad.n_units = 9;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_CAPACITY);
    bad = m;
    bad.n_ops = NF_MAX_OPS + 1;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_CAPACITY);
    /* Shapes: no input, one class, a kernel larger than its padded input, a pool on 1x1. */
    bad = m;
    bad.in_h = 0;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    bad = m;
    bad.classes = 1;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    nf_op ops[7];
    memcpy(ops, OPS, sizeof ops);
    ops[0].k = 15;
    ops[0].pad = 0;
    bad = m;
    bad.ops = ops;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    memcpy(ops, OPS, sizeof ops);
    ops[0].kind = 99;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    memcpy(ops, OPS, sizeof ops);
    ops[0].stride = 0;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    memcpy(ops, OPS, sizeof ops);
    ops[0].stride = 12; /* 12x12 -> 1x1: the max-pool after it cannot pool */
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_MODEL);
    /* A model whose training memory is beyond the C ABI's limit. */
    bad = m;
    bad.in_c = 4096;
    bad.in_h = 2048;
    bad.in_w = 2048;
    CHECK_RC(nf_plan(&bad, &o, 1u << 20, N_TRAIN, &p), NF_E_TOO_LARGE);
    /* Options. */
    nf_options bo = o;
    bo.b_min = 40;
    CHECK_RC(nf_plan(&m, &bo, 1u << 20, N_TRAIN, &p), NF_E_OPTIONS);
    bo = o;
    bo.mode = 9;
    CHECK_RC(nf_plan(&m, &bo, 1u << 20, N_TRAIN, &p), NF_E_OPTIONS);
    bo = o;
    bo.f_min = 2;
    CHECK_RC(nf_plan(&m, &bo, 1u << 20, N_TRAIN, &p), NF_E_OPTIONS);
    /* A budget too small: the smallest one that plans is reported, and plans. */
    CHECK_RC(nf_plan(&m, &o, 1000, N_TRAIN, &p), NF_E_BUDGET);
    uint64_t needed = p.needed_bytes;
    CHECK(needed > 1000);
    CHECK_RC(nf_plan(&m, &o, needed, N_TRAIN, &p), NF_OK);
    CHECK(p.memory_bytes <= needed);
    CHECK_RC(nf_plan(&m, &o, needed - 8, N_TRAIN, &p), NF_E_BUDGET);
    /* Every mode plans. */
    for (uint32_t mode = NF_MODE_NEUROFLUX; mode <= NF_MODE_BP; mode++) {
        bo = o;
        bo.mode = mode;
        CHECK_RC(nf_plan(&m, &bo, 1u << 20, N_TRAIN, &p), NF_OK);
        CHECK(p.n_blocks >= 1 && p.memory_bytes == p.arena_bytes + p.store_bytes + p.order_bytes);
    }
}

static void test_init_errors(void) {
    nf_model m = model();
    nf_options o;
    nf_plan_info p;
    nf_options_default(&o);
    const uint64_t budget = 1u << 20;
    CHECK_RC(nf_plan(&m, &o, budget, N_TRAIN, &p), NF_OK);
    size_t bytes = (size_t)p.memory_bytes;
    float *mem = malloc(bytes + 8);
    static nf_trainer t;
    source src = {-1, -1, NULL, 0, 0, {0, 0, 0}};
    nf_data d = data_of(&src);
    nf_schedule s = schedule();

    CHECK_RC(nf_init(NULL, &m, &o, budget, mem, bytes, &d, &s), NF_E_NULL);
    CHECK_RC(nf_init(&t, &m, &o, budget, NULL, bytes, &d, &s), NF_E_NULL);
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, NULL, &s), NF_E_NULL);
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, NULL), NF_E_NULL);
    CHECK_RC(nf_init(&t, &m, &o, budget, (float *)((char *)mem + 2), bytes, &d, &s), NF_E_ALIGN);
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes - 4, &d, &s), NF_E_MEMORY);
    static uint64_t raw[64];
    memcpy((char *)raw + 2, &d, sizeof d);
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, (const nf_data *)((char *)raw + 2), &s), NF_E_ALIGN);
    memcpy((char *)raw + 2, &s, sizeof s);
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, (const nf_schedule *)((char *)raw + 2)), NF_E_ALIGN);
    /* Memory that overlaps the trainer struct (training would write over it). */
    static union {
        nf_trainer t;
        float f[sizeof(nf_trainer) / 4];
    } shared_mem;
    static _Alignas(8) float big[(sizeof(nf_trainer) + (1u << 20)) / 4];
    CHECK_RC(nf_init(&shared_mem.t, &m, &o, budget, shared_mem.f, sizeof shared_mem, &d, &s), NF_E_OVERLAP);
    CHECK_RC(nf_init((nf_trainer *)(big + 2 * 1024), &m, &o, budget, big, sizeof big, &d, &s), NF_E_OVERLAP);
    CHECK_RC(nf_init((nf_trainer *)big, &m, &o, budget, big + sizeof(nf_trainer) / 4 - 2, bytes, &d, &s), NF_E_OVERLAP);
    CHECK_RC(nf_init(&t, &m, &o, 1000, mem, bytes, &d, &s), NF_E_BUDGET);
    nf_data bd = d;
    bd.read = NULL;
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &bd, &s), NF_E_DATA_CONFIG);
    bd = d;
    bd.n_test = 0;
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &bd, &s), NF_E_DATA_CONFIG);
    nf_schedule bs = s;
    bs.epochs = 0;
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, &bs), NF_E_SCHEDULE);
    bs = s;
    bs.base_lr = NAN;
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, &bs), NF_E_SCHEDULE);
    bs = s;
    bs.momentum = 1.0f;
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, &bs), NF_E_SCHEDULE);
    bs = s;
    bs.lr_schedule = 42;
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, &bs), NF_E_SCHEDULE);

    /* nf_init_planned: the plan nf_plan gave, checked; NULL, misaligned or foreign plans. */
    CHECK_RC(nf_init_planned(&t, &m, &o, NULL, mem, bytes, &d, &s), NF_E_NULL);
    memcpy((char *)raw + 2, &p, sizeof p);
    CHECK_RC(nf_init_planned(&t, &m, &o, (const nf_plan_info *)((char *)raw + 2), mem, bytes, &d, &s),
             NF_E_ALIGN);
    nf_plan_info bp = p;
    bp.blocks[0].batch = o.b_max + 1;
    CHECK_RC(nf_init_planned(&t, &m, &o, &bp, mem, bytes, &d, &s), NF_E_PLAN);
    CHECK_RC(nf_train(&t), NF_E_STATE); /* left uninitialised */
    bp = p;
    bp.blocks[0].bytes += 4;
    CHECK_RC(nf_init_planned(&t, &m, &o, &bp, mem, bytes, &d, &s), NF_E_PLAN);
    bp = p;
    bp.memory_bytes += 4;
    CHECK_RC(nf_init_planned(&t, &m, &o, &bp, mem, bytes, &d, &s), NF_E_PLAN);
    CHECK_RC(nf_init_planned(&t, &m, &o, &p, mem, bytes - 4, &d, &s), NF_E_MEMORY);
    CHECK_RC(nf_init_planned(&shared_mem.t, &m, &o, &p, shared_mem.f, sizeof shared_mem, &d, &s),
             NF_E_OVERLAP);
    CHECK_RC(nf_init_planned(&t, &m, &o, &p, mem, bytes, &d, &s), NF_OK);
    CHECK(strcmp(nf_strerror(NF_E_PLAN), "unknown error code") != 0);

    /* A trainer nf_init never set up, and NULL ones. */
    static nf_trainer zero;
    nf_result r;
    uint32_t exit_unit;
    CHECK_RC(nf_train_epoch(&zero, NULL), NF_E_STATE);
    CHECK_RC(nf_train(&zero), NF_E_STATE);
    CHECK_RC(nf_get_result(&zero, &r), NF_E_STATE);
    CHECK_RC(nf_train_epoch(NULL, NULL), NF_E_NULL);
    CHECK_RC(nf_finish_block(NULL), NF_E_NULL);
    CHECK_RC(nf_train_block(NULL), NF_E_NULL);
    CHECK_RC(nf_train(NULL), NF_E_NULL);
    CHECK_RC(nf_get_result(NULL, &r), NF_E_NULL);
    CHECK_RC(nf_select_exit(NULL, 0.0f, &exit_unit), NF_E_NULL);

    /* Out of order: finishing a block before its epochs; no exit before a block is done. */
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, &s), NF_OK);
    CHECK_RC(nf_get_result(&t, NULL), NF_E_NULL);
    CHECK_RC(nf_get_result(&t, (nf_result *)((char *)&r + 2)), NF_E_ALIGN);
    CHECK_RC(nf_select_exit(&t, 0.0f, (uint32_t *)((char *)&exit_unit + 1)), NF_E_ALIGN);
    /* A misaligned stats pointer is an error, and nothing is trained. */
    nf_epoch_stats st2[2];
    CHECK_RC(nf_train_epoch(&t, (nf_epoch_stats *)((char *)st2 + 2)), NF_E_ALIGN);
    CHECK_RC(nf_get_result(&t, &r), NF_OK);
    CHECK(r.epochs_done == 0 && r.blocks_done == 0);
    CHECK_RC(nf_finish_block(&t), NF_E_STATE);
    CHECK_RC(nf_select_exit(&t, 0.005f, &exit_unit), NF_E_STATE);
    CHECK_RC(nf_select_exit(&t, -1.0f, &exit_unit), NF_E_ARG);
    CHECK_RC(nf_get_result(&t, &r), NF_OK);
    CHECK(r.exit == -1 && r.blocks_done == 0 && r.test_acc[0] == -1.0f);

    /* A read that fails, and a label out of range: NF_E_DATA, then the trainer stays stopped. */
    src.fail_at = 5;
    CHECK_RC(nf_train_epoch(&t, NULL), NF_E_DATA);
    CHECK_RC(nf_train_epoch(&t, NULL), NF_E_STATE);
    src.fail_at = -1;
    src.bad_label_at = 9;
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, &s), NF_OK);
    CHECK_RC(nf_train_epoch(&t, NULL), NF_E_DATA);
    src.bad_label_at = -1;

    /* A call back into the trainer from its own callback is refused, and training goes on. */
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, bytes, &d, &s), NF_OK);
    src.self = &t;
    src.reentry_rc = 0;
    nf_epoch_stats st;
    CHECK_RC(nf_train_epoch(&t, &st), NF_OK);
    CHECK(src.reentry_rc == NF_E_BUSY);
    CHECK(st.epoch == 0 && st.epochs == 2 && st.n >= 1);
    src.self = NULL;
    free(mem);
}

/* --- Training ----------------------------------------------------------------------------- */

/* Train the model under `budget`; the result in `r`. */
static void train(uint64_t budget, nf_result *r, nf_plan_info *p) {
    nf_model m = model();
    nf_options o;
    nf_options_default(&o);
    CHECK_RC(nf_plan(&m, &o, budget, N_TRAIN, p), NF_OK);
    float *mem = malloc((size_t)p->memory_bytes);
    static nf_trainer t;
    source src = {-1, -1, NULL, 0, 0, {0, 0, 0}};
    nf_data d = data_of(&src);
    nf_schedule s = schedule();
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, (size_t)p->memory_bytes, &d, &s), NF_OK);
    /* nf_predict refuses a trainer not yet trained, and one mid-block. */
    static float x[SIDE * SIDE];
    float z[CLASSES];
    uint32_t cls, lab;
    CHECK_RC(read_sample(&src, NF_SPLIT_TEST, 0, x, SIDE * SIDE, &lab), 0);
    CHECK_RC(nf_predict(&t, x, &cls, z), NF_E_STATE);
    /* The first block epoch by epoch, then the rest at once. */
    nf_epoch_stats st;
    CHECK_RC(nf_train_epoch(&t, &st), NF_OK);
    CHECK_RC(nf_predict(&t, x, &cls, NULL), NF_E_STATE);
    CHECK_RC(nf_predict_unit(&t, 0, x, &cls, NULL), NF_E_STATE);
    CHECK_RC(nf_train_epoch(&t, &st), NF_OK);
    CHECK_RC(nf_train_epoch(&t, &st), NF_E_STATE); /* the block's epochs are done */
    CHECK_RC(nf_finish_block(&t), NF_OK);
    CHECK_RC(nf_get_result(&t, r), NF_OK);
    CHECK(r->blocks_done == 1 && r->exit >= 0);
    CHECK_RC(nf_train(&t), NF_OK);
    CHECK_RC(nf_train_block(&t), NF_DONE);
    CHECK_RC(nf_train_epoch(&t, NULL), NF_DONE);
    CHECK_RC(nf_get_result(&t, r), NF_OK);
    CHECK(r->blocks_done == p->n_blocks && r->n_units == 2);
    CHECK(src.epochs_seen == (int)(2 * p->n_blocks));
    CHECK(src.reads[NF_SPLIT_VAL] > 0 && src.reads[NF_SPLIT_TEST] > 0);
    uint32_t e;
    CHECK_RC(nf_select_exit(&t, 1.0f, &e), NF_OK);
    CHECK(e == 0); /* with a tolerance of 100 points, the first unit */

    /* The trained model classifies the held-out split one sample at a time through
     * nf_predict: at every unit, its accuracy is the trainer's own evaluation, exactly. */
    for (uint32_t u = 0; u < 2; u++) {
        uint32_t correct = 0;
        for (uint32_t i = 0; i < N_TEST; i++) {
            CHECK_RC(read_sample(&src, NF_SPLIT_TEST, i, x, SIDE * SIDE, &lab), 0);
            CHECK_RC(nf_predict_unit(&t, u, x, &cls, z), NF_OK);
            for (uint32_t c = 0; c < CLASSES; c++) CHECK(z[c] <= z[cls]);
            correct += cls == lab;
        }
        CHECK((float)correct / (float)N_TEST == r->test_acc[u]);
    }
    uint32_t c1, c2;
    CHECK_RC(nf_predict(&t, x, &c1, NULL), NF_OK);
    CHECK_RC(nf_predict_unit(&t, (uint32_t)r->exit, x, &c2, NULL), NF_OK);
    CHECK(c1 == c2);
    CHECK_RC(nf_predict_unit(&t, NF_UNIT_FULL, x, &c1, NULL), NF_OK);
    CHECK_RC(nf_predict_unit(&t, 1, x, &c2, NULL), NF_OK);
    CHECK(c1 == c2);
    /* Bad calls. */
    CHECK_RC(nf_predict(NULL, x, &cls, NULL), NF_E_NULL);
    CHECK_RC(nf_predict(&t, NULL, &cls, NULL), NF_E_NULL);
    CHECK_RC(nf_predict(&t, x, NULL, NULL), NF_E_NULL);
    CHECK_RC(nf_predict(&t, (const float *)((const char *)x + 2), &cls, NULL), NF_E_ALIGN);
    CHECK_RC(nf_predict(&t, x, (uint32_t *)((char *)&cls + 1), NULL), NF_E_ALIGN);
    CHECK_RC(nf_predict(&t, x, &cls, (float *)((char *)z + 2)), NF_E_ALIGN);
    CHECK_RC(nf_predict((nf_trainer *)((char *)&t + 4), x, &cls, NULL), NF_E_ALIGN);
    CHECK_RC(nf_predict_unit(&t, 2, x, &cls, NULL), NF_E_ARG);
    static nf_trainer zero;
    CHECK_RC(nf_predict(&zero, x, &cls, NULL), NF_E_STATE);

    /* Save the model, wipe the memory, set a trainer up again and load it: the same classes. */
    size_t size = 0;
    CHECK_RC(nf_export_model(&t, NULL, 0, &size), NF_OK);
    unsigned char *saved = malloc(size + 1);
    CHECK_RC(nf_export_model(&t, saved + 1, size - 1, &size), NF_E_ARG);
    CHECK_RC(nf_export_model(&t, saved + 1, size, &size), NF_OK);
    uint32_t before[N_TEST];
    for (uint32_t i = 0; i < N_TEST; i++) {
        CHECK_RC(read_sample(&src, NF_SPLIT_TEST, i, x, SIDE * SIDE, &lab), 0);
        CHECK_RC(nf_predict(&t, x, &before[i], NULL), NF_OK);
    }
    memset(mem, 0xFF, (size_t)p->memory_bytes);
    memset(&t, 0, sizeof t);
    CHECK_RC(nf_init(&t, &m, &o, budget, mem, (size_t)p->memory_bytes, &d, &s), NF_OK);
    saved[1 + size / 2] ^= 1;
    CHECK_RC(nf_load_model(&t, saved + 1, size), NF_E_FORMAT);
    saved[1 + size / 2] ^= 1;
    CHECK_RC(nf_predict(&t, x, &cls, NULL), NF_E_STATE);
    CHECK_RC(nf_load_model(&t, saved + 1, size), NF_OK);
    for (uint32_t i = 0; i < N_TEST; i++) {
        CHECK_RC(read_sample(&src, NF_SPLIT_TEST, i, x, SIDE * SIDE, &lab), 0);
        CHECK_RC(nf_predict(&t, x, &cls, NULL), NF_OK);
        CHECK(cls == before[i]);
    }
    free(saved);
    free(mem);
}

static void test_training(void) {
    nf_model m = model();
    nf_options o;
    nf_plan_info p;
    nf_options_default(&o);
    /* A budget at which the two units are two blocks (NeuroFlux, a recompute chain). */
    CHECK_RC(nf_plan(&m, &o, 1000, N_TRAIN, &p), NF_E_BUDGET);
    uint64_t budget = p.needed_bytes + 4096;
    nf_result a, b;
    nf_plan_info pa, pb;
    printf("training (budget %llu B)\n", (unsigned long long)budget);
    train(budget, &a, &pa);
    CHECK(pa.n_blocks == 2 && pa.blocks[1].chunk > 0);
    printf("plan: %u blocks, memory %llu B (arena %llu, store %llu, order %llu), batches %u %u\n",
           (unsigned)pa.n_blocks, (unsigned long long)pa.memory_bytes,
           (unsigned long long)pa.arena_bytes, (unsigned long long)pa.store_bytes,
           (unsigned long long)pa.order_bytes, (unsigned)pa.blocks[0].batch,
           (unsigned)pa.blocks[1].batch);
    printf("held-out accuracy: unit 0 %.3f (val %.3f), unit 1 %.3f (val %.3f), exit %d\n",
           (double)a.test_acc[0], (double)a.val_acc[0], (double)a.test_acc[1],
           (double)a.val_acc[1], (int)a.exit);
    CHECK(a.exit >= 0 && a.exit < 2);
    CHECK(a.test_acc[a.exit] >= 0.8f); /* three easy classes: chance is 0.33 */
    train(budget, &b, &pb);
    CHECK(memcmp(&a, &b, sizeof a) == 0); /* bit for bit: the same seed, the same run */
}

int main(void) {
    /* The header's NF_TRAINER_WORDS (chosen by the pointer width) is the library's. */
    CHECK(sizeof(nf_trainer) == nf_trainer_bytes());
    test_strings_and_defaults();
    test_plan_errors();
    test_init_errors();
    test_training();
    if (failures) {
        fprintf(stderr, "abi_test: %d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("abi_test: %d checks passed\n", checks);
    return 0;
}
