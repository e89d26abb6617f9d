//! The training run, independent of the chip: the model, the compile-time memory plan, the data
//! feed (host files read a few images at a time) and NeuroFlux block by block.
//!
//! Everything the run touches is sized here at compile time: the planner (`nf_core::plan`, a
//! `const fn`) lays out the training arena under what is left of [`RAM_BUDGET`] after the
//! frozen-chain arena, the frozen-weight store, the sample order, the stack reserve and a margin
//! for `.data`/`.bss`; a const assertion fails the build when the plan does not fit.
//!
//! The run talks to the outside only through [`Host`] (open, positioned read, print, clock), which
//! `main.rs` implements with Arm semihosting.
use core::fmt::Write;

use nf_core::backend::Backend;
use nf_core::layout::{BlockLayout, SegMode, ELEM_BYTES};
use nf_core::model::{conv3, ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::optim::{Schedule, Sgd};
use nf_core::plan::{plan, Mode, Plan, PlanOptions, MIN_HEAD};
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::rng::Rng;
use nf_core::schedule::{self, Feed, Split, TrainConfig};
use nf_core::step::{self, SegStats};

// --- Configuration -------------------------------------------------------------------------------

/// Bytes of RAM the whole program may use: the linker script's RAM length (build.rs writes it
/// from the same variable) and the bound of the compile-time check below. `NF_RAM_BUDGET`
/// (bytes, or with a `K` suffix) overrides the default 256 KiB at build time.
pub const RAM_BUDGET: u64 = match option_env!("NF_RAM_BUDGET") {
    Some(s) => parse_size(s),
    None => 256 * 1024,
};

/// Bytes reserved for the stack (the run measures its high-water mark and fails if it is
/// exceeded).
pub const STACK_RESERVE: u64 = 50 * 1024;

/// Bytes reserved for any other `.data` and `.bss` (none today: the run keeps its state on the
/// stack).
pub const MISC_RESERVE: u64 = 1024;

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

const U0: [Op; 4] = [
    Op::Conv {
        out: 8,
        k: 3,
        stride: 2,
        pad: 1,
        bias: false,
    },
    Op::BatchNorm,
    Op::Relu,
    Op::MaxPool2,
];
const U1: [Op; 4] = [conv3(16), Op::BatchNorm, Op::Relu, Op::MaxPool2];
const U2: [Op; 3] = [conv3(32), Op::BatchNorm, Op::Relu];

/// The firmware's CNN for 28x28x1: a stride-2 conv unit with max-pooling (28 -> 14 -> 7), a
/// conv unit with max-pooling (7 -> 3), a conv unit at 3x3, then global average pooling and a
/// linear classifier.
pub const MODEL: ModelSpec = ModelSpec {
    name: "mcu-cnn",
    about: "conv3x3/2+pool, conv3x3+pool, conv3x3 for 28x28x1",
    input: INPUT,
    units: &[&U0, &U1, &U2],
    head_pool: 0,
};
const NU: usize = MODEL.n_units();

/// Planner options: narrow heads (16 -> 8 filters), small batches.
pub const OPTIONS: PlanOptions = PlanOptions {
    f_max: 16,
    f_min: 8,
    ll_filters: 16,
    b_min: 2,
    b_max: 32,
    homogeneity: 2,
    workers: 1,
    ..PlanOptions::DEFAULT
};

/// Samples the frozen chain recomputes at a time.
pub const FROZEN_BATCH: usize = 1;

/// Head widths of the frozen chain: its trailing head is never read, so it is the narrowest.
const FROZEN_HEADS: [usize; MAX_UNITS] = [MIN_HEAD; MAX_UNITS];

/// The frozen chain of units `0..first` (an inference-only, backprop-mode layout).
const fn frozen_layout(first: usize) -> BlockLayout {
    BlockLayout::new(
        &MODEL,
        INPUT,
        CLASSES,
        SegMode::Global,
        0,
        first - 1,
        &FROZEN_HEADS,
        FROZEN_BATCH,
    )
}

/// Elements of the frozen-chain arena: the largest chain any block can need (units
/// `0..NU-1`), so it is known before the plan.
pub const FROZEN_FLOATS: usize = {
    let mut m = 0;
    let mut f = 1;
    while f < NU {
        let n = frozen_layout(f).floats;
        if n > m {
            m = n;
        }
        f += 1;
    }
    m
};

/// Elements one unit keeps when frozen: its parameters and BN running statistics.
const fn unit_store(u: usize) -> usize {
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
const fn store_offset(u: usize) -> usize {
    let mut o = 0;
    let mut i = 0;
    while i < u {
        o += unit_store(i);
        i += 1;
    }
    o
}

/// Elements of the frozen-weight store: every unit that a later block reads (all but the last).
pub const STORE_FLOATS: usize = store_offset(NU - 1);

/// Bytes of everything but the training arena.
pub const FIXED_BYTES: u64 = (FROZEN_FLOATS + STORE_FLOATS) as u64 * ELEM_BYTES
    + (N_TRAIN * 4) as u64
    + STACK_RESERVE
    + MISC_RESERVE;

/// What the planner may give the training arena.
pub const TRAIN_BUDGET: u64 = {
    assert!(
        FIXED_BYTES < RAM_BUDGET,
        "RAM_BUDGET cannot even hold the frozen chain, the order and the stack"
    );
    RAM_BUDGET - FIXED_BYTES
};

/// The training plan, made at compile time: a budget too small fails the build here.
pub const PLAN: Plan = match plan(
    &MODEL,
    INPUT,
    CLASSES,
    TRAIN_BUDGET,
    Mode::NeuroFlux,
    &OPTIONS,
) {
    Ok(p) => p,
    Err(_) => panic!("the NeuroFlux plan does not fit RAM_BUDGET: raise NF_RAM_BUDGET"),
};

/// Elements of the training arena.
pub const ARENA_FLOATS: usize = PLAN.peak_floats();

/// The whole RAM the run needs, as planned.
pub const PLANNED_BYTES: u64 = ARENA_FLOATS as u64 * ELEM_BYTES + FIXED_BYTES;

const _: () = assert!(
    PLANNED_BYTES <= RAM_BUDGET,
    "arena + frozen chain + store + order + stack reserve exceed RAM_BUDGET"
);

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

// --- The host ------------------------------------------------------------------------------------

/// What the run needs from the outside world.
pub trait Host {
    /// An open file.
    type File: Copy;
    /// Open `path` (NUL-terminated) for binary reading.
    fn open(&mut self, path: &[u8]) -> Option<Self::File>;
    /// Read exactly `buf.len()` bytes at byte `offset`.
    fn read_at(&mut self, f: Self::File, offset: u32, buf: &mut [u8]) -> bool;
    /// Print formatted text.
    fn print(&mut self, args: core::fmt::Arguments);
    /// Host wall clock in centiseconds.
    fn centis(&mut self) -> u32;
}

/// Why the run stopped.
#[derive(Debug)]
pub enum RunError {
    /// A data file is missing, short or malformed.
    Data(&'static str),
    /// A training or evaluation step was refused (the arena is smaller than the layout).
    Step,
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunError::Data(m) => write!(f, "data: {m}"),
            RunError::Step => f.write_str("a step was refused: the arena is too small"),
        }
    }
}

macro_rules! out {
    ($h:expr, $($t:tt)*) => { $h.print(format_args!($($t)*)) };
}

// --- Data ----------------------------------------------------------------------------------------

const PIXELS: usize = 28 * 28;
const IMAGES_HEADER: u32 = 16;
const LABELS_HEADER: u32 = 8;

/// One split on the host: IDX images and labels, the first `n` records.
#[derive(Clone, Copy)]
struct SplitFiles<F> {
    images: F,
    labels: F,
    n: usize,
}

/// A path `dir/name` as a NUL-terminated byte string.
struct PathBuf {
    buf: [u8; 256],
    len: usize,
}

impl PathBuf {
    fn join(dir: &[u8], name: &str) -> Option<PathBuf> {
        let mut p = PathBuf {
            buf: [0; 256],
            len: 0,
        };
        let need = dir.len() + 1 + name.len() + 1;
        if need > p.buf.len() {
            return None;
        }
        p.buf[..dir.len()].copy_from_slice(dir);
        p.buf[dir.len()] = b'/';
        p.buf[dir.len() + 1..need - 1].copy_from_slice(name.as_bytes());
        p.len = need;
        Some(p)
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn open_split<H: Host>(
    h: &mut H,
    dir: &[u8],
    prefix: &str,
    want: usize,
) -> Result<SplitFiles<H::File>, RunError> {
    let mut name = [0u8; 32];
    let mut open = |h: &mut H, suffix: &str| -> Result<H::File, RunError> {
        let n = prefix.len() + suffix.len();
        name[..prefix.len()].copy_from_slice(prefix.as_bytes());
        name[prefix.len()..n].copy_from_slice(suffix.as_bytes());
        let name = core::str::from_utf8(&name[..n]).map_err(|_| RunError::Data("bad name"))?;
        let p = PathBuf::join(dir, name).ok_or(RunError::Data("data path too long"))?;
        h.open(p.bytes())
            .ok_or(RunError::Data("cannot open a data file"))
    };
    let images = open(h, "-images-idx3-ubyte")?;
    let labels = open(h, "-labels-idx1-ubyte")?;
    let mut hd = [0u8; 16];
    if !h.read_at(images, 0, &mut hd) {
        return Err(RunError::Data("short image header"));
    }
    if be32(&hd) != 0x0803 || be32(&hd[8..]) != 28 || be32(&hd[12..]) != 28 {
        return Err(RunError::Data("not a 28x28 IDX image file"));
    }
    let ni = be32(&hd[4..]) as usize;
    if !h.read_at(labels, 0, &mut hd[..8]) {
        return Err(RunError::Data("short label header"));
    }
    if be32(&hd) != 0x0801 {
        return Err(RunError::Data("not an IDX label file"));
    }
    let nl = be32(&hd[4..]) as usize;
    if ni < want || nl < want {
        return Err(RunError::Data("fewer records than the run needs"));
    }
    Ok(SplitFiles {
        images,
        labels,
        n: want,
    })
}

/// The frozen units `0..first` as an inference chain in an arena of their own.
struct Frozen<'a> {
    layout: BlockLayout,
    /// Where the chain leaves the output of its last unit.
    out: Region,
    arena: &'a mut [f32],
}

/// The feed of the firmware: images from host files, recomputed through the frozen units.
struct McuFeed<'h, 'f, H: Host> {
    host: &'h mut H,
    splits: [SplitFiles<H::File>; 2],
    frozen: Option<Frozen<'f>>,
    /// Values per sample of the current block's input.
    per: usize,
}

fn slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        _ => 1,
    }
}

