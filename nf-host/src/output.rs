//! Where commands write: every output target is checked against what the command reads, and
//! a run directory is locked for the run that writes into it.
//!
//! - [`Inputs`]: the files a command reads, as (device, inode) pairs, so that a path spelt
//!   differently, a symbolic link or a hard link to an input is still recognised;
//! - [`file_target`]: the check of one output file (`nf plan --svg`, `nf eval --predictions`,
//!   `nf report --out`, `nf export --onnx`): refused in one line naming the flag when it is an
//!   input, a directory, or anything but a regular file (a device node such as `/dev/null`, a
//!   FIFO, a socket); a symbolic link to a regular file is written through (the file it names
//!   is replaced, the link stays);
//! - [`dir_target`]: the same for a run directory (`nf train --out`) and the files a run writes
//!   into it;
//! - [`RunLock`]: the exclusive lock a run holds on its directory, so that a second run on the
//!   same `--out` is refused while the first runs. The lock is an advisory `flock` on
//!   [`LOCK_FILE`], released by the kernel when its process ends however it ends, so a killed
//!   run leaves no lock that blocks `--resume`.
//!
//! Writers never open an existing target for writing: they write a temporary file beside it and
//! rename it over the target ([`crate::store::atomic_write_with`]); that is why a target that is
//! not a regular file is refused rather than replaced.
use std::fs::{self, File, Metadata, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::CliError;

/// The help heading of every flag that names something a command writes (the hardening test
/// finds the output flags by it).
pub const OUTPUT: &str = "Output";

/// How deep [`Inputs::data`] walks a data directory (image folders: `DIR/train/<class>/...`).
pub const DATA_DEPTH: usize = 8;

/// The lock file a run holds in its directory ([`RunLock`]).
pub const LOCK_FILE: &str = ".nf-run.lock";

/// The identity of a file: device and inode where the platform has them, else its canonical
/// path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileId {
    #[cfg(unix)]
    dev_ino: (u64, u64),
    #[cfg(not(unix))]
    path: PathBuf,
}

impl FileId {
    /// The identity of `path` (following symbolic links), if it exists.
    fn of(path: &Path) -> Option<FileId> {
        let meta = fs::metadata(path).ok()?;
        Some(Self::from_meta(path, &meta))
    }

    #[cfg(unix)]
    fn from_meta(_path: &Path, meta: &Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev_ino: (meta.dev(), meta.ino()),
        }
    }

    #[cfg(not(unix))]
    fn from_meta(path: &Path, _meta: &Metadata) -> FileId {
        FileId {
            path: fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        }
    }
}

/// Files read while the command line was parsed (the JSON model descriptions of `--model`),
/// as ([`FileId`], the path as given).
static PARSED_INPUTS: Mutex<Vec<(FileId, PathBuf)>> = Mutex::new(Vec::new());

/// Record that `path` was read as `--model` while parsing the command line, so that every
/// [`Inputs`] of this process includes it.
pub fn note_model_file(path: &Path) {
    if let Some(id) = FileId::of(path) {
        if let Ok(mut v) = PARSED_INPUTS.lock() {
            v.push((id, path.to_path_buf()));
        }
    }
}

/// The files a command reads: each with the flag (or argument) that named it.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    files: Vec<(FileId, String, PathBuf)>,
}

impl Inputs {
    /// The inputs every command has: the model descriptions read while parsing (`--model`).
    pub fn new() -> Inputs {
        let mut me = Inputs::default();
        if let Ok(v) = PARSED_INPUTS.lock() {
            for (id, p) in v.iter() {
                me.files.push((id.clone(), "--model".into(), p.clone()));
            }
        }
        me
    }

    /// Add the file at `path`, named by `flag`, if it exists (following symbolic links).
    pub fn file(&mut self, flag: &str, path: &Path) {
        if let Some(id) = FileId::of(path) {
            self.files.push((id, flag.into(), path.to_path_buf()));
        }
    }

    /// Add `path` named by `flag`: a file, or for a directory (a run directory) its files
    /// `names` the command reads.
    pub fn path(&mut self, flag: &str, path: &Path, names: &[&str]) {
        if path.is_dir() {
            for name in names {
                self.file(flag, &path.join(name));
            }
        } else {
            self.file(flag, path);
        }
    }

