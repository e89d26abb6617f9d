/* NeuroFlux from C on a Cortex-M4 with 128 KB of RAM (QEMU mps2-an386).
 *
 * The firmware links the static library of the C ABI (libneuroflux_c.a, nf-core underneath)
 * and trains the model of model.h on Fashion-MNIST from scratch, block by block, in one static
 * buffer of NF_MEMORY_BYTES (build/nf_memory.h, planned on the host by the same planner). The
 * images stay on the host: the read callback fetches each one over Arm semihosting (io.c:
 * SYS_OPEN/SYS_SEEK/SYS_READ; newlib's stdio is not linked, so there is no heap). After training it classifies the held-out images one by one
 * through nf_predict (the early exit) and checks that their accuracy is the trainer's own
 * evaluation of the exit, exactly; then it saves the model to flash (nf_export_model), wipes its
 * RAM's training memory and trainer as a reset would, loads the model back (nf_load_model) and
 * checks that it classifies every held-out image the same. At the end it prints one NFRESULT line and exits QEMU with
 * status 0 (1 on any failure).
 *
 * The data directory is the second word of the semihosting command line
 * (-semihosting-config enable=on,target=native,arg=nf-firmware-c,arg=DIR); without it,
 * fixtures/fashion-mnist-mcu relative to QEMU's working directory. */
#include <string.h>

#include "io.h"
#include "model.h"
#include "nf_memory.h"
#include "startup.h"

/* The training memory: arena, frozen-weight store, epoch order (float-aligned). */
static float nf_memory[NF_MEMORY_BYTES / sizeof(float)];
static nf_trainer trainer;

#define PIXELS (28u * 28u)

typedef struct {
    int images, labels; /* semihosting handles */
    uint32_t n;
} split_files;

typedef struct {
    split_files split[2]; /* train, test */
    uint32_t t0;
    int failed_index;
} data_source;

