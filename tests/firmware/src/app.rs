//! The training run, independent of the chip: the data feed (host files read a few images at a
//! time) and NeuroFlux block by block, in the memory [`crate::config`] sizes at compile time
//! (the chain of frozen units that recomputes a block's inputs lies in the training arena, over
//! the block's scratch).
//!
//! The run talks to the outside only through [`Host`] (open, positioned read, print, clock), which
//! `main.rs` implements with Arm semihosting.
use core::fmt::Write;

use heapless::Vec;
use nf_core::infer::InferLayout;
use nf_core::layout::{BlockLayout, OpSlot};
use nf_core::model::MAX_UNITS;
use nf_core::optim::{Schedule, Sgd};
use nf_core::predict::{self, Part};
use nf_core::reference::ReferenceBackend;
use nf_core::rng::Rng;
use nf_core::schedule::{self, Feed, Split, TrainConfig};
use nf_core::step::{self, SegStats};

pub use crate::config::*;
use crate::order::Shuffle;

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

const IMAGES_HEADER: u32 = 16;
const LABELS_HEADER: u32 = 8;

/// One split on the host: IDX images and labels, the first `n` records.
#[derive(Clone, Copy)]
struct SplitFiles<F> {
    images: F,
    labels: F,
    n: usize,
}

/// The path `dir/prefix+suffix` as a NUL-terminated byte string (`None` if it is too long).
fn join_path(dir: &[u8], parts: [&str; 2]) -> Option<Vec<u8, 256>> {
    let mut p = Vec::new();
    p.extend_from_slice(dir).ok()?;
    p.push(b'/').ok()?;
    for part in parts {
        p.extend_from_slice(part.as_bytes()).ok()?;
    }
    p.push(0).ok()?;
    Some(p)
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
    let open = |h: &mut H, suffix: &str| -> Result<H::File, RunError> {
        let p = join_path(dir, [prefix, suffix]).ok_or(RunError::Data("data path too long"))?;
        h.open(&p).ok_or(RunError::Data("cannot open a data file"))
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

/// The feed of the firmware: images from host files, recomputed through the frozen units.
struct McuFeed<'h, 's, H: Host> {
    host: &'h mut H,
    splits: [SplitFiles<H::File>; 2],
    /// The chain of frozen units of the current block (over its scratch in the arena), if it
    /// does not start at unit 0.
    chain: Option<&'static InferLayout<'static>>,
    /// The frozen-weight store the chain's weights are written from before each batch.
    store: &'s [u16],
    /// Values per sample of the current block's input.
    per: usize,
}

impl<'h, 's, H: Host> McuFeed<'h, 's, H> {
    /// The feed of block `bi`.
    fn new(host: &'h mut H, splits: [SplitFiles<H::File>; 2], bi: usize, store: &'s [u16]) -> Self {
        McuFeed {
            host,
            splits,
            chain: CHAINS[bi].as_ref(),
            store,
            per: MODEL.unit_input(INPUT, PLAN.blocks()[bi].first).len(),
        }
    }
}

fn slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        _ => 1,
    }
}

/// Read record `i` of the split `f`: the label, and the normalised image into `dst`.
fn read_sample<H: Host>(
    host: &mut H,
    f: SplitFiles<H::File>,
    i: u32,
    dst: &mut [f32],
) -> Result<f32, RunError> {
    let mut lab = [0u8; 1];
    if !host.read_at(f.labels, LABELS_HEADER + i, &mut lab) || lab[0] as usize >= CLASSES {
        return Err(RunError::Data("bad label record"));
    }
    let mut px = [0u8; PIXELS];
    if !host.read_at(f.images, IMAGES_HEADER + i * PIXELS as u32, &mut px) {
        return Err(RunError::Data("short image record"));
    }
    for (d, &p) in dst.iter_mut().zip(px.iter()) {
        *d = (f32::from(p) / 255.0 - MEAN) / STD;
    }
    Ok(f32::from(lab[0]))
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
        let f = self.splits[slot(split)];
        let host = &mut *self.host;
        match self.chain {
            None => {
                for (k, &i) in idx.iter().enumerate() {
                    let at = input + k * per;
                    let lab = read_sample(host, f, i, &mut be.arena()[at..at + per])?;
                    be.arena()[labels + k] = lab;
                }
            }
            Some(chain) => {
                // The training step just overwrote the scratch the chain lies in: its weights
                // first, then the images chunk by chunk.
                thaw(be, chain, self.store);
                let c = chain.batch;
                for (j, chunk) in idx.chunks(c).enumerate() {
                    let m = chunk.len();
                    for (k, &i) in chunk.iter().enumerate() {
                        let at = chain.input.offset + k * PIXELS;
                        let lab = read_sample(host, f, i, &mut be.arena()[at..at + PIXELS])?;
                        be.arena()[labels + j * c + k] = lab;
                    }
                    step::infer(be, chain, m).map_err(|_| RunError::Step)?;
                    let src = chain.output().offset;
                    let dst = input + j * c * per;
                    be.arena().copy_within(src..src + m * per, dst);
                }
            }
        }
        Ok(())
    }
}