    /// Add the data set `--data` names: nothing for `synthetic:...`, else the file, or every
    /// file under the directory (IDX and NumPy files, CIFAR batches in their subdirectory, image
    /// folders: class folders are walked recursively, [`DATA_DEPTH`] levels deep at most).
    pub fn data(&mut self, data: &str) {
        if !data.starts_with("synthetic:") {
            self.walk(Path::new(data), DATA_DEPTH);
        }
    }

    fn walk(&mut self, path: &Path, depth: usize) {
        if !path.is_dir() {
            self.file("--data", path);
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(entries) = fs::read_dir(path) else {
            return;
        };
        for e in entries.flatten() {
            self.walk(&e.path(), depth - 1);
        }
    }

    /// The input `id` is, as `FLAG PATH`.
    fn find(&self, id: &FileId) -> Option<String> {
        self.files
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, flag, p)| format!("{flag} {}", p.display()))
    }
}

/// What kind of file `meta` describes, in words.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn refuse(flag: &str, path: &Path, why: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{flag} {}: {why}", path.display()))
}

/// Check the output file `path` of `flag` against `inputs`; the path to write (a symbolic link
/// resolved to the file it names). Refused, in one line naming the flag: an input of the
/// command (compared as device and inode), a directory, anything but a regular file, a
/// dangling symbolic link. A path that does not exist yet is accepted (its directory is checked
/// when the file is written).
pub fn file_target(flag: &str, path: &Path, inputs: &Inputs) -> Result<PathBuf, CliError> {
    if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(refuse(flag, path, "names a directory, not a file"));
    }
    let Ok(link) = fs::symlink_metadata(path) else {
        return Ok(path.to_path_buf());
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(_) if link.file_type().is_symlink() => {
            return Err(refuse(
                flag,
                path,
                "a symbolic link to nothing; give the file itself",
            ))
        }
        Err(e) => return Err(refuse(flag, path, format!("cannot inspect: {e}"))),
    };
    if let Some(input) = inputs.find(&FileId::from_meta(path, &meta)) {
        return Err(refuse(
            flag,
            path,
            format!("is the input {input}; writing it would destroy it"),
        ));
    }
    if !meta.is_file() {
        return Err(refuse(
            flag,
            path,
            format!(
                "is {}; nf writes only regular files (it replaces them whole)",
                kind(&meta)
            ),
        ));
    }
    if link.file_type().is_symlink() {
        return fs::canonicalize(path)
            .map_err(|e| refuse(flag, path, format!("cannot resolve: {e}")));
    }
    Ok(path.to_path_buf())
}

/// Check the run directory `dir` of `flag` and the files `names` a run writes into it against
/// `inputs`. Refused, in one line naming the flag: an existing `dir` that is not a directory (a
/// file, a device node, a FIFO, a symbolic link to one of them), and any of `dir/NAME` that
/// [`file_target`] refuses.
pub fn dir_target(flag: &str, dir: &Path, names: &[&str], inputs: &Inputs) -> Result<(), CliError> {
    if let Ok(meta) = fs::metadata(dir) {
        if !meta.is_dir() {
            let why = match inputs.find(&FileId::from_meta(dir, &meta)) {
                Some(input) => format!("is the input {input}, not a directory"),
                None => format!("is {}, not a directory", kind(&meta)),
            };
            return Err(refuse(flag, dir, why));
        }
    } else if fs::symlink_metadata(dir).is_ok() {
        return Err(refuse(flag, dir, "a symbolic link to nothing"));
    }
    for name in names {
        file_target(flag, &dir.join(name), inputs)?;
    }
    Ok(())
}

/// Whether the output paths `a` and `b` (as [`file_target`] returned them) name one file: the
/// same path, or, where they exist, the same device and inode.
pub fn same_target(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::canonicalize(dir)
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    a == b
        || (canon(a).is_some() && canon(a) == canon(b))
        || FileId::of(a).is_some_and(|id| FileId::of(b) == Some(id))
}

