//! A check of a GGUF header before candle reads it: counts and lengths that fit in the file,
//! value types that exist, and a usable `general.alignment` (candle divides by it).

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

const MAGIC: u32 = 0x4655_4747; // "GGUF", little-endian

struct Cursor<R> {
    reader: R,
    left: u64,
    v1: bool,
    path: std::path::PathBuf,
}

impl<R: Read> Cursor<R> {
    fn bad(&self, message: String) -> Error {
        Error::bad_checkpoint(&self.path, format!("not a readable GGUF file: {message}"))
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        if n > self.left {
            return Err(self.bad(format!("{what} needs {n} bytes, the file has {} left", self.left)));
        }
        let mut buf = vec![0u8; n as usize];
        self.reader.read_exact(&mut buf).map_err(|e| Error::io(&self.path, e))?;
        self.left -= n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        if n > self.left {
            return Err(self.bad(format!("{what} needs {n} bytes, the file has {} left", self.left)));
        }
        let copied = std::io::copy(&mut (&mut self.reader).take(n), &mut std::io::sink())
            .map_err(|e| Error::io(&self.path, e))?;
        if copied != n {
            return Err(self.bad(format!("{what}: the file ends early")));
        }
        self.left -= n;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.bytes(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A count or length: u32 in version 1, u64 after.
    fn len(&mut self, what: &str) -> Result<u64> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|_| self.bad(format!("{what} is not UTF-8")))
    }

    /// Skip one value of `kind`; returns it when it is an unsigned integer (for the alignment).
    fn value(&mut self, kind: u32, key: &str, depth: u32) -> Result<Option<u64>> {
        let size = match kind {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                self.string(&format!("metadata `{key}`"))?;
                return Ok(None);
            }
            9 if depth == 0 => {
                let inner = self.u32(&format!("metadata `{key}` item type"))?;
                let n = self.len(&format!("metadata `{key}` length"))?;
                if n > self.left {
                    return Err(self.bad(format!("metadata `{key}` claims {n} items, more than the file holds")));
                }
                for _ in 0..n {
                    self.value(inner, key, depth + 1)?;
                }
                return Ok(None);
            }
            _ => return Err(self.bad(format!("metadata `{key}` has an unknown value type {kind}"))),
        };
        let b = self.bytes(size, &format!("metadata `{key}`"))?;
        Ok(match kind {
            0 => Some(u64::from(b[0])),
            2 => Some(u64::from(u16::from_le_bytes([b[0], b[1]]))),
            4 => Some(u64::from(u32::from_le_bytes(b[..4].try_into().expect("4 bytes")))),
            10 => Some(u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))),
            _ => None,
        })
    }
}

/// Check `path`'s GGUF header (everything candle's reader trusts) without reading tensor data.
pub(super) fn check(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let left = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut c = Cursor { reader: std::io::BufReader::new(file), left, v1: false, path: path.to_path_buf() };
    if c.u32("the magic number")? != MAGIC {
        return Err(c.bad("it does not start with `GGUF`".into()));
    }
    let version = c.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(c.bad(format!("unknown GGUF version {version}")));
    }
    c.v1 = version == 1;
    let tensors = c.len("the tensor count")?;
    let kvs = c.len("the metadata count")?;
    // Every entry takes at least 8 bytes of header.
    if tensors.saturating_add(kvs).saturating_mul(8) > c.left {
        return Err(c.bad(format!("it claims {tensors} tensors and {kvs} metadata entries, more than the file holds")));
    }
    for _ in 0..kvs {
        let key = c.string("a metadata key")?;
        let kind = c.u32(&format!("metadata `{key}` type"))?;
        let value = c.value(kind, &key, 0)?;
        if key == "general.alignment" {
            match value {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => {}
                _ => return Err(c.bad(format!("`general.alignment` must be a power of two (got {value:?})"))),
            }
        }
    }
    for _ in 0..tensors {
        let name = c.string("a tensor name")?;
        let dims = c.u32(&format!("tensor `{name}` rank"))?;
        if dims == 0 || dims > 4 {
            return Err(c.bad(format!("tensor `{name}` has rank {dims}")));
        }
        let mut count: u64 = 1;
        for _ in 0..dims {
            let d = c.len(&format!("tensor `{name}` shape"))?;
            if d == 0 {
                return Err(c.bad(format!("tensor `{name}` has a zero-size dimension")));
            }
            count = count
                .checked_mul(d)
                .filter(|&n| n <= left.saturating_mul(8))
                .ok_or_else(|| c.bad(format!("tensor `{name}`'s shape holds more values than the file could store")))?;
        }
        c.skip(12, &format!("tensor `{name}` type and offset"))?;
    }
    Ok(())
}
