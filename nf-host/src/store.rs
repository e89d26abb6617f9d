//! Model files and checkpoints: named `f32` tensors in the [safetensors] format.
//!
//! A [`TensorStore`] maps PyTorch-style names ([`tensor_name`]) to tensors. [`read_block`] fills
//! it from a block's arena, [`write_block`] puts it back; [`TensorStore::save`] writes a
//! `.safetensors` file (dtype `F32`, little-endian, string metadata under `__metadata__`)
//! atomically ([`atomic_write`]), and [`TensorStore::load`] reads one back, rejecting anything
//! malformed with a one-line [`StoreError`] that names the file.
//!
//! A PyTorch user loads the file with `safetensors.torch.load_file(path)` and passes the dict to
//! `load_state_dict` of a model built with the layout described in [`nf_core::tensors`].
//!
//! [safetensors]: https://huggingface.co/docs/safetensors
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nf_core::backend::Backend;
use nf_core::infer::InferLayout;
use nf_core::layout::BlockLayout;
use nf_core::tensors::{visit, visit_chain, Kind, Part, TensorRef};
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

/// One tensor: its dimensions and its values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions (PyTorch order: conv weight OIHW, linear `[out, in]`).
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

/// Named tensors plus string metadata: the contents of a model file or a checkpoint.
#[derive(Default, Clone, Debug)]
pub struct TensorStore {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Free-form metadata (saved under `__metadata__`).
    pub metadata: BTreeMap<String, String>,
}

