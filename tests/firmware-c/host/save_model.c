/* The firmware's run on the host, to hand its saved model to `nf eval`: trains the model of
 * firmware/model.h through the C ABI (the host build of libneuroflux_c.a) on the IDX files of
 * DATA_DIR exactly as the firmware does (same model, options, budget, schedule, normalisation),
 * classifies the held-out images one by one through nf_predict (the early exit), and writes
 *   MODEL    the bytes of nf_export_model (what the firmware keeps in flash),
 *   CLASSES  one line per held-out image: its label and nf_predict's class.
 * It prints the exit's held-out accuracy from the trainer and from nf_predict.
 *
 *   save_model DATA_DIR MODEL CLASSES
 *
 * Exit status 0, or 1 with a line on stderr. tests/firmware_c.rs runs it and evaluates MODEL
 * with `nf eval --model MODEL --data DATA_DIR`. */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

#define PIXELS (28u * 28u)

typedef struct {
    FILE *images, *labels;
    uint32_t n;
} split_files;

static uint32_t be32(const unsigned char *b) {
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static int open_split(const char *dir, const char *prefix, uint32_t want, split_files *s) {
    char path[512];
    unsigned char hd[16];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    s->images = fopen(path, "rb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    s->labels = fopen(path, "rb");
    if (!s->images || !s->labels || fread(hd, 1, 16, s->images) != 16 || be32(hd) != 0x0803 ||
        be32(hd + 4) < want || be32(hd + 8) != 28 || be32(hd + 12) != 28 ||
        fread(hd, 1, 8, s->labels) != 8 || be32(hd) != 0x0801 || be32(hd + 4) < want) {
        fprintf(stderr, "error: %s/%s-*-idx*-ubyte: not %u 28x28 IDX records\n", dir, prefix,
                (unsigned)want);
        return 0;
    }
    s->n = want;
    return 1;
}

/* nf_read_fn: as the firmware's. */
static int32_t read_sample(void *user, uint32_t split, uint32_t index, float *values,
                           uint32_t n_values, uint32_t *label) {
    split_files *sp = user;
    if (n_values != PIXELS || (split != NF_SPLIT_TRAIN && split != NF_SPLIT_TEST)) return 1;
    const split_files *s = &sp[split == NF_SPLIT_TRAIN ? 0 : 1];
    unsigned char px[PIXELS];
    int lab;
    if (index >= s->n || fseek(s->labels, 8 + (long)index, SEEK_SET) != 0 ||
        (lab = fgetc(s->labels)) == EOF ||
        fseek(s->images, 16 + (long)index * PIXELS, SEEK_SET) != 0 ||
        fread(px, 1, PIXELS, s->images) != PIXELS)
        return 1;
    for (uint32_t i = 0; i < PIXELS; i++)
        values[i] = ((float)px[i] / 255.0f - FW_MODEL.in_mean) / FW_MODEL.in_std;
    *label = (uint32_t)lab;
    return 0;
}

static int fail(const char *what, int32_t rc) {
    fprintf(stderr, "error: %s: %s (%d)\n", what, nf_strerror(rc), (int)rc);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: save_model DATA_DIR MODEL CLASSES\n");
        return 1;
    }
    static split_files splits[2];
    if (!open_split(argv[1], "train", FW_N_TRAIN, &splits[0]) ||
        !open_split(argv[1], "t10k", FW_N_TEST, &splits[1]))
        return 1;
    nf_options opt;
    nf_plan_info plan;
    fw_options(&opt);
    int32_t rc = nf_plan(&FW_MODEL, &opt, FW_NF_BUDGET, FW_N_TRAIN, &plan);
    if (rc != NF_OK) return fail("nf_plan", rc);
    float *memory = malloc(plan.memory_bytes);
    static nf_trainer trainer;
    nf_schedule sched;
    nf_schedule_default(&sched);
    sched.epochs = FW_EPOCHS;
    nf_data data = {
        .read = read_sample,
        .on_epoch = NULL,
        .user = splits,
        .n_train = FW_N_TRAIN,
        .n_val = 0,
        .n_test = FW_N_TEST,
    };
    if (!memory) return fail("malloc", NF_E_ARG);
    rc = nf_init(&trainer, &FW_MODEL, &opt, FW_NF_BUDGET, memory, plan.memory_bytes, &data,
                 &sched);
    if (rc != NF_OK) return fail("nf_init", rc);
    rc = nf_train(&trainer);
    if (rc != NF_OK && rc != NF_DONE) return fail("nf_train", rc);
    nf_result res;
    rc = nf_get_result(&trainer, &res);
    if (rc != NF_OK) return fail("nf_get_result", rc);

    FILE *classes = fopen(argv[3], "w");
    if (!classes) {
        fprintf(stderr, "error: cannot write %s\n", argv[3]);
        return 1;
    }
    static float image[PIXELS];
    uint32_t correct = 0;
    for (uint32_t i = 0; i < FW_N_TEST; i++) {
        uint32_t label, cls;
        if (read_sample(splits, NF_SPLIT_TEST, i, image, PIXELS, &label) != 0)
            return fail("reading a held-out image", NF_E_DATA);
        rc = nf_predict(&trainer, image, &cls, NULL);
        if (rc != NF_OK) return fail("nf_predict", rc);
        fprintf(classes, "%u %u\n", (unsigned)label, (unsigned)cls);
        correct += cls == label;
    }
    if (fclose(classes) != 0) return fail("writing CLASSES", NF_E_ARG);

    size_t size = 0;
    rc = nf_export_model(&trainer, NULL, 0, &size);
    if (rc != NF_OK) return fail("nf_export_model", rc);
    uint8_t *bytes = malloc(size);
    if (!bytes) return fail("malloc", NF_E_ARG);
    rc = nf_export_model(&trainer, bytes, size, &size);
    if (rc != NF_OK) return fail("nf_export_model", rc);
    FILE *out = fopen(argv[2], "wb");
    if (!out || fwrite(bytes, 1, size, out) != size || fclose(out) != 0) {
        fprintf(stderr, "error: cannot write %s\n", argv[2]);
        return 1;
    }
    printf("exit=%d trainer_acc=%.4f predict_correct=%u test=%u model_bytes=%u\n", (int)res.exit,
           (double)(res.exit >= 0 ? res.test_acc[res.exit] : -1.0f), (unsigned)correct,
           (unsigned)FW_N_TEST, (unsigned)size);
    free(bytes);
    free(memory);
    return 0;
}
