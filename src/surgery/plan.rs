//! Surgery plans: which tensor is edited against which (orthonormal) directions.

use super::expert_choice::ExpertChoice;
use super::profile::StrengthProfile;
use super::projection::Basis;
use crate::arch::{MlpPart, Writer, WriterKind};
use crate::checkpoint::{InputRecord, ModelDir};
use crate::directions::{entry_name, Direction, DirectionsFile};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which direction each edited layer uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionChoice {
    /// One entry of the directions file for every edit (the recommended one by default).
    Fixed {
        /// Entry name, e.g. `resid_pre.12`.
        name: String,
    },
    /// Each layer uses its own direction `{stream}.{layer}`; the embedding uses layer 0's.
    PerLayer {
        /// The stream whose per-layer directions are used.
        stream: String,
    },
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeryOptions {
    /// Layers whose writers are edited.
    pub layers: Vec<usize>,
    /// Which writers (embed, attn, mlp, ple).
    pub targets: Vec<WriterKind>,
    /// Which direction(s).
    pub direction: DirectionChoice,
    /// λ: 1 removes the component, 2 reflects it.
    pub strength: f64,
    /// Rescale every written vector back to its original length.
    pub norm_preserve: bool,
    /// Write the original embedding as a separate output head when the head is tied.
    pub untie: bool,
    /// Also edit the writers' output biases.
    pub biases: bool,
    /// Per-layer, per-kind weights multiplying `strength` (None: `strength` everywhere). Writers
    /// whose weight is 0 are not edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<StrengthProfile>,
    /// Which experts of sparse layers are edited (records without it: every one).
    #[serde(default)]
    pub experts: ExpertChoice,
}

impl SurgeryOptions {
    /// λ of one writer: `strength`, times the profile's weight where there is a profile.
    pub fn strength_of(&self, kind: WriterKind, layer: Option<usize>) -> f64 {
        self.strength * self.profile.as_ref().map_or(1.0, |p| p.weight(kind, layer))
    }
}

/// How a tensor's written vectors are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[hidden, in]`: columns are written (o_proj, down_proj).
    Columns,
    /// `[n, hidden]`: rows are written (embedding, bias).
    Rows,
}

/// One tensor to edit.
#[derive(Debug, Clone)]
pub struct PlannedEdit {
    /// Tensor name.
    pub tensor: String,
    /// Embedding, attention or MLP writer.
    pub kind: WriterKind,
    /// Layer, if any.
    pub layer: Option<usize>,
    /// Whether this is an output bias.
    pub is_bias: bool,
    /// Columns or rows.
    pub layout: Layout,
    /// The directions entry used.
    pub direction: String,
    /// Its short hash.
    pub direction_hash: String,
    /// The post-norm the basis was mapped through (Gemma 2/3), if any.
    pub through_norm: Option<String>,
    /// The orthonormal basis to project out.
    pub basis: Basis,
    /// λ for this tensor (see [`SurgeryOptions::strength_of`]).
    pub strength: f64,
    /// Which part of a layer's MLP block it is (an expert of a sparse layer), else dense.
    pub part: MlpPart,
    /// The slice of a stacked `[experts, hidden, in]` tensor that is edited (the rest of the
    /// tensor belongs to the other slices' edits), if it is one.
    pub slice: Option<usize>,
}

/// A whole surgery: every edit plus the global settings.
#[derive(Debug, Clone)]
pub struct SurgeryPlan {
    /// The edits, in model order.
    pub edits: Vec<PlannedEdit>,
    /// The options it was built from.
    pub options: SurgeryOptions,
    /// The output head shares the embedding and the embedding is edited.
    pub edits_tied_head: bool,
}

/// One edit as recorded in the output (no basis, just provenance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditRecord {
    /// Tensor name.
    pub tensor: String,
    /// Writer kind.
    pub kind: WriterKind,
    /// Layer.
    pub layer: Option<usize>,
    /// Directions entry.
    pub direction: String,
    /// Its short hash.
    pub direction_hash: String,
    /// Post-norm the basis went through.
    pub through_norm: Option<String>,
    /// λ applied to this tensor (records older than strength profiles: the global strength).
    #[serde(default)]
    pub strength: Option<f64>,
    /// The expert of a sparse layer it is (absent: a dense writer).
    #[serde(default, skip_serializing_if = "MlpPart::is_dense")]
    pub part: MlpPart,
    /// The slice of a stacked experts tensor that was edited (absent: the whole tensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<usize>,
}

