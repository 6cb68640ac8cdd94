//! One memory-mapped safetensors file, validated on open.

use crate::{Error, Result};
use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A safetensors file, memory-mapped. The header is parsed and validated when opened
/// (header length, JSON, dtypes, contiguous in-bounds offsets); tensor bytes are read lazily.
pub struct Shard {
    path: PathBuf,
    file: File,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// A borrowed view of one tensor's stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [usize],
    /// Raw little-endian bytes.
    pub data: &'a [u8],
    /// The file it lives in.
    pub file: &'a Path,
}

impl TensorRef<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor as f32 values (F32, F16, BF16).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        super::decode_f32(self.dtype, self.data, self.name)
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("path", &self.path).field("tensors", &self.metadata.tensors().len()).finish()
    }
}

impl Shard {
    /// Open and validate a safetensors file.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; scalpel never writes to its inputs. Like every
        // mmap-based reader, it assumes no other process truncates the file meanwhile.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::bad_checkpoint(path, format!("invalid safetensors file: {}", describe(&e))))?;
        Ok(Shard { path: path.to_path_buf(), file, mmap, header_len, metadata })
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name (as listed in an index's weight map).
    pub fn file_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// Tensor names in the order their bytes are stored.
    pub fn names_in_order(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// Whether this shard holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    /// The open file (for kernel-side copies of stored bytes).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where `name`'s bytes start in the file, if present.
    pub fn file_offset(&self, name: &str) -> Option<u64> {
        self.metadata.info(name).map(|info| (8 + self.header_len + info.data_offsets.0) as u64)
    }

    /// A view of one tensor, if present.
    pub fn tensor<'a>(&'a self, name: &'a str) -> Option<TensorRef<'a>> {
        let info = self.metadata.info(name)?;
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = start + (info.data_offsets.1 - info.data_offsets.0);
        Some(TensorRef { name, dtype: info.dtype, shape: &info.shape, data: &self.mmap[start..end], file: &self.path })
    }

    /// The file's `__metadata__` map (e.g. `{"format": "pt"}`).
    pub fn user_metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }

    /// Total bytes of tensor data.
    pub fn data_len(&self) -> usize {
        self.mmap.len() - 8 - self.header_len
    }

    /// Drop `name`'s pages from this process's mapping (`madvise(MADV_DONTNEED)`), e.g. after a
    /// layer was copied out of it: they stay in the page cache, reclaimable, and are read again
    /// on the next access. Does nothing where unsupported or for an unknown name.
    pub fn release(&self, name: &str) {
        #[cfg(unix)]
        if let Some(info) = self.metadata.info(name) {
            let start = 8 + self.header_len + info.data_offsets.0;
            let len = info.data_offsets.1 - info.data_offsets.0;
            // SAFETY: the map is private and read-only, so its pages always equal the file's:
            // dropping them only means the next access reads them again.
            let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        }
        #[cfg(not(unix))]
        let _ = name;
    }

    /// Hint the kernel that the file will be read front to back.
    pub fn advise_sequential(&self) {
        #[cfg(unix)]
        let _ = self.mmap.advise(memmap2::Advice::Sequential);
    }
}

fn describe(err: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match err {
        E::HeaderTooSmall => "file is shorter than the 8-byte header length (truncated?)".into(),
        E::InvalidHeaderLength => "header length points beyond the end of the file (truncated?)".into(),
        E::HeaderTooLarge => "header length is implausibly large (corrupt file?)".into(),
        E::InvalidHeaderDeserialization(e) => {
            format!("header is not valid safetensors JSON ({e}); unknown dtype?")
        }
        E::InvalidOffset(name) => {
            format!("tensor `{name}` has overlapping or non-contiguous data offsets")
        }
        E::MetadataIncompleteBuffer => "tensor data does not end where the file ends (truncated or padded file)".into(),
        E::TensorInvalidInfo => "a tensor's byte range does not match its dtype and shape".into(),
        other => other.to_string(),
    }
}
