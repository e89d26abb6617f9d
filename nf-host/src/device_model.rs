//! Models saved on a device: the flat bytes the C ABI's `nf_export_model` writes (magic
//! `NFMD`, version 3: the frozen-weight store in half precision; version 2, its store in `f32`,
//! is still read; the format is described in `tests/firmware-c/capi/src/saved.rs` and
//! `tests/firmware-c/README.md`), read into the tensors and metadata of an exit model file, so
//! that `nf eval --model FILE` evaluates them like a file of `nf train`.
//!
//! The bytes describe the model (ops, input shape, head widths, the last block's units, the
//! input normalisation the device's read callback applied) and hold its weights as the device
//! keeps them: the frozen-weight store (units of earlier blocks and their heads) and the last
//! block's kept state. The exit model is put together by nf-core's prediction code
//! ([`nf_core::predict`], the same that `nf_predict` runs on the device) in a small reference
//! arena, and its tensors are read out of it.
use std::path::Path;

use nf_core::layout::{op_state, BlockLayout, Kernels, SegMode};
use nf_core::model::{ModelSpec, Op, Shape, MAX_UNITS};
use nf_core::plan::MIN_HEAD;
use nf_core::predict::{self, Part};
use nf_core::reference::ReferenceBackend;

use crate::error::{usage, CliError};
use crate::limits::{MAX_CLASSES, MAX_FILTERS};
use crate::store::{read_block, TensorStore};

/// The first bytes of a device model file.
pub const MAGIC: &[u8; 4] = b"NFMD";
/// The version `nf_export_model` writes (the store in half precision).
pub const VERSION: u32 = 3;
/// The version before it (the store in `f32`), still read.
const VERSION_F32_STORE: u32 = 2;
/// The C ABI's capacities (`NF_MAX_UNITS`, `NF_MAX_OPS`): the size of the per-unit arrays.
const C_UNITS: usize = 8;
const C_OPS: usize = 48;
/// Words before the description (magic to exit, the accuracies), and of the description
/// before its ops.
const RESULTS: usize = 9 + 2 * C_UNITS;
const DESCRIPTION: usize = 10 + 2 * C_UNITS;

/// Words of a store of `n` values in a file of `version`: `f32` in version 2, two half-precision
/// values a word after it.
fn store_words(version: u32, n: usize) -> usize {
    if version == VERSION_F32_STORE {
        n
    } else {
        n.div_ceil(2)
    }
}

/// The value of IEEE half-precision bits `h` (the device's store).
fn f16_value(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// FNV-1a of `bytes` (the checksum the C ABI writes).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The model file at `path` when it is a device model (its first bytes are [`MAGIC`]), as the
/// tensors and metadata of an exit model file; `None` for any other file.
pub fn read_if_device(path: &Path) -> Result<Option<TensorStore>, CliError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| usage(format!("--model {}: cannot read: {e}", path.display()));
    // Only the first bytes of any other file (a model file of nf train may be large).
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    match f.read_exact(&mut head) {
        Ok(()) if &head == MAGIC => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(cannot(e)),
    }
    let refuse = |e: String| usage(format!("--model {}: {e}", path.display()));
    // A file of any size may start with the magic: its header's length must be the file's
    // before the whole file is read, into memory allocated fallibly.
    let file_len = f.metadata().map_err(cannot)?.len();
    let mut prefix = [0u8; 4 * PREFIX_WORDS];
    if file_len >= prefix.len() as u64 {
        prefix[..4].copy_from_slice(MAGIC);
        f.read_exact(&mut prefix[4..]).map_err(cannot)?;
        let (_, _, len) = claimed(&Words { bytes: &prefix }).map_err(refuse)?;
        if len.map(|l| l as u64) != Some(file_len) {
            return Err(refuse(length_error(file_len)));
        }
    }
    let len = usize::try_from(file_len).unwrap_or(usize::MAX);
    let mut bytes = crate::capacity::alloc::<u8>("--model", "the device model", len)?;
    let read = if file_len >= prefix.len() as u64 {
        bytes[..prefix.len()].copy_from_slice(&prefix);
        prefix.len()
    } else {
        bytes[..4].copy_from_slice(MAGIC);
        4
    };
    f.read_exact(&mut bytes[read..]).map_err(cannot)?;
    from_bytes(&bytes).map(Some).map_err(refuse)
}