/// The provenance record written into the edited checkpoint (`scalpel_edit.json` and the
/// safetensors metadata), from which `scalpel verify` rebuilds the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeryRecord {
    /// scalpel's version.
    pub scalpel_version: String,
    /// The source model: its name (a hub model: `owner/name`), or its absolute path when the
    /// edit was written with `--record-paths`. Records older than [`Self::source`] hold the path
    /// the model was opened by.
    pub source_model: String,
    /// The directions file used: its name, or its absolute path with `--record-paths` (older
    /// records: the path it was given by).
    pub directions_file: String,
    /// The source model's name, weight bytes and content hash (and path with `--record-paths`),
    /// by which `verify` and `export --adapter` check the original they are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<InputRecord>,
    /// The directions file's name, size and hash (and path with `--record-paths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directions: Option<InputRecord>,
    /// The options.
    pub options: SurgeryOptions,
    /// Every edited tensor.
    pub edits: Vec<EditRecord>,
    /// Whether the tied head was edited along with the embedding.
    pub edits_tied_head: bool,
    /// The command line that made the edit (empty when called as a library).
    #[serde(default)]
    pub command: String,
    /// The search trial this edit is (its parameters and measured scores), when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_trial: Option<serde_json::Value>,
}

impl SurgeryPlan {
    /// The provenance record of this plan (`command`: how to reproduce it, may be empty).
    pub fn record(&self, source_model: &str, directions_file: &str, command: &str) -> SurgeryRecord {
        SurgeryRecord {
            scalpel_version: env!("CARGO_PKG_VERSION").to_string(),
            source_model: source_model.to_string(),
            directions_file: directions_file.to_string(),
            options: self.options.clone(),
            edits: self
                .edits
                .iter()
                .map(|e| EditRecord {
                    tensor: e.tensor.clone(),
                    kind: e.kind,
                    layer: e.layer,
                    direction: e.direction.clone(),
                    direction_hash: e.direction_hash.clone(),
                    through_norm: e.through_norm.clone(),
                    strength: Some(e.strength),
                    part: e.part,
                    slice: e.slice,
                })
                .collect(),
            edits_tied_head: self.edits_tied_head,
            command: command.to_string(),
            search_trial: None,
            source: None,
            directions: None,
        }
    }
}

impl SurgeryRecord {
    /// Where the source model was, if the record says: the recorded path (`--record-paths`),
    /// or for a record without [`Self::source`] (written before it) its `source_model`.
    pub fn source_path(&self) -> Option<PathBuf> {
        match &self.source {
            Some(source) => source.path.as_ref().map(PathBuf::from),
            None => (!self.source_model.is_empty()).then(|| PathBuf::from(&self.source_model)),
        }
    }

    /// Where the directions file was, if the record says (as [`Self::source_path`]).
    pub fn directions_path(&self) -> Option<PathBuf> {
        match &self.directions {
            Some(directions) => directions.path.as_ref().map(PathBuf::from),
            None => (!self.directions_file.is_empty()).then(|| PathBuf::from(&self.directions_file)),
        }
    }

    /// How the record names the source model to a user who has to find it: name and hash.
    pub fn source_description(&self) -> String {
        match &self.source {
            Some(s) => format!("`{}` ({} bytes of weights, hash {})", s.name, s.bytes, s.hash),
            None => format!("`{}`", self.source_model),
        }
    }
}

/// Build the plan: pick each writer's direction, orthonormalize it, map it through Gemma 2/3
/// post-norms, and check every shape against the model.
pub fn plan(model: &ModelDir, directions: &DirectionsFile, options: &SurgeryOptions) -> Result<SurgeryPlan> {
    let spec = &model.spec;
    if let Some(&bad) = options.layers.iter().find(|&&l| l >= spec.num_layers) {
        return Err(Error::Invalid(format!("layer {bad} does not exist: the model has layers 0..{}", spec.num_layers)));
    }
    if !options.strength.is_finite() {
        return Err(Error::Invalid("--strength must be a finite number".into()));
    }
    if let Some(profile) = &options.profile {
        profile.check()?;
    }
    if directions.hidden() != spec.hidden_size {
        return Err(Error::BadDirections {
            path: directions.path.clone(),
            message: format!(
                "directions have length {} but the model's hidden size is {}",
                directions.hidden(),
                spec.hidden_size
            ),
        });
    }
    let mut options = options.clone();
    if options.experts.needs_measuring() {
        options.experts = measure_experts(model, directions, &options)?;
    }
    let mut edits = Vec::new();
    for writer in spec.writers(&options.layers, &options.targets) {
        let strength = options.strength_of(writer.kind, writer.layer);
        if strength == 0.0 || (writer.kind == WriterKind::Mlp && !keeps_expert(&options, &writer)) {
            continue;
        }
        let direction = direction_for(directions, &options.direction, writer.layer, &options.layers)?;
        let basis = writer_basis(model, &writer, &orthonormal(directions, direction)?)?;
        let view = model.checkpoint.tensor(&writer.weight)?;
        let layout = match (writer.kind, view.shape, writer.slice) {
            (WriterKind::Embed, [_, h], None) if *h == spec.hidden_size => Layout::Rows,
            (WriterKind::Attn | WriterKind::Mlp | WriterKind::PerLayer, [h, _], None) if *h == spec.hidden_size => {
                Layout::Columns
            }
            (WriterKind::Mlp, [e, h, _], Some(slice)) if *h == spec.hidden_size && slice < *e => Layout::Columns,
            (kind, shape, slice) => {
                let expected = match (kind, slice) {
                    (WriterKind::Embed, _) => "[vocab, hidden]",
                    (_, Some(_)) => "[experts, hidden, in] (one slice per expert)",
                    _ => "[hidden, in]",
                };
                return Err(Error::bad_tensor(
                    &writer.weight,
                    format!(
                        "shape {shape:?} does not fit a {} writer {expected} with hidden = {}",
                        kind.name(),
                        spec.hidden_size
                    ),
                ));
            }
        };
        let edit = |tensor: &str, is_bias, layout| PlannedEdit {
            tensor: tensor.to_string(),
            kind: writer.kind,
            layer: writer.layer,
            is_bias,
            layout,
            direction: direction.name.clone(),
            direction_hash: direction.short_hash(),
            through_norm: writer.post_norm.clone(),
            basis: basis.clone(),
            strength,
            part: writer.part,
            slice: writer.slice,
        };
        edits.push(edit(&writer.weight, false, layout));
        if let (true, Some(bias)) = (options.biases, &writer.bias) {
            let view = model.checkpoint.tensor(bias)?;
            if view.shape != [spec.hidden_size] {
                return Err(Error::bad_tensor(
                    bias,
                    format!("shape {:?}, expected [{}]", view.shape, spec.hidden_size),
                ));
            }
            edits.push(edit(bias, true, Layout::Rows));
        }
    }
    let edits_tied_head = edits.iter().any(|e| e.kind == WriterKind::Embed) && model.head_is_tied();
    Ok(SurgeryPlan { edits, options, edits_tied_head })
}

