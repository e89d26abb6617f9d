//! Architectures from a description: what `--model` accepts, and what model files record.
//!
//! `--model` takes a zoo name (`vgg-small`, `vgg11`, ...), a compact description
//! ([`compact`]: `vgg:32,M,64,M,128,128,M`, `64,R64,R128s2`) or a JSON file ([`json`]: any op
//! per layer, units cut anywhere). All three give the same [`ModelSpec`] that nf-core plans and
//! trains (the `no_std` type a firmware build writes as a `const`), so a description equal to a
//! zoo entry plans and trains exactly like it. Every model ends in the classifier
//! (global average pool, linear); input channels, size and classes come from the data.
//!
//! A description is checked as it is read (one line naming the token or field): every size
//! positive and within [`MAX_CHANNELS`] / [`MAX_KERNEL`], every unit holding a layer with
//! weights, at most [`MAX_UNITS`] units and ops within one training segment's capacity. What
//! depends on the input (a pool below 1x1, a kernel larger than its input) is checked when the
//! data's shape is known ([`crate::plan_args::explain_bad_input`] names the unit).
pub mod compact;
pub mod json;

use nf_core::layout::MAX_SEG_OPS;
use nf_core::model::{ModelSpec, Op, Shape, MAX_HEAD_OPS, MAX_UNITS};
use nf_core::zoo;

use crate::limits::MAX_INPUT_SIDE;

/// Most output channels of a convolution, residual block or linear layer in a description.
pub const MAX_CHANNELS: usize = 8192;
/// Largest kernel, stride or padding in a description.
pub const MAX_KERNEL: usize = 15;
/// Largest JSON description file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Name of a model described without a `NAME:` prefix (or a JSON `name`).
pub const DEFAULT_NAME: &str = "custom";

/// A layer of a description, before it is checked and fixed in place.
pub type Units = Vec<Vec<Op>>;

/// The model `--model` names: a zoo entry, a JSON file (a path ending in `.json`, or any
/// existing file) or a compact description. Errors are one line naming the token or field.
pub fn resolve(arg: &str) -> Result<ModelSpec<'static>, String> {
    let arg = arg.trim();
    if let Some(m) = zoo::by_name(arg) {
        return Ok(*m);
    }
    let path = std::path::Path::new(arg);
    if arg.ends_with(".json") || path.is_file() {
        return json::read_file(path);
    }
    compact::parse(arg).map_err(|e| {
        if arg.contains([',', ':', '|']) || arg.starts_with(|c: char| c.is_ascii_digit()) {
            e
        } else {
            format!(
                "'{}' is neither a zoo model ({}), a JSON file nor a description: {e}",
                crate::size::printable(arg),
                zoo_names()
            )
        }
    })
}

/// The zoo names, comma-separated.
pub fn zoo_names() -> String {
    nf_core::zoo::ALL
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check `units` (sizes, capacities) and fix them in place for the life of the process as a
/// [`ModelSpec`] called `name`. Each description read costs its few hundred bytes once.
pub fn build(name: &str, units: Units, head_pool: usize) -> Result<ModelSpec<'static>, String> {
    check(&units, head_pool)?;
    let units: Vec<&'static [Op]> = units
        .into_iter()
        .map(|u| &*Box::leak(u.into_boxed_slice()))
        .collect();
    Ok(ModelSpec {
        name: Box::leak(name.to_string().into_boxed_str()),
        about: "described on the command line",
        input: Shape::new(0, 0, 0),
        units: Box::leak(units.into_boxed_slice()),
        head_pool,
    })
}

/// Whether `name` can name a model: letters, digits, `-`, `_`, `.`; 1 to 64 of them.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn check(units: &Units, head_pool: usize) -> Result<(), String> {
    if units.is_empty() {
        return Err("a model needs at least one unit".into());
    }
    if units.len() > MAX_UNITS {
        return Err(format!(
            "{} units is more than the {MAX_UNITS} a model may have",
            units.len()
        ));
    }
    if head_pool == 1 || head_pool > MAX_INPUT_SIDE {
        return Err(format!(
            "head_pool {head_pool}: 0 (no pooling) or 2 to {MAX_INPUT_SIDE}"
        ));
    }
    for (u, unit) in units.iter().enumerate() {
        if !unit
            .iter()
            .any(|op| matches!(op, Op::Conv { .. } | Op::BasicBlock { .. } | Op::Linear(_)))
        {
            return Err(format!(
                "unit {u} has no layer with weights (a convolution, residual block or linear \
                 layer); every unit is trained on its own loss"
            ));
        }
        for (i, op) in unit.iter().enumerate() {
            check_op(op).map_err(|e| format!("unit {u} layer {i}: {e}"))?;
        }
    }
    check_after_flatten(units)?;
    // Backpropagation trains every unit and the classifier as one segment; a local block one
    // or more units and a head.
    let ops: usize = units.iter().map(Vec::len).sum();
    let most = MAX_SEG_OPS - MAX_HEAD_OPS;
    if ops > most {
        return Err(format!(
            "{ops} layers in all is more than the {most} one training segment holds"
        ));
    }
    Ok(())
}

