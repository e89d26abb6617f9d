//! Data-parallel training through [`nf_core::collective`]: ranks simulated by threads that sum
//! in rank order. N ranks each stepping on their shard of a global batch end with the same
//! weights on every rank, equal (within rounding) to one process stepping on the whole batch
//! when no batch norm makes the statistics per rank; the world of one is bit for bit the
//! plain step; a world of more than one plans the same arena and counts its reduction buffers.
use std::sync::{Arc, Barrier, Mutex};

use nf_core::collective::{
    self, same_everywhere, scratch_floats, Collective, CollectiveError, Solo,
};
use nf_core::layout::{BlockLayout, SegMode};
use nf_core::model::{conv3, ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::optim::Sgd;
use nf_core::plan::{plan, step_cap, Mode, PlanOptions};
use nf_core::reference::ReferenceBackend;
use nf_core::rng::Rng;
use nf_core::step::{self, SegStats};
use nf_core::zoo;

/// Ranks as threads of one process: every rank deposits its buffer, then each sums all of
/// them in rank order (so every rank computes the same sum, bit for bit).
struct Threads {
    rank: usize,
    world: usize,
    barrier: Arc<Barrier>,
    slots: Arc<Mutex<Vec<Vec<f64>>>>,
}

impl Threads {
    fn group(world: usize) -> Vec<Threads> {
        let barrier = Arc::new(Barrier::new(world));
        let slots = Arc::new(Mutex::new(vec![Vec::new(); world]));
        (0..world)
            .map(|rank| Threads {
                rank,
                world,
                barrier: barrier.clone(),
                slots: slots.clone(),
            })
            .collect()
    }

    /// The rank-order sum of every rank's `values` (exact in f64 for f32 inputs of two ranks;
    /// the f32 sum below is what a transport computes).
    fn exchange(&mut self, values: Vec<f64>) -> Vec<Vec<f64>> {
        self.slots.lock().unwrap()[self.rank] = values;
        self.barrier.wait();
        let all = self.slots.lock().unwrap().clone();
        self.barrier.wait();
        all
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let all = self.exchange(buf.iter().map(|&v| f64::from(v)).collect());
        for (i, v) in buf.iter_mut().enumerate() {
            let mut s = 0f32;
            for r in &all {
                s += r[i] as f32;
            }
            *v = s;
        }
        Ok(())
    }
    fn all_reduce_stats(&mut self, buf: &mut [f64]) -> Result<(), CollectiveError> {
        let all = self.exchange(buf.to_vec());
        for (i, v) in buf.iter_mut().enumerate() {
            *v = all.iter().map(|r| r[i]).sum();
        }
        Ok(())
    }
    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        let all = self.exchange(buf.iter().map(|&b| f64::from(b)).collect());
        for (d, &s) in buf.iter_mut().zip(&all[root]) {
            *d = s as u8;
        }
        Ok(())
    }
}

/// Two conv units without batch norm (ReLU, pooled), trained as one segment (BP mode).
const U0: [Op; 3] = [conv3(4), Op::Relu, Op::MaxPool2];
const U1: [Op; 2] = [conv3(6), Op::Relu];
const NO_BN: ModelSpec = ModelSpec {
    name: "no-bn",
    about: "test model",
    input: Shape::new(2, 8, 8),
    units: &[&U0, &U1],
    head_pool: 0,
};
const CLASSES: usize = 3;

fn layout<'a>(model: &ModelSpec<'a>, mode: SegMode, batch: usize) -> BlockLayout<'a> {
    BlockLayout::new(
        model,
        model.input,
        CLASSES,
        mode,
        0,
        model.units.len() - 1,
        &[4; MAX_UNITS],
        batch,
    )
}

/// A seeded global batch of `n` samples: inputs and labels.
fn batch(l: &BlockLayout, n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let per = l.input_shape.len();
    let x = (0..n * per).map(|_| rng.normal()).collect();
    let y = (0..n).map(|i| ((i * 7 + 1) % CLASSES) as f32).collect();
    (x, y)
}

