//! A model's weights: one `model.safetensors` or shards listed by `model.safetensors.index.json`.

use super::shard::{Shard, TensorRef};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// All shards of a checkpoint and where each tensor lives.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    location: HashMap<String, usize>,
    index: Option<serde_json::Value>,
}

impl Checkpoint {
    /// Open the safetensors weights of a model folder, validating every shard header and the index.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index_path = dir.join(INDEX_FILE);
        if index_path.is_file() {
            return Self::open_sharded(dir, &index_path);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::from_shards(dir, vec![Shard::open(&single)?], None);
        }
        let mut others: Vec<PathBuf> =
            list_files(dir)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
        if !others.is_empty() {
            others.sort();
            let shards = others.iter().map(|p| Shard::open(p)).collect::<Result<Vec<_>>>()?;
            return Self::from_shards(dir, shards, None);
        }
        let has_pickle = list_files(dir)?.iter().any(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth")
        });
        let message = if has_pickle {
            "holds PyTorch pickle weights (.bin/.pt), which scalpel does not load (pickles can run code). \
             Convert them first, e.g. in Python: `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)`"
        } else {
            "holds no model.safetensors, no model.safetensors.index.json and no *.safetensors file"
        };
        Err(Error::bad_checkpoint(dir, message))
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Checkpoint> {
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let index: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: index_path.to_path_buf(), source })?;
        let weight_map = weight_map(&index, index_path)?;
        let mut files: Vec<&String> = weight_map.values().collect();
        files.sort();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        for file in files {
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(Error::bad_checkpoint(index_path, format!("shard name `{file}` is not a plain file name")));
            }
            let path = dir.join(file);
            if !path.is_file() {
                return Err(Error::bad_checkpoint(index_path, format!("lists shard `{file}`, which does not exist")));
            }
            shards.push(Shard::open(&path)?);
        }
        for (name, file) in &weight_map {
            let shard = shards.iter().find(|s| &s.file_name() == file).expect("every listed shard was opened");
            if !shard.contains(name) {
                return Err(Error::MissingTensor { name: name.clone(), path: shard.path().to_path_buf() });
            }
        }
        Self::from_shards(dir, shards, Some(index))
    }

    fn from_shards(dir: &Path, shards: Vec<Shard>, index: Option<serde_json::Value>) -> Result<Checkpoint> {
        let mut location = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            for name in shard.names_in_order() {
                if let Some(previous) = location.insert(name.clone(), i) {
                    return Err(Error::bad_checkpoint(
                        shard.path(),
                        format!("tensor `{name}` is also stored in {}", shards[previous].path().display()),
                    ));
                }
            }
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), shards, location, index })
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shards, in file-name order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The parsed index file, for sharded checkpoints.
    pub fn index(&self) -> Option<&serde_json::Value> {
        self.index.as_ref()
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.location.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The shard index holding `name`.
    pub fn shard_of(&self, name: &str) -> Option<usize> {
        self.location.get(name).copied()
    }

    /// A view of one tensor, or an error naming it.
    pub fn tensor<'a>(&'a self, name: &str) -> Result<TensorRef<'a>> {
        let (key, shard) = self
            .location
            .get_key_value(name)
            .ok_or_else(|| Error::MissingTensor { name: name.to_string(), path: self.dir.clone() })?;
        Ok(self.shards[*shard].tensor(key).expect("location map is built from the shards"))
    }

    /// Drop `name`'s pages from this process's mapping (see [`Shard::release`]).
    pub fn release(&self, name: &str) {
        if let Some(&shard) = self.location.get(name) {
            self.shards[shard].release(name);
        }
    }

    /// One tensor as f32 values with its shape.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let view = self.tensor(name)?;
        Ok((view.to_f32()?, view.shape.to_vec()))
    }

    /// Total bytes of tensor data across shards.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.data_len() as u64).sum()
    }
}

/// The `weight_map` of an index file.
pub(super) fn weight_map(index: &serde_json::Value, path: &Path) -> Result<BTreeMap<String, String>> {
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::bad_checkpoint(path, "has no `weight_map` object"))?;
    map.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|file| (k.clone(), file.to_string()))
                .ok_or_else(|| Error::bad_checkpoint(path, format!("weight_map entry `{k}` is not a file name")))
        })
        .collect()
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_file() {
            files.push(entry.path());
        }
    }
    Ok(files)
}