/// Why a tensor file or a block could not be read or written. Every message is one line.
#[derive(Debug)]
pub enum StoreError {
    /// A file could not be read or written, or its contents are not a valid `F32`
    /// safetensors file.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (one line).
        problem: String,
    },
    /// A tensor the block needs is not in the store.
    Missing {
        /// Its name.
        name: String,
    },
    /// A tensor has a shape other than the block's (or a data length that disagrees with
    /// its shape).
    Shape {
        /// Its name.
        name: String,
        /// The shape the block needs.
        expected: Vec<usize>,
        /// The shape (or, for a bad data length, `[len]`) in the store.
        found: Vec<usize>,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::File { path, problem } => write!(f, "{}: {problem}", path.display()),
            StoreError::Missing { name } => write!(f, "tensor `{name}` is missing"),
            StoreError::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor `{name}` has shape {found:?}, expected {expected:?}"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// One line of text (error messages from libraries may contain newlines).
fn one_line(s: impl fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn file_err(path: &Path, problem: impl fmt::Display) -> StoreError {
    StoreError::File {
        path: path.to_path_buf(),
        problem: one_line(problem),
    }
}

/// A tensor as safetensors sees it (converted to little-endian bytes on demand).
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

impl TensorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) tensor `name`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape` (a programming error).
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) {
        let name = name.into();
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor `{name}`: data length does not match shape {shape:?}"
        );
        self.tensors.insert(name, Tensor { shape, data });
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Number of elements of the tensors whose names pass `filter` (for instance the
    /// parameters of an exit model: `|n| !n.starts_with("momentum.")`).
    pub fn param_count(&self, filter: impl Fn(&str) -> bool) -> usize {
        self.tensors
            .iter()
            .filter(|(n, _)| filter(n))
            .map(|(_, t)| t.data.len())
            .sum()
    }

    /// The file contents in safetensors format.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SafeTensorError> {
        let meta = (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
        });
        safetensors::serialize(
            self.tensors.iter().map(|(n, t)| (n.as_str(), F32View(t))),
            meta,
        )
    }

    /// Write the store to `path` as a safetensors file, atomically (see [`save_tensors`]).
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        save_tensors(
            path,
            self.tensors.iter().map(|(n, t)| (n.clone(), t)),
            &self.metadata,
        )
    }

    /// Read a safetensors file written by [`TensorStore::save`] (or by PyTorch, if every
    /// tensor is `F32`).
    pub fn load(path: &Path) -> Result<TensorStore, StoreError> {
        let bytes = fs::read(path).map_err(|e| file_err(path, format_args!("cannot read: {e}")))?;
        Self::from_bytes(&bytes).map_err(|problem| file_err(path, problem))
    }

    /// Parse safetensors file contents; the error is the problem, without the path.
    pub fn from_bytes(bytes: &[u8]) -> Result<TensorStore, String> {
        let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| explain(bytes, &e))?;
        let data = bytes.get(8 + n..).unwrap_or_default();
        let mut store = TensorStore::new();
        if let Some(m) = meta.metadata() {
            store.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        // In file order, so that the first bad tensor reported is always the same one.
        for name in meta.offset_keys() {
            let Some(info) = meta.info(&name) else {
                continue;
            };
            if info.dtype != Dtype::F32 {
                return Err(format!(
                    "tensor `{name}` has dtype {}, expected F32",
                    info.dtype
                ));
            }
            let shape = info.shape.clone();
            let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let (start, end) = info.data_offsets;
            let raw = data.get(start..end).unwrap_or_default();
            if count.and_then(|c| c.checked_mul(4)) != Some(end.wrapping_sub(start))
                || raw.len() != end.wrapping_sub(start)
            {
                return Err(format!(
                    "tensor `{name}`: shape {shape:?} does not match its {} data bytes",
                    raw.len()
                ));
            }
            let values = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            store.tensors.insert(
                name,
                Tensor {
                    shape,
                    data: values,
                },
            );
        }
        verify_checksums(&store)?;
        // Checked: the checksums are the file's business, not the store's.
        store.metadata.remove(CHECKSUMS);
        Ok(store)
    }
}

/// Check every tensor against the [`CHECKSUMS`] entry of the metadata, when there is one
/// (files from other writers have none).
fn verify_checksums(store: &TensorStore) -> Result<(), String> {
    let Some(text) = store.metadata.get(CHECKSUMS) else {
        return Ok(());
    };
    let sums: BTreeMap<String, u32> = serde_json::from_str(text)
        .map_err(|_| format!("corrupt metadata: `{CHECKSUMS}` is not a map of checksums"))?;
    if sums.len() != store.tensors.len() {
        return Err(format!(
            "corrupt: {} checksums for {} tensors",
            sums.len(),
            store.tensors.len()
        ));
    }
    for (name, t) in &store.tensors {
        match sums.get(name) {
            Some(&sum) if sum == crc32(&t.data) => {}
            Some(_) => return Err(format!("corrupt: tensor `{name}` fails its checksum")),
            None => return Err(format!("corrupt: tensor `{name}` has no checksum")),
        }
    }
    Ok(())
}

/// A one-line description of why `bytes` is not a valid safetensors file.
fn explain(bytes: &[u8], e: &SafeTensorError) -> String {
    let len = bytes.len();
    let declared = bytes
        .get(..8)
        .map(|h| u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]));
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!("not a safetensors file (truncated: {len} bytes, shorter than the 8-byte header length)")
        }
        SafeTensorError::HeaderTooLarge => format!(
            "not a safetensors file (header length {} is over 100 MB)",
            declared.unwrap_or(0)
        ),
        SafeTensorError::InvalidHeaderLength => format!(
            "truncated or not a safetensors file: header length {} but only {} bytes follow it",
            declared.unwrap_or(0),
            len.saturating_sub(8)
        ),
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            one_line(format_args!(
                "not a safetensors file or corrupt header ({e})"
            ))
        }
        SafeTensorError::MetadataIncompleteBuffer => match data_end(bytes) {
            Some(end) if end > len => {
                format!("truncated: the file has {len} bytes, its header needs {end}")
            }
            Some(end) if end < len => {
                format!(
                    "corrupt: {} unexpected bytes after the tensor data",
                    len - end
                )
            }
            _ => "corrupt: tensor data do not match the file size".to_string(),
        },
        SafeTensorError::TensorInvalidInfo => {
            "corrupt header: a tensor's shape and dtype do not match its data length".to_string()
        }
        _ => one_line(format_args!("corrupt header ({e})")),
    }
}

/// File size the header declares (header plus the end of the last tensor), if it parses.
fn data_end(bytes: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let mut end = 0usize;
    for (k, v) in header.as_object()? {
        if k == "__metadata__" {
            continue;
        }
        let e = v.get("data_offsets")?.get(1)?.as_u64()?;
        end = end.max(usize::try_from(e).ok()?);
    }
    end.checked_add(8)?.checked_add(n)
}

/// Metadata key of the tensors' checksums: a JSON object of CRC-32 values (of each tensor's
/// little-endian bytes) by tensor name, checked on load.
pub const CHECKSUMS: &str = "crc32";

/// Write `tensors` (unique names) and `metadata` to `path` as a safetensors file, atomically
/// ([`atomic_write_with`]), with a [`CHECKSUMS`] entry added to the metadata. The file is
/// streamed: the header, then each tensor's bytes through a small buffer, so writing needs no
/// memory beyond the tensors themselves.
pub fn save_tensors<'a>(
    path: &Path,
    tensors: impl Iterator<Item = (String, &'a Tensor)>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    let tensors: Vec<(String, &Tensor)> = tensors.collect();
    let mut header = serde_json::Map::new();
    let mut sums = serde_json::Map::new();
    let mut at = 0usize;
    for (name, t) in &tensors {
        let end = at + t.data.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [at, end]}),
        );
        sums.insert(name.clone(), serde_json::json!(crc32(&t.data)));
        at = end;
    }
    let mut meta: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    meta.insert(
        CHECKSUMS.into(),
        serde_json::Value::String(serde_json::Value::Object(sums).to_string()),
    );
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    // The data starts 8-byte aligned, as safetensors writes it.
    head.resize(head.len().next_multiple_of(8), b' ');
    atomic_write_with(path, |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        let mut buf = [0u8; 64 * 1024];
        for (_, t) in &tensors {
            for chunk in t.data.chunks(buf.len() / 4) {
                for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf[..chunk.len() * 4])?;
            }
        }
        Ok(())
    })
    .map_err(|e| file_err(path, format_args!("cannot write: {e}")))
}

/// CRC-32 of the little-endian bytes of `data`.
fn crc32(data: &[f32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for chunk in data.chunks(4096) {
        let mut buf = [0u8; 4 * 4096];
        for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
    h.finalize()
}

/// Write `bytes` to `path` atomically (see [`atomic_write_with`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

/// Write `path` atomically with `fill`: write a temporary file `.{name}.tmp-{pid}` in the same
/// directory, flush it to disk, rename it over `path`, then flush the directory (where the
/// platform allows). A crash at any point leaves either the old file or the new one, never a
/// partial one. On error the temporary file is removed and `path` is untouched.
pub fn atomic_write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = io::BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        fill(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable. Not every platform can open or sync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove the temporary files an interrupted [`atomic_write_with`] left in `dir`
/// (`.{name}.tmp-{pid}`), whatever process wrote them. Best effort: errors are ignored.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = name.starts_with('.')
            && name
                .rsplit_once(".tmp-")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The PyTorch-style name of a tensor: `units.{u}.{index}.{name}`, `heads.{u}.{index}.{name}`
/// or `classifier.{index}.{name}` (see [`nf_core::tensors`]).
pub fn tensor_name(t: &TensorRef) -> String {
    match t.part {
        Part::Unit(u) => format!("units.{u}.{}.{}", t.index, t.name),
        Part::Head(u) => format!("heads.{u}.{}.{}", t.index, t.name),
        Part::Classifier => format!("classifier.{}.{}", t.index, t.name),
    }
}

/// Prefix of the name of a parameter's momentum buffer in checkpoints.
pub const MOMENTUM_PREFIX: &str = "momentum.";

fn shape_of(t: &TensorRef) -> Vec<usize> {
    t.shape[..t.ndim()].to_vec()
}

/// What holds named tensors in an arena: a block being trained, or a forward-only chain.
pub trait Tensors {
    /// Call `f` for every tensor, in arena order.
    fn each(&self, f: &mut dyn FnMut(TensorRef));
}

impl Tensors for BlockLayout<'_> {
    fn each(&self, f: &mut dyn FnMut(TensorRef)) {
        visit(self, f)
    }
}

impl Tensors for InferLayout<'_> {
    fn each(&self, f: &mut dyn FnMut(TensorRef)) {
        visit_chain(self, f)
    }
}

/// Read every tensor of the block or chain (parameters and BN running statistics) from the
/// backend into `store` under its [`tensor_name`]; with `momentum`, also each parameter's SGD
/// momentum under `momentum.{name}`. Queued work must be finished (the caller syncs the
/// backend first).
pub fn read_block<B: Backend>(
    be: &mut B,
    layout: &impl Tensors,
    store: &mut TensorStore,
    momentum: bool,
) {
    layout.each(&mut |t| {
        let name = tensor_name(&t);
        let mut data = vec![0.0; t.region.len()];
        be.read(t.region, &mut data);
        if momentum && t.kind == Kind::Param {
            let mut m = vec![0.0; t.momentum.len()];
            be.read(t.momentum, &mut m);
            store.insert(format!("{MOMENTUM_PREFIX}{name}"), shape_of(&t), m);
        }
        store.insert(name, shape_of(&t), data);
    });
}

/// Write the tensors of a block or chain from `store` into the backend (the reverse of
/// [`read_block`]).
/// Every tensor is checked before anything is written: a missing tensor (or, with `momentum`,
/// a missing momentum buffer) or a shape mismatch is an error naming the tensor, and leaves the
/// arena untouched.
pub fn write_block<B: Backend>(
    be: &mut B,
    layout: &impl Tensors,
    store: &TensorStore,
    momentum: bool,
) -> Result<(), StoreError> {
    // (name, where it goes, the shape it must have)
    let mut writes = Vec::new();
    layout.each(&mut |t| {
        let name = tensor_name(&t);
        if momentum && t.kind == Kind::Param {
            writes.push((format!("{MOMENTUM_PREFIX}{name}"), t.momentum, shape_of(&t)));
        }
        writes.push((name, t.region, shape_of(&t)));
    });
    let mut found = Vec::with_capacity(writes.len());
    for (name, region, expected) in &writes {
        let tensor = store
            .get(name)
            .ok_or_else(|| StoreError::Missing { name: name.clone() })?;
        if tensor.shape != *expected || tensor.data.len() != region.len() {
            let found = if tensor.shape == *expected {
                vec![tensor.data.len()]
            } else {
                tensor.shape.clone()
            };
            return Err(StoreError::Shape {
                name: name.clone(),
                expected: expected.clone(),
                found,
            });
        }
        found.push((*region, tensor));
    }
    for (region, tensor) in found {
        be.write(region, &tensor.data);
    }
    Ok(())
}