/// The C op kinds (`NF_OP_*`) as nf-core ops.
fn op_of(w: &[u32]) -> Result<Op, String> {
    let small = |v: u32, hi: u32, what: &str| {
        if (1..=hi).contains(&v) {
            Ok(v as usize)
        } else {
            Err(format!("op field {what} {v} is out of range"))
        }
    };
    Ok(match w[0] {
        1 => Op::Conv {
            out: small(w[1], 4096, "out")?,
            k: small(w[2], 15, "k")?,
            stride: small(w[3], 15, "stride")?,
            pad: if w[4] <= 15 {
                w[4] as usize
            } else {
                return Err(format!("op field pad {} is out of range", w[4]));
            },
            bias: w[5] == 1,
        },
        2 => Op::BatchNorm,
        3 => Op::Relu,
        4 => Op::MaxPool2,
        5 => Op::AvgPool(small(w[1], 256, "out")?),
        6 => Op::Flatten,
        7 => Op::Linear(small(w[1], 65536, "out")?),
        8 => Op::BasicBlock {
            out: small(w[1], 4096, "out")?,
            stride: small(w[3], 4, "stride")?,
        },
        k => return Err(format!("unknown op kind {k}")),
    })
}

/// Elements (parameters and BN statistics) of `ops` applied from shape `s`.
fn ops_len(ops: &[Op], mut s: Shape) -> usize {
    let mut n = 0;
    for op in ops {
        n += op.params(s) + op_state(op, s);
        s = op.out_shape(s);
    }
    n
}

/// The words of a device model whose length, version and checksum were checked.
struct Words<'b> {
    bytes: &'b [u8],
}

impl Words<'_> {
    fn word(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.bytes[4 * i..4 * i + 4].try_into().expect("4"))
    }

    fn f32_at(&self, i: usize) -> f32 {
        f32::from_bits(self.word(i))
    }

    fn len(&self) -> usize {
        self.bytes.len() / 4
    }
}

/// What a device model's description gives.
struct Description {
    model: ModelSpec<'static>,
    input: Shape,
    classes: usize,
    head_pool: usize,
    mean: f32,
    std: f32,
    mode: SegMode,
    /// The units of the last block.
    first: usize,
    heads: [usize; MAX_UNITS],
    exit: usize,
}

/// The error of a description that does not hold together.
fn bad<T>(what: &str) -> Result<T, String> {
    Err(format!(
        "the device model's description is not valid ({what})"
    ))
}

/// Read the bytes of a device model; the error is the problem, without the path.
pub fn from_bytes(bytes: &[u8]) -> Result<TensorStore, String> {
    let (w, header, n_ops) = checked_frame(bytes)?;
    let d = description(&w, n_ops)?;
    let (store_len, kept_len) = (w.word(6) as usize, w.word(7) as usize);
    let store_words = store_words(w.word(1), store_len);
    let mut weights = crate::capacity::try_zeroed::<f32>(store_len + kept_len)
        .map_err(|e| format!("cannot allocate the device model's weights: {e}"))?;
    let (store, kept) = weights.split_at_mut(store_len);
    for (i, v) in store.iter_mut().enumerate() {
        *v = if w.word(1) == VERSION_F32_STORE {
            w.f32_at(header + i)
        } else {
            f16_value((w.word(header + i / 2) >> (16 * (i % 2))) as u16)
        };
    }
    for (i, v) in kept.iter_mut().enumerate() {
        *v = w.f32_at(header + store_words + i);
    }
    let (store, kept) = (&*store, &*kept);
    let mut out = exit_model(&d, store, kept, kept_len)?;
    add_metadata(&mut out, &d);
    Ok(out)
}

/// The words of `bytes` after the checks of the frame (length, version, the header's sizes,
/// checksum), the header's length in words and the number of ops.
fn checked_frame(bytes: &[u8]) -> Result<(Words<'_>, usize, usize), String> {
    let w = Words { bytes };
    let n = w.len();
    if !bytes.len().is_multiple_of(4) || n < PREFIX_WORDS + 1 {
        return Err(format!(
            "a device model (NFMD) of {} bytes is truncated",
            bytes.len()
        ));
    }
    let (header, n_ops, len) = claimed(&w)?;
    if len != Some(bytes.len()) {
        return Err(length_error(bytes.len() as u64));
    }
    if fnv1a(&bytes[..bytes.len() - 4]) != w.word(n - 1) {
        return Err("the device model's checksum does not match (the bytes are damaged)".into());
    }
    Ok((w, header, n_ops))
}

