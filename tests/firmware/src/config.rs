//! The configuration, sized at compile time: the model, the data sizes, and the memory plan
//! (training arena, recompute chains, frozen-weight store, sample order, stack reserve) under
//! [`RAM_BUDGET`]; a const assertion fails the build when the plan does not fit.
use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, Kernels, ELEM_BYTES};
use nf_core::model::{conv3, ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::plan::{plan, Mode, Plan, PlanOptions};
use nf_core::predict;

// --- Configuration -------------------------------------------------------------------------------

/// Bytes of RAM the whole program may use: the linker script's RAM length (build.rs writes it
/// from the same variable) and the bound of the compile-time check below. `NF_RAM_BUDGET`
/// (bytes, or with a `K` suffix) overrides the default 128 KiB at build time.
pub const RAM_BUDGET: u64 = match option_env!("NF_RAM_BUDGET") {
    Some(s) => parse_size(s),
    None => 128 * 1024,
};

/// Bytes reserved for the stack: the measured high-water mark and a 1 KiB margin. The run
/// fails if its high-water mark exceeds this.
pub const STACK_RESERVE: u64 = STACK_MEASURED + 1024;

/// The stack high-water mark the run measures (`stack=` in its result line: cortex-m-rt paints
/// the free RAM, the run finds the deepest overwritten word); the same in the CI and the long
/// run. Block layouts and chains are `static`s made at compile time and nf-core's capacities
/// are small (its `small` feature), so no 2-12 KB layout is built on the stack at run time
/// but one segment at a time (the prediction after training, one of the last block's segments
/// and the prediction chain's pass, is the deepest: 8,180 B; training alone reached 7,800).
pub const STACK_MEASURED: u64 = 8184;

/// Bytes reserved for any other `.data` and `.bss`: none, the run keeps its state on the stack
/// (`data=0` and `.bss` = arena + store in every run measured; 1 KiB was reserved before). A
/// static added later shows: the run fails when its stack reaches `.bss`, and the test checks
/// `.data` + `.bss` + stack against the RAM.
pub const MISC_RESERVE: u64 = 0;

/// The CI run: 1000 training images, 3 epochs per block, 200 held-out images (about a minute
/// of emulation).
#[cfg(not(feature = "long"))]
mod cfg {
    pub const N_TRAIN: usize = 1000;
    pub const N_TEST: usize = 200;
    pub const EPOCHS: u32 = 3;
}

/// The longer run (`--features long`): the same model on 4000 training images, 6 epochs per
/// block, 1000 held-out images (several minutes of emulation).
#[cfg(feature = "long")]
mod cfg {
    pub const N_TRAIN: usize = 4000;
    pub const N_TEST: usize = 1000;
    pub const EPOCHS: u32 = 6;
}

/// Training images read (the first `N_TRAIN` records of the file).
pub const N_TRAIN: usize = cfg::N_TRAIN;
/// Held-out images read (the first `N_TEST` records of the test file).
pub const N_TEST: usize = cfg::N_TEST;
/// Epochs per block.
pub const EPOCHS: u32 = cfg::EPOCHS;

/// Number of classes (Fashion-MNIST).
pub const CLASSES: usize = 10;
/// Input shape.
pub const INPUT: Shape = Shape::new(1, 28, 28);
/// Fashion-MNIST pixel mean and standard deviation (of the `0..1`-scaled pixels).
pub const MEAN: f32 = 0.2860;
/// See [`MEAN`].
pub const STD: f32 = 0.3530;
/// Seed of initialisation and shuffling.
pub const SEED: u64 = 7;

/// Output channels of the three units' convolutions: 8, 16, 32, or `NF_FIRMWARE_WIDTHS` at
/// build time (three comma-separated numbers, e.g. `4,16,16`: the smaller models of the README's
/// "Toward 64 KiB").
pub const WIDTHS: [usize; 3] = match option_env!("NF_FIRMWARE_WIDTHS") {
    Some(s) => parse_widths(s),
    None => [8, 16, 32],
};

const U0: [Op; 4] = [
    Op::Conv {
        out: WIDTHS[0],
        k: 3,
        stride: 2,
        pad: 1,
        bias: false,
    },
    Op::BatchNorm,
    Op::Relu,
    Op::MaxPool2,
];
const U1: [Op; 4] = [conv3(WIDTHS[1]), Op::BatchNorm, Op::Relu, Op::MaxPool2];
const U2: [Op; 3] = [conv3(WIDTHS[2]), Op::BatchNorm, Op::Relu];

/// The firmware's CNN for 28x28x1: a stride-2 conv unit with max-pooling (28 -> 14 -> 7), a
/// conv unit with max-pooling (7 -> 3), a conv unit at 3x3 ([`WIDTHS`] channels), then global
/// average pooling and a linear classifier.
pub const MODEL: ModelSpec = ModelSpec {
    name: "mcu-cnn",
    about: "conv3x3/2+pool, conv3x3+pool, conv3x3 for 28x28x1",
    input: INPUT,
    units: &[&U0, &U1, &U2],
    head_pool: 0,
};
pub(crate) const NU: usize = MODEL.n_units();

/// Planner options: narrow heads (16 -> 8 filters), small batches, block inputs recomputed by
/// a chain of the frozen units that lies over the block's scratch.
pub const OPTIONS: PlanOptions = PlanOptions {
    f_max: 16,
    f_min: 8,
    ll_filters: 16,
    b_min: 2,
    b_max: 32,
    homogeneity: 2,
    workers: 1,
    recompute: true,
    chain_in_scratch: true,
    ..PlanOptions::DEFAULT
};

/// Elements one unit keeps when frozen: its parameters and BN running statistics.
pub(crate) const fn unit_store(u: usize) -> usize {
    let ops = MODEL.units[u];
    let mut s = MODEL.unit_input(INPUT, u);
    let mut n = 0;
    let mut i = 0;
    while i < ops.len() {
        n += ops[i].params(s) + nf_core::layout::op_state(&ops[i], s);
        s = ops[i].out_shape(s);
        i += 1;
    }
    n
}

/// Offset of unit `u` in the frozen-weight store.
pub(crate) const fn store_offset(u: usize) -> usize {
    let mut o = 0;
    let mut i = 0;
    while i < u {
        o += unit_store(i);
        i += 1;
    }
    o
}

/// Values of the units' part of the frozen-weight store: every unit that a later block reads
/// (all but the last).
pub const UNITS_STORE: usize = store_offset(NU - 1);

/// Elements of the auxiliary head of unit `u` with `f` filters (0 for none): parameters and
/// BN statistics.
const fn head_store(u: usize, f: usize) -> usize {
    if f == 0 {
        return 0;
    }
    let mut s = MODEL.unit_input(INPUT, u + 1);
    let (ops, n) = MODEL.head(f, CLASSES, s);
    let mut len = 0;
    let mut i = 0;
    while i < n {
        len += ops[i].params(s) + nf_core::layout::op_state(&ops[i], s);
        s = ops[i].out_shape(s);
        i += 1;
    }
    len
}

/// Offset of the head of unit `u` in the frozen-weight store, for the head widths `heads`:
/// after the units, the heads of units `0..NU - 1` one after another (the heads of earlier
/// blocks are kept so that the device can classify with any of them once training is done).
pub(crate) const fn head_offset_in(heads: &[usize; MAX_UNITS], u: usize) -> usize {
    let mut o = UNITS_STORE;
    let mut v = 0;
    while v < u {
        o += head_store(v, heads[v]);
        v += 1;
    }
    o
}

/// [`head_offset_in`] for the plan's heads.
pub(crate) const fn head_offset(u: usize) -> usize {
    head_offset_in(&PLAN.heads, u)
}

/// Bytes per value of the frozen-weight store (IEEE half precision).
pub const STORE_BYTES: u64 = 2;

/// Bytes per index of the epoch order: none, the order is computed position by position
/// ([`crate::order::Shuffle`]; a `u16` per training image before, 8,000 B in the longer run).
pub const ORDER_BYTES: u64 = 0;

/// The plan for a frozen-weight store of `store` values: the RAM budget less the store, the
/// order, the stack and the other statics.
const fn plan_with_store(store: usize) -> Plan<'static> {
    let fixed =
        store as u64 * STORE_BYTES + N_TRAIN as u64 * ORDER_BYTES + STACK_RESERVE + MISC_RESERVE;
    assert!(
        fixed < RAM_BUDGET,
        "RAM_BUDGET cannot even hold the store, the order and the stack"
    );
    match plan(
        &MODEL,
        INPUT,
        CLASSES,
        RAM_BUDGET - fixed,
        Mode::NeuroFlux,
        &OPTIONS,
    ) {
        Ok(p) => p,
        Err(_) => panic!("the NeuroFlux plan does not fit RAM_BUDGET: raise NF_RAM_BUDGET"),
    }
}