impl<H: Host> McuFeed<'_, '_, H> {
    /// Read sample `i` of `split`: the label, and the normalised image into `dst`.
    fn read_sample(&mut self, split: Split, i: u32, dst: &mut [f32]) -> Result<f32, RunError> {
        let f = self.splits[slot(split)];
        let mut lab = [0u8; 1];
        if !self.host.read_at(f.labels, LABELS_HEADER + i, &mut lab) || lab[0] as usize >= CLASSES {
            return Err(RunError::Data("bad label record"));
        }
        let mut px = [0u8; PIXELS];
        if !self
            .host
            .read_at(f.images, IMAGES_HEADER + i * PIXELS as u32, &mut px)
        {
            return Err(RunError::Data("short image record"));
        }
        for (d, &p) in dst.iter_mut().zip(px.iter()) {
            *d = (f32::from(p) / 255.0 - MEAN) / STD;
        }
        Ok(f32::from(lab[0]))
    }
}

impl<'a, H: Host> Feed<ReferenceBackend<'a>> for McuFeed<'_, '_, H> {
    type Error = RunError;

    fn len(&self, split: Split) -> usize {
        self.splits[slot(split)].n
    }

    fn load(
        &mut self,
        be: &mut ReferenceBackend<'a>,
        layout: &BlockLayout,
        split: Split,
        idx: &[u32],
    ) -> Result<(), RunError> {
        let per = self.per;
        let (input, labels) = (layout.input.offset, layout.labels.offset);
        match self.frozen.take() {
            None => {
                for (k, &i) in idx.iter().enumerate() {
                    let at = input + k * per;
                    let lab = self.read_sample(split, i, &mut be.arena()[at..at + per])?;
                    be.arena()[labels + k] = lab;
                }
            }
            Some(fz) => {
                let res = (|| {
                    let fl = fz.layout;
                    for (c, chunk) in idx.chunks(FROZEN_BATCH).enumerate() {
                        let m = chunk.len();
                        for (k, &i) in chunk.iter().enumerate() {
                            let at = fl.input.offset + k * PIXELS;
                            let lab = self.read_sample(split, i, &mut fz.arena[at..at + PIXELS])?;
                            fz.arena[fl.labels.offset + k] = lab;
                            be.arena()[labels + c * FROZEN_BATCH + k] = lab;
                        }
                        let mut fb = ReferenceBackend::new(fz.arena);
                        step::eval_step(&mut fb, &fl, m, &mut []).map_err(|_| RunError::Step)?;
                        let src = fz.out.offset;
                        let dst = input + c * FROZEN_BATCH * per;
                        be.arena()[dst..dst + m * per]
                            .copy_from_slice(&fz.arena[src..src + m * per]);
                    }
                    Ok(())
                })();
                self.frozen = Some(fz);
                res?;
            }
        }
        Ok(())
    }
}

