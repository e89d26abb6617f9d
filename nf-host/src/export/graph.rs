//! The pieces of an ONNX graph under construction: values, nodes, initializers and
//! attributes (the op-by-op mapping is in [`super::onnx`]).
use std::collections::BTreeSet;

use nf_core::model::Shape;

use super::proto::{
    attribute_type, tensor_shape_proto, type_proto, AttributeProto, NodeProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, FLOAT, INT64,
};
use crate::store::TensorStore;

/// A value flowing through the graph: its name, its per-sample shape, and whether it is a
/// matrix `[N, c*h*w]` (after `Flatten` or `Gemm`) rather than `[N, c, h, w]`.
#[derive(Clone, Debug)]
pub(super) struct Value {
    pub(super) name: String,
    pub(super) shape: Shape,
    pub(super) flat: bool,
}

/// Nodes and initializers being collected.
pub(super) struct Graph<'a> {
    pub(super) store: &'a TensorStore,
    pub(super) nodes: Vec<NodeProto>,
    pub(super) inits: Vec<TensorProto>,
    pub(super) named: BTreeSet<String>,
    pub(super) params: usize,
}

/// An integer-list attribute.
pub(super) fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

/// An integer attribute.
pub(super) fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

/// A float attribute.
pub(super) fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

/// A string attribute.
pub(super) fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A float tensor's value info with a symbolic batch dimension `N` first.
pub(super) fn batch_value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value as D;
    let mut dim = vec![tensor_shape_proto::Dimension {
        value: Some(D::DimParam("N".into())),
        ..Default::default()
    }];
    dim.extend(dims.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(D::DimValue(d as i64)),
        ..Default::default()
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Graph<'_> {
    /// Add the node `op` with `inputs` and `attrs`; its output value is `out`.
    pub(super) fn node(
        &mut self,
        op: &str,
        out: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: out.to_string(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// The model file's tensor `name`, which must have `shape`, as an initializer.
    pub(super) fn weight(&mut self, name: &str, shape: &[usize]) -> Result<String, String> {
        let t = self
            .store
            .get(name)
            .ok_or_else(|| format!("tensor `{name}` is missing (shape {shape:?})"))?;
        if t.shape != shape {
            return Err(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.shape
            ));
        }
        if self.named.insert(name.to_string()) {
            if !name.ends_with("running_mean") && !name.ends_with("running_var") {
                self.params += t.data.len();
            }
            self.inits.push(TensorProto {
                dims: shape.iter().map(|&d| d as i64).collect(),
                data_type: FLOAT,
                name: name.into(),
                raw_data: t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            });
        }
        Ok(name.to_string())
    }

    /// A constant float tensor of the graph (not from the model file).
    pub(super) fn constant(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.named.insert(name.to_string());
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    /// A constant `int64` vector (pads, shapes).
    pub(super) fn constant_i64(&mut self, name: &str, data: &[i64]) -> String {
        self.named.insert(name.to_string());
        self.inits.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: INT64,
            name: name.into(),
            int64_data: data.to_vec(),
            ..Default::default()
        });
        name.to_string()
    }

    /// `v` as `[N, c, h, w]` (a matrix is reshaped to `[N, len, 1, 1]`).
    pub(super) fn spatial(&mut self, v: Value, at: &str) -> Value {
        if !v.flat {
            return v;
        }
        let shape = self.constant_i64(&format!("{at}.shape"), &[0, v.shape.len() as i64, 1, 1]);
        let out = format!("{at}.reshaped");
        self.node("Reshape", &out, &[&v.name, &shape], vec![]);
        Value {
            name: out,
            shape: Shape::new(v.shape.len(), 1, 1),
            flat: false,
        }
    }
}
