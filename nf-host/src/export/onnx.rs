//! The ONNX graph of an nf model: the input normalisation, units `0..=exit`, then the exit
//! unit's auxiliary head or (when the exit is the last unit) the model's classifier.
//!
//! The graph is built by walking the model's [`Op`]s, whatever model they describe:
//!
//! | nf op | ONNX (opset 13) |
//! | --- | --- |
//! | `Conv` | `Conv` (kernel_shape, strides, pads; bias when the layer has one) |
//! | `BatchNorm` | `BatchNormalization` (inference form, epsilon 1e-5; not folded) |
//! | `Relu` | `Relu` |
//! | `MaxPool2` | `MaxPool` 2x2 stride 2 (floors odd sizes, as nf does) |
//! | `AvgPool(1)` | `GlobalAveragePool` |
//! | `AvgPool(s)` | `AveragePool` when PyTorch's adaptive bins are one size, evenly spaced |
//! | `Flatten` | `Flatten` (axis 1) |
//! | `Linear` | `Gemm` (transB = 1) |
//! | `BasicBlock` | `Conv`, `BatchNormalization`, `Relu`, `Conv`, `BatchNormalization`, the shortcut (`Conv` 1x1 + `BatchNormalization` or identity), `Add`, `Relu` |
//!
//! Batch norm stays a node (rather than being folded into the convolution) so that the file
//! computes what nf computes, in the same order, and every initializer keeps the name of its
//! tensor in the model file (`units.0.0.weight`, `heads.2.1.running_var`, ...).
//!
//! The graph's input `image` is the image as stored (`[N, C, H, W]`, before `nf train --pad`),
//! `float32` pixels / 255 in [0, 1]; the graph pads it with zeros (black) by `pad` on every side
//! and normalises it per channel with the model's `(x - mean) / std`, as `nf eval` does. Its
//! output `logits` is `[N, classes]`. `N` is symbolic.
use std::collections::BTreeSet;

use nf_core::model::{classifier_ops, Op, Shape};
use nf_core::ops::batchnorm::EPS;
use serde_json::json;

use super::graph::{batch_value_info, float, int, ints, string, Graph, Value};
use super::proto::{
    GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, IR_VERSION,
};
use crate::model_meta::ModelMeta;
use crate::store::TensorStore;

/// The ONNX operator set the graph uses.
pub const OPSET: i64 = 13;
/// Name of the graph's input.
pub const INPUT: &str = "image";
/// Name of the graph's output.
pub const OUTPUT: &str = "logits";

/// The start of PyTorch's adaptive pooling bin `i` of `s` over `len`, and its size
/// (`floor(i*len/s) .. ceil((i+1)*len/s)`, as `nf_core::ops::pool`).
fn bin(i: usize, len: usize, s: usize) -> (usize, usize) {
    let (a, b) = (i * len / s, ((i + 1) * len).div_ceil(s));
    (a, b - a)
}

/// Kernel and stride of an `AveragePool` equal to adaptive pooling of `len` to `s` bins, when
/// the bins have one size and are evenly spaced.
pub fn even_bins(len: usize, s: usize) -> Option<(usize, usize)> {
    if s == 0 || s > len {
        return None;
    }
    let (_, k) = bin(0, len, s);
    let stride = if s > 1 { bin(1, len, s).0 } else { 1 };
    (0..s)
        .all(|i| bin(i, len, s) == (i * stride, k))
        .then_some((k, stride))
}

