//! What `scalpel inspect` reports about a model folder.

use super::model_dir::ModelDir;
use crate::arch::{LayerNames, MlpPart, ModelSpec, WriterKind};
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
    let mut names = vec![spec.embed_name(), spec.final_norm_name(), spec.lm_head_name()];
    for layer in 0..spec.num_layers {
        let n: LayerNames = spec.layer_names(layer);
        names.extend(n.input_side());
        names.extend(n.mlp_writers().into_iter().map(|w| w.weight));
        names.extend([n.attn_norm, n.mlp_norm, n.o_proj]);
        names.extend(n.o_proj_bias.into_iter().chain(n.down_proj_bias).chain(n.attn_post_norm).chain(n.mlp_post_norm));
        names.extend(n.q_norm.into_iter().chain(n.k_norm).chain(n.layer_scalar));
        match n.attention {
            crate::arch::AttentionLayout::Separate { biases: Some(b), .. } => names.extend(b),
            crate::arch::AttentionLayout::KeysAsValues { biases: Some(b), .. } => names.extend(b),
            crate::arch::AttentionLayout::Fused { bias: Some(b), .. } => names.push(b),
            _ => {}
        }
        if let crate::arch::MlpLayout::Gated { biases: Some(b), .. } = n.mlp {
            names.extend(b);
        }
    }
    names
}
