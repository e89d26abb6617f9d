//! Reading data files with bounded memory: opening (gzip told apart by its magic bytes),
//! measuring a file's payload against its header's claim, and streaming exactly the claimed
//! bytes through a fixed-size buffer.
//!
//! Nothing here allocates in proportion to what a file *claims*. The loaders allocate a
//! payload's final buffer only once its length is known to be the claim: for a raw file from
//! its size on disk, for a gzip stream from a first pass that inflates it through a fixed
//! scratch buffer, stopping one byte after the claim ([`Payload::measure`]). A gzip bomb
//! therefore costs time proportional to the claim, and memory no more than the scratch buffer.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use super::DataError;
use crate::size::format_size;

/// Size of the read buffers: the file's `BufReader` and the scratch buffer payloads are
/// streamed through.
pub(crate) const CHUNK: usize = 1 << 16;

/// Opens `path` for reading, transparently gunzipping when it starts with the gzip magic
/// bytes `1f 8b` (whatever its name). Returns the reader and whether it is gzipped.
pub(crate) fn open(path: &Path) -> Result<(Box<dyn Read>, bool), DataError> {
    let file = File::open(path).map_err(|e| {
        let problem = if e.kind() == std::io::ErrorKind::NotFound {
            "missing file".to_string()
        } else {
            format!("cannot open: {e}")
        };
        DataError::new(path, problem)
    })?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(DataError::new(path, "is a directory, expected a data file"));
    }
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut head = [0u8; 2];
    let got = read_up_to(&mut reader, &mut head)
        .map_err(|e| DataError::new(path, format!("read error: {e}")))?;
    let gz = head[..got] == [0x1f, 0x8b];
    // Put the peeked bytes back in front of the rest of the file.
    let stream: Box<dyn Read> = Box::new(Cursor::new(head).take(got as u64).chain(reader));
    if gz {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(stream)), true))
    } else {
        Ok((stream, false))
    }
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
pub(crate) fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The error for a failed read: gzip streams say so, since that is the usual cause.
pub(crate) fn read_error(path: &Path, gz: bool, e: std::io::Error) -> DataError {
    if gz {
        DataError::new(path, format!("unreadable gzip data: {e}"))
    } else {
        DataError::new(path, format!("read error: {e}"))
    }
}

/// An empty vector with room for exactly `n` elements, or an error naming `path` when the
/// allocator refuses (instead of aborting the process).
pub(crate) fn alloc<T>(path: &Path, n: usize, what: &str) -> Result<Vec<T>, DataError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        DataError::new(
            path,
            format!("cannot allocate {} for {what}", format_size(bytes)),
        )
    })?;
    Ok(v)
}

/// How the bytes after a file's header compare with what the header claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Length {
    /// Exactly the claimed bytes, then the end of the file (of the gzip stream).
    Exact,
    /// The file ends after this many bytes, fewer than claimed.
    Short(u64),
    /// More bytes follow the claimed ones.
    Long,
}

/// The payload of a data file: `claim` bytes after a `header`-byte header (both counted in
/// the decompressed stream when the file is gzipped).
pub(crate) struct Payload {
    /// The file.
    pub path: PathBuf,
    /// Whether the file is gzipped (from its magic bytes).
    pub gz: bool,
    /// Bytes of header before the payload.
    pub header: u64,
    /// Payload bytes the header (or, for headerless files, the file size) claims.
    pub claim: u64,
}

impl Payload {
    /// How the file's payload compares with the claim, allocating nothing in proportion to
    /// either: a raw file is measured by its size on disk; a gzip stream is inflated through a
    /// fixed scratch buffer up to one byte past the claim, which also checks its integrity.
    pub fn measure(&self) -> Result<Length, DataError> {
        if self.gz {
            return self.stream(&mut |_| Ok(()));
        }
        let size = std::fs::metadata(&self.path)
            .map_err(|e| DataError::new(&self.path, format!("cannot open: {e}")))?
            .len();
        let body = size.saturating_sub(self.header);
        Ok(match body.cmp(&self.claim) {
            std::cmp::Ordering::Equal => Length::Exact,
            std::cmp::Ordering::Less => Length::Short(body),
            std::cmp::Ordering::Greater => Length::Long,
        })
    }

    /// Feeds the payload to `sink` in chunks of [`CHUNK`] bytes (the last one shorter), never
    /// more than the claim in all, then reads at most one more byte to tell [`Length::Exact`]
    /// from [`Length::Long`]. On [`Length::Short`] `sink` has seen every byte there was.
    pub fn stream(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), DataError>,
    ) -> Result<Length, DataError> {
        self.stream_in(CHUNK, sink)
    }

    /// [`Payload::stream`] in chunks of `chunk` bytes (at least 1): every chunk but the last
    /// is full, so a caller whose records divide `chunk` sees whole records.
    pub fn stream_in(
        &self,
        chunk: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), DataError>,
    ) -> Result<Length, DataError> {
        let chunk = chunk.max(1);
        let (mut r, gz) = open(&self.path)?;
        let err = |e| read_error(&self.path, gz, e);
        let mut buf = vec![0u8; chunk];
        // Skip the header (already parsed by the caller).
        let mut left = self.header;
        while left > 0 {
            let want = left.min(chunk as u64) as usize;
            let got = read_up_to(&mut r, &mut buf[..want]).map_err(err)?;
            if got < want {
                return Ok(Length::Short(0));
            }
            left -= want as u64;
        }
        let mut done = 0u64;
        while done < self.claim {
            let want = (self.claim - done).min(chunk as u64) as usize;
            let got = read_up_to(&mut r, &mut buf[..want]).map_err(err)?;
            sink(&buf[..got])?;
            done += got as u64;
            if got < want {
                return Ok(Length::Short(done));
            }
        }
        let mut one = [0u8; 1];
        Ok(if read_up_to(&mut r, &mut one).map_err(err)? == 0 {
            Length::Exact
        } else {
            Length::Long
        })
    }
}