// --- Frozen weights ------------------------------------------------------------------------------

/// Copy the unit parameters and BN statistics of the block just trained into the store.
fn freeze(be: &mut ReferenceBackend<'_>, layout: &BlockLayout, store: &mut [f32]) {
    for k in 0..layout.n_segments() {
        let u = layout.first + k;
        if u + 1 >= NU {
            break;
        }
        let seg = layout.segment(k);
        let mut at = store_offset(u);
        for slot in &seg.ops[..=seg.last_unit_op] {
            for r in [slot.param, slot.state] {
                be.read(r, &mut store[at..at + r.len]);
                at += r.len;
            }
        }
    }
}

/// Build the frozen chain of units `0..first` from the store.
fn thaw<'a>(first: usize, store: &[f32], arena: &'a mut [f32]) -> Frozen<'a> {
    let layout = frozen_layout(first);
    let seg = layout.segment(0);
    let mut be = ReferenceBackend::new(arena);
    let mut at = 0;
    for slot in &seg.ops[..=seg.last_unit_op] {
        for r in [slot.param, slot.state] {
            be.write(r, &store[at..at + r.len]);
            at += r.len;
        }
    }
    // The chain's trailing head is never read; give it defined values.
    for slot in &seg.ops[seg.last_unit_op + 1..seg.n_ops] {
        be.fill(slot.param, 0.0);
        be.fill(slot.state, 1.0);
    }
    let out = seg.ops[seg.last_unit_op].y;
    Frozen { layout, out, arena }
}

