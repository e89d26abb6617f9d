//! The header of a NumPy `.npy` file, parsed strictly.
//!
//! Format (NumPy's `format.py`, versions 1.0, 2.0 and 3.0): the magic `\x93NUMPY`, a major and
//! a minor version byte, the header's length (`u16` little-endian in version 1, `u32` in 2 and
//! 3), then the header: a Python dict literal `{'descr': '|u1', 'fortran_order': False,
//! 'shape': (60000, 28, 28), }` padded with spaces and ended by a newline. The data follows,
//! `product(shape) * itemsize` bytes.
//!
//! Only what `numpy.save` writes for a plain array is accepted: the three keys once each, a
//! simple dtype string (no structured dtypes), non-negative integer dimensions. The header is
//! at most [`MAX_HEADER`] bytes (NumPy's own reader refuses headers over 10,000 by default), so
//! no claim in the file makes this allocate more than that.

use std::path::Path;

use super::read::{open, read_error, read_up_to};
use super::DataError;

/// Longest header read (bytes after the length field).
pub(super) const MAX_HEADER: usize = 1 << 16;

/// A simple dtype: `<u1`, `|i8`, `<f4`, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Dtype {
    /// The dtype string as written in the header.
    pub text: String,
    /// Kind character: `u` (unsigned), `i` (signed), `f`, `b`, ...
    pub kind: u8,
    /// Bytes per item.
    pub size: usize,
    /// Big-endian (`>`).
    pub big: bool,
}

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// Whether the file is gzipped (`.npy` files are not, but the reader takes either).
    pub gz: bool,
    /// Bytes before the data: magic, version, length field and header.
    pub offset: u64,
    /// The element type.
    pub dtype: Dtype,
    /// The array's dimensions.
    pub shape: Vec<u64>,
}

impl Header {
    /// Bytes of data the header claims: `product(shape) * itemsize`, or `None` on overflow.
    pub fn claim(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size as u64, |acc, &d| acc.checked_mul(d))
    }

    /// The shape as Python prints it: `(60000, 28, 28)`, `(10,)`.
    pub fn shape_text(&self) -> String {
        shape_text(&self.shape)
    }
}

/// `(a, b)` / `(a,)` / `()`.
pub(super) fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    }
}

/// Reads and parses the header of the `.npy` file `path`.
pub(super) fn read(path: &Path) -> Result<Header, DataError> {
    let bad = |p: String| DataError::new(path, p);
    let (mut r, gz) = open(path)?;
    let mut pre = [0u8; 12];
    let got = read_up_to(&mut r, &mut pre[..10]).map_err(|e| read_error(path, gz, e))?;
    if got == 0 {
        return Err(bad("empty file (expected a NumPy .npy header)".into()));
    }
    if got < 8 || &pre[..6] != b"\x93NUMPY" {
        return Err(bad(
            "not a NumPy .npy file (it does not start with the \\x93NUMPY magic)".into(),
        ));
    }
    let (major, minor) = (pre[6], pre[7]);
    let mut offset = 10u64;
    let len = match (major, minor) {
        (1, 0) if got == 10 => usize::from(u16::from_le_bytes([pre[8], pre[9]])),
        (2 | 3, 0) if got == 10 => {
            let more = read_up_to(&mut r, &mut pre[10..]).map_err(|e| read_error(path, gz, e))?;
            if more < 2 {
                return Err(bad(
                    "truncated: the .npy header's length field is cut".into()
                ));
            }
            offset = 12;
            u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize
        }
        (1..=3, 0) => {
            return Err(bad(
                "truncated: the .npy header's length field is cut".into()
            ));
        }
        _ => {
            return Err(bad(format!(
                "unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)"
            )))
        }
    };
    if len > MAX_HEADER {
        return Err(bad(format!(
            "the .npy header claims {len} bytes, more than the {MAX_HEADER} a header may take"
        )));
    }
    let mut text = vec![0u8; len];
    let got = read_up_to(&mut r, &mut text).map_err(|e| read_error(path, gz, e))?;
    if got < len {
        return Err(bad(format!(
            "truncated: the .npy header claims {len} bytes but the file ends after {got}"
        )));
    }
    offset += len as u64;
    let text = std::str::from_utf8(&text)
        .map_err(|_| bad("the .npy header is not text (UTF-8)".into()))?;
    let (descr, fortran, shape) =
        parse_dict(text).map_err(|e| bad(format!("bad .npy header: {e}")))?;
    if fortran {
        return Err(bad(
            "the array is stored in Fortran order (fortran_order: True); save \
             numpy.ascontiguousarray(a) instead"
                .into(),
        ));
    }
    let dtype = parse_dtype(&descr).map_err(|e| bad(format!("bad .npy header: {e}")))?;
    Ok(Header {
        gz,
        offset,
        dtype,
        shape,
    })
}