/// Whether the choice of experts keeps an MLP writer of a sparse layer (dense ones always).
fn keeps_expert(options: &SurgeryOptions, writer: &Writer) -> bool {
    writer.layer.is_none_or(|layer| options.experts.keeps(layer, writer.part))
}

/// A direction's rows as an orthonormal basis, or an error naming the entry.
fn orthonormal(directions: &DirectionsFile, direction: &Direction) -> Result<Basis> {
    Basis::orthonormal(&direction.rows).map_err(|e| Error::BadDirections {
        path: directions.path.clone(),
        message: format!("direction `{}`: {e}", direction.name),
    })
}

/// The basis a writer is edited against: `basis` itself, or mapped through the post-norm
/// between the writer and the stream (Gemma 2/3, OLMo 2, GLM-4).
pub(super) fn writer_basis(model: &ModelDir, writer: &Writer, basis: &Basis) -> Result<Basis> {
    let Some(norm) = &writer.post_norm else { return Ok(basis.clone()) };
    let (weights, _) = model.checkpoint.read_f32(norm)?;
    let offset = model.spec.norm_kind.offset();
    let gamma: Vec<f32> = weights.iter().map(|w| w + offset).collect();
    basis.through_norm(&gamma).map_err(|e| Error::bad_tensor(norm, e.to_string()))
}

/// A share choice with its experts measured on `model`: in each sparse layer the plan edits
/// (with MLP writers targeted), the routed experts above the threshold against the direction
/// that layer is edited with.
fn measure_experts(model: &ModelDir, directions: &DirectionsFile, options: &SurgeryOptions) -> Result<ExpertChoice> {
    let ExpertChoice::Share { threshold, .. } = options.experts else { return Ok(options.experts.clone()) };
    let layers: Vec<usize> = if options.targets.contains(&WriterKind::Mlp) {
        options.layers.iter().copied().filter(|&l| options.strength_of(WriterKind::Mlp, Some(l)) != 0.0).collect()
    } else {
        Vec::new()
    };
    let shares = super::write_share::expert_write_shares(model, &layers, |layer| {
        let direction = direction_for(directions, &options.direction, Some(layer), &options.layers)?;
        Ok((direction.name.clone(), orthonormal(directions, direction)?))
    })?;
    let chosen = shares.iter().map(|s| (s.layer, s.above(threshold))).collect();
    Ok(ExpertChoice::Share { threshold, chosen: Some(chosen) })
}

fn direction_for<'a>(
    directions: &'a DirectionsFile,
    choice: &DirectionChoice,
    layer: Option<usize>,
    layers: &[usize],
) -> Result<&'a Direction> {
    match choice {
        DirectionChoice::Fixed { name } => directions.entries.get(name).ok_or_else(|| Error::BadDirections {
            path: directions.path.clone(),
            message: format!("has no direction `{name}`"),
        }),
        DirectionChoice::PerLayer { stream } => {
            let layer = match layer {
                Some(l) => l,
                // The embedding writes the stream that layer 0 reads.
                None if directions.entries.contains_key(&entry_name(stream, 0)) => 0,
                None => layers.first().copied().unwrap_or(0),
            };
            directions.get(stream, layer)
        }
    }
}
