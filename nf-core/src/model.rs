//! Model description: shapes, layer ops, units and the auxiliary-head template.
//!
//! A model is a chain of *units* (each a short list of [`Op`]s) followed by the model's own
//! classifier. Every function here is `const`, so a firmware build can size its arena from a
//! fixed model at compile time.

/// Shape of one sample's activation: channels x height x width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// A shape of `c` channels of `h` x `w`.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Shape { c, h, w }
    }
    /// Elements per sample.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// True when the shape holds no element.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// 2-D convolution with `out` filters of `k` x `k`.
    Conv {
        /// Output channels.
        out: usize,
        /// Kernel size (square).
        k: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on every side.
        pad: usize,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// Batch normalisation over channels (affine, running statistics).
    BatchNorm,
    /// Rectified linear unit.
    Relu,
    /// 2x2 max-pool with stride 2 (odd sizes are floored).
    MaxPool2,
    /// Adaptive average pool to `s` x `s` (PyTorch bins); `s = 1` is global average pooling.
    AvgPool(usize),
    /// Flatten to `c*h*w` x 1 x 1 (no data movement).
    Flatten,
    /// Fully connected layer with `out` outputs and a bias.
    Linear(usize),
    /// ResNet basic block: conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut
    /// (identity, or conv1x1(stride) -> BN when the shape changes), then ReLU.
    BasicBlock {
        /// Output channels.
        out: usize,
        /// Stride of the first convolution and of the shortcut.
        stride: usize,
    },
}

/// A conv3x3 with padding 1 and no bias (the building block of the zoo).
pub const fn conv3(out: usize) -> Op {
    Op::Conv {
        out,
        k: 3,
        stride: 1,
        pad: 1,
        bias: false,
    }
}

impl Op {
    /// Output shape for input shape `s`.
    pub const fn out_shape(&self, s: Shape) -> Shape {
        match *self {
            Op::Conv {
                out,
                k,
                stride,
                pad,
                ..
            } => Shape::new(
                out,
                (s.h + 2 * pad - k) / stride + 1,
                (s.w + 2 * pad - k) / stride + 1,
            ),
            Op::BatchNorm | Op::Relu => s,
            Op::MaxPool2 => Shape::new(s.c, s.h / 2, s.w / 2),
            Op::AvgPool(p) => Shape::new(s.c, p, p),
            Op::Flatten => Shape::new(s.len(), 1, 1),
            Op::Linear(out) => Shape::new(out, 1, 1),
            Op::BasicBlock { out, stride } => {
                Shape::new(out, (s.h - 1) / stride + 1, (s.w - 1) / stride + 1)
            }
        }
    }

    /// Whether a basic block needs a projection shortcut for input shape `s`.
    pub const fn has_projection(&self, s: Shape) -> bool {
        match *self {
            Op::BasicBlock { out, stride } => stride != 1 || out != s.c,
            _ => false,
        }
    }

    /// Number of trainable parameters for input shape `s` (running statistics excluded).
    pub const fn params(&self, s: Shape) -> usize {
        match *self {
            Op::Conv { out, k, bias, .. } => out * s.c * k * k + if bias { out } else { 0 },
            Op::BatchNorm => 2 * s.c,
            Op::Linear(out) => out * s.len() + out,
            Op::BasicBlock { out, .. } => {
                let main = out * s.c * 9 + 2 * out + out * out * 9 + 2 * out;
                if self.has_projection(s) {
                    main + out * s.c + 2 * out
                } else {
                    main
                }
            }
            Op::Relu | Op::MaxPool2 | Op::AvgPool(_) | Op::Flatten => 0,
        }
    }

    /// Whether the op is valid for input shape `s` (sizes non-zero, kernel fits).
    pub const fn accepts(&self, s: Shape) -> bool {
        if s.c == 0 || s.h == 0 || s.w == 0 {
            return false;
        }
        match *self {
            Op::Conv {
                out,
                k,
                stride,
                pad,
                ..
            } => out > 0 && k > 0 && stride > 0 && s.h + 2 * pad >= k && s.w + 2 * pad >= k,
            Op::MaxPool2 => s.h >= 2 && s.w >= 2,
            Op::AvgPool(p) => p > 0 && p <= s.h && p <= s.w,
            Op::Linear(out) => out > 0,
            Op::BasicBlock { out, stride } => out > 0 && stride > 0,
            Op::BatchNorm | Op::Relu | Op::Flatten => true,
        }
    }
}

/// Output shape of a chain of ops.
pub const fn chain_shape(ops: &[Op], mut s: Shape) -> Shape {
    let mut i = 0;
    while i < ops.len() {
        s = ops[i].out_shape(s);
        i += 1;
    }
    s
}

/// Trainable parameters of a chain of ops.
pub const fn chain_params(ops: &[Op], mut s: Shape) -> usize {
    let mut i = 0;
    let mut n = 0;
    while i < ops.len() {
        n += ops[i].params(s);
        s = ops[i].out_shape(s);
        i += 1;
    }
    n
}

/// Whether every op of the chain accepts its input shape.
pub const fn chain_valid(ops: &[Op], mut s: Shape) -> bool {
    let mut i = 0;
    while i < ops.len() {
        if !ops[i].accepts(s) {
            return false;
        }
        s = ops[i].out_shape(s);
        i += 1;
    }
    true
}

