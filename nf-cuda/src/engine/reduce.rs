//! Per-channel reductions (batch-norm statistics, bias gradients): partial sums per channel in
//! the device workspace, then one thread per channel adds them in order (`kernels/reduce.cu`),
//! so results are deterministic and need no atomics.
use nf_core::region::Region;

use super::{i32_of, Device, Engine, Res, REDUCE_FLOATS};
use crate::error::{failed, CudaError};
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
    /// Partial sums per channel that fit `arrays` arrays of them in the reduction workspace
    /// after `reserved` elements, for `c` channels of `m` elements.
    pub(super) fn parts(
        &self,
        c: usize,
        m: usize,
        arrays: usize,
        reserved: usize,
    ) -> Result<usize, CudaError> {
        let cap = (self.red.len() - reserved) / (arrays * c.max(1));
        if cap == 0 {
            return Err(failed(format!(
                "{c} channels do not fit the reduction workspace ({REDUCE_FLOATS} elements)"
            )));
        }
        Ok(cap.min(self.max_parts).min(m).max(1))
    }

    /// `out[ch] = Σ x[ch]` over an NCHW tensor at `x` (`n·c·hw` elements).
    pub(super) fn channel_sum(
        &mut self,
        x: Region,
        n: usize,
        c: usize,
        hw: usize,
        out: Region,
    ) -> Res {
        let m = n * hw;
        if m == 0 {
            return self.fill_at(out.prefix(c), 0.0);
        }
        let parts = self.parts(c, m, 1, 0)?;
        let part = self.red.prefix(c * parts);
        let (ni, ci, hwi, pi) = (
            i32_of(n, "batch")?,
            i32_of(c, "channels")?,
            i32_of(hw, "plane")?,
            i32_of(parts, "parts")?,
        );
        self.launch(
            Kernel::ChanPartial,
            c * parts,
            &[
                Arg::Buf(x.prefix(n * c * hw)),
                Arg::Buf(Region::NONE),
                Arg::Buf(part),
                Arg::I32(ni),
                Arg::I32(ci),
                Arg::I32(hwi),
                Arg::I32(pi),
            ],
        )?;
        self.launch(
            Kernel::ChanFinish,
            c,
            &[
                Arg::Buf(part),
                Arg::Buf(out.prefix(c)),
                Arg::I32(ci),
                Arg::I32(pi),
                Arg::I64(1),
            ],
        )
    }
}