// --- The run -------------------------------------------------------------------------------------

/// The statically allocated memory of the run.
pub struct Memory<'a> {
    /// The training arena (`ARENA_FLOATS`).
    pub arena: &'a mut [f32],
    /// The frozen chain's arena (`FROZEN_FLOATS`).
    pub frozen: &'a mut [f32],
    /// The frozen-weight store (`STORE_FLOATS`).
    pub store: &'a mut [f32],
    /// The sample order of an epoch (`N_TRAIN`).
    pub order: &'a mut [u32],
}

/// What the run measured.
pub struct Outcome {
    /// Held-out accuracy of each unit's head (the last unit: the model's classifier).
    pub acc: [f32; MAX_UNITS],
    /// The early exit: the earliest unit within half a point of the best.
    pub exit: usize,
}

/// The training hyper-parameters.
pub const TRAIN: TrainConfig = TrainConfig {
    sgd: Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    },
    base_lr: 1.6,
    ref_batch: 128,
    schedule: Schedule::OneCycle,
    epochs: EPOCHS,
};

/// Print the plan.
pub fn print_plan<H: Host>(h: &mut H) {
    out!(
        h,
        "plan: model {} ({} units), RAM budget {} B, training budget {} B, arena {} B, frozen chain {} B, store {} B",
        MODEL.name,
        NU,
        RAM_BUDGET,
        TRAIN_BUDGET,
        ARENA_FLOATS * 4,
        FROZEN_FLOATS * 4,
        STORE_FLOATS * 4
    );
    for (i, b) in PLAN.blocks().iter().enumerate() {
        out!(
            h,
            "plan: block {} units {}..={} batch {} bytes {} heads {:?}",
            i,
            b.first,
            b.last,
            b.batch,
            b.bytes,
            &PLAN.heads[b.first..=b.last]
        );
    }
}