/// Words before the ops of the description: all that [`claimed`] reads.
const PREFIX_WORDS: usize = RESULTS + DESCRIPTION;

/// What the first [`PREFIX_WORDS`] words of `w` say of the file: the header's length in
/// words, the number of ops and the file's length in bytes (`None`: more than memory holds).
fn claimed(w: &Words<'_>) -> Result<(usize, usize, Option<usize>), String> {
    if w.word(1) != VERSION && w.word(1) != VERSION_F32_STORE {
        return Err(format!(
            "device model version {} is not read by this nf (it reads versions \
             {VERSION_F32_STORE} and {VERSION}, written by this repository's nf_export_model)",
            w.word(1)
        ));
    }
    let n_ops = w.word(PREFIX_WORDS - 1) as usize;
    if n_ops == 0 || n_ops > C_OPS {
        return Err(format!("a device model with {n_ops} ops is not valid"));
    }
    let header = PREFIX_WORDS + 6 * n_ops;
    let (store_len, kept_len) = (w.word(6) as usize, w.word(7) as usize);
    let words = header
        .checked_add(store_words(w.word(1), store_len))
        .and_then(|h| h.checked_add(kept_len))
        .and_then(|h| h.checked_add(1));
    Ok((header, n_ops, words.and_then(|n| n.checked_mul(4))))
}

/// The error of a file whose length is not the one its header gives.
fn length_error(len: u64) -> String {
    format!(
        "the device model's length ({len} bytes) is not what its header gives (truncated or \
         extended)"
    )
}

/// The model, input, normalisation, last block, head widths and exit the words describe,
/// each checked.
fn description(w: &Words<'_>, n_ops: usize) -> Result<Description, String> {
    let d = RESULTS;
    let (n_units, classes) = (w.word(2) as usize, w.word(3) as usize);
    if !(1..=C_UNITS.min(MAX_UNITS)).contains(&n_units) {
        return bad("units");
    }
    if !(2..=MAX_CLASSES).contains(&classes) {
        return bad("classes");
    }
    let input = Shape::new(
        w.word(d) as usize,
        w.word(d + 1) as usize,
        w.word(d + 2) as usize,
    );
    let head_pool = w.word(d + 3) as usize;
    if input.c == 0 || input.c > 4096 || input.h > 4096 || input.w > 4096 {
        return bad("input shape");
    }
    if input.len() != w.word(4) as usize {
        return bad("input size");
    }
    let (mean, std) = (w.f32_at(d + 4), w.f32_at(d + 5));
    if (mean, std) == (0.0, 0.0) {
        return Err(
            "the device did not record its input normalisation (nf_model.in_mean and in_std are \
             0), so the test images cannot be normalised as its read callback did"
                .into(),
        );
    }
    if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
        return bad("normalisation");
    }
    let mode = match w.word(d + 6) {
        0 => SegMode::Local,
        1 => SegMode::Global,
        _ => return bad("segments"),
    };
    let (first, last) = (w.word(d + 7) as usize, w.word(d + 8) as usize);
    if first > last || last + 1 != n_units {
        return bad("last block");
    }
    let mut heads = [0usize; MAX_UNITS];
    for (u, h) in heads[..n_units].iter_mut().enumerate() {
        *h = w.word(d + 9 + u) as usize;
        let last_unit = u + 1 == n_units;
        if *h != 0 && (last_unit || !(MIN_HEAD..=MAX_FILTERS).contains(h)) {
            return bad("head widths");
        }
    }
    let mut model = crate::architecture::build("device", unit_ops(w, n_units, n_ops)?, head_pool)
        .map_err(|e| format!("the device model's description: {e}"))?;
    model.input = input;
    if !model.accepts(input, classes) {
        return bad("its layers do not run on its input");
    }
    let exit = w.word(8);
    if exit == u32::MAX {
        return Err("the device model has no exit (it was saved before it was evaluated)".into());
    }
    let exit = exit as usize;
    if exit >= n_units || (exit + 1 < n_units && heads[exit] == 0) {
        return bad("exit");
    }
    Ok(Description {
        model,
        input,
        classes,
        head_pool,
        mean,
        std,
        mode,
        first,
        heads,
        exit,
    })
}

