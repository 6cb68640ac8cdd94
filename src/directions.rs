//! The directions file: a safetensors file with one direction (or an orthonormal set) per layer
//! and stream, written by `scalpel probe` and read by `ablate`, `verify`, `generate` and `svd`.
//!
//! Format:
//! - tensors named `{stream}.{layer}` (e.g. `resid_pre.12`), f32, shape `[hidden]` (one
//!   direction) or `[k, hidden]` (k directions); any single tensor with another name (e.g. a
//!   direction exported from another tool) is accepted too;
//! - `__metadata__` (all strings): `format = "scalpel-directions"`, `hidden_size`, and when probe
//!   wrote it `recommended_layer`, `recommended_stream`, `model`, prompt hashes and positions.

use crate::{Error, Result};
use safetensors::tensor::TensorView;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The metadata value of `format`.
pub const FORMAT: &str = "scalpel-directions";

/// One named entry: `k` directions of length `hidden`.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// The tensor name (`resid_pre.12`).
    pub name: String,
    /// The rows, each of length `hidden`, in f32.
    pub rows: Vec<Vec<f32>>,
}

impl Direction {
    /// Vector length.
    pub fn hidden(&self) -> usize {
        self.rows.first().map_or(0, Vec::len)
    }

    /// The stream and layer encoded in the name, when it has the `{stream}.{layer}` form.
    pub fn stream_and_layer(&self) -> Option<(&str, usize)> {
        parse_name(&self.name)
    }

    /// SHA-256 of the rows' little-endian f32 bytes (hex, first 16 characters), for provenance.
    pub fn short_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for row in &self.rows {
            for v in row {
                hasher.update(v.to_le_bytes());
            }
        }
        hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// A loaded directions file.
#[derive(Debug, Clone)]
pub struct DirectionsFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Entries by name.
    pub entries: BTreeMap<String, Direction>,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

/// `{stream}.{layer}` → (stream, layer).
pub fn parse_name(name: &str) -> Option<(&str, usize)> {
    let (stream, layer) = name.rsplit_once('.')?;
    Some((stream, layer.parse().ok()?))
}

/// The tensor name for a stream and layer.
pub fn entry_name(stream: &str, layer: usize) -> String {
    format!("{stream}.{layer}")
}

impl DirectionsFile {
    /// Read and validate a directions file: every tensor 1-D or 2-D, float, finite, non-zero rows,
    /// one common length.
    pub fn load(path: &Path) -> Result<DirectionsFile> {
        let bad = |message: String| Error::BadDirections { path: path.to_path_buf(), message };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let mut entries = BTreeMap::new();
        let mut hidden = None;
        for (name, view) in tensors.tensors() {
            let values =
                super::checkpoint::decode_f32(view.dtype(), view.data(), &name).map_err(|e| bad(format!("{e}")))?;
            let rows: Vec<Vec<f32>> = match view.shape() {
                [n] => vec![values[..*n].to_vec()],
                [k, n] => values.chunks(*n.max(&1)).take(*k).map(<[f32]>::to_vec).collect(),
                shape => {
                    return Err(bad(format!("tensor `{name}` has shape {shape:?}; expected [hidden] or [k, hidden]")))
                }
            };
            if rows.is_empty() || rows[0].is_empty() {
                return Err(bad(format!("tensor `{name}` is empty")));
            }
            for (i, row) in rows.iter().enumerate() {
                if row.iter().any(|v| !v.is_finite()) {
                    return Err(bad(format!("tensor `{name}` row {i} contains NaN or infinite values")));
                }
                if row.iter().all(|v| *v == 0.0) {
                    return Err(bad(format!(
                        "tensor `{name}` row {i} is all zeros; a direction needs a non-zero length"
                    )));
                }
            }
            let n = rows[0].len();
            if *hidden.get_or_insert(n) != n {
                return Err(bad(format!("tensor `{name}` has length {n}, others have {}", hidden.unwrap_or(0))));
            }
            entries.insert(name.clone(), Direction { name, rows });
        }
        if entries.is_empty() {
            return Err(bad("holds no tensors".into()));
        }
        let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        Ok(DirectionsFile { path: path.to_path_buf(), entries, metadata })
    }

