//! Writing a safetensors file one tensor at a time: the header first (from names, dtypes and
//! shapes), then each tensor's bytes in order, so no more than one tensor is ever in memory.

use crate::{Error, Result};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Name.
    pub name: String,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
}

impl TensorEntry {
    /// Bytes of data.
    pub fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }
}

/// A safetensors file being written tensor by tensor, in the order of its entries.
pub struct SafetensorsStream {
    path: PathBuf,
    writer: BufWriter<File>,
    entries: Vec<TensorEntry>,
    next: usize,
}

impl SafetensorsStream {
    /// Create `path` and write the header for `entries` (data in that order) and `metadata`.
    pub fn create(
        path: &Path,
        metadata: &BTreeMap<String, String>,
        entries: Vec<TensorEntry>,
    ) -> Result<SafetensorsStream> {
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("string map"));
        }
        let mut offset = 0usize;
        for e in &entries {
            let end = offset + e.byte_len();
            header.insert(
                e.name.clone(),
                serde_json::json!({ "dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, end] }),
            );
            offset = end;
        }
        let mut bytes = serde_json::to_vec(&header).map_err(|e| Error::Other(e.to_string()))?;
        while bytes.len() % 8 != 0 {
            bytes.push(b' ');
        }
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut writer = BufWriter::with_capacity(8 << 20, file);
        writer.write_all(&(bytes.len() as u64).to_le_bytes()).map_err(|e| Error::io(path, e))?;
        writer.write_all(&bytes).map_err(|e| Error::io(path, e))?;
        Ok(SafetensorsStream { path: path.to_path_buf(), writer, entries, next: 0 })
    }

    /// Write the next tensor's bytes (their length must match its entry).
    pub fn write_next(&mut self, bytes: &[u8]) -> Result<()> {
        let entry = self
            .entries
            .get(self.next)
            .ok_or_else(|| Error::Other(format!("{}: more tensors written than declared", self.path.display())))?;
        if bytes.len() != entry.byte_len() {
            return Err(Error::bad_tensor(
                &entry.name,
                format!("{} bytes, expected {}", bytes.len(), entry.byte_len()),
            ));
        }
        self.writer.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        self.next += 1;
        Ok(())
    }

    /// Flush and sync; every declared tensor must have been written.
    pub fn finish(self) -> Result<()> {
        if self.next != self.entries.len() {
            return Err(Error::Other(format!(
                "{}: {} of {} tensors written",
                self.path.display(),
                self.next,
                self.entries.len()
            )));
        }
        let file = self.writer.into_inner().map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}
