//! The JSON description: every op of every unit, the form model files record.
//!
//! ```json
//! {
//!   "name": "mynet",
//!   "head_pool": 0,
//!   "units": [
//!     "32,M",
//!     [{"op": "conv", "out": 64, "k": 5, "stride": 1, "pad": 2, "bias": true},
//!      {"op": "relu"}, {"op": "maxpool2"}],
//!     [{"op": "basicblock", "out": 128, "stride": 2}]
//!   ]
//! }
//! ```
//!
//! A unit is a list of ops or a string of compact layers ([`super::compact`]) that form one
//! unit. Ops: `conv` (`out`; `k` 3, `stride` 1, `pad` k/2, `bias` false by default),
//! `batchnorm`, `relu`, `maxpool2`, `avgpool` (`size`: adaptive average pool to size x size),
//! `flatten`, `linear` (`out`), `basicblock` (`out`; `stride` 1). `name` (default `custom`)
//! and `head_pool` (default 0; `nf train --head-pool` sets it when training) are optional.
//! Unknown fields are refused, so a misspelt one is never silently ignored.
use std::path::Path;

use nf_core::model::{ModelSpec, Op};
use serde_json::{json, Map, Value};

use super::{build, valid_name, Units, DEFAULT_NAME, MAX_FILE_BYTES};
use crate::size::printable;

/// Read a JSON description file (at most [`MAX_FILE_BYTES`]).
pub fn read_file(path: &Path) -> Result<ModelSpec<'static>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{shown}: {} bytes is larger than a model description may be ({MAX_FILE_BYTES})",
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    // An output of the command must not replace this file.
    crate::output::note_model_file(path);
    from_str(&text).map_err(|e| format!("{shown}: {e}"))
}

/// Parse a JSON description.
pub fn from_str(text: &str) -> Result<ModelSpec<'static>, String> {
    let v: Value = crate::strict_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    known_fields(obj, &["name", "head_pool", "units"], "the description")?;
    let name = match obj.get("name") {
        None => DEFAULT_NAME,
        Some(Value::String(n)) if valid_name(n) => n,
        Some(n) => {
            return Err(format!(
                "\"name\" {}: use 1 to 64 letters, digits, '-', '_' or '.'",
                printable(&n.to_string())
            ))
        }
    };
    let head_pool = match obj.get("head_pool") {
        None => 0,
        Some(v) => whole(v, "\"head_pool\"")?,
    };
    let list = obj
        .get("units")
        .and_then(Value::as_array)
        .ok_or("\"units\" must be a list of units")?;
    let mut units: Units = Vec::with_capacity(list.len().min(super::MAX_UNITS + 1));
    for (u, unit) in list.iter().enumerate() {
        let ops = match unit {
            Value::String(s) => {
                let m = super::compact::parse(&format!("u:{}", s.replace('|', ",")))
                    .map_err(|e| format!("unit {u}: {e}"))?;
                m.units.iter().flat_map(|u| u.iter().copied()).collect()
            }
            Value::Array(ops) => ops
                .iter()
                .enumerate()
                .map(|(i, op)| op_from(op).map_err(|e| format!("unit {u} op {i}: {e}")))
                .collect::<Result<Vec<Op>, String>>()?,
            _ => {
                return Err(format!(
                    "unit {u}: a list of ops or a string of compact layers"
                ))
            }
        };
        units.push(ops);
        if units.len() > super::MAX_UNITS {
            break; // build() names the excess without reading more
        }
    }
    build(name, units, head_pool)
}

fn known_fields(obj: &Map<String, Value>, known: &[&str], what: &str) -> Result<(), String> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown field \"{}\" in {what} (known: {})",
            printable(k),
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn whole(v: &Value, what: &str) -> Result<usize, String> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            format!(
                "{what} must be a whole number, not {}",
                printable(&v.to_string())
            )
        })
}

