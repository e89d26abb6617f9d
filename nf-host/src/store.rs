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
use nf_core::layout::BlockLayout;
use nf_core::tensors::{visit, Kind, Part, TensorRef};
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

    /// Write the store to `path` as a safetensors file, atomically: after a crash at any point
    /// the file holds either its old contents or the new ones.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let bytes = self
            .to_bytes()
            .map_err(|e| file_err(path, format_args!("cannot encode: {e}")))?;
        atomic_write(path, &bytes).map_err(|e| file_err(path, format_args!("cannot write: {e}")))
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
        Ok(store)
    }
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

/// Write `bytes` to `path` atomically: write a temporary file `.{name}.tmp-{pid}` in the same
/// directory, flush it to disk, rename it over `path`, then flush the directory (where the
/// platform allows). A crash at any point leaves either the old file or the new one, never a
/// partial one. On error the temporary file is removed and `path` is untouched.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
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
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
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

/// Read every tensor of the block (parameters and BN running statistics) from the backend into
/// `store` under its [`tensor_name`]; with `momentum`, also each parameter's SGD momentum under
/// `momentum.{name}`. Queued work must be finished (the caller syncs the backend first).
pub fn read_block<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    store: &mut TensorStore,
    momentum: bool,
) {
    visit(layout, |t| {
        let name = tensor_name(&t);
        let mut data = vec![0.0; t.region.len];
        be.read(t.region, &mut data);
        if momentum && t.kind == Kind::Param {
            let mut m = vec![0.0; t.momentum.len];
            be.read(t.momentum, &mut m);
            store.insert(format!("{MOMENTUM_PREFIX}{name}"), shape_of(&t), m);
        }
        store.insert(name, shape_of(&t), data);
    });
}

/// Write the block's tensors from `store` into the backend (the reverse of [`read_block`]).
/// Every tensor is checked before anything is written: a missing tensor (or, with `momentum`,
/// a missing momentum buffer) or a shape mismatch is an error naming the tensor, and leaves the
/// arena untouched.
pub fn write_block<B: Backend>(
    be: &mut B,
    layout: &BlockLayout,
    store: &TensorStore,
    momentum: bool,
) -> Result<(), StoreError> {
    // (name, where it goes, the shape it must have)
    let mut writes = Vec::new();
    visit(layout, |t| {
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
        if tensor.shape != *expected || tensor.data.len() != region.len {
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