/// The ops of each of the `n_units` units (`n_ops` in all), as the description lists them.
fn unit_ops(w: &Words<'_>, n_units: usize, n_ops: usize) -> Result<Vec<Vec<Op>>, String> {
    let d = RESULTS;
    let mut units = Vec::with_capacity(n_units);
    let mut at = d + 9 + C_UNITS + C_UNITS + 1;
    let mut total = 0;
    for u in 0..n_units {
        let k = w.word(d + 9 + C_UNITS + u) as usize;
        total += k;
        if k == 0 || total > n_ops {
            return bad("ops per unit");
        }
        let mut ops = Vec::with_capacity(k);
        for _ in 0..k {
            let op: Vec<u32> = (0..6).map(|j| w.word(at + j)).collect();
            ops.push(op_of(&op).map_err(|e| format!("the device model's description: {e}"))?);
            at += 6;
        }
        units.push(ops);
    }
    if total != n_ops {
        return bad("ops per unit");
    }
    Ok(units)
}

/// The exit model's tensors, put together as the device's `nf_predict` does from the store
/// (units 0..n-1, then the heads of the units before the last block) and the last block's
/// kept state; both must have the sizes the model gives.
fn exit_model(
    d: &Description,
    store: &[f32],
    kept: &[f32],
    kept_len: usize,
) -> Result<TensorStore, String> {
    let (model, input, classes, heads) = (&d.model, d.input, d.classes, &d.heads);
    let n_units = model.units.len();
    let unit_at: Vec<usize> = (0..n_units)
        .scan(0, |o, u| {
            let at = *o;
            *o += ops_len(model.units[u], model.unit_input(input, u));
            Some(at)
        })
        .collect();
    let units_len = unit_at[n_units - 1];
    let head_len = |u: usize| {
        let s = model.unit_input(input, u + 1);
        let (ops, k) = model.head(heads[u], classes, s);
        if heads[u] == 0 {
            0
        } else {
            ops_len(&ops[..k], s)
        }
    };
    let head_at: Vec<usize> = (0..d.first)
        .scan(units_len, |o, u| {
            let at = *o;
            *o += head_len(u);
            Some(at)
        })
        .collect();
    let store_need = head_at
        .last()
        .map_or(units_len, |&a| a + head_len(d.first - 1));
    let last = n_units - 1;
    let layout = BlockLayout::new(model, input, classes, d.mode, d.first, last, heads, 1);
    let kept_regions: Vec<_> = (0..layout.n_segments())
        .flat_map(|k| [layout.seg_params[k], layout.seg_state[k]])
        .collect();
    let kept_need: usize = kept_regions.iter().map(|r| r.len()).sum();
    if store.len() != store_need || kept_len != kept_need {
        return bad("its weights are not the size its model gives");
    }
    let chain = predict::chain(&layout, heads, d.exit, &Kernels::REFERENCE);
    let mut arena = crate::capacity::alloc::<f32>("--model", "the device model", chain.floats)
        .map_err(|e| e.to_string())?;
    let mut be = ReferenceBackend::new(&mut arena);
    let mut from = 0;
    for r in kept_regions {
        be.arena()[r.offset..r.end()].copy_from_slice(&kept[from..from + r.len()]);
        from += r.len();
    }
    predict::load(&mut be, &layout, &chain, |be, f, dst| {
        let base = match f.part {
            Part::Unit => unit_at[f.unit],
            Part::Head => head_at[f.unit],
        } + f.offset;
        let (p, s) = (dst.param.len(), dst.state.len());
        let Some(w) = store.get(base..base + p + s) else {
            return false;
        };
        be.arena()[dst.param.offset..dst.param.end()].copy_from_slice(&w[..p]);
        be.arena()[dst.state.offset..dst.state.end()].copy_from_slice(&w[p..]);
        true
    })
    .map_err(|e| format!("the device model's weights do not load: {e}"))?;
    let mut out = TensorStore::new();
    read_block(&mut be, &chain, &mut out, false);
    Ok(out)
}