fn op_from(v: &Value) -> Result<Op, String> {
    let obj = v
        .as_object()
        .ok_or("an op is an object like {\"op\": \"relu\"}")?;
    let kind = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or("missing \"op\"")?;
    let get = |k: &str, default: Option<usize>| match (obj.get(k), default) {
        (Some(v), _) => whole(v, &format!("\"{k}\"")),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!("{kind} needs \"{k}\"")),
    };
    let (op, fields): (Op, &[&str]) = match kind {
        "conv" => {
            let k = get("k", Some(3))?;
            let bias = match obj.get("bias") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("\"bias\" must be true or false".into()),
            };
            let op = Op::Conv {
                out: get("out", None)?,
                k,
                stride: get("stride", Some(1))?,
                pad: get("pad", Some(k / 2))?,
                bias,
            };
            (op, &["op", "out", "k", "stride", "pad", "bias"])
        }
        "batchnorm" => (Op::BatchNorm, &["op"]),
        "relu" => (Op::Relu, &["op"]),
        "maxpool2" => (Op::MaxPool2, &["op"]),
        "avgpool" => (Op::AvgPool(get("size", None)?), &["op", "size"]),
        "flatten" => (Op::Flatten, &["op"]),
        "linear" => (Op::Linear(get("out", None)?), &["op", "out"]),
        "basicblock" => {
            let op = Op::BasicBlock {
                out: get("out", None)?,
                stride: get("stride", Some(1))?,
            };
            (op, &["op", "out", "stride"])
        }
        other => {
            return Err(format!(
                "unknown op \"{}\" (known: conv, batchnorm, relu, maxpool2, avgpool, flatten, \
                 linear, basicblock)",
                printable(other)
            ))
        }
    };
    known_fields(obj, fields, &format!("a {kind} op"))?;
    Ok(op)
}

fn op_json(op: &Op) -> Value {
    match *op {
        Op::Conv {
            out,
            k,
            stride,
            pad,
            bias,
        } => json!({"op": "conv", "out": out, "k": k, "stride": stride, "pad": pad, "bias": bias}),
        Op::BatchNorm => json!({"op": "batchnorm"}),
        Op::Relu => json!({"op": "relu"}),
        Op::MaxPool2 => json!({"op": "maxpool2"}),
        Op::AvgPool(s) => json!({"op": "avgpool", "size": s}),
        Op::Flatten => json!({"op": "flatten"}),
        Op::Linear(out) => json!({"op": "linear", "out": out}),
        Op::BasicBlock { out, stride } => json!({"op": "basicblock", "out": out, "stride": stride}),
    }
}

/// The full JSON description of `m`: every op with every field (model files record this).
pub fn to_value(m: &ModelSpec) -> Value {
    let units: Vec<Value> = m
        .units
        .iter()
        .map(|u| Value::Array(u.iter().map(op_json).collect()))
        .collect();
    json!({"name": m.name, "head_pool": m.head_pool, "units": units})
}

/// [`to_value`] as one line of text.
pub fn to_string(m: &ModelSpec) -> String {
    to_value(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_units_and_round_trip() {
        let m = from_str(
            r#"{"name": "n", "head_pool": 4, "units": ["16,M",
               [{"op": "conv", "out": 8, "k": 5, "bias": true}, {"op": "relu"},
                {"op": "avgpool", "size": 2}], [{"op": "basicblock", "out": 8, "stride": 2}]]}"#,
        )
        .unwrap();
        assert_eq!(m.units.len(), 3);
        assert_eq!(m.head_pool, 4);
        assert_eq!(
            m.units[1][0],
            Op::Conv {
                out: 8,
                k: 5,
                stride: 1,
                pad: 2,
                bias: true
            }
        );
        let back = from_str(&to_string(&m)).unwrap();
        assert_eq!(back.units, m.units);
        assert_eq!((back.name, back.head_pool), ("n", 4));
        assert_eq!(super::super::compact::format(&m), None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |t: &str| from_str(t).unwrap_err();
        assert!(e("[1]").contains("not a JSON object"));
        assert!(e("{").contains("not JSON"));
        assert!(e(r#"{"units": [[{"op": "conv"}]]}"#).contains("unit 0 op 0: conv needs \"out\""));
        assert!(e(r#"{"units": [[{"op": "conv", "out": 4, "strid": 2}]]}"#)
            .contains("unknown field \"strid\" in a conv op"));
        assert!(e(r#"{"units": [[{"op": "pool"}]]}"#).contains("unknown op \"pool\""));
        assert!(e(r#"{"units": [[{"op": "conv", "out": -4}]]}"#)
            .contains("\"out\" must be a whole number"));
        assert!(e(r#"{"unit": []}"#).contains("unknown field \"unit\""));
        assert!(e(r#"{"units": ["8,X"]}"#).contains("unit 0: layer 2 'X'"));
        assert!(
            e(r#"{"units": [[{"op": "conv", "out": 0}]]}"#).contains("unit 0 layer 0: channels 0")
        );
    }
}