// --- Frozen weights ------------------------------------------------------------------------------

/// `x` in IEEE half precision (round to nearest even; overflow to infinity, subnormals kept).
pub fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// The value of IEEE half-precision bits `h` (exact).
pub fn f16_value(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// Copy the parameters and BN statistics of the block just trained (its units and their heads,
/// all but the last unit's) into the store, in half precision, and round them in the arena
/// to the same values: the block is then evaluated with the weights the device keeps, so that
/// a prediction after training reproduces its evaluation exactly.
fn freeze(be: &mut ReferenceBackend<'_>, layout: &BlockLayout, store: &mut [u16]) {
    for k in 0..layout.n_segments() {
        let u = layout.first + k;
        if u + 1 >= NU {
            break;
        }
        let seg = layout.segment(k);
        let parts = [
            (&seg.ops[..=seg.last_unit_op], store_offset(u)),
            (&seg.ops[seg.last_unit_op + 1..seg.n_ops], head_offset(u)),
        ];
        for (ops, mut at) in parts {
            for slot in ops {
                for r in [slot.param, slot.state] {
                    let src = &mut be.arena()[r.offset..r.end()];
                    for (d, v) in store[at..at + r.len()].iter_mut().zip(src) {
                        *d = f16_bits(*v);
                        *v = f16_value(*d);
                    }
                    at += r.len();
                }
            }
        }
    }
}

/// Write one op's weights (parameters, then BN statistics, from `at`) from the store into
/// `dst`.
fn thaw_op(be: &mut ReferenceBackend<'_>, dst: &OpSlot, store: &[u16], mut at: usize) -> bool {
    for r in [dst.param, dst.state] {
        let Some(src) = store.get(at..at + r.len()) else {
            return false;
        };
        for (d, &h) in be.arena()[r.offset..r.end()].iter_mut().zip(src) {
            *d = f16_value(h);
        }
        at += r.len();
    }
    true
}

/// Write the weights of the frozen units of `chain` from the store into the arena.
fn thaw(be: &mut ReferenceBackend<'_>, chain: &InferLayout, store: &[u16]) {
    let seg = &chain.seg;
    let mut at = 0;
    for slot in &seg.ops[..=seg.last_unit_op] {
        thaw_op(be, slot, store, at);
        at += slot.param.len() + slot.state.len();
    }
}

/// Classify the `N_TEST` held-out images with the trained model's unit `exit` through
/// nf-core's prediction chain ([`nf_core::predict`]), in the arena after training: the chain
/// after the last block's kept state, each image read into the chain's input. Returns the
/// images it classified correctly.
fn predict_held_out<H: Host>(
    h: &mut H,
    arena: &mut [f32],
    store: &[u16],
    test: SplitFiles<H::File>,
    exit: usize,
) -> Result<u32, RunError> {
    let c = &PREDICT[exit];
    let mut be = ReferenceBackend::new(&mut arena[..c.floats]);
    predict::load(&mut be, &LAYOUTS[NB - 1], c, |be, f, dst| {
        let base = match f.part {
            Part::Unit => store_offset(f.unit),
            Part::Head => head_offset(f.unit),
        };
        thaw_op(be, dst, store, base + f.offset)
    })
    .map_err(|_| RunError::Step)?;
    let mut correct = 0;
    for i in 0..N_TEST as u32 {
        // The image goes straight into the chain's input: no buffer beside the chain.
        let at = c.input.offset;
        let label = read_sample(h, test, i, &mut be.arena()[at..at + PIXELS])?;
        let class = predict::classify_input(&mut be, c, &mut []).map_err(|_| RunError::Step)?;
        correct += u32::from(class as f32 == label);
    }
    Ok(correct)
}

// --- The run -------------------------------------------------------------------------------------

/// The statically allocated memory of the run.
pub struct Memory<'a> {
    /// The training arena (`ARENA_FLOATS`).
    pub arena: &'a mut [f32],
    /// The frozen-weight store (`STORE_LEN` half-precision values).
    pub store: &'a mut [u16],
}

