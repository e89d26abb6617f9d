//! Samples for nf-core's steps from the caller's read callback: straight into a block's input,
//! or, for a block after the first, through the forward-only chain of the frozen units.
use core::ffi::c_void;

use nf_core::backend::Backend;
use nf_core::infer::InferLayout;
use nf_core::layout::BlockLayout;
use nf_core::model::ModelSpec;
use nf_core::reference::ReferenceBackend;
use nf_core::region::Region;
use nf_core::schedule::{Feed, Split};
use nf_core::step;

use crate::half::f16_value;
use crate::{
    nf_epoch_fn, nf_read_fn, NF_E_DATA, NF_E_DATA_CONFIG, NF_E_STEP, NF_SPLIT_TEST, NF_SPLIT_TRAIN,
    NF_SPLIT_VAL,
};

/// The data source of a trainer.
#[derive(Clone, Copy)]
pub(crate) struct Data {
    pub(crate) read: nf_read_fn,
    pub(crate) on_epoch: nf_epoch_fn,
    pub(crate) user: *mut c_void,
    /// Samples of train, val, test.
    pub(crate) n: [usize; 3],
}

pub(crate) fn code(split: Split) -> u32 {
    match split {
        Split::Train => NF_SPLIT_TRAIN,
        Split::Val => NF_SPLIT_VAL,
        Split::Test => NF_SPLIT_TEST,
    }
}

pub(crate) fn split_slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Val => 1,
        Split::Test => 2,
    }
}

/// The feed of the C ABI: samples from the read callback, through the recompute chain for a
/// block after the first.
pub(crate) struct CFeed<'c> {
    /// The frozen-weight store (the chain's unit weights first).
    pub(crate) store: &'c [u16],
    /// Copy the chain's weights in before every pass (the chain lies over the block's scratch,
    /// which the steps overwrite).
    pub(crate) thaw_each: bool,
    pub(crate) data: Data,
    pub(crate) chain: Option<&'c InferLayout<'c>>,
    /// Values per sample of the block's input.
    pub(crate) per: usize,
    /// Values per sample of the model's input.
    pub(crate) raw: usize,
    pub(crate) classes: usize,
}

/// Copy the frozen units' weights from `store` (half precision; unit by unit, op by op:
/// parameters, then BN statistics) into the recompute chain `c`.
pub(crate) fn thaw(
    be: &mut ReferenceBackend<'_>,
    c: &InferLayout,
    store: &[u16],
) -> Result<(), i32> {
    let mut at = 0;
    for slot in &c.seg.ops[..=c.seg.last_unit_op] {
        for r in [slot.param, slot.state] {
            write_f16(be, r, store.get(at..at + r.len()).ok_or(NF_E_STEP)?)?;
            at += r.len();
        }
    }
    Ok(())
}

/// Write the half-precision values `src` into region `r` of the arena, as `f32`.
pub(crate) fn write_f16(be: &mut ReferenceBackend<'_>, r: Region, src: &[u16]) -> Result<(), i32> {
    let dst = be.arena().get_mut(r.offset..r.end()).ok_or(NF_E_STEP)?;
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = f16_value(h);
    }
    Ok(())
}

impl<'c> CFeed<'c> {
    /// The feed of block `layout` of `spec` (through its recompute chain, if any).
    pub(crate) fn new(
        spec: &ModelSpec,
        layout: &BlockLayout,
        data: Data,
        chain: Option<&'c InferLayout<'c>>,
        store: &'c [u16],
        chain_in_scratch: bool,
    ) -> Self {
        CFeed {
            store,
            thaw_each: chain_in_scratch,
            data,
            chain,
            per: spec.unit_input(spec.input, layout.first).len(),
            raw: spec.input.len(),
            classes: layout.classes,
        }
    }

    /// Read sample `i` of `split` into `arena[at..at + len]`; its label.
    fn read(
        &self,
        arena: &mut [f32],
        split: Split,
        i: u32,
        at: usize,
        len: usize,
    ) -> Result<f32, i32> {
        let dst = arena.get_mut(at..at + len).ok_or(NF_E_STEP)?;
        let read = self.data.read.ok_or(NF_E_DATA_CONFIG)?;
        let mut label = u32::MAX;
        // SAFETY: `nf_init`'s contract: `read` has this signature; `dst` is `len` writable
        // floats (len <= MAX_FLOATS fits u32) and `label` a writable u32, both valid during the
        // call. A call back into the trainer is refused (busy flag).
        let rc = unsafe {
            read(
                self.data.user,
                code(split),
                i,
                dst.as_mut_ptr(),
                len as u32,
                &mut label,
            )
        };
        if rc != 0 || label as usize >= self.classes {
            return Err(NF_E_DATA);
        }
        Ok(label as f32)
    }
}

impl<'a> Feed<ReferenceBackend<'a>> for CFeed<'_> {
    type Error = i32;

    fn len(&self, split: Split) -> usize {
        self.data.n[split_slot(split)]
    }

    fn load(
        &mut self,
        be: &mut ReferenceBackend<'a>,
        layout: &BlockLayout,
        split: Split,
        idx: &[u32],
    ) -> Result<(), i32> {
        let (per, labels) = (self.per, layout.labels.offset);
        let Some(c) = self.chain else {
            for (k, &i) in idx.iter().enumerate() {
                let lab = self.read(be.arena(), split, i, layout.input.offset + k * per, per)?;
                *be.arena().get_mut(labels + k).ok_or(NF_E_STEP)? = lab;
            }
            return Ok(());
        };
        if self.thaw_each {
            thaw(be, c, self.store)?;
        }
        let cb = c.batch.max(1);
        for (j, chunk) in idx.chunks(cb).enumerate() {
            for (k, &i) in chunk.iter().enumerate() {
                let lab = self.read(
                    be.arena(),
                    split,
                    i,
                    c.input.offset + k * self.raw,
                    self.raw,
                )?;
                *be.arena().get_mut(labels + j * cb + k).ok_or(NF_E_STEP)? = lab;
            }
            let m = chunk.len();
            step::infer(be, c, m).map_err(|_| NF_E_STEP)?;
            be.copy(
                c.output().prefix(m * per),
                layout.input.sub(j * cb * per, m * per),
            );
        }
        Ok(())
    }
}
