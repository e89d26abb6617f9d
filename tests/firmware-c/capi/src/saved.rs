//! The trained model as flat bytes, so that a device can keep it in flash across resets:
//! [`Trainer::export`] writes it, [`Trainer::load`] makes a trainer set up by `nf_init` (same
//! model, options, budget and split sizes) a trained one that predicts identically. The bytes
//! describe themselves, so that a host can evaluate them without the firmware (`nf eval
//! --model FILE` reads them).
//!
//! Format version 3 (little-endian 32-bit words): magic `NFMD`, version 3, units, classes,
//! input size, blocks, store values, kept floats, exit (`-1`: none), the validation then the
//! test accuracy of each of the `NF_MAX_UNITS` units (bits of `f32`, `-1` where not
//! evaluated); the description: input channels, height, width, head pooling, the input
//! normalisation (`nf_model::in_mean`, `in_std`, bits of `f32`), the last block's segments (0:
//! one per unit, 1: one for the block, as in backpropagation), its first and last unit, the
//! head width of each of the `NF_MAX_UNITS` units, the number of ops of each unit, the number
//! of ops, then each op as six words (`nf_op`: kind, out, k, stride, pad, bias); then the
//! frozen-weight store in IEEE half precision, two values a word (the first in the low half;
//! a last odd value with 0 above it): every unit but the last, each op's parameters then its
//! BN statistics, then the heads of the units before the last block, likewise; then the last
//! block's kept weights (every segment's parameters, then its BN statistics), and an FNV-1a
//! checksum of every byte before it.
use nf_core::model::Op;
use nf_core::plan::Mode;
use nf_core::region::Region;

use crate::planned::spec;
use crate::train::{self, Trainer};
use crate::{
    check_opt_ptr, check_ptr, nf_trainer, NF_E_ARG, NF_E_FORMAT, NF_E_STATE, NF_MAX_UNITS, NF_OK,
};

const MAGIC: u32 = u32::from_le_bytes(*b"NFMD");
const VERSION: u32 = 3;
/// Words before the description: magic to exit, then the accuracies.
const RESULTS: usize = 9 + 2 * NF_MAX_UNITS;
/// Words of the description before its ops.
const DESCRIPTION: usize = 10 + 2 * NF_MAX_UNITS;

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv1a(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

const FNV_START: u32 = 0x811c_9dc5;

impl Trainer {
    /// The regions of the last block's kept weights (parameters and BN statistics of every
    /// segment), and their total length.
    fn kept(&self) -> ([Region; 2 * NF_MAX_UNITS], usize, usize) {
        let mut refs: [&[Op]; NF_MAX_UNITS] = [&[]; NF_MAX_UNITS];
        let model = self.model;
        let mut plan = self.plan;
        plan.model = spec(&model, &mut refs);
        let l = plan.layout(plan.n_blocks - 1);
        let mut r = [Region::NONE; 2 * NF_MAX_UNITS];
        let n = l.n_segments().min(NF_MAX_UNITS);
        for k in 0..n {
            r[2 * k] = l.seg_params[k];
            r[2 * k + 1] = l.seg_state[k];
        }
        let len = r.iter().map(|x| x.len()).sum();
        (r, 2 * n, len)
    }

    /// Words of the header (results and description).
    fn header_len(&self) -> usize {
        RESULTS + DESCRIPTION + 6 * self.model.c_ops().count()
    }

    /// Give the header words of this trainer's model file to `put`, in order.
    fn header(&self, kept: usize, mut put: impl FnMut(u32)) {
        let m = &self.model;
        for w in [
            MAGIC,
            VERSION,
            m.n_units() as u32,
            m.classes as u32,
            m.input.len() as u32,
            self.plan.n_blocks as u32,
            self.store as u32,
            kept as u32,
            self.exit(self.tolerance).map_or(u32::MAX, |e| e as u32),
        ] {
            put(w);
        }
        for a in [&self.val_acc, &self.test_acc] {
            for v in a {
                put(v.to_bits());
            }
        }
        let last = self.plan.blocks()[self.plan.n_blocks - 1];
        // Backpropagation trains its one block as one segment (nf-core's plan).
        let global = matches!(self.plan.mode, Mode::Bp);
        for w in [
            m.input.c as u32,
            m.input.h as u32,
            m.input.w as u32,
            m.head_pool as u32,
            m.norm[0].to_bits(),
            m.norm[1].to_bits(),
            u32::from(global),
            last.first as u32,
            last.last as u32,
        ] {
            put(w);
        }
        for u in 0..NF_MAX_UNITS {
            put(self.plan.heads[u] as u32);
        }
        for u in 0..NF_MAX_UNITS {
            put(m.unit_lens().get(u).map_or(0, |&n| u32::from(n)));
        }
        put(m.c_ops().count() as u32);
        for op in m.c_ops() {
            for w in op {
                put(w);
            }
        }
    }

    /// Bytes of the model file.
    pub(crate) fn export_len(&self) -> usize {
        let (_, _, kept) = self.kept();
        4 * (self.header_len() + self.store.div_ceil(2) + kept + 1)
    }

    /// Write the trained model into `out` (at least [`Trainer::export_len`] bytes); returns
    /// the bytes written. `NF_E_STATE` before every block is trained.
    pub(crate) fn export(&mut self, out: &mut [u8]) -> Result<usize, i32> {
        if self.failed || self.block < self.plan.n_blocks {
            return Err(NF_E_STATE);
        }
        let need = self.export_len();
        let out = out.get_mut(..need).ok_or(NF_E_ARG)?;
        let (regions, n, kept) = self.kept();
        let mut at = 0;
        self.header(kept, |w| {
            out[at..at + 4].copy_from_slice(&w.to_le_bytes());
            at += 4;
        });
        let (arena, store) = self.memory_views();
        let halves = store
            .chunks(2)
            .map(|p| u32::from(p[0]) | p.get(1).map_or(0, |&h| u32::from(h) << 16));
        let words = halves.chain(
            regions[..n]
                .iter()
                .flat_map(|r| arena[r.offset..r.end()].iter().map(|v| v.to_bits())),
        );
        for (w, dst) in words.zip(out[at..].chunks_exact_mut(4)) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        let h = fnv1a(FNV_START, &out[..need - 4]);
        out[need - 4..].copy_from_slice(&h.to_le_bytes());
        Ok(need)
    }

    /// Make this trainer (set up by `nf_init` for the same model, options, budget and split
    /// sizes) the trained one saved in `bytes`. `NF_E_FORMAT` when the bytes are not such a
    /// model file (magic, version, sizes, checksum); nothing is changed then.
    pub(crate) fn load(&mut self, bytes: &[u8]) -> Result<(), i32> {
        let need = self.export_len();
        if bytes.len() < need {
            return Err(NF_E_FORMAT);
        }
        let bytes = &bytes[..need];
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        };
        let (regions, n, kept) = self.kept();
        // Everything but the exit and the accuracies must match this trainer's model and plan.
        let mut i = 0;
        let mut same = true;
        self.header(kept, |w| {
            same &= (8..RESULTS).contains(&i) || word(i) == w;
            i += 1;
        });
        if !same || fnv1a(FNV_START, &bytes[..need - 4]) != word(need / 4 - 1) {
            return Err(NF_E_FORMAT);
        }
        let header = i;
        let mut acc = [[0f32; NF_MAX_UNITS]; 2];
        for (s, a) in acc.iter_mut().enumerate() {
            for (u, v) in a.iter_mut().enumerate() {
                *v = f32::from_bits(word(9 + s * NF_MAX_UNITS + u));
            }
        }
        let [val, test] = acc;
        let at = |i: usize| f32::from_bits(word(i));
        let (arena, store) = self.memory_views();
        for (i, v) in store.iter_mut().enumerate() {
            *v = (word(header + i / 2) >> (16 * (i % 2))) as u16;
        }
        let mut i = header + store.len().div_ceil(2);
        for r in &regions[..n] {
            for v in &mut arena[r.offset..r.end()] {
                *v = at(i);
                i += 1;
            }
        }
        self.val_acc = val;
        self.test_acc = test;
        self.block = self.plan.n_blocks;
        self.epoch = 0;
        self.failed = false;
        // The last block's layout, for predictions (their chain is laid out again).
        self.prepare();
        Ok(())
    }
}