/// Head widths depend on the plan and the plan's budget on the store, which keeps the heads:
/// a first plan without them gives the widths.
const HEADS: [usize; MAX_UNITS] = plan_with_store(UNITS_STORE).heads;

/// Values of the frozen-weight store (`f16` each): the units a later block reads and the heads
/// of every unit but the last (whose classifier stays in the arena).
pub const STORE_LEN: usize = head_offset_in(&HEADS, NU - 1);

/// Bytes of everything but the training arena.
pub const FIXED_BYTES: u64 =
    STORE_LEN as u64 * STORE_BYTES + N_TRAIN as u64 * ORDER_BYTES + STACK_RESERVE + MISC_RESERVE;

/// What the planner may give the training arena.
pub const TRAIN_BUDGET: u64 = RAM_BUDGET - FIXED_BYTES;

/// The training plan, made at compile time: a budget too small fails the build here.
pub const PLAN: Plan = {
    let p = plan_with_store(STORE_LEN);
    let mut u = 0;
    while u < MAX_UNITS {
        assert!(
            p.heads[u] == HEADS[u],
            "the heads changed with the store that keeps them"
        );
        u += 1;
    }
    p
};

/// Elements of the training arena.
pub const ARENA_FLOATS: usize = PLAN.peak_floats();

/// The whole RAM the run needs, as planned.
pub const PLANNED_BYTES: u64 = ARENA_FLOATS as u64 * ELEM_BYTES + FIXED_BYTES;