/// The metadata of an exit model file of `nf train`, from the description.
fn add_metadata(out: &mut TensorStore, d: &Description) {
    let per_channel = |v: f32| serde_json::to_string(&vec![v; d.input.c]).expect("json");
    let input = d.input;
    for (k, v) in [
        ("format", "nf-device-model".to_string()),
        (
            "architecture",
            crate::architecture::json::to_string(&d.model),
        ),
        ("head_pool", d.head_pool.to_string()),
        ("input", format!("{}x{}x{}", input.c, input.h, input.w)),
        ("classes", d.classes.to_string()),
        (
            "heads",
            serde_json::to_string(&d.heads[..d.model.units.len()]).expect("json"),
        ),
        ("exit", d.exit.to_string()),
        ("mean", per_channel(d.mean)),
        ("std", per_channel(d.std)),
        ("pad", "0".to_string()),
    ] {
        out.metadata.insert(k.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of one unit (a conv) with `store` and `kept` weights, the words `set` changed,
    /// and a checksum (`good`: right).
    fn file(set: &[(usize, u32)], weights: usize, good: bool) -> Vec<u8> {
        let header = RESULTS + DESCRIPTION + 6;
        let mut w = vec![0u32; header + weights + 1];
        let d = RESULTS;
        w[..9].copy_from_slice(&[
            u32::from_le_bytes(*MAGIC),
            VERSION,
            1,
            10,
            16,
            1,
            0,
            weights as u32,
            0,
        ]);
        w[d..d + 9].copy_from_slice(&[1, 4, 4, 0, 0.5f32.to_bits(), 0.25f32.to_bits(), 0, 0, 0]);
        w[d + 9 + C_UNITS] = 1;
        w[d + DESCRIPTION - 1] = 1;
        w[d + DESCRIPTION..d + DESCRIPTION + 6].copy_from_slice(&[1, 4, 3, 1, 1, 0]);
        for &(i, v) in set {
            w[i] = v;
        }
        let mut b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        let n = b.len();
        let h = fnv1a(&b[..n - 4]) ^ u32::from(!good);
        b[n - 4..].copy_from_slice(&h.to_le_bytes());
        b
    }

    fn err(b: &[u8]) -> String {
        from_bytes(b).expect_err("refused")
    }

    #[test]
    fn bad_files_are_one_line_each() {
        // conv 1 -> 4, 3x3, no bias: 36 weights; the classifier 4 -> 10: 50.
        let ok = file(&[], 86, true);
        let s = from_bytes(&ok).expect("a valid file");
        // Version 2 (its store in f32: this one has none) is still read.
        from_bytes(&file(&[(1, VERSION_F32_STORE)], 86, true)).expect("a version 2 file");
        assert_eq!(f16_value(0x3c00), 1.0);
        assert_eq!(f16_value(0xc000), -2.0);
        assert_eq!(f16_value(0x0001), 2f32.powi(-24));
        assert_eq!(f16_value(0x7bff), 65504.0);
        assert_eq!(s.metadata["input"], "1x4x4");
        assert_eq!(s.metadata["mean"], "[0.5]");
        assert_eq!(s.metadata["exit"], "0");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (ok[..40].to_vec(), "truncated"),
            (ok[..ok.len() - 2].to_vec(), "truncated"),
            (ok[..ok.len() - 4].to_vec(), "length"),
            (file(&[(1, 1)], 86, true), "version 1 is not read"),
            (file(&[(1, 4)], 86, true), "version 4 is not read"),
            (file(&[], 86, false), "checksum"),
            (file(&[(2, 0)], 86, true), "(units)"),
            (file(&[(3, 1)], 86, true), "(classes)"),
            (file(&[(4, 15)], 86, true), "(input size)"),
            (
                file(&[(RESULTS + 4, 0), (RESULTS + 5, 0)], 86, true),
                "did not record its input normalisation",
            ),
            (
                file(&[(RESULTS + 5, (-1f32).to_bits())], 86, true),
                "(normalisation)",
            ),
            (file(&[(8, u32::MAX)], 86, true), "no exit"),
            (
                file(&[(RESULTS + DESCRIPTION, 99)], 86, true),
                "unknown op kind 99",
            ),
            (file(&[], 85, true), "not the size"),
        ];
        for (b, want) in cases {
            let e = err(&b);
            assert!(e.contains(want) && !e.contains('\n'), "{want}: {e}");
        }
    }
}
