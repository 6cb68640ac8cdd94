//! Writing a safetensors file one tensor at a time: the header first (from names, dtypes and
//! shapes), then each tensor's bytes in order, so no more than one tensor is ever in memory.

use crate::{Error, Result};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
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
    unsynced: u64,
}

/// Written bytes after which the stream syncs them to disk. Syncing as it goes keeps the disk
/// busy while the caller computes the next tensors (the writer runs on its own thread), rather
/// than leaving all of it to the final sync.
const SYNC_EVERY: u64 = 256 << 20;

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
        Ok(SafetensorsStream { path: path.to_path_buf(), writer, entries, next: 0, unsynced: 0 })
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
        self.written(bytes.len() as u64)
    }

    /// Write the next `count` tensors as a copy of `source`'s bytes from `offset` on (their
    /// declared lengths, back to back). The copy runs in the kernel (`copy_file_range` where the
    /// platform has it), so untouched tensors never pass through this process's memory.
    pub fn copy_next(&mut self, source: &File, source_path: &Path, offset: u64, count: usize) -> Result<()> {
        let end = self.next + count;
        if end > self.entries.len() {
            return Err(Error::Other(format!("{}: more tensors written than declared", self.path.display())));
        }
        let len: u64 = self.entries[self.next..end].iter().map(|e| e.byte_len() as u64).sum();
        self.writer.flush().map_err(|e| Error::io(&self.path, e))?;
        let mut reader = source;
        reader.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(source_path, e))?;
        let copied =
            std::io::copy(&mut reader.take(len), self.writer.get_mut()).map_err(|e| Error::io(&self.path, e))?;
        if copied != len {
            return Err(Error::bad_checkpoint(
                source_path,
                format!("file ended after {copied} of {len} bytes from offset {offset} (truncated while copying?)"),
            ));
        }
        self.next = end;
        self.written(len)
    }

    fn written(&mut self, bytes: u64) -> Result<()> {
        self.unsynced += bytes;
        if self.unsynced >= SYNC_EVERY {
            self.writer.flush().map_err(|e| Error::io(&self.path, e))?;
            self.writer.get_ref().sync_data().map_err(|e| Error::io(&self.path, e))?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Flush (the caller syncs: see [`super::StagedOutput::commit`]); every declared tensor must
    /// have been written.
    pub fn finish(self) -> Result<()> {
        if self.next != self.entries.len() {
            return Err(Error::Other(format!(
                "{}: {} of {} tensors written",
                self.path.display(),
                self.next,
                self.entries.len()
            )));
        }
        self.writer.into_inner().map_err(|e| Error::io(&self.path, e.into_error()))?;
        Ok(())
    }
}
