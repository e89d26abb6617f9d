//! ReLU and the residual addition (nf-core `ops::activation`): one launch each over the whole
//! buffer (`kernels/activation.cu`).
use nf_core::region::Region;

use super::{i64_of, Device, Engine, Res};
use crate::kernels::{Arg, Kernel};

impl<D: Device> Engine<D> {
    pub(super) fn relu_forward_impl(&mut self, x: Region) -> Res {
        self.launch(
            Kernel::ReluForward,
            x.len(),
            &[Arg::Buf(x), i64_of(x.len())],
        )
    }

    pub(super) fn relu_backward_impl(&mut self, y: Region, dy: Region) -> Res {
        let n = y.len().min(dy.len());
        self.launch(
            Kernel::ReluBackward,
            n,
            &[Arg::Buf(y.prefix(n)), Arg::Buf(dy.prefix(n)), i64_of(n)],
        )
    }

    pub(super) fn add_assign_impl(&mut self, y: Region, x: Region) -> Res {
        let n = y.len().min(x.len());
        self.launch(
            Kernel::AddAssign,
            n,
            &[Arg::Buf(y.prefix(n)), Arg::Buf(x.prefix(n)), i64_of(n)],
        )
    }
}