/// `steps` steps of one process on samples `lo..lo + n` of each step's global batch, through
/// `coll`; returns the arena's parameters (every segment's).
fn train(l: &BlockLayout, coll: &mut impl Collective, n: usize, steps: usize) -> Vec<f32> {
    let mut arena = vec![0.0f32; l.floats];
    let mut be = ReferenceBackend::new(&mut arena);
    step::init_block(&mut be, l, &mut Rng::new(3)).unwrap();
    let mut scratch = vec![0.0f32; scratch_floats(l)];
    let per = l.input_shape.len();
    let lo = coll.rank() * n;
    for s in 0..steps {
        let (x, y) = batch(l, n * coll.world(), 100 + s as u64);
        let a = be.arena();
        a[l.input.offset..][..n * per].copy_from_slice(&x[lo * per..(lo + n) * per]);
        a[l.labels.offset..][..n].copy_from_slice(&y[lo..lo + n]);
        let mut st = [SegStats::default(); MAX_UNITS];
        let nseg = l.n_segments();
        collective::train_step_with(
            &mut be,
            coll,
            &mut scratch,
            l,
            n,
            &Sgd::default(),
            0.05,
            &mut st[..nseg],
        )
        .unwrap();
    }
    collective::average_bn_state(&mut be, coll, &mut scratch, l).unwrap();
    let mut out = Vec::new();
    for k in 0..l.n_segments() {
        out.extend_from_slice(&arena[l.seg_params[k].offset..l.seg_params[k].end()]);
        out.extend_from_slice(&arena[l.seg_state[k].offset..l.seg_state[k].end()]);
    }
    out
}

/// Every rank's parameters after `steps` steps of a world of `world` ranks, `n` samples each.
fn ranks(
    model: &ModelSpec<'static>,
    mode: SegMode,
    world: usize,
    n: usize,
    steps: usize,
) -> Vec<Vec<f32>> {
    let l = layout(model, mode, n);
    let handles: Vec<_> = Threads::group(world)
        .into_iter()
        .map(|mut c| std::thread::spawn(move || train(&l, &mut c, n, steps)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn largest_relative_difference(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

#[test]
fn n_ranks_train_as_one_process_on_the_global_batch() {
    for world in [2, 3, 4] {
        let n = 4;
        let r = ranks(&NO_BN, SegMode::Global, world, n, 3);
        for (k, w) in r.iter().enumerate() {
            assert_eq!(
                w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                r[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "world {world}: rank {k} holds other weights than rank 0"
            );
        }
        let one = train(
            &layout(&NO_BN, SegMode::Global, n * world),
            &mut Solo,
            n * world,
            3,
        );
        // The gradient of a batch is the mean over its samples: summed per shard and then
        // over the ranks, it differs from one process's sum by rounding only.
        let d = largest_relative_difference(&r[0], &one);
        assert!(d < 1e-5, "world {world}: largest relative difference {d}");
    }
}

#[test]
fn without_the_reduction_the_ranks_diverge() {
    // The same shards trained as worlds of one: each rank's weights follow only its shard, so
    // the reduction above is what makes them agree.
    let n = 4;
    let l = layout(&NO_BN, SegMode::Global, n);
    let one = ranks(&NO_BN, SegMode::Global, 2, n, 2);
    let mut alone = Threads::group(1).pop().unwrap();
    let solo = train(&l, &mut alone, n, 2);
    assert!(one[0] != solo);
}

#[test]
fn batch_norm_running_statistics_are_averaged_and_agree() {
    let r = ranks(&zoo::VGG_SMALL, SegMode::Local, 2, 4, 1);
    assert_eq!(
        r[0], r[1],
        "every rank holds the same weights and BN statistics"
    );
}

#[test]
fn a_world_of_one_is_the_plain_step_bit_for_bit() {
    let l = layout(&zoo::VGG_SMALL, SegMode::Local, 4);
    let mut plain = vec![0.0f32; l.floats];
    let mut be = ReferenceBackend::new(&mut plain);
    step::init_block(&mut be, &l, &mut Rng::new(3)).unwrap();
    let (x, y) = batch(&l, 4, 100);
    let a = be.arena();
    a[l.input.offset..][..x.len()].copy_from_slice(&x);
    a[l.labels.offset..][..4].copy_from_slice(&y);
    step::train_step(&mut be, &l, 4, &Sgd::default(), 0.05, &mut []).unwrap();
    let mut with = vec![0.0f32; l.floats];
    let mut be = ReferenceBackend::new(&mut with);
    step::init_block(&mut be, &l, &mut Rng::new(3)).unwrap();
    let a = be.arena();
    a[l.input.offset..][..x.len()].copy_from_slice(&x);
    a[l.labels.offset..][..4].copy_from_slice(&y);
    collective::train_step_with(
        &mut be,
        &mut Solo,
        &mut [],
        &l,
        4,
        &Sgd::default(),
        0.05,
        &mut [],
    )
    .unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&plain), bits(&with));
}

#[test]
fn a_short_scratch_is_refused() {
    let l = layout(&NO_BN, SegMode::Global, 2);
    let handles: Vec<_> = Threads::group(2)
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let mut arena = vec![0.0f32; l.floats];
                let mut be = ReferenceBackend::new(&mut arena);
                step::init_block(&mut be, &l, &mut Rng::new(3)).unwrap();
                let mut short = vec![0.0f32; scratch_floats(&l) - 1];
                collective::train_step_with(
                    &mut be,
                    &mut c,
                    &mut short,
                    &l,
                    2,
                    &Sgd::default(),
                    0.05,
                    &mut [],
                )
                .unwrap_err()
                .to_string()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().contains("reduction buffer"));
    }
}

#[test]
fn ranks_compare_a_value() {
    let handles: Vec<_> = Threads::group(3)
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let same = same_everywhere(&mut c, 42).unwrap();
                let mine = 42 + u64::from(c.rank() == 2);
                let differs = same_everywhere(&mut c, mine).unwrap();
                (same, differs)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), (true, false));
    }
    assert!(same_everywhere(&mut Solo, 7).unwrap());
}