impl Graph<'_> {
    /// Convolution `at` of `x` with `out` filters of `k` x `k` (weight `{at}.weight`, and
    /// `{at}.bias` when `bias`).
    fn conv(
        &mut self,
        at: &str,
        out_name: &str,
        x: &Value,
        (out, k, stride, pad): (usize, usize, usize, usize),
        bias: bool,
    ) -> Result<Value, String> {
        let mut inputs = vec![x.name.clone()];
        inputs.push(self.weight(&format!("{at}.weight"), &[out, x.shape.c, k, k])?);
        if bias {
            inputs.push(self.weight(&format!("{at}.bias"), &[out])?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(
            "Conv",
            out_name,
            &refs,
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[stride, stride]),
                ints("pads", &[pad, pad, pad, pad]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
        );
        let conv = Op::Conv {
            out,
            k,
            stride,
            pad,
            bias,
        };
        Ok(Value {
            name: out_name.into(),
            shape: conv.out_shape(x.shape),
            flat: false,
        })
    }

    /// Batch norm `at` of `x` in inference form (`{at}.weight`, `.bias`, `.running_mean`,
    /// `.running_var`).
    fn batchnorm(&mut self, at: &str, out_name: &str, x: &Value) -> Result<Value, String> {
        let c = [x.shape.c];
        let inputs = [
            x.name.clone(),
            self.weight(&format!("{at}.weight"), &c)?,
            self.weight(&format!("{at}.bias"), &c)?,
            self.weight(&format!("{at}.running_mean"), &c)?,
            self.weight(&format!("{at}.running_var"), &c)?,
        ];
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(
            "BatchNormalization",
            out_name,
            &refs,
            vec![float("epsilon", EPS)],
        );
        Ok(Value {
            name: out_name.into(),
            ..x.clone()
        })
    }

    fn relu(&mut self, out_name: &str, x: &Value) -> Value {
        self.node("Relu", out_name, &[&x.name], vec![]);
        Value {
            name: out_name.into(),
            ..x.clone()
        }
    }

    /// Op `i` of a part (`at` = `{part}.{i}`, its tensors' prefix and its output's name).
    fn op(&mut self, op: Op, at: &str, x: Value) -> Result<Value, String> {
        match op {
            Op::Conv {
                out,
                k,
                stride,
                pad,
                bias,
            } => {
                let x = self.spatial(x, at);
                self.conv(at, at, &x, (out, k, stride, pad), bias)
            }
            Op::BatchNorm => self.batchnorm(at, at, &x),
            Op::Relu => Ok(self.relu(at, &x)),
            Op::MaxPool2 => Ok(self.max_pool(op, at, x)),
            Op::AvgPool(s) => self.avg_pool(op, s, at, x),
            Op::Flatten => {
                self.node("Flatten", at, &[&x.name], vec![int("axis", 1)]);
                Ok(Value {
                    name: at.into(),
                    shape: op.out_shape(x.shape),
                    flat: true,
                })
            }
            Op::Linear(out) => self.linear(out, at, x),
            Op::BasicBlock { out, stride } => self.basic_block(op, (out, stride), at, x),
        }
    }

    /// 2x2 max pooling `op` (at `at`) of `x`.
    fn max_pool(&mut self, op: Op, at: &str, x: Value) -> Value {
        let x = self.spatial(x, at);
        self.node(
            "MaxPool",
            at,
            &[&x.name],
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        );
        Value {
            name: at.into(),
            shape: op.out_shape(x.shape),
            flat: false,
        }
    }

    /// Adaptive average pooling `op` of `x` to `s` x `s`: `GlobalAveragePool` for 1, else an
    /// `AveragePool` when the bins have one size and are evenly spaced (an error otherwise).
    fn avg_pool(&mut self, op: Op, s: usize, at: &str, x: Value) -> Result<Value, String> {
        let x = self.spatial(x, at);
        if s == 1 {
            self.node("GlobalAveragePool", at, &[&x.name], vec![]);
        } else {
            let (h, w) = (x.shape.h, x.shape.w);
            let (Some((kh, sh)), Some((kw, sw))) = (even_bins(h, s), even_bins(w, s)) else {
                return Err(format!(
                    "{at} (adaptive average pool of {h}x{w} to {s}x{s}) has bins of \
                     different sizes or spacing, which ONNX AveragePool cannot express"
                ));
            };
            self.node(
                "AveragePool",
                at,
                &[&x.name],
                vec![ints("kernel_shape", &[kh, kw]), ints("strides", &[sh, sw])],
            );
        }
        Ok(Value {
            name: at.into(),
            shape: op.out_shape(x.shape),
            flat: false,
        })
    }

    /// The linear layer `at` to `out` features (`{at}.weight`, `{at}.bias`) as a `Gemm`,
    /// flattening `x` first when it is a map.
    fn linear(&mut self, out: usize, at: &str, x: Value) -> Result<Value, String> {
        let x = if x.flat {
            x
        } else {
            let name = format!("{at}.flatten");
            self.node("Flatten", &name, &[&x.name], vec![int("axis", 1)]);
            Value {
                name,
                shape: Shape::new(x.shape.len(), 1, 1),
                flat: true,
            }
        };
        let w = self.weight(&format!("{at}.weight"), &[out, x.shape.len()])?;
        let b = self.weight(&format!("{at}.bias"), &[out])?;
        self.node(
            "Gemm",
            at,
            &[&x.name, &w, &b],
            vec![
                float("alpha", 1.0),
                float("beta", 1.0),
                int("transA", 0),
                int("transB", 1),
            ],
        );
        Ok(Value {
            name: at.into(),
            shape: Shape::new(out, 1, 1),
            flat: true,
        })
    }

    /// The residual block `op` (`out` channels, `stride`) at `at`: two 3x3 convolutions with
    /// batch norm, the shortcut (a 1x1 projection with batch norm, or `x` itself), the sum and
    /// its ReLU.
    fn basic_block(
        &mut self,
        op: Op,
        (out, stride): (usize, usize),
        at: &str,
        x: Value,
    ) -> Result<Value, String> {
        let x = self.spatial(x, at);
        let c1 = self.conv(
            &format!("{at}.conv1"),
            &format!("{at}.conv1"),
            &x,
            (out, 3, stride, 1),
            false,
        )?;
        let b1 = self.batchnorm(&format!("{at}.bn1"), &format!("{at}.bn1"), &c1)?;
        let r1 = self.relu(&format!("{at}.relu1"), &b1);
        let c2 = self.conv(
            &format!("{at}.conv2"),
            &format!("{at}.conv2"),
            &r1,
            (out, 3, 1, 1),
            false,
        )?;
        let b2 = self.batchnorm(&format!("{at}.bn2"), &format!("{at}.bn2"), &c2)?;
        let short = if op.has_projection(x.shape) {
            let sc = format!("{at}.shortcut");
            let p = self.conv(
                &format!("{sc}.0"),
                &format!("{sc}.0"),
                &x,
                (out, 1, stride, 0),
                false,
            )?;
            self.batchnorm(&format!("{sc}.1"), &format!("{sc}.1"), &p)?
        } else {
            x.clone()
        };
        let sum = format!("{at}.add");
        self.node("Add", &sum, &[&b2.name, &short.name], vec![]);
        self.node("Relu", at, &[&sum], vec![]);
        Ok(Value {
            name: at.into(),
            shape: op.out_shape(x.shape),
            flat: false,
        })
    }

    /// The ops of part `prefix` (`units.3`, `heads.2`, `classifier`) applied to `x`.
    fn part(&mut self, prefix: &str, ops: &[Op], mut x: Value) -> Result<Value, String> {
        for (i, &op) in ops.iter().enumerate() {
            x = self.op(op, &format!("{prefix}.{i}"), x)?;
        }
        Ok(x)
    }

    /// The input: zero padding by `pad`, then `(x - mean) / std` per channel.
    fn normalise(&mut self, meta: &ModelMeta) -> Value {
        let c = meta.input.c;
        let mut x = INPUT.to_string();
        if meta.pad > 0 {
            let p = meta.pad as i64;
            let pads = self.constant_i64("input.pads", &[0, 0, p, p, 0, 0, p, p]);
            self.node(
                "Pad",
                "input.padded",
                &[&x, &pads],
                vec![string("mode", "constant")],
            );
            x = "input.padded".into();
        }
        let mean = self.constant("input.mean", &[1, c, 1, 1], &meta.mean);
        let std = self.constant("input.std", &[1, c, 1, 1], &meta.std);
        self.node("Sub", "input.centred", &[&x, &mean], vec![]);
        self.node("Div", "input.normalised", &["input.centred", &std], vec![]);
        Value {
            name: "input.normalised".into(),
            shape: meta.input,
            flat: false,
        }
    }
}

/// The exported graph and how many trainable parameters it holds.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The ONNX model.
    pub model: ModelProto,
    /// Trainable parameters in its initializers (BN running statistics and the normalisation
    /// constants excluded), as `nf eval` counts them.
    pub params: usize,
}

