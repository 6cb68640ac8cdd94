//! What `scalpel inspect` reports about a model folder.

use super::model_dir::ModelDir;
use crate::arch::{MlpPart, ModelSpec, WriterKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// A model folder at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// The folder.
    pub path: String,
    /// The parsed spec.
    pub spec: ModelSpec,
    /// Tensor count per stored dtype.
    pub dtypes: BTreeMap<String, usize>,
    /// Total parameters.
    pub parameters: u64,
    /// Shard file names.
    pub shards: Vec<String>,
    /// Bytes of tensor data.
    pub bytes: u64,
    /// Whether the output head is the embedding.
    pub tied_head: bool,
    /// The writers scalpel edits, by kind.
    pub writers: BTreeMap<String, Vec<WriterSummary>>,
    /// Layer 0's input-side matrices (never edited), as an example of each layer's.
    pub input_side_example: Vec<String>,
    /// Other tensors present that the spec does not name (informational).
    pub unrecognised_tensors: Vec<String>,
}

/// One writer tensor.
#[derive(Debug, Clone, Serialize)]
pub struct WriterSummary {
    /// Tensor name.
    pub tensor: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Layer.
    pub layer: Option<usize>,
    /// Its bias, if any.
    pub bias: Option<String>,
    /// The post-norm the edit must see through, if any.
    pub post_norm: Option<String>,
    /// Which part of a sparse layer's MLP block it is (`expert 3`, `shared expert`; empty
    /// for a dense writer).
    pub part: String,
    /// The slice of a stacked experts tensor it is, if it is one.
    pub slice: Option<usize>,
}

impl ModelDir {
    /// Summarise the folder for `scalpel inspect`.
    pub fn summary(&self) -> ModelSummary {
        let ckpt = &self.checkpoint;
        let mut dtypes = BTreeMap::new();
        for name in ckpt.names() {
            if let Ok(t) = ckpt.tensor(name) {
                *dtypes.entry(format!("{:?}", t.dtype)).or_insert(0) += 1;
            }
        }
        let layers: Vec<usize> = (0..self.spec.num_layers).collect();
        let mut writers: BTreeMap<String, Vec<WriterSummary>> = BTreeMap::new();
        for w in self.spec.writers(&layers, &WriterKind::ALL) {
            let shape = ckpt.tensor(&w.weight).map(|t| t.shape.to_vec()).unwrap_or_default();
            // Routed and shared experts are listed apart from dense MLPs: their counts differ.
            let group = match w.part {
                MlpPart::Dense => w.kind.name().to_string(),
                MlpPart::Expert(_) => format!("{} expert", w.kind.name()),
                MlpPart::SharedExpert => format!("{} shared expert", w.kind.name()),
            };
            writers.entry(group).or_default().push(WriterSummary {
                tensor: w.weight,
                shape,
                layer: w.layer,
                bias: w.bias,
                post_norm: w.post_norm,
                part: w.part.describe(),
                slice: w.slice,
            });
        }
        let known = known_names(&self.spec);
        let unrecognised_tensors =
            ckpt.names().into_iter().filter(|n| !known.contains(&n.to_string())).map(String::from).collect();
        ModelSummary {
            path: self.root.display().to_string(),
            spec: self.spec.clone(),
            dtypes,
            parameters: self.parameter_count(),
            shards: ckpt.shards().iter().map(|s| s.file_name()).collect(),
            bytes: ckpt.total_bytes(),
            tied_head: self.head_is_tied(),
            writers,
            input_side_example: self.spec.layer_names(0).input_side(),
            unrecognised_tensors,
        }
    }
}

/// Every tensor name the spec knows (so inspect can flag anything else).
fn known_names(spec: &ModelSpec) -> Vec<String> {
    let mut names = spec.model_tensors();
    names.extend((0..spec.num_layers).flat_map(|layer| spec.layer_names(layer).tensors()));
    names
}