fn run_error<E>(e: schedule::TrainError<E, RunError>) -> RunError {
    match e {
        schedule::TrainError::Feed(e) => e,
        schedule::TrainError::Step(_) => RunError::Step,
    }
}

/// Train every block, evaluate every head on the held-out split, choose the exit.
pub fn run<H: Host>(h: &mut H, mem: Memory<'_>, data_dir: &[u8]) -> Result<Outcome, RunError> {
    let train = open_split(h, data_dir, "train", N_TRAIN)?;
    let test = open_split(h, data_dir, "t10k", N_TEST)?;
    let Memory {
        arena,
        frozen,
        store,
        order,
    } = mem;
    let mut acc = [0.0f32; MAX_UNITS];
    let mut rng = Rng::new(SEED);
    let mut frozen = Some(frozen);
    let mut feed = McuFeed {
        host: h,
        splits: [train, test],
        frozen: None,
        per: INPUT.len(),
    };
    let t0 = feed.host.centis();
    for (bi, block) in PLAN.blocks().iter().enumerate() {
        let layout = PLAN.layout(bi);
        feed.per = MODEL.unit_input(INPUT, block.first).len();
        if block.first > 0 {
            let fa = match feed.frozen.take() {
                Some(f) => f.arena,
                None => frozen.take().unwrap_or_default(),
            };
            feed.frozen = Some(thaw(block.first, store, fa));
        }
        let mut be = ReferenceBackend::new(&mut arena[..]);
        step::init_block(&mut be, &layout, &mut rng).map_err(|_| RunError::Step)?;
        let mut stats = [SegStats::default(); MAX_UNITS];
        for epoch in 0..EPOCHS {
            schedule::epoch_order(SEED, bi, epoch, order);
            schedule::train_epoch(
                &mut be,
                &layout,
                &mut feed,
                &TRAIN,
                epoch,
                order,
                &mut stats,
                |_, _, _| {},
            )
            .map_err(run_error)?;
            let t = feed.host.centis().wrapping_sub(t0);
            for (k, st) in stats[..layout.n_segments()].iter().enumerate() {
                out!(
                    feed.host,
                    "block {} unit {} epoch {}/{}: train loss {:.3} acc {:.3} ({}.{:02} s)",
                    bi,
                    block.first + k,
                    epoch + 1,
                    EPOCHS,
                    st.mean_loss(),
                    st.accuracy(),
                    t / 100,
                    t % 100
                );
            }
        }
        let mut idx = [0u32; 32];
        let mut ev = [SegStats::default(); MAX_UNITS];
        schedule::evaluate(&mut be, &layout, &mut feed, Split::Test, &mut idx, &mut ev)
            .map_err(run_error)?;
        for (k, st) in ev[..layout.n_segments()].iter().enumerate() {
            let u = block.first + k;
            acc[u] = st.accuracy();
            out!(
                feed.host,
                "block {} unit {}: held-out acc {:.4} ({} images)",
                bi,
                u,
                acc[u],
                st.samples
            );
        }
        freeze(&mut be, &layout, store);
    }
    let exit = schedule::select_exit(&acc[..NU], 0.005);
    Ok(Outcome { acc, exit })
}

/// Write the result line (`NFRESULT ...`) into `w`.
pub fn result_line(w: &mut impl Write, o: &Outcome) -> core::fmt::Result {
    write!(w, "NFRESULT train={} test={}", N_TRAIN, N_TEST)?;
    for u in 0..NU {
        write!(w, " acc_unit{}={:.4}", u, o.acc[u])?;
    }
    write!(
        w,
        " exit={} arena={} frozen={} store={} order={}",
        o.exit,
        ARENA_FLOATS * 4,
        FROZEN_FLOATS * 4,
        STORE_FLOATS * 4,
        N_TRAIN * 4
    )
}