/// What the run measured.
pub struct Outcome {
    /// Held-out accuracy of each unit's head (the last unit: the model's classifier).
    pub acc: [f32; MAX_UNITS],
    /// Held-out images each head classified correctly in the evaluation.
    pub correct: [u32; MAX_UNITS],
    /// The early exit: the earliest unit within half a point of the best.
    pub exit: usize,
    /// Held-out images the exit classified correctly through [`predict::classify`] after
    /// training (equal to `correct[exit]`, or the run fails).
    pub predicted: u32,
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
        "plan: model {} ({} units, widths {:?}), RAM budget {} B, training budget {} B, arena {} B, store {} B, order {} B, stack reserve {} B",
        MODEL.name,
        NU,
        WIDTHS,
        RAM_BUDGET,
        TRAIN_BUDGET,
        ARENA_FLOATS * 4,
        STORE_LEN as u64 * STORE_BYTES,
        N_TRAIN as u64 * ORDER_BYTES,
        STACK_RESERVE
    );
    for (i, b) in PLAN.blocks().iter().enumerate() {
        let chain = CHAINS[i].as_ref().map_or(0, |c| c.bytes());
        out!(
            h,
            "plan: block {} units {}..={} batch {} bytes {} heads {:?} chain {} B ({} per pass)",
            i,
            b.first,
            b.last,
            b.batch,
            b.bytes,
            &PLAN.heads[b.first..=b.last],
            chain,
            b.chunk
        );
    }
    print_predict_plan(h);
}

/// Print where each unit's prediction chain lies in the arena.
fn print_predict_plan<H: Host>(h: &mut H) {
    for (u, c) in PREDICT.iter().enumerate() {
        out!(
            h,
            "plan: predict with unit {}: chain {} B at byte {} of the arena (after the last block's kept state)",
            u,
            c.bytes(),
            c.start * 4
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
    let Memory { arena, store } = mem;
    let mut acc = [0.0f32; MAX_UNITS];
    let mut correct = [0u32; MAX_UNITS];
    let mut rng = Rng::new(SEED);
    let t0 = h.centis();
    let mut idx = [0u32; MAX_BATCH];
    for (bi, block) in PLAN.blocks().iter().enumerate() {
        let layout = &LAYOUTS[bi];
        let mut feed = McuFeed::new(&mut *h, [train, test], bi, store);
        let mut be = ReferenceBackend::new(&mut arena[..]);
        step::init_block(&mut be, layout, &mut rng).map_err(|_| RunError::Step)?;
        let mut stats = [SegStats::default(); MAX_UNITS];
        for epoch in 0..EPOCHS {
            let order = Shuffle::new(SEED, bi, epoch, N_TRAIN);
            schedule::train_epoch_by(
                &mut be,
                layout,
                &mut feed,
                &TRAIN,
                epoch,
                &order,
                &mut idx,
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
        freeze(&mut be, layout, store);
        let mut feed = McuFeed::new(&mut *h, [train, test], bi, store);
        let mut ev = [SegStats::default(); MAX_UNITS];
        schedule::evaluate(&mut be, layout, &mut feed, Split::Test, &mut idx, &mut ev)
            .map_err(run_error)?;
        for (k, st) in ev[..layout.n_segments()].iter().enumerate() {
            let u = block.first + k;
            acc[u] = st.accuracy();
            correct[u] = st.correct;
            out!(
                feed.host,
                "block {} unit {}: held-out acc {:.4} ({} images)",
                bi,
                u,
                acc[u],
                st.samples
            );
        }
    }
    let exit = schedule::select_exit(&acc[..NU], 0.005);
    let predicted = predict_held_out(h, arena, store, test, exit)?;
    out!(
        h,
        "predict: exit unit {} classified {}/{} held-out images (its evaluation: {})",
        exit,
        predicted,
        N_TEST,
        correct[exit]
    );
    Ok(Outcome {
        acc,
        correct,
        exit,
        predicted,
    })
}

/// Write the result line (`NFRESULT ...`) into `w`.
pub fn result_line(w: &mut impl Write, o: &Outcome) -> core::fmt::Result {
    write!(w, "NFRESULT train={} test={}", N_TRAIN, N_TEST)?;
    for u in 0..NU {
        write!(w, " acc_unit{}={:.4}", u, o.acc[u])?;
    }
    write!(
        w,
        " exit={} exit_correct={} predict_correct={} arena={} chain={} store={} order={} stack_reserve={}",
        o.exit,
        o.correct[o.exit],
        o.predicted,
        ARENA_FLOATS * 4,
        CHAIN_FLOATS * 4,
        STORE_LEN as u64 * STORE_BYTES,
        N_TRAIN as u64 * ORDER_BYTES,
        STACK_RESERVE
    )
}