/// Ops of an auxiliary head with `f` filters: conv3x3(c -> f) -> BN -> ReLU -> adaptive
/// average pool to 2x2 -> flatten -> linear(4f -> classes).
pub const fn head_ops(f: usize, classes: usize) -> [Op; 6] {
    [
        conv3(f),
        Op::BatchNorm,
        Op::Relu,
        Op::AvgPool(2),
        Op::Flatten,
        Op::Linear(classes),
    ]
}

/// Most ops of an auxiliary head ([`ModelSpec::head`]).
pub const MAX_HEAD_OPS: usize = 7;

/// Most units a model may have (8 with the `small` feature).
#[cfg(not(feature = "small"))]
pub const MAX_UNITS: usize = 24;
/// Most units a model may have (24 without the `small` feature).
#[cfg(feature = "small")]
pub const MAX_UNITS: usize = 8;

/// A CNN as NeuroFlux sees it: units, then the model's own classifier. It borrows its units
/// for `'a` (`'static` for the zoo's constants; shorter for ops built at run time, as through
/// the C ABI).
#[derive(Clone, Copy, Debug)]
pub struct ModelSpec<'a> {
    /// Name used on the command line.
    pub name: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// The input shape the model was designed for.
    pub input: Shape,
    /// The units, in order. Each unit is trained on its own loss.
    pub units: &'a [&'a [Op]],
    /// Auxiliary heads first average-pool a unit output larger than `head_pool` x `head_pool`
    /// down to that grid (decoupled-greedy-learning style: the head's convolution then costs
    /// little at any resolution); 0 never pools.
    pub head_pool: usize,
}

/// The model's own classifier: global average pool -> flatten -> linear(classes).
pub const fn classifier_ops(classes: usize) -> [Op; 3] {
    [Op::AvgPool(1), Op::Flatten, Op::Linear(classes)]
}

impl ModelSpec<'_> {
    /// Number of units.
    pub const fn n_units(&self) -> usize {
        self.units.len()
    }

    /// Input shape of unit `u` for model input `input`.
    pub const fn unit_input(&self, input: Shape, u: usize) -> Shape {
        let mut s = input;
        let mut i = 0;
        while i < u {
            s = chain_shape(self.units[i], s);
            i += 1;
        }
        s
    }

    /// Whether the model accepts `input`: every op of every unit, its heads' convolutions
    /// (which need at least 2x2 outputs to pool to 2x2) and its classifier.
    pub const fn accepts(&self, input: Shape, classes: usize) -> bool {
        if classes < 2 || self.units.is_empty() || self.units.len() > MAX_UNITS {
            return false;
        }
        let mut s = input;
        let mut u = 0;
        while u < self.units.len() {
            if !chain_valid(self.units[u], s) {
                return false;
            }
            s = chain_shape(self.units[u], s);
            if u + 1 < self.units.len() && !chain_valid(&head_ops(4, classes), s) {
                return false;
            }
            u += 1;
        }
        chain_valid(&classifier_ops(classes), s)
    }

    /// The auxiliary head of `f` filters on a unit output of shape `s`: [`head_ops`], after an
    /// adaptive average pool to `head_pool` x `head_pool` when `s` is larger than that. Returns
    /// the ops and their count.
    pub const fn head(&self, f: usize, classes: usize, s: Shape) -> ([Op; MAX_HEAD_OPS], usize) {
        let mut ops = [Op::Relu; MAX_HEAD_OPS];
        let mut n = 0;
        let p = self.head_pool;
        if p > 0 && (s.h > p || s.w > p) {
            ops[0] = Op::AvgPool(p);
            n = 1;
        }
        let tail = head_ops(f, classes);
        let mut i = 0;
        while i < tail.len() {
            ops[n] = tail[i];
            n += 1;
            i += 1;
        }
        (ops, n)
    }

    /// Trainable parameters of head `f` on unit `u`'s output (model input `input`).
    pub const fn head_params(&self, input: Shape, u: usize, f: usize, classes: usize) -> usize {
        let s = self.unit_input(input, u + 1);
        let (ops, n) = self.head(f, classes, s);
        let mut i = 0;
        let mut total = 0;
        let mut sh = s;
        while i < n {
            total += ops[i].params(sh);
            sh = ops[i].out_shape(sh);
            i += 1;
        }
        total
    }

    /// Trainable parameters of units `0..=last` (without any head).
    pub const fn trunk_params(&self, input: Shape, last: usize) -> usize {
        let mut s = input;
        let mut n = 0;
        let mut u = 0;
        while u <= last && u < self.units.len() {
            n += chain_params(self.units[u], s);
            s = chain_shape(self.units[u], s);
            u += 1;
        }
        n
    }

    /// Trainable parameters of the whole model: all units and the classifier.
    pub const fn full_params(&self, input: Shape, classes: usize) -> usize {
        let last = self.units.len() - 1;
        let s = self.unit_input(input, self.units.len());
        self.trunk_params(input, last) + chain_params(&classifier_ops(classes), s)
    }
}