/// A layer as an error message names it.
pub fn op_name(op: &Op) -> String {
    match *op {
        Op::Conv {
            out,
            k,
            stride,
            pad,
            ..
        } => format!("{k}x{k} conv to {out} channels, stride {stride}, padding {pad}"),
        Op::BatchNorm => "batch norm".into(),
        Op::Relu => "ReLU".into(),
        Op::MaxPool2 => "2x2 max-pool".into(),
        Op::AvgPool(p) => format!("average pool to {p}x{p}"),
        Op::Flatten => "flatten".into(),
        Op::Linear(out) => format!("linear to {out}"),
        Op::BasicBlock { out, stride } => {
            format!("residual block to {out} channels, stride {stride}")
        }
    }
}

/// After `flatten` the activations are one vector per sample: a convolution, residual block or
/// pool there would run on a 1x1 image (it trains and exports, and means nothing). Only linear,
/// batch norm and ReLU layers may follow it.
fn check_after_flatten(units: &Units) -> Result<(), String> {
    // A unit that flattens before the last is refused where the model meets its input
    // ("unit 0 flattens its output"): only layers after a flatten in its own unit are left.
    for (u, unit) in units.iter().enumerate() {
        let mut flat: Option<(usize, usize)> = None;
        for (i, op) in unit.iter().enumerate() {
            match (flat, op) {
                (None, Op::Flatten) => flat = Some((u, i)),
                (
                    Some((fu, fi)),
                    Op::Conv { .. } | Op::BasicBlock { .. } | Op::MaxPool2 | Op::AvgPool(_),
                ) => {
                    return Err(format!(
                        "unit {u} layer {i} ({}) cannot follow the flatten of unit {fu} layer \
                         {fi}: after flatten only linear, batchnorm and relu layers",
                        op_name(op)
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn check_op(op: &Op) -> Result<(), String> {
    let size = |what: &str, v: usize, lo: usize, hi: usize| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("{what} {v} is not within {lo} to {hi}"))
        }
    };
    match *op {
        Op::Conv {
            out,
            k,
            stride,
            pad,
            ..
        } => {
            size("channels", out, 1, MAX_CHANNELS)?;
            size("kernel", k, 1, MAX_KERNEL)?;
            size("stride", stride, 1, MAX_KERNEL)?;
            size("padding", pad, 0, k - 1)
        }
        Op::BasicBlock { out, stride } => {
            size("channels", out, 1, MAX_CHANNELS)?;
            size("stride", stride, 1, MAX_KERNEL)
        }
        Op::Linear(out) => size("outputs", out, 1, MAX_CHANNELS),
        Op::AvgPool(s) => size("average-pool size", s, 1, MAX_INPUT_SIDE),
        Op::BatchNorm | Op::Relu | Op::MaxPool2 | Op::Flatten => Ok(()),
    }
}

/// How people are shown `m`: a zoo entry by its name, a described model by its compact
/// description (or its name and unit count when only JSON can say it).
pub fn shown(m: &ModelSpec) -> String {
    if zoo::by_name(m.name).is_some_and(|z| z.units == m.units) {
        return m.name.to_string();
    }
    compact::format(m).unwrap_or_else(|| format!("{} ({} units)", m.name, m.units.len()))
}

/// The compact description of every zoo model (`--help`, the README): each parses to its
/// zoo entry.
pub fn zoo_descriptions() -> Vec<(&'static ModelSpec<'static>, String)> {
    zoo::ALL
        .iter()
        .map(|m| (*m, compact::format(m).expect("zoo models are compact")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoo_entries_are_their_descriptions() {
        for (m, text) in zoo_descriptions() {
            let parsed = resolve(&text).unwrap();
            assert_eq!(parsed.units, m.units, "{}: {text}", m.name);
            let via_json = json::from_str(&json::to_string(m)).unwrap();
            assert_eq!(via_json.units, m.units, "{}", m.name);
            assert_eq!(via_json.name, m.name);
        }
        assert_eq!(
            compact::format(&zoo::VGG_SMALL).unwrap(),
            "vgg-small:32,M,64,M,128,128,M"
        );
        assert_eq!(
            compact::format(&zoo::RESNET18).unwrap(),
            "resnet18:64,R64,R64,R128s2,R128,R256s2,R256,R512s2,R512"
        );
    }

    #[test]
    fn capacities_are_refused_in_one_line() {
        let many = vec!["8"; MAX_UNITS + 1].join(",");
        assert!(resolve(&many).unwrap_err().contains("more than the 24"));
        let e = resolve("x:M|8").unwrap_err();
        assert!(e.contains("unit 0 has no layer with weights"), "{e}");
        assert!(resolve("0,M").unwrap_err().contains("channels 0"));
        assert!(resolve("8k0").unwrap_err().contains("kernel 0"));
        assert!(resolve("8k3p3").unwrap_err().contains("padding 3"));
        let wide = (0..20).map(|_| "8,8,8,8").collect::<Vec<_>>().join("|");
        assert!(resolve(&wide).unwrap_err().contains("training segment"));
        let e = resolve("vgg-tiny").unwrap_err();
        assert!(e.contains("neither a zoo model (vgg-small"), "{e}");
    }
}
