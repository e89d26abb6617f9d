//! Softmax cross-entropy with deferred scores: each call writes its rows' losses and correct
//! flags to the reduction workspace and adds them to a device accumulator (one per slot,
//! `kernels/loss.cu`), so a training step never waits for the host to read a loss. The host
//! reads the accumulators once per epoch or progress update ([`Backend::take_scores`]).
//!
//! [`Backend::take_scores`]: nf_core::backend::Backend::take_scores
use nf_core::backend::SCORE_SLOTS;
use nf_core::region::Region;

use super::{i32_of, need, Device, Engine, Res, SCORE_FLOATS};
use crate::error::failed;
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
    pub(super) fn softmax_xent_impl(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
        slot: usize,
    ) -> Res {
        if slot >= SCORE_SLOTS {
            return Err(failed(format!(
                "score slot {slot} (there are {SCORE_SLOTS})"
            )));
        }
        if classes == 0 || n == 0 {
            return Ok(());
        }
        need(logits, n * classes, "logits")?;
        need(labels, n, "labels")?;
        if !dlogits.is_empty() {
            need(dlogits, n * classes, "logit gradient")?;
        }
        let ci = i32_of(classes, "classes")?;
        let inv_n = 1.0 / n as f32;
        let acc = self.scores.sub(4 * slot, 4);
        let chunk = self.red.len() / 2;
        let mut r0 = 0;
        while r0 < n {
            let rows = chunk.min(n - r0);
            let out = self.red.prefix(2 * rows);
            let dl = if dlogits.is_empty() {
                Region::NONE
            } else {
                dlogits.sub(r0 * classes, rows * classes)
            };
            let ri = Arg::I32(i32_of(rows, "rows")?);
            self.launch(
                Kernel::SoftmaxXent,
                rows,
                &[
                    Arg::Buf(logits.sub(r0 * classes, rows * classes)),
                    Arg::Buf(labels.sub(r0, rows)),
                    Arg::Buf(dl),
                    Arg::Buf(out),
                    ri,
                    Arg::I32(ci),
                    Arg::F32(inv_n),
                ],
            )?;
            self.launch(Kernel::ScoreAdd, 1, &[Arg::Buf(out), Arg::Buf(acc), ri])?;
            r0 += rows;
        }
        Ok(())
    }

    /// Read every accumulator (one wait), add slot `k` to `out[k]`, and clear them all.
    pub(super) fn take_scores_impl(&mut self, out: &mut [(f32, u32)]) -> Res {
        let mut acc = [0f32; SCORE_FLOATS];
        self.dev.download(self.scores.offset, &mut acc)?;
        for (o, a) in out.iter_mut().zip(acc.chunks_exact(4)) {
            let loss = f64::from(a[0]) + f64::from(a[1]);
            let correct = f64::from(a[2]) + f64::from(a[3]);
            o.0 += loss as f32;
            o.1 += correct.round() as u32;
        }
        let scores = self.scores;
        self.fill_at(scores, 0.0)
    }
}