const _: () = assert!(
    PLANNED_BYTES <= RAM_BUDGET,
    "arena + store + order + stack reserve exceed RAM_BUDGET"
);

/// Blocks of the plan.
pub(crate) const NB: usize = PLAN.n_blocks;

/// The arena layout of each block, laid out at compile time (in flash: computing one at run
/// time would take 7 KB of stack).
pub(crate) static LAYOUTS: [BlockLayout; NB] = {
    let mut l = [PLAN.layout(0); NB];
    let mut i = 1;
    while i < NB {
        l[i] = PLAN.layout(i);
        i += 1;
    }
    l
};

/// The recompute chain of each block (none for the first), laid out at compile time.
pub(crate) static CHAINS: [Option<InferLayout>; NB] = {
    let mut c = [None; NB];
    let mut i = 0;
    while i < NB {
        c[i] = PLAN.chain(i);
        i += 1;
    }
    c
};

/// The prediction chain of every unit (its head, or the classifier for the last), at batch 1
/// after the last block's kept state ([`nf_core::predict::chain`]), laid out at compile time.
pub(crate) static PREDICT: [InferLayout; NU] = {
    let last = PLAN.layout(NB - 1);
    let mut c = [predict::chain(&last, &PLAN.heads, 0, &Kernels::REFERENCE); NU];
    let mut u = 0;
    while u < NU {
        c[u] = predict::chain(&last, &PLAN.heads, u, &Kernels::REFERENCE);
        assert!(
            c[u].floats <= ARENA_FLOATS,
            "a prediction chain does not fit the arena"
        );
        u += 1;
    }
    c
};

/// Values of one image.
pub const PIXELS: usize = 28 * 28;

/// The largest batch of the plan (the size of the index scratch of a batch).
pub const MAX_BATCH: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < PLAN.n_blocks {
        if PLAN.blocks[i].batch > m {
            m = PLAN.blocks[i].batch;
        }
        i += 1;
    }
    m
};

/// Elements of the largest recompute chain (inside the arena, over its block's scratch).
pub const CHAIN_FLOATS: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < NB {
        if let Some(c) = &CHAINS[i] {
            if c.len() > m {
                m = c.len();
            }
        }
        i += 1;
    }
    m
};

/// A size in bytes, with an optional `K` suffix (KiB), rounded down to a multiple of 8, at
/// compile time.
const fn parse_size(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut n = 0u64;
    let mut i = 0;
    let mut mult = 1;
    while i < b.len() {
        let c = b[i];
        if c >= b'0' && c <= b'9' {
            n = n * 10 + (c - b'0') as u64;
        } else if (c == b'K' || c == b'k') && i + 1 == b.len() {
            mult = 1024;
        } else {
            panic!("NF_RAM_BUDGET: expected bytes or a number with a K suffix");
        }
        i += 1;
    }
    // The linker script's RAM length is rounded the same way (the stack must be 8-aligned).
    n * mult / 8 * 8
}

/// Three comma-separated positive numbers (`NF_FIRMWARE_WIDTHS`), at compile time.
const fn parse_widths(s: &str) -> [usize; 3] {
    let b = s.as_bytes();
    let mut w = [0usize; 3];
    let (mut k, mut i) = (0, 0);
    while i < b.len() {
        let c = b[i];
        if c >= b'0' && c <= b'9' {
            w[k] = w[k] * 10 + (c - b'0') as usize;
        } else if c == b',' && k < 2 {
            k += 1;
        } else {
            panic!("NF_FIRMWARE_WIDTHS: expected three comma-separated numbers, e.g. 4,16,16");
        }
        i += 1;
    }
    if k != 2 || w[0] == 0 || w[1] == 0 || w[2] == 0 {
        panic!("NF_FIRMWARE_WIDTHS: expected three comma-separated numbers, e.g. 4,16,16");
    }
    w
}