static uint32_t be32(const unsigned char *b) {
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static int open_file(const char *dir, const char *name) {
    char path[160];
    if (fw_snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path - 1) return -1;
    return fw_open(path);
}

static int open_split(const char *dir, const char *prefix, uint32_t want, split_files *s) {
    char name[64];
    unsigned char hd[16];
    fw_snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    s->images = open_file(dir, name);
    fw_snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    s->labels = open_file(dir, name);
    if (s->images < 0 || s->labels < 0) {
        fw_printf("error: cannot open %s/%s-*-idx*-ubyte\n", dir, prefix);
        return 0;
    }
    if (fw_read_at(s->images, 0, hd, 16) != 0 || be32(hd) != 0x0803 || be32(hd + 8) != 28 ||
        be32(hd + 12) != 28) {
        fw_printf("error: %s images: not a 28x28 IDX image file\n", prefix);
        return 0;
    }
    uint32_t ni = be32(hd + 4);
    if (fw_read_at(s->labels, 0, hd, 8) != 0 || be32(hd) != 0x0801) {
        fw_printf("error: %s labels: not an IDX label file\n", prefix);
        return 0;
    }
    uint32_t nl = be32(hd + 4);
    if (ni < want || nl < want) {
        fw_printf("error: %s: %u images, %u labels, fewer than %u\n", prefix, (unsigned)ni,
                  (unsigned)nl, (unsigned)want);
        return 0;
    }
    s->n = want;
    return 1;
}

/* nf_read_fn: sample `index` of `split`, normalised. The pixels are read into the last quarter
 * of `values` and widened in place, front to back (float i ends at byte 4i+3, below pixel
 * i+1's byte 3*784+i+1 for every i < 784): no buffer on the stack, which is deep in training
 * when this is called. */
static int32_t read_sample(void *user, uint32_t split, uint32_t index, float *values,
                           uint32_t n_values, uint32_t *label) {
    data_source *d = user;
    if (n_values != PIXELS || (split != NF_SPLIT_TRAIN && split != NF_SPLIT_TEST)) return 1;
    const split_files *s = &d->split[split == NF_SPLIT_TRAIN ? 0 : 1];
    unsigned char *px = (unsigned char *)values + 3 * PIXELS;
    unsigned char lab;
    if (index >= s->n || fw_read_at(s->labels, 8 + index, &lab, 1) != 0 ||
        fw_read_at(s->images, 16 + index * PIXELS, px, PIXELS) != 0) {
        d->failed_index = (int)index;
        return 1;
    }
    for (uint32_t i = 0; i < PIXELS; i++)
        values[i] = ((float)px[i] / 255.0f - FW_MODEL.in_mean) / FW_MODEL.in_std;
    *label = lab;
    return 0;
}

/* nf_epoch_fn: one line per head after every epoch. */
static void on_epoch(void *user, const nf_epoch_stats *st) {
    data_source *d = user;
    uint32_t t = fw_centis() - d->t0;
    for (uint32_t k = 0; k < st->n; k++)
        fw_printf("block %u unit %u epoch %u/%u: train loss %.3f acc %.3f (%u.%02u s)\n",
               (unsigned)st->block, (unsigned)(st->first + k), (unsigned)(st->epoch + 1),
               (unsigned)st->epochs, (double)st->loss[k], (double)st->acc[k],
               (unsigned)(t / 100), (unsigned)(t % 100));
}

/* Classify the held-out images one by one through nf_predict: store each class in classes[]
 * (compare = 0; *n = the correct ones) or compare with it (compare = 1; *n = the same ones).
 * The image buffer is on this function's stack, which is shallower than training's: it costs
 * no RAM that the stack reserve does not already hold. */
__attribute__((noinline)) static int32_t classify_all(data_source *src, uint8_t *classes,
                                                      int compare, uint32_t *n) {
    float image[PIXELS];
    *n = 0;
    for (uint32_t i = 0; i < FW_N_TEST; i++) {
        uint32_t label, cls;
        if (read_sample(src, NF_SPLIT_TEST, i, image, PIXELS, &label) != 0) {
            fw_printf("error: cannot read held-out image %u\n", (unsigned)i);
            return NF_E_DATA;
        }
        int32_t rc = nf_predict(&trainer, image, &cls, NULL);
        if (rc != NF_OK) return rc;
        if (compare) {
            *n += cls == classes[i];
        } else {
            classes[i] = (uint8_t)cls;
            *n += cls == label;
        }
    }
    return NF_OK;
}

static const char *data_dir(char *buf, size_t len) {
    /* The second word of the command line, if any. */
    if (fw_command_line(buf, len) == 0) return "fixtures/fashion-mnist-mcu";
    char *p = strchr(buf, ' ');
    while (p && *p == ' ') p++;
    if (!p || !*p) return "fixtures/fashion-mnist-mcu";
    char *e = strchr(p, ' ');
    if (e) *e = 0;
    return p;
}

static int fail(const char *what, int32_t rc) {
    fw_printf("error: %s: %s (%d)\n", what, nf_strerror(rc), (int)rc);
    return 1;
}

int main(void) {
    fw_printf("nf-firmware-c: Cortex-M4, FPU %s, RAM %u B (.data %u B, .bss %u B, heap %u B, stack "
           "%u B), flash %u B\n",
           ((fw_cpacr() >> 20) & 0xF) == 0xF ? "on" : "OFF", (unsigned)fw_ram_bytes(),
           (unsigned)fw_data_bytes(), (unsigned)fw_bss_bytes(), (unsigned)fw_heap_bytes(),
           (unsigned)fw_stack_bytes(), (unsigned)fw_flash_bytes());
    if (((fw_cpacr() >> 20) & 0xF) != 0xF) {
        fw_printf("error: the FPU is not enabled\n");
        return 1;
    }

    /* The plan was made on the host (build/nf_memory.h, by the same library): the firmware
     * hands it to nf_init_planned, which checks it against the model, and never runs the
     * planner (its stack, 24 KB, would be the deepest of the run). */
    nf_options opt;
    const nf_plan_info *plan = &NF_PLAN;
    fw_options(&opt);
    if (nf_trainer_bytes() != sizeof trainer) {
        fw_printf("error: nf_trainer is %u B here, %u B in the library\n", (unsigned)sizeof trainer,
                  (unsigned)nf_trainer_bytes());
        return 1;
    }
    fw_printf("plan: budget %u B: arena %llu B, store %llu B, order %llu B, memory %llu B "
              "(static buffer %u B), trainer %u B\n",
              (unsigned)FW_NF_BUDGET, (unsigned long long)plan->arena_bytes,
              (unsigned long long)plan->store_bytes, (unsigned long long)plan->order_bytes,
              (unsigned long long)plan->memory_bytes, (unsigned)sizeof nf_memory,
              (unsigned)sizeof trainer);
    for (uint32_t i = 0; i < plan->n_blocks; i++)
        fw_printf("plan: block %u units %u..=%u batch %u chunk %u bytes %llu head %u\n",
                  (unsigned)i, (unsigned)plan->blocks[i].first, (unsigned)plan->blocks[i].last,
                  (unsigned)plan->blocks[i].batch, (unsigned)plan->blocks[i].chunk,
                  (unsigned long long)plan->blocks[i].bytes,
                  (unsigned)plan->heads[plan->blocks[i].first]);

    static char cmdline[256];
    const char *dir = data_dir(cmdline, sizeof cmdline);
    fw_printf("data: %s\n", dir);
    static data_source src;
    if (!open_split(dir, "train", FW_N_TRAIN, &src.split[0]) ||
        !open_split(dir, "t10k", FW_N_TEST, &src.split[1]))
        return 1;

    nf_schedule sched;
    nf_schedule_default(&sched);
    sched.epochs = FW_EPOCHS;
    nf_data data = {
        .read = read_sample,
        .on_epoch = on_epoch,
        .user = &src,
        .n_train = FW_N_TRAIN,
        .n_val = 0,
        .n_test = FW_N_TEST,
    };
    int32_t rc = nf_init_planned(&trainer, &FW_MODEL, &opt, plan, nf_memory, sizeof nf_memory,
                                 &data, &sched);
    if (rc != NF_OK) return fail("nf_init_planned", rc);
    size_t stack_init = fw_stack_high_water();
    fw_printf("init: stack high-water %u B\n", (unsigned)stack_init);
    /* From here on, the stack that training and nf_predict use (planning is done). */
    fw_stack_repaint();

    src.t0 = fw_centis();
    nf_result res;
    /* Epoch by epoch, the stack measured for each kind of call (painted again before each). */
    size_t stack_epoch = 0, stack_finish = 0;
    for (;;) {
        fw_stack_repaint();
        rc = nf_train_epoch(&trainer, NULL);
        if (fw_stack_high_water() > stack_epoch) stack_epoch = fw_stack_high_water();
        if (rc == NF_OK) continue;
        if (rc != NF_E_STATE) break; /* NF_DONE, or an error */
        /* The block's epochs are done: evaluate it and freeze it. */
        fw_stack_repaint();
        rc = nf_finish_block(&trainer);
        if (fw_stack_high_water() > stack_finish) stack_finish = fw_stack_high_water();
        if (rc != NF_OK) break;
        nf_get_result(&trainer, &res);
        uint32_t b = res.blocks_done - 1;
        for (uint32_t u = plan->blocks[b].first; u <= plan->blocks[b].last; u++)
            fw_printf("block %u unit %u: held-out acc %.4f (%u images)\n", (unsigned)b, (unsigned)u,
                      (double)res.test_acc[u], (unsigned)FW_N_TEST);
    }
    if (rc != NF_DONE) {
        if (rc == NF_E_DATA) fw_printf("(sample %d)\n", src.failed_index);
        return fail("training", rc);
    }
    uint32_t t = fw_centis() - src.t0;
    rc = nf_get_result(&trainer, &res);
    if (rc != NF_OK) return fail("nf_get_result", rc);

    /* Use the trained model: classify the held-out set one image at a time through
     * nf_predict (the early exit), in the memory the trainer already holds. Its accuracy must
     * be the trainer's own evaluation of the exit, exactly. */
    static uint8_t classes[FW_N_TEST];
    uint32_t correct = 0, same = 0;
    uint32_t p0 = fw_centis();
    fw_stack_repaint();
    if ((rc = classify_all(&src, classes, 0, &correct)) != NF_OK) return fail("nf_predict", rc);
    uint32_t pt = fw_centis() - p0;
    size_t stack_predict = fw_stack_high_water();
    float predict_acc = (float)correct / (float)FW_N_TEST;

    /* Keep the model in flash, then a simulated reset: the training memory and the trainer are
     * wiped, a new trainer is set up, the model is loaded back from flash and classifies the
     * held-out images again: every class must be the same. */
    extern uint8_t __model_flash_start[], __model_flash_end[];
    size_t model_bytes = 0;
    fw_stack_repaint();
    rc = nf_export_model(&trainer, __model_flash_start,
                         (size_t)(__model_flash_end - __model_flash_start), &model_bytes);
    if (rc != NF_OK) return fail("nf_export_model", rc);
    memset(nf_memory, 0xFF, sizeof nf_memory);
    memset(&trainer, 0, sizeof trainer);
    rc = nf_init_planned(&trainer, &FW_MODEL, &opt, plan, nf_memory, sizeof nf_memory, &data,
                         &sched);
    if (rc != NF_OK) return fail("nf_init_planned after the reset", rc);
    rc = nf_load_model(&trainer, __model_flash_start, model_bytes);
    if (rc != NF_OK) return fail("nf_load_model", rc);
    if ((rc = classify_all(&src, classes, 1, &same)) != NF_OK)
        return fail("nf_predict after loading", rc);
    int reload_exact = same == FW_N_TEST;
    size_t stack_reload = fw_stack_high_water();
    fw_printf("reload: the model (%u B) saved to flash, reloaded after a reset, classifies the %u "
           "held-out images %s\n",
           (unsigned)model_bytes, (unsigned)FW_N_TEST,
           reload_exact ? "identically" : "DIFFERENTLY");
    int exact = res.exit >= 0 && predict_acc == res.test_acc[res.exit];
    fw_printf("predict: %u of %u held-out images right at the exit (unit %d): %.4f, the trainer's "
           "evaluation %.4f: %s (%u.%02u s)\n",
           (unsigned)correct, (unsigned)FW_N_TEST, (int)res.exit, (double)predict_acc,
           (double)(res.exit >= 0 ? res.test_acc[res.exit] : -1.0f), exact ? "equal" : "DIFFERENT",
           (unsigned)(pt / 100), (unsigned)(pt % 100));

    /* The whole run's: each phase painted again before it (nf_init_planned, training epochs,
     * finishing blocks, predictions, saving + the reset + loading + predictions again). */
    size_t stack_train = stack_epoch > stack_finish ? stack_epoch : stack_finish;
    if (stack_predict > stack_train) stack_train = stack_predict;
    size_t stack = stack_train > stack_reload ? stack_train : stack_reload;
    if (stack_init > stack) stack = stack_init;
    fw_printf("NFRESULT train=%u test=%u", (unsigned)FW_N_TRAIN, (unsigned)FW_N_TEST);
    for (uint32_t u = 0; u < res.n_units; u++)
        fw_printf(" acc_unit%u=%.4f", (unsigned)u, (double)res.test_acc[u]);
    fw_printf(" exit=%d arena=%llu store=%llu order=%llu memory=%u trainer=%u stack=%u heap=%u "
              "data=%u bss=%u ram=%u flash=%u seconds=%u.%02u",
              (int)res.exit, (unsigned long long)plan->arena_bytes,
              (unsigned long long)plan->store_bytes, (unsigned long long)plan->order_bytes,
              (unsigned)sizeof nf_memory, (unsigned)sizeof trainer, (unsigned)stack,
              (unsigned)fw_heap_used(), (unsigned)fw_data_bytes(), (unsigned)fw_bss_bytes(),
              (unsigned)fw_ram_bytes(), (unsigned)fw_flash_bytes(), (unsigned)(t / 100),
              (unsigned)(t % 100));
    fw_printf(" predict_acc=%.4f predict_exact=%d predict_seconds=%u.%02u model_bytes=%u "
              "reload_exact=%d stack_init=%u stack_train=%u stack_epoch=%u stack_finish=%u "
              "stack_predict=%u stack_reload=%u\n",
              (double)predict_acc, exact, (unsigned)(pt / 100), (unsigned)(pt % 100),
              (unsigned)model_bytes, reload_exact, (unsigned)stack_init, (unsigned)stack_train,
              (unsigned)stack_epoch, (unsigned)stack_finish, (unsigned)stack_predict,
              (unsigned)stack_reload);
    if (!reload_exact) {
        fw_printf("error: the reloaded model classifies differently\n");
        return 1;
    }
    if (!exact) {
        fw_printf("error: nf_predict's accuracy differs from the trainer's evaluation of the exit\n");
        return 1;
    }
    if (stack >= fw_stack_bytes()) {
        fw_printf("error: the stack overflowed its %u B reserve\n", (unsigned)fw_stack_bytes());
        return 1;
    }
    return 0;
}
