//! The compact description: `[NAME:]LAYER,LAYER,...`, units cut by `|` or by the default rule.
//!
//! | layer | means |
//! |---|---|
//! | `64` | conv 3x3 (stride 1, padding 1, no bias) -> batch norm -> ReLU |
//! | `64k5s2p2` | the same with kernel 5, stride 2, padding 2 (defaults k3, s1, p = k/2) |
//! | `M` | 2x2 max-pool, stride 2 (odd sizes floor) |
//! | `A2` | adaptive average pool to 2x2 (`A1`: global) |
//! | `R128` / `R128s2` | residual basic block (conv-BN-ReLU-conv-BN + shortcut, ReLU), 128 channels, stride 1 / 2; a 1x1 projection shortcut when the shape changes |
//!
//! Units: without `|`, every convolution or residual block starts a unit and the pools after
//! it belong to it (the zoo's rule: `32,M,64,M,128,128,M` is 4 units). With `|`, the groups
//! between bars are the units (`32,M|64,64,M` is 2 units).
use nf_core::model::{conv3, ModelSpec, Op};

use super::{build, valid_name, Units, DEFAULT_NAME};
use crate::size::printable;

/// Parse a compact description into a checked [`ModelSpec`].
pub fn parse(text: &str) -> Result<ModelSpec<'static>, String> {
    let text = text.trim();
    let (name, body) = match text.split_once(':') {
        Some((n, b)) => {
            let n = n.trim();
            if !valid_name(n) {
                return Err(format!(
                    "model name '{}' before ':': use 1 to 64 letters, digits, '-', '_' or '.'",
                    printable(n)
                ));
            }
            (n, b)
        }
        None => (DEFAULT_NAME, text),
    };
    let explicit = body.contains('|');
    let mut units: Units = Vec::new();
    for (g, group) in body.split('|').enumerate() {
        if explicit {
            units.push(Vec::new());
        }
        for (i, token) in group.split(',').enumerate() {
            let token = token.trim();
            let where_ = || {
                if explicit {
                    format!("unit {g}, layer {}", i + 1)
                } else {
                    format!("layer {}", i + 1)
                }
            };
            if token.is_empty() {
                return Err(format!(
                    "{}: empty layer in '{}' (layers are separated by ',', units by '|')",
                    where_(),
                    printable(text)
                ));
            }
            let ops =
                layer(token).map_err(|e| format!("{} '{}': {e}", where_(), printable(token)))?;
            let starts_unit = matches!(ops[0], Op::Conv { .. } | Op::BasicBlock { .. });
            let current_has_weights = units.last().is_some_and(|u| {
                u.iter()
                    .any(|op| matches!(op, Op::Conv { .. } | Op::BasicBlock { .. }))
            });
            if units.is_empty() || (!explicit && starts_unit && current_has_weights) {
                units.push(Vec::new());
            }
            units.last_mut().expect("a unit is open").extend(ops);
        }
    }
    build(name, units, 0)
}

/// The ops of one layer token.
fn layer(token: &str) -> Result<Vec<Op>, String> {
    let (head, rest) = token.split_at(
        token
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(token.len()),
    );
    match head {
        "M" | "m" if rest.is_empty() => Ok(vec![Op::MaxPool2]),
        "A" | "a" => Ok(vec![Op::AvgPool(number(rest, "average-pool size")?)]),
        "R" | "r" => {
            let (out, opts) = leading_number(rest, "channels")?;
            let o = options(opts, "s")?;
            Ok(vec![Op::BasicBlock {
                out,
                stride: o[0].unwrap_or(1),
            }])
        }
        "" => {
            let (out, opts) = leading_number(rest, "channels")?;
            let o = options(opts, "ksp")?;
            let k = o[0].unwrap_or(3);
            Ok(vec![
                Op::Conv {
                    out,
                    k,
                    stride: o[1].unwrap_or(1),
                    pad: o[2].unwrap_or(k / 2),
                    bias: false,
                },
                Op::BatchNorm,
                Op::Relu,
            ])
        }
        _ => Err(
            "unknown layer; expected N (conv 3x3), NkKsSpP (conv), M (max-pool), AS (average \
             pool) or RN / RNsS (residual block)"
                .into(),
        ),
    }
}

fn number(s: &str, what: &str) -> Result<usize, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} '{}' is not a whole number", printable(s)));
    }
    s.parse()
        .map_err(|_| format!("{what} {} is too large", printable(s)))
}

fn leading_number<'a>(s: &'a str, what: &str) -> Result<(usize, &'a str), String> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    Ok((number(&s[..end], what)?, &s[end..]))
}