/// The ONNX model of the model file `store` described by `meta`. Errors (one line, without the
/// file's name): a tensor missing or of the wrong shape, a pooling ONNX cannot express.
pub fn build(meta: &ModelMeta, store: &TensorStore) -> Result<Exported, String> {
    let mut g = Graph {
        store,
        nodes: Vec::new(),
        inits: Vec::new(),
        named: BTreeSet::new(),
        params: 0,
    };
    let model = &meta.model;
    let mut x = g.normalise(meta);
    for u in 0..=meta.exit {
        x = g.part(&format!("units.{u}"), model.units[u], x)?;
    }
    let last = meta.exit + 1 == model.units.len();
    let (ending, y) = if last {
        let y = g.part("classifier", &classifier_ops(meta.classes), x)?;
        ("the classifier".to_string(), y)
    } else {
        let (ops, n) = model.head(meta.heads[meta.exit], meta.classes, x.shape);
        let y = g.part(&format!("heads.{}", meta.exit), &ops[..n], x)?;
        (format!("the auxiliary head of unit {}", meta.exit), y)
    };
    if !y.flat || y.shape != Shape::new(meta.classes, 1, 1) {
        return Err(format!(
            "the model ends in {}x{}x{} values, not {} logits",
            y.shape.c, y.shape.h, y.shape.w, meta.classes
        ));
    }
    // The last node writes the graph's output.
    let end = g.nodes.last_mut().expect("a model has nodes");
    end.output[0] = OUTPUT.into();
    end.name = OUTPUT.into();
    let (c, h, w) = (meta.input.c, meta.input.h, meta.input.w);
    let stored = [c, h - 2 * meta.pad, w - 2 * meta.pad];
    let doc = format!(
        "NeuroFlux {}: units 0..={} then {}. Input `{INPUT}`: float32 [N, {}, {}, {}], pixel / \
         255 in [0, 1] (the stored image, before padding); the graph pads it by {} and \
         normalises it with (x - mean) / std. Output `{OUTPUT}`: [N, {}].",
        model.name, meta.exit, ending, stored[0], stored[1], stored[2], meta.pad, meta.classes
    );
    let mut props = vec![
        (
            "input",
            format!(
                "{INPUT}: float32 [N, {c}, {}, {}] in [0, 1] (pixel / 255)",
                stored[1], stored[2]
            ),
        ),
        (
            "normalisation",
            "folded into the graph: zero padding by `pad`, then (x - mean) / std per channel"
                .into(),
        ),
        ("mean", json!(meta.mean).to_string()),
        ("std", json!(meta.std).to_string()),
        ("pad", meta.pad.to_string()),
        ("classes", meta.classes.to_string()),
        ("exit_unit", meta.exit.to_string()),
        (
            "ends_with",
            if last {
                "classifier".into()
            } else {
                format!("heads.{}", meta.exit)
            },
        ),
        ("output", format!("{OUTPUT}: float32 [N, {}]", meta.classes)),
    ]
    .into_iter()
    .map(|(k, v)| StringStringEntryProto {
        key: k.into(),
        value: v,
    })
    .collect::<Vec<_>>();
    // The model file's own metadata, under `nf.`.
    props.extend(store.metadata.iter().map(|(k, v)| StringStringEntryProto {
        key: format!("nf.{k}"),
        value: v.clone(),
    }));
    let graph = GraphProto {
        node: g.nodes,
        name: format!("{}-exit{}", model.name, meta.exit),
        initializer: g.inits,
        doc_string: doc.clone(),
        input: vec![batch_value_info(INPUT, &stored)],
        output: vec![batch_value_info(OUTPUT, &[meta.classes])],
        ..Default::default()
    };
    Ok(Exported {
        model: ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "nf".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            domain: "neuroflux".into(),
            model_version: 1,
            doc_string: doc,
            graph: Some(graph),
            metadata_props: props,
        },
        params: g.params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_pool_only_for_even_bins() {
        // PyTorch's bins: 7 -> 2 is [0, 4), [3, 7): kernel 4, stride 3.
        assert_eq!(even_bins(7, 2), Some((4, 3)));
        assert_eq!(even_bins(14, 7), Some((2, 2)));
        assert_eq!(even_bins(8, 7), Some((2, 1)));
        assert_eq!(even_bins(5, 5), Some((1, 1)));
        assert_eq!(even_bins(16, 4), Some((4, 4)));
        // 6 -> 4: [0, 2), [1, 3), [3, 5), [4, 6): one size, uneven starts.
        assert_eq!(even_bins(6, 4), None);
        // 14 -> 3: sizes 5, 6, 5.
        assert_eq!(even_bins(14, 3), None);
        assert_eq!(even_bins(3, 4), None);
        // Every accepted answer reproduces the bins.
        for len in 1..40 {
            for s in 1..=len {
                if let Some((k, st)) = even_bins(len, s) {
                    assert_eq!((len - k) / st + 1, s, "{len} -> {s}");
                    for i in 0..s {
                        assert_eq!(bin(i, len, s), (i * st, k));
                    }
                }
            }
        }
    }

    /// A model of a conv unit, a residual unit with a projection and one without, exported
    /// from a store with every tensor the graph names.
    #[test]
    fn residual_graph_structure() {
        const UNITS: &[&[Op]] = &[
            &[nf_core::model::conv3(4), Op::BatchNorm, Op::Relu],
            &[Op::BasicBlock { out: 8, stride: 2 }],
            &[Op::BasicBlock { out: 8, stride: 1 }],
        ];
        let model = nf_core::model::ModelSpec {
            name: "tiny-resnet",
            about: "test",
            input: Shape::new(1, 8, 8),
            units: UNITS,
            head_pool: 0,
        };
        let mut heads = [0; nf_core::model::MAX_UNITS];
        heads[0] = 4;
        heads[1] = 4;
        let meta = |exit| ModelMeta {
            model,
            input: Shape::new(1, 10, 10),
            classes: 3,
            heads,
            exit,
            mean: vec![0.5],
            std: vec![0.25],
            pad: 1,
            class_names: None,
        };
        // Tensors under every name the graph asks for, with the shape it asks for: each missing
        // one is named with its shape.
        let mut store = TensorStore::new();
        let g = loop {
            match build(&meta(2), &store) {
                Ok(e) => break e.model.graph.unwrap(),
                Err(e) => {
                    let name = e.split('`').nth(1).expect(&e).to_string();
                    let shape = e.rsplit("(shape ").next().unwrap().trim_end_matches(')');
                    let shape: Vec<usize> =
                        serde_json::from_str(shape).unwrap_or_else(|_| panic!("{e}"));
                    assert!(store.tensors.len() < 100, "{e}");
                    let len = shape.iter().product();
                    store.insert(name, shape, vec![0.5; len]);
                }
            }
        };
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(&ops[..3], ["Pad", "Sub", "Div"]);
        assert_eq!(ops.iter().filter(|&&o| o == "Add").count(), 2);
        // conv unit 1 + two convs per block + the projection.
        assert_eq!(ops.iter().filter(|&&o| o == "Conv").count(), 6);
        assert_eq!(
            ops[ops.len() - 3..],
            ["GlobalAveragePool", "Flatten", "Gemm"]
        );
        assert!(store.get("units.1.0.shortcut.0.weight").is_some());
        assert!(store.get("units.2.0.shortcut.0.weight").is_none());
        assert_eq!(g.output[0].name, OUTPUT);
        assert_eq!(g.node.last().unwrap().output[0], OUTPUT);
        // The exit at unit 1 ends in its head: conv, BN, ReLU, pool to 2x2 (4x4 -> kernel 2).
        let mut head_store = store.clone();
        for (name, shape) in [
            ("heads.1.0.weight", vec![4, 8, 3, 3]),
            ("heads.1.1.weight", vec![4]),
            ("heads.1.1.bias", vec![4]),
            ("heads.1.1.running_mean", vec![4]),
            ("heads.1.1.running_var", vec![4]),
            ("heads.1.5.weight", vec![3, 16]),
            ("heads.1.5.bias", vec![3]),
        ] {
            let len = shape.iter().product();
            head_store.insert(name, shape, vec![0.5; len]);
        }
        let e = build(&meta(1), &head_store).unwrap();
        let g = e.model.graph.unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops.iter().filter(|&&o| o == "Add").count(), 1);
        assert!(
            ops.ends_with(&["Relu", "AveragePool", "Flatten", "Gemm"]),
            "{ops:?}"
        );
        assert!(!g.initializer.iter().any(|t| t.name.starts_with("units.2")));
        // A wrong shape is named.
        head_store.insert("heads.1.5.bias", vec![4], vec![0.0; 4]);
        let err = build(&meta(1), &head_store).unwrap_err();
        assert!(
            err.contains("heads.1.5.bias") && err.contains("[3]"),
            "{err}"
        );
    }
}