/// `<u1` / `|u1` / `>i8` / `=f4` ...: byte order, kind, item size.
fn parse_dtype(s: &str) -> Result<Dtype, String> {
    let b = s.as_bytes();
    let (order, rest) = match b.first() {
        Some(o @ (b'<' | b'>' | b'|' | b'=')) => (*o, &b[1..]),
        _ => (b'=', b),
    };
    let bad = || format!("dtype '{s}' is not a simple NumPy type string such as '|u1' or '<i8'");
    let (&kind, digits) = rest.split_first().ok_or_else(bad)?;
    if !kind.is_ascii_alphabetic() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let size: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .filter(|&n| (1..=64).contains(&n))
        .ok_or_else(bad)?;
    Ok(Dtype {
        text: s.to_string(),
        kind,
        size,
        big: order == b'>',
    })
}

/// The header dict: `descr`, `fortran_order`, `shape`, each exactly once, nothing else.
fn parse_dict(text: &str) -> Result<(String, bool, Vec<u64>), String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let dup = match key.as_str() {
            "descr" => {
                if p.peek() == Some(b'[') {
                    return Err("structured dtypes (a list as 'descr') are not supported".into());
                }
                descr.replace(p.string()?).is_some()
            }
            "fortran_order" => fortran.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            other => return Err(format!("unknown key '{other}'")),
        };
        if dup {
            return Err(format!("key '{key}' given twice"));
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("text after the closing '}'".into());
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        (None, _, _) => Err("no 'descr' key".into()),
        (_, None, _) => Err("no 'fortran_order' key".into()),
        (_, _, None) => Err("no 'shape' key".into()),
    }
}

/// A cursor over the header text.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", char::from(c), self.i))
        }
    }

    /// `'...'` or `"..."` without escapes (none occur in the keys and dtypes NumPy writes).
    fn string(&mut self) -> Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.i)),
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or("unterminated string")?;
        let body = &self.s[start..start + len];
        if body.contains(&b'\\') {
            return Err("escapes in strings are not supported".into());
        }
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(body).into_owned())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }

    /// `()`, `(n,)`, `(a, b, ...)` with an optional trailing comma.
    fn tuple(&mut self) -> Result<Vec<u64>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            if dims.len() == 32 {
                return Err("more than 32 dimensions".into());
            }
            let start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let d = digits.parse::<u64>().map_err(|_| {
                if digits.is_empty() {
                    format!("expected a dimension (a non-negative integer) at byte {start}")
                } else {
                    format!("dimension {digits} is too large")
                }
            })?;
            dims.push(d);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                if dims.len() == 1 {
                    // `(n)` is an int in Python, not a tuple; NumPy writes `(n,)`.
                    return Err("shape (n) is not a tuple (NumPy writes (n,))".into());
                }
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_headers_parse() {
        let (d, f, s) = parse_dict(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (60000, 28, 28), }    \n",
        )
        .unwrap();
        assert_eq!((d.as_str(), f, s), ("|u1", false, vec![60000, 28, 28]));
        let (_, _, s) =
            parse_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (10,), }").unwrap();
        assert_eq!(s, vec![10]);
        let (_, f, s) =
            parse_dict("{\"shape\": (), \"fortran_order\": True, \"descr\": \"<f4\"}").unwrap();
        assert_eq!((f, s), (true, vec![]));
        let t = parse_dtype("<i8").unwrap();
        assert_eq!((t.kind, t.size, t.big), (b'i', 8, false));
        assert!(parse_dtype(">u2").unwrap().big);
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "{",
            "{'descr': '|u1', 'fortran_order': False}",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (3)}",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (-3,)}",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), 'x': 1}",
            "{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '|u1', 'fortran_order': Maybe, 'shape': (3,)}",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (3,)} x",
        ] {
            assert!(parse_dict(bad).is_err(), "{bad}");
        }
        for bad in ["", "u", "<u", "<u0", "<1", "|u1x"] {
            assert!(parse_dtype(bad).is_err(), "{bad}");
        }
    }
}