/// Options `letter number` in any order, each at most once, from `letters`.
fn options(mut s: &str, letters: &str) -> Result<[Option<usize>; 3], String> {
    let mut found = [None; 3];
    while let Some(c) = s.chars().next() {
        let Some(at) = letters.find(c.to_ascii_lowercase()) else {
            return Err(format!(
                "unknown option '{}' (expected {})",
                printable(&c.to_string()),
                letters
                    .chars()
                    .map(|l| format!("'{l}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let what = ["kernel", "stride", "padding"][if letters == "s" { 1 } else { at }];
        let (v, rest) = leading_number(&s[1..], what)?;
        if found[at].replace(v).is_some() {
            return Err(format!("{what} given twice"));
        }
        s = rest;
    }
    Ok(found)
}

/// The compact description of `m` (with its name), or `None` when a unit holds a layer the
/// compact form cannot say (a convolution with a bias or without batch norm and ReLU, a
/// linear layer, ...); the JSON form says everything.
pub fn format(m: &ModelSpec) -> Option<String> {
    let mut units = Vec::new();
    let mut one_each = true;
    for unit in m.units {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < unit.len() {
            let (token, used) = match (unit[i], unit.get(i + 1), unit.get(i + 2)) {
                (
                    Op::Conv {
                        out,
                        k,
                        stride,
                        pad,
                        bias: false,
                    },
                    Some(Op::BatchNorm),
                    Some(Op::Relu),
                ) => (conv_token(out, k, stride, pad), 3),
                (Op::BasicBlock { out, stride: 1 }, ..) => (format!("R{out}"), 1),
                (Op::BasicBlock { out, stride }, ..) => (format!("R{out}s{stride}"), 1),
                (Op::MaxPool2, ..) => ("M".to_string(), 1),
                (Op::AvgPool(s), ..) => (format!("A{s}"), 1),
                _ => return None,
            };
            if i > 0 && (used == 3 || token.starts_with('R')) {
                one_each = false;
            }
            tokens.push(token);
            i += used;
        }
        if !matches!(unit.first(), Some(Op::Conv { .. } | Op::BasicBlock { .. })) {
            one_each = false;
        }
        units.push(tokens.join(","));
    }
    let body = units.join(if one_each { "," } else { "|" });
    Some(format!("{}:{body}", m.name))
}

fn conv_token(out: usize, k: usize, stride: usize, pad: usize) -> String {
    if (k, stride, pad) == (3, 1, 1) {
        debug_assert_eq!(
            conv3(out),
            Op::Conv {
                out,
                k,
                stride,
                pad,
                bias: false
            }
        );
        return out.to_string();
    }
    let mut t = out.to_string();
    if k != 3 {
        t += &format!("k{k}");
    }
    if stride != 1 {
        t += &format!("s{stride}");
    }
    if pad != k / 2 {
        t += &format!("p{pad}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(text: &str) -> Vec<Vec<Op>> {
        parse(text)
            .unwrap()
            .units
            .iter()
            .map(|u| u.to_vec())
            .collect()
    }

    #[test]
    fn layers_and_units() {
        let c = |out, k, stride, pad| Op::Conv {
            out,
            k,
            stride,
            pad,
            bias: false,
        };
        let (bn, relu) = (Op::BatchNorm, Op::Relu);
        assert_eq!(
            units("16k5s2, M ,R32s2,A2"),
            vec![
                vec![c(16, 5, 2, 2), bn, relu, Op::MaxPool2],
                vec![Op::BasicBlock { out: 32, stride: 2 }, Op::AvgPool(2)],
            ]
        );
        assert_eq!(
            units("8|8,16p0,M"),
            vec![
                vec![c(8, 3, 1, 1), bn, relu],
                vec![
                    c(8, 3, 1, 1),
                    bn,
                    relu,
                    c(16, 3, 1, 0),
                    bn,
                    relu,
                    Op::MaxPool2
                ],
            ]
        );
        assert_eq!(parse("net:8,M").unwrap().name, "net");
        assert_eq!(parse("8,M").unwrap().name, DEFAULT_NAME);
        for text in ["a:8k5s2p1,M|16,16,A2|R32s2", "b:M,8|R8", "c:8,R16s2,A1"] {
            assert_eq!(format(&parse(text).unwrap()).unwrap(), text);
        }
    }

    #[test]
    fn errors_name_the_token() {
        let e = |t: &str| parse(t).unwrap_err();
        assert!(
            e("32,X,64").contains("layer 2 'X': unknown layer"),
            "{}",
            e("32,X,64")
        );
        assert!(e("32,,64").contains("layer 2: empty layer"));
        assert!(e("32k3k5").contains("kernel given twice"));
        assert!(e("32q4").contains("unknown option 'q'"));
        assert!(e("R32k3").contains("unknown option 'k'"));
        assert!(e("A").contains("average-pool size '' is not a whole number"));
        assert!(e("bad name:32").contains("model name 'bad name'"));
        assert!(e("8|8,Z").contains("unit 1, layer 2 'Z'"));
        assert!(e("99999999999999999999999").contains("too large"));
    }
}