#[test]
fn the_world_plans_the_same_arena_and_counts_its_buffers() {
    let m = &zoo::VGG_SMALL;
    for mode in [Mode::NeuroFlux, Mode::Bp] {
        let one = plan(m, m.input, 10, 16 << 20, mode, &PlanOptions::DEFAULT).unwrap();
        assert_eq!(one.reduce_bytes(), 0, "a world of one reduces nothing");
        let o = PlanOptions {
            world: 2,
            ..PlanOptions::DEFAULT
        };
        let two = plan(m, m.input, 10, 16 << 20, mode, &o).unwrap();
        assert_eq!(one.blocks(), two.blocks(), "the per-rank plan is the plan");
        let largest = (0..two.n_blocks)
            .map(|i| scratch_floats(&two.layout(i)))
            .max()
            .unwrap();
        assert_eq!(two.reduce_bytes(), 2 * 4 * largest as u64);
    }
}

#[test]
fn the_step_cap_applies_to_the_global_batch() {
    let o = |world| PlanOptions {
        samples: 3000,
        min_steps: 10,
        world,
        ..PlanOptions::DEFAULT
    };
    assert_eq!(step_cap(&o(1)), 296, "300, rounded down to a multiple of 8");
    assert_eq!(step_cap(&o(2)), 144, "a global batch of 300: 150 per rank");
    assert_eq!(step_cap(&o(4)), 72);
}

/// A collective that reaches the arena itself (as NCCL over a GPU's does): it records the
/// regions it is asked to average in place and fails any host reduction.
struct InArena {
    regions: Vec<nf_core::region::Region>,
}

impl Collective for InArena {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        2
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<(), CollectiveError> {
        panic!("a collective that reaches the arena is not asked to reduce host memory")
    }
    fn all_reduce_stats(&mut self, _: &mut [f64]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [u8], _: usize) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_reduce_mean_in_arena(
        &mut self,
        r: nf_core::region::Region,
    ) -> Result<bool, CollectiveError> {
        self.regions.push(r);
        Ok(true)
    }
}

#[test]
fn a_collective_that_reaches_the_arena_averages_each_segment_there() {
    // VGG-small's first two units as a local block: two segments, with batch norm.
    let l = layout(&zoo::VGG_SMALL, SegMode::Local, 4);
    let mut arena = vec![0.0f32; l.floats];
    let mut be = ReferenceBackend::new(&mut arena);
    step::init_block(&mut be, &l, &mut Rng::new(3)).unwrap();
    let (x, y) = batch(&l, 4, 100);
    let a = be.arena();
    a[l.input.offset..][..x.len()].copy_from_slice(&x);
    a[l.labels.offset..][..4].copy_from_slice(&y);
    let mut coll = InArena {
        regions: Vec::new(),
    };
    // No host scratch: the in-arena path needs none.
    let sgd = Sgd::default();
    collective::train_step_with(&mut be, &mut coll, &mut [], &l, 4, &sgd, 0.05, &mut []).unwrap();
    let grads: Vec<_> = (0..l.n_segments())
        .map(|k| l.segment(k).param_grads)
        .collect();
    assert!(grads.len() > 1);
    assert_eq!(
        coll.regions, grads,
        "one in-place mean per segment, in order"
    );
    coll.regions.clear();
    collective::average_bn_state(&mut be, &mut coll, &mut [], &l).unwrap();
    let states: Vec<_> = (0..l.n_segments())
        .map(|k| l.seg_state[k])
        .filter(|r| !r.is_empty())
        .collect();
    assert!(!states.is_empty());
    assert_eq!(coll.regions, states);
}
