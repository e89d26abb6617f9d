//! The model zoo: specs with their NeuroFlux units marked.
//!
//! A VGG conv unit is conv3x3 -> BN -> ReLU, followed by a 2x2 max-pool when its stage ends; a
//! ResNet unit is the stem or one basic block. Every model ends in global average pooling and a
//! linear classifier (added by the trainer for the requested number of classes).
use crate::model::{conv3, ModelSpec, Op, Shape};

const fn cu(out: usize) -> [Op; 3] {
    [conv3(out), Op::BatchNorm, Op::Relu]
}
const fn cup(out: usize) -> [Op; 4] {
    [conv3(out), Op::BatchNorm, Op::Relu, Op::MaxPool2]
}

const C32P: [Op; 4] = cup(32);
const C64: [Op; 3] = cu(64);
const C64P: [Op; 4] = cup(64);
const C128: [Op; 3] = cu(128);
const C128P: [Op; 4] = cup(128);
const C256: [Op; 3] = cu(256);
const C256P: [Op; 4] = cup(256);
const C512: [Op; 3] = cu(512);
const C512P: [Op; 4] = cup(512);

/// Small VGG for 28x28x1 (MNIST, Fashion-MNIST): 32, M, 64, M, 128, 128, M.
pub const VGG_SMALL: ModelSpec = ModelSpec {
    name: "vgg-small",
    about: "small VGG for 28x28x1 (conv 32, M, 64, M, 128, 128, M); 4 units",
    input: Shape::new(1, 28, 28),
    units: &[&C32P, &C64P, &C128, &C128P],
    head_pool: 0,
};

/// VGG-11 for 32x32x3 (CIFAR): 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M.
pub const VGG11: ModelSpec = ModelSpec {
    name: "vgg11",
    about: "VGG-11 for 32x32x3; 8 units",
    input: Shape::new(3, 32, 32),
    units: &[&C64P, &C128P, &C256, &C256P, &C512, &C512P, &C512, &C512P],
    head_pool: 0,
};

/// VGG-16 for 32x32x3.
pub const VGG16: ModelSpec = ModelSpec {
    name: "vgg16",
    about: "VGG-16 for 32x32x3; 13 units",
    input: Shape::new(3, 32, 32),
    units: &[
        &C64, &C64P, &C128, &C128P, &C256, &C256, &C256P, &C512, &C512, &C512P, &C512, &C512,
        &C512P,
    ],
    head_pool: 0,
};

/// VGG-19 for 32x32x3.
pub const VGG19: ModelSpec = ModelSpec {
    name: "vgg19",
    about: "VGG-19 for 32x32x3; 16 units",
    input: Shape::new(3, 32, 32),
    units: &[
        &C64, &C64P, &C128, &C128P, &C256, &C256, &C256, &C256P, &C512, &C512, &C512, &C512P,
        &C512, &C512, &C512, &C512P,
    ],
    head_pool: 0,
};

const fn bb(out: usize, stride: usize) -> [Op; 1] {
    [Op::BasicBlock { out, stride }]
}
const B64: [Op; 1] = bb(64, 1);
const B128S: [Op; 1] = bb(128, 2);
const B128: [Op; 1] = bb(128, 1);
const B256S: [Op; 1] = bb(256, 2);
const B256: [Op; 1] = bb(256, 1);
const B512S: [Op; 1] = bb(512, 2);
const B512: [Op; 1] = bb(512, 1);

/// ResNet-18 for 32x32x3 (CIFAR variant: 3x3 stem, no stem pooling).
pub const RESNET18: ModelSpec = ModelSpec {
    name: "resnet18",
    about: "ResNet-18 for 32x32x3 (3x3 stem + 8 basic blocks); 9 units",
    input: Shape::new(3, 32, 32),
    units: &[
        &C64, &B64, &B64, &B128S, &B128, &B256S, &B256, &B512S, &B512,
    ],
    head_pool: 0,
};

/// Every zoo model, in the order `--help` lists them.
pub const ALL: [&ModelSpec; 5] = [&VGG_SMALL, &VGG11, &VGG16, &VGG19, &RESNET18];

/// The zoo model called `name`, if any.
pub fn by_name(name: &str) -> Option<&'static ModelSpec<'static>> {
    ALL.iter().copied().find(|m| m.name == name)
}
