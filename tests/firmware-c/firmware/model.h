/* The firmware's model and run configuration, shared by the firmware (main.c) and the host
 * program that plans it (host/plan_header.c writes build/nf_memory.h from it).
 *
 * The same CNN as the Rust firmware (tests/firmware/src/app.rs), for 28x28x1 Fashion-MNIST:
 *   unit 0: conv3x3 stride 2 (1->8) -> BN -> ReLU -> max-pool   (28 -> 14 -> 7)
 *   unit 1: conv3x3 (8->16)         -> BN -> ReLU -> max-pool   (7 -> 3)
 *   unit 2: conv3x3 (16->32)        -> BN -> ReLU
 * then global average pooling and a linear classifier (added by the library), and an
 * auxiliary head on units 0 and 1 (NeuroFlux: 16 -> 8 filters, at most half the unit). */
#ifndef NF_FIRMWARE_MODEL_H
#define NF_FIRMWARE_MODEL_H

#include "neuroflux.h"

/* RAM of the board as linked (mps2-an386 has more; the linker script gives the program 128 KiB). */
#ifndef FW_RAM_BYTES
#define FW_RAM_BYTES (128u * 1024u)
#endif
/* Stack, reserved by the linker script (there is no heap: newlib's stdio is not linked, io.c
 * does the printing and the file reads over semihosting). The high-water mark is about 12 KB
 * (the phases measured in the result line: nf_init_planned, epochs, finishing blocks,
 * predictions with their 3 KB image on the stack, the reset): nf-core's `small` capacities,
 * the plan made on the host (nf_init_planned), and the trainer keeping its layouts (see the
 * README); 13 KiB leaves a margin (the firmware fails if the painted stack is exhausted). */
#ifndef FW_STACK_BYTES
#define FW_STACK_BYTES (13u * 1024u)
#endif
#define FW_HEAP_BYTES 0u
/* Other .data/.bss: the nf_trainer (5 KiB), the firmware's own (the held-out classes, the
 * command line, the formatter's line). */
#define FW_MISC_BYTES (6u * 1024u)
/* What the planner may use: the training memory (arena, frozen-weight store, epoch order). */
#define FW_NF_BUDGET (FW_RAM_BYTES - FW_STACK_BYTES - FW_HEAP_BYTES - FW_MISC_BYTES)

/* The CI run: 1000 training / 200 held-out images, 3 epochs per block. */
#ifndef FW_N_TRAIN
#define FW_N_TRAIN 1000u
#endif
#ifndef FW_N_TEST
#define FW_N_TEST 200u
#endif
#ifndef FW_EPOCHS
#define FW_EPOCHS 3u
#endif

#define CONV(o, kk, s, p) { NF_OP_CONV, (o), (kk), (s), (p), 0 }
#define OP(kind) { (kind), 0, 0, 0, 0, 0 }

static const nf_op FW_OPS[] = {
    CONV(8, 3, 2, 1), OP(NF_OP_BATCHNORM), OP(NF_OP_RELU), OP(NF_OP_MAXPOOL2),
    CONV(16, 3, 1, 1), OP(NF_OP_BATCHNORM), OP(NF_OP_RELU), OP(NF_OP_MAXPOOL2),
    CONV(32, 3, 1, 1), OP(NF_OP_BATCHNORM), OP(NF_OP_RELU),
};
static const uint32_t FW_UNIT_OPS[] = {4, 4, 3};

static const nf_model FW_MODEL = {
    .ops = FW_OPS,
    .n_ops = sizeof FW_OPS / sizeof FW_OPS[0],
    .unit_ops = FW_UNIT_OPS,
    .n_units = sizeof FW_UNIT_OPS / sizeof FW_UNIT_OPS[0],
    .in_c = 1,
    .in_h = 28,
    .in_w = 28,
    .classes = 10,
    .head_pool = 0,
    /* What the read callback does to each pixel scaled to 0..1, (x - mean) / std (the
     * Fashion-MNIST statistics), recorded in the saved model for `nf eval --model`. */
    .in_mean = 0.2860f,
    .in_std = 0.3530f,
};

/* Planner options: the library's microcontroller defaults (NeuroFlux, heads 16 -> 8, batches
 * 2..=32), as in the Rust firmware, with the recompute chain over each block's scratch (a block
 * costs the larger of its step and its chain, not their sum: larger batches in the same RAM). */
static inline void fw_options(nf_options *o) {
    nf_options_default(o);
    o->chain_in_scratch = 1;
}

#endif
