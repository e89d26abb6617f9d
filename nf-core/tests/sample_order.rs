//! A computed epoch order ([`SampleOrder`], e.g. the firmware's keyed permutation) trains
//! exactly as the slice of its indices would.
use nf_core::backend::Backend;
use nf_core::layout::BlockLayout;
use nf_core::model::MAX_UNITS;
use nf_core::optim::{Schedule, Sgd};
use nf_core::rng::Rng;
use nf_core::schedule::{train_epoch_by, Feed, SampleOrder, Split, TrainConfig};
use nf_core::step::{self, SegStats};

/// An order computed from its position: the reverse of `0..n`.
struct Reversed(usize);
impl SampleOrder for Reversed {
    fn len(&self) -> usize {
        self.0
    }
    fn indices<'a>(&'a self, start: usize, end: usize, buf: &'a mut [u32]) -> &'a [u32] {
        let buf = &mut buf[..end - start];
        for (k, d) in buf.iter_mut().enumerate() {
            *d = (self.0 - 1 - (start + k)) as u32;
        }
        buf
    }
}

/// Samples of one value each, labelled by that value's fifth.
struct Flat(usize);
impl<B: Backend> Feed<B> for Flat {
    type Error = core::convert::Infallible;
    fn len(&self, _: Split) -> usize {
        self.0
    }
    fn load(
        &mut self,
        be: &mut B,
        l: &BlockLayout,
        _: Split,
        idx: &[u32],
    ) -> Result<(), Self::Error> {
        let per = l.model.unit_input(l.input_shape, l.first).len();
        for (k, &i) in idx.iter().enumerate() {
            be.fill(l.input.sub(k * per, per), i as f32 / self.0 as f32 - 0.5);
            be.fill(l.labels.sub(k, 1), (5 * i as usize / self.0) as f32);
        }
        Ok(())
    }
}

/// The arena after one epoch of a small block over `order` (a computed order or a slice).
fn trained<O: SampleOrder + ?Sized>(order: &O) -> Vec<f32> {
    use nf_core::model::{conv3, ModelSpec, Op, Shape};
    use nf_core::plan::{plan, Mode, PlanOptions};
    use nf_core::reference::ReferenceBackend;
    const U: [Op; 3] = [conv3(4), Op::Relu, Op::MaxPool2];
    let m = ModelSpec {
        name: "t",
        about: "",
        input: Shape::new(1, 8, 8),
        units: &[&U, &U],
        head_pool: 0,
    };
    let options = PlanOptions {
        b_min: 3,
        b_max: 3,
        f_max: 4,
        f_min: 4,
        ..PlanOptions::DEFAULT
    };
    let p = plan(&m, m.input, 5, 1 << 20, Mode::NeuroFlux, &options).unwrap();
    let layout = p.layout(0);
    let mut arena = vec![0.0; layout.floats];
    let mut be = ReferenceBackend::new(&mut arena);
    step::init_block(&mut be, &layout, &mut Rng::new(3)).unwrap();
    let cfg = TrainConfig {
        sgd: Sgd::default(),
        base_lr: 0.1,
        ref_batch: 8,
        schedule: Schedule::OneCycle,
        epochs: 1,
    };
    let mut stats = [SegStats::default(); MAX_UNITS];
    let mut idx = [0u32; 3];
    let mut feed = Flat(order.len());
    train_epoch_by(
        &mut be,
        &layout,
        &mut feed,
        &cfg,
        0,
        order,
        &mut idx,
        &mut stats,
        |_, _, _| {},
    )
    .unwrap();
    assert_eq!(stats[0].samples as usize, order.len());
    let params = layout.seg_params[0];
    arena[params.offset..params.end()].to_vec()
}

#[test]
fn a_computed_order_trains_as_the_slice_of_its_indices() {
    // 10 samples at batch 3: a last partial batch too.
    let slice: Vec<u16> = (0..10u16).rev().collect();
    let by_order = trained(&Reversed(10));
    assert_eq!(by_order, trained(&slice[..]));
    let forward: Vec<u16> = (0..10u16).collect();
    assert_ne!(by_order, trained(&forward[..]), "the order is not ignored");
}