/// An exclusive lock on a run directory, held until dropped (or until the process ends, however
/// it ends: the kernel releases it). See the module documentation.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Lock the run directory `dir` (which must exist) for this process; `flag` names it in
    /// the error. Refused in one line when another process holds the lock.
    pub fn acquire(flag: &str, dir: &Path) -> Result<RunLock, CliError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| refuse(flag, dir, format!("cannot create the run lock: {e}")))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(refuse(
                flag,
                dir,
                "another nf run is writing into this directory (it holds the run lock); wait \
                 for it to end or choose another directory",
            )),
            Err(fs::TryLockError::Error(e)) => {
                Err(refuse(flag, dir, format!("cannot take the run lock: {e}")))
            }
        }
    }
}

/// A run directory taken for a run: created if needed and locked ([`RunLock`]). Dropped, it
/// releases the lock; a directory it created that holds nothing but the lock file (the run
/// was refused before it wrote anything) is removed.
#[derive(Debug)]
pub struct RunDir {
    dir: PathBuf,
    created: bool,
    lock: Option<RunLock>,
}

impl RunDir {
    /// Create `dir` (named by `flag` in errors) if it does not exist and lock it; refused in
    /// one line when another process holds its lock.
    pub fn take(flag: &str, dir: &Path) -> Result<RunDir, CliError> {
        let created = !dir.exists();
        fs::create_dir_all(dir)
            .map_err(|e| refuse(flag, dir, format!("cannot create the directory: {e}")))?;
        let mut me = RunDir {
            dir: dir.to_path_buf(),
            created,
            lock: None,
        };
        me.lock = Some(RunLock::acquire(flag, dir)?);
        Ok(me)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let held = self.lock.take().is_some();
        if !self.created {
            return;
        }
        let only_lock = fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| held && e.file_name() == LOCK_FILE)
        });
        if only_lock {
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nf-output-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn inputs_are_recognised_through_links_and_other_spellings() {
        let d = tmp("links");
        let input = d.join("in.bin");
        fs::write(&input, b"x").unwrap();
        let mut inputs = Inputs::default();
        inputs.file("MODEL", &input);
        let other = d.join("..").join(d.file_name().unwrap()).join("in.bin");
        let hard = d.join("hard.bin");
        fs::hard_link(&input, &hard).unwrap();
        let mut paths = vec![input.clone(), other, hard];
        #[cfg(unix)]
        {
            let soft = d.join("soft.bin");
            std::os::unix::fs::symlink(&input, &soft).unwrap();
            paths.push(soft);
        }
        for p in paths {
            let e = file_target("--onnx", &p, &inputs).unwrap_err().to_string();
            assert!(
                e.starts_with("--onnx ") && e.contains("is the input MODEL"),
                "{e}"
            );
        }
        let fresh = d.join("out.onnx");
        assert_eq!(file_target("--onnx", &fresh, &inputs).unwrap(), fresh);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn every_file_of_a_data_directory_is_an_input() {
        let d = tmp("data");
        let image = d.join("train").join("cat").join("a.png");
        fs::create_dir_all(image.parent().unwrap()).unwrap();
        fs::write(&image, b"png").unwrap();
        fs::write(d.join("x_train.npy"), b"npy").unwrap();
        let mut inputs = Inputs::default();
        inputs.data(d.to_str().unwrap());
        for p in [image, d.join("x_train.npy")] {
            let e = file_target("--svg", &p, &inputs).unwrap_err().to_string();
            assert!(e.contains("is the input --data"), "{e}");
        }
        let mut none = Inputs::default();
        none.data("synthetic:1x8x8:10");
        assert!(none.files.is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_link_to_a_regular_file_is_written_through() {
        let d = tmp("through");
        let target = d.join("real.html");
        fs::write(&target, b"old").unwrap();
        #[cfg(unix)]
        {
            let link = d.join("link.html");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let to = file_target("--out", &link, &Inputs::default()).unwrap();
            assert_eq!(to, fs::canonicalize(&target).unwrap());
            let dangling = d.join("dangling.html");
            std::os::unix::fs::symlink(d.join("nothing"), &dangling).unwrap();
            assert!(file_target("--out", &dangling, &Inputs::default()).is_err());
        }
        assert!(file_target("--out", &d, &Inputs::default()).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_run_lock_is_exclusive_and_released_on_drop() {
        let d = tmp("lock");
        let first = RunLock::acquire("--out", &d).unwrap();
        let e = RunLock::acquire("--out", &d).unwrap_err().to_string();
        assert!(e.contains("another nf run"), "{e}");
        drop(first);
        RunLock::acquire("--out", &d).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}