    /// Write directions with metadata (adds `format` and `hidden_size`).
    pub fn save(path: &Path, entries: &[Direction], metadata: &BTreeMap<String, String>) -> Result<()> {
        let mut meta: HashMap<String, String> = metadata.clone().into_iter().collect();
        meta.insert("format".into(), FORMAT.into());
        if let Some(first) = entries.first() {
            meta.insert("hidden_size".into(), first.hidden().to_string());
        }
        let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = entries
            .iter()
            .map(|d| {
                let shape = if d.rows.len() == 1 { vec![d.hidden()] } else { vec![d.rows.len(), d.hidden()] };
                let bytes = d.rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
                (d.name.clone(), shape, bytes)
            })
            .collect();
        let views = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Other(format!("direction `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        // Serialized in memory and written with std (safetensors' own file writer creates 0600
        // files; outputs follow the umask).
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }

    /// The common vector length.
    pub fn hidden(&self) -> usize {
        self.entries.values().next().map_or(0, Direction::hidden)
    }

    /// The layer and stream that `probe` recommended, if recorded.
    pub fn recommended(&self) -> Option<(String, usize)> {
        let layer = self.metadata.get("recommended_layer")?.parse().ok()?;
        let stream = self.metadata.get("recommended_stream").cloned().unwrap_or_else(|| "resid_pre".into());
        Some((stream, layer))
    }

    /// The streams present, sorted.
    pub fn streams(&self) -> Vec<String> {
        let mut streams: Vec<String> =
            self.entries.values().filter_map(|d| d.stream_and_layer().map(|(s, _)| s.to_string())).collect();
        streams.sort();
        streams.dedup();
        streams
    }

    /// The entry for `stream` at `layer`, or an error listing what exists.
    pub fn get(&self, stream: &str, layer: usize) -> Result<&Direction> {
        self.entries.get(&entry_name(stream, layer)).ok_or_else(|| Error::BadDirections {
            path: self.path.clone(),
            message: format!("has no direction `{}`; it holds: {}", entry_name(stream, layer), self.list()),
        })
    }

    /// Pick the direction to use when the user named at most a layer and a stream: the named one,
    /// else the recommended one, else the only one.
    pub fn select(&self, stream: Option<&str>, layer: Option<usize>) -> Result<&Direction> {
        let recommended = self.recommended();
        let stream = stream.map(str::to_string).or_else(|| recommended.as_ref().map(|(s, _)| s.clone()));
        match (layer.or(recommended.as_ref().map(|(_, l)| *l)), stream) {
            (Some(layer), Some(stream)) => self.get(&stream, layer),
            (Some(layer), None) => {
                let streams = self.streams();
                match streams.as_slice() {
                    [only] => self.get(only, layer),
                    _ => self.get("resid_pre", layer),
                }
            }
            (None, _) if self.entries.len() == 1 => Ok(self.entries.values().next().expect("one entry")),
            (None, _) => Err(Error::BadDirections {
                path: self.path.clone(),
                message: format!(
                    "records no recommended layer and holds several directions ({}); choose one with --direction-layer",
                    self.list()
                ),
            }),
        }
    }

    fn list(&self) -> String {
        let names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        if names.len() > 12 {
            format!("{} … {} ({} in all)", names[..6].join(", "), names[names.len() - 3..].join(", "), names.len())
        } else {
            names.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, rows: Vec<Vec<f32>>) -> Direction {
        Direction { name: name.into(), rows }
    }

    #[test]
    fn saves_and_loads_with_recommendation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d.safetensors");
        let meta = BTreeMap::from([("recommended_layer".to_string(), "1".to_string())]);
        let entries = vec![
            dir("resid_pre.0", vec![vec![1.0, 0.0, 0.0]]),
            dir("resid_pre.1", vec![vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]]),
        ];
        DirectionsFile::save(&path, &entries, &meta).unwrap();
        let file = DirectionsFile::load(&path).unwrap();
        assert_eq!(file.hidden(), 3);
        assert_eq!(file.metadata["format"], FORMAT);
        assert_eq!(file.select(None, None).unwrap(), &entries[1]);
        assert_eq!(file.select(None, Some(0)).unwrap(), &entries[0]);
        assert!(file.select(Some("resid_mid"), Some(0)).unwrap_err().to_string().contains("resid_pre.0"));
        assert_eq!(file.entries["resid_pre.1"].short_hash().len(), 16);
    }

    #[test]
    fn rejects_nan_zero_and_ragged_directions() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d.safetensors");
        for (rows, expect) in [
            (vec![dir("a.0", vec![vec![f32::NAN, 1.0]])], "NaN"),
            (vec![dir("a.0", vec![vec![0.0, 0.0]])], "zeros"),
            (vec![dir("a.0", vec![vec![1.0, 0.0]]), dir("a.1", vec![vec![1.0, 0.0, 0.0]])], "length"),
        ] {
            DirectionsFile::save(&path, &rows, &BTreeMap::new()).unwrap();
            let err = DirectionsFile::load(&path).unwrap_err().to_string();
            assert!(err.contains(expect) && err.contains("d.safetensors"), "{err}");
        }
        std::fs::write(&path, b"junk").unwrap();
        assert!(DirectionsFile::load(&path).unwrap_err().to_string().contains("safetensors"));
    }

    #[test]
    fn several_directions_without_recommendation_need_a_choice() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d.safetensors");
        let entries = vec![dir("resid_pre.0", vec![vec![1.0, 0.0]]), dir("resid_pre.1", vec![vec![0.0, 1.0]])];
        DirectionsFile::save(&path, &entries, &BTreeMap::new()).unwrap();
        let err = DirectionsFile::load(&path).unwrap().select(None, None).unwrap_err().to_string();
        assert!(err.contains("--direction-layer"), "{err}");
    }
}
