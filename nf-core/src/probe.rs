//! Sizing a backend's kernel workspace by the calls a step makes: [`Probe`] runs a step (or a
//! forward-only chain) without computing anything and asks a function how much workspace each
//! convolution and linear call ([`KernelCall`]) needs; the planner then fixes each block's
//! workspace at the largest answer ([`crate::plan::BlockWorkspace::Fixed`]).
use crate::backend::Backend;
use crate::infer::InferLayout;
use crate::layout::BlockLayout;
use crate::ops::conv2d::ConvGeom;
use crate::ops::Nchw;
use crate::optim::Sgd;
use crate::region::Region;
use crate::step;

/// One kernel call, as far as its workspace depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelCall {
    /// [`Backend::conv_forward`].
    ConvForward(ConvGeom),
    /// [`Backend::conv_backward`], with the input
    /// gradient (`dx`) and the bias gradient (`db`) or without.
    ConvBackward {
        /// The convolution.
        g: ConvGeom,
        /// Whether the input gradient is computed.
        dx: bool,
        /// Whether the bias gradient is computed (needs no workspace).
        db: bool,
    },
    /// [`Backend::linear_forward`].
    LinearForward {
        /// Samples.
        n: usize,
        /// Input features.
        fin: usize,
        /// Output features.
        fout: usize,
    },
    /// [`Backend::linear_backward`], with the input
    /// gradient (`dx`) or without.
    LinearBackward {
        /// Samples.
        n: usize,
        /// Input features.
        fin: usize,
        /// Output features.
        fout: usize,
        /// Whether the input gradient is computed.
        dx: bool,
    },
}

/// A backend that computes nothing and keeps the largest workspace `need` asks for.
#[derive(Debug)]
pub struct Probe<F> {
    need: F,
    /// The largest need seen, in elements.
    pub max: usize,
}

impl<F: FnMut(&KernelCall) -> usize> Probe<F> {
    /// A probe asking `need`.
    pub fn new(need: F) -> Self {
        Probe { need, max: 0 }
    }
    fn ask(&mut self, k: KernelCall) {
        let n = (self.need)(&k);
        if n > self.max {
            self.max = n;
        }
    }
}

/// The largest workspace `need` asks for over every call of a block's steps (training,
/// evaluation, the units-only pass) at its full batch. Backends whose needs never shrink as the
/// batch grows are then covered for every smaller batch too.
///
/// A layout planned with bf16 storage ([`crate::layout::Precision::Bf16`]) is probed through
/// its f32 twin: the same calls on the same shapes (`need` says what a call on bf16 tensors
/// takes).
pub fn block_workspace(l: &BlockLayout, need: impl FnMut(&KernelCall) -> usize) -> usize {
    let f32_twin;
    let l = if l.kernels.precision == crate::layout::Precision::F32 {
        l
    } else {
        let k = crate::layout::Kernels {
            precision: crate::layout::Precision::F32,
            ..l.kernels
        };
        f32_twin = BlockLayout::with_kernels(
            &l.model,
            l.input_shape,
            l.classes,
            l.mode,
            l.first,
            l.last,
            &l.heads,
            l.batch,
            &k,
        );
        &f32_twin
    };
    let mut probe = Probe::new(need);
    let _ = step::train_step(&mut probe, l, l.batch, &Sgd::default(), 0.0, &mut []);
    let _ = step::eval_step(&mut probe, l, l.batch, &mut []);
    let _ = step::infer_step(&mut probe, l, l.batch);
    probe.max
}

/// The largest workspace `need` asks for over a pass of `chain` at its full batch.
pub fn chain_workspace(chain: &InferLayout, need: impl FnMut(&KernelCall) -> usize) -> usize {
    let mut probe = Probe::new(need);
    let _ = step::infer(&mut probe, chain, chain.batch);
    probe.max
}

impl<F: FnMut(&KernelCall) -> usize> Backend for Probe<F> {
    type Error = core::convert::Infallible;
    fn arena_len(&self) -> usize {
        usize::MAX
    }
    fn write(&mut self, _: Region, _: &[f32]) {}
    fn read(&mut self, _: Region, _: &mut [f32]) {}
    fn fill(&mut self, _: Region, _: f32) {}
    fn copy(&mut self, _: Region, _: Region) {}
    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn conv_forward(
        &mut self,
        g: &ConvGeom,
        _: Region,
        _: Region,
        _: Region,
        _: Region,
        _: Region,
    ) {
        self.ask(KernelCall::ConvForward(*g));
    }
    fn conv_backward(
        &mut self,
        g: &ConvGeom,
        _: Region,
        _: Region,
        _: Region,
        _: Region,
        db: Region,
        dx: Region,
        _: Region,
    ) {
        self.ask(KernelCall::ConvBackward {
            g: *g,
            dx: !dx.is_empty(),
            db: !db.is_empty(),
        });
    }
    fn bn_forward_train(
        &mut self,
        _: &Nchw,
        _: Region,
        _: Region,
        _: Region,
        _: Region,
        _: Region,
    ) {
    }
    fn bn_forward_eval(&mut self, _: &Nchw, _: Region, _: Region, _: Region, _: Region) {}
    fn bn_backward(&mut self, _: &Nchw, _: Region, _: Region, _: Region, _: Region, _: Region) {}
    fn relu_forward(&mut self, _: Region) {}
    fn relu_backward(&mut self, _: Region, _: Region) {}
    fn add_assign(&mut self, _: Region, _: Region) {}
    fn maxpool_forward(&mut self, _: &Nchw, _: Region, _: Region) {}
    fn maxpool_backward(&mut self, _: &Nchw, _: Region, _: Region, _: Region) {}
    fn avgpool_forward(&mut self, _: &Nchw, _: usize, _: Region, _: Region) {}
    fn avgpool_backward(&mut self, _: &Nchw, _: usize, _: Region, _: Region) {}
    fn linear_forward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        _: Region,
        _: Region,
        _: Region,
        _: Region,
    ) {
        self.ask(KernelCall::LinearForward { n, fin, fout });
    }
    fn linear_backward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        _: Region,
        _: Region,
        _: Region,
        _: Region,
        dx: Region,
        _: Region,
    ) {
        self.ask(KernelCall::LinearBackward {
            n,
            fin,
            fout,
            dx: !dx.is_empty(),
        });
    }
    fn softmax_xent(
        &mut self,
        _: usize,
        _: usize,
        _: Region,
        _: Region,
        _: Region,
        _: usize,
    ) -> (f32, u32) {
        (0.0, 0)
    }
    fn sgd(&mut self, _: &Sgd, _: f32, _: Region, _: Region, _: Region) {}
}