/// Write the trained model (every block trained: `NF_E_STATE` before) into `buf` as flat bytes
/// (`len` bytes; any alignment) and its size into `written`. With a NULL `buf`, only the size
/// is given; a `len` too small gets `NF_E_ARG` (and the size). The bytes are versioned and
/// checksummed (see `tests/firmware-c/README.md`); [`nf_load_model`] reads them back.
///
/// # Safety
/// As [`crate::nf_train_epoch`]; `buf` is NULL or points to `len` writable bytes (not the
/// trainer's memory); `written` is NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn nf_export_model(
    trainer: *mut nf_trainer,
    buf: *mut u8,
    len: usize,
    written: *mut usize,
) -> i32 {
    if let Err(e) = check_opt_ptr(written) {
        return e;
    }
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| {
            let need = t.export_len();
            if !written.is_null() {
                // SAFETY: non-null and aligned (checked); writable (the caller).
                *written = need;
            }
            if buf.is_null() {
                return NF_OK;
            }
            if len < need {
                return NF_E_ARG;
            }
            // SAFETY: `buf` holds `len` writable bytes, none of the trainer's (the caller).
            match t.export(core::slice::from_raw_parts_mut(buf, len)) {
                Ok(_) => NF_OK,
                Err(e) => e,
            }
        })
    }
}

/// Make `trainer` (set up by `nf_init` with the same model, options, budget and split sizes as
/// the one saved) the trained model in `buf` (`len` bytes from [`nf_export_model`]): it then
/// predicts and reports results exactly as the saved one did. `NF_E_FORMAT` when the bytes do
/// not match (magic, version, this trainer's sizes, checksum): the trainer is then unchanged.
///
/// # Safety
/// As [`crate::nf_train_epoch`]; `buf` is NULL or points to `len` readable bytes (not the
/// trainer's memory).
#[no_mangle]
pub unsafe extern "C" fn nf_load_model(
    trainer: *mut nf_trainer,
    buf: *const u8,
    len: usize,
) -> i32 {
    if let Err(e) = check_ptr(buf) {
        return e;
    }
    // SAFETY: as this function's contract.
    unsafe {
        train::with(trainer, |t| {
            // SAFETY: `buf` holds `len` readable bytes, none of the trainer's (the caller).
            match t.load(core::slice::from_raw_parts(buf, len)) {
                Ok(()) => NF_OK,
                Err(e) => e,
            }
        })
    }
}
