//! The steps of an experiment, one function each, called by the subcommands (`probe`, `ablate`,
//! `verify`, `eval`) and by `scalpel run` alike, so every option has one definition.

use crate::arch::WriterKind;
use crate::checkpoint::{InputRecord, ModelDir};
use crate::directions::DirectionsFile;
use crate::eval::compare::pair;
use crate::eval::{
    cross_entropy, greedy_answers, kl_of_logits, next_token_logits, refusals, CrossEntropy, EvalReport, RefusalScore,
    SideBySide, SubjectSource,
};
use crate::layers::parse_layers;
use crate::model::HookPoint;
use crate::probe::{
    default_candidates, parse_positions, parse_stream, CaptureSettings, ExtraDirections, ProbeSettings, RankRule,
};
use crate::progress::Progress;
use crate::surgery::{
    ablate, expected_strength, plan, recorded_original, verify_with_original, AblateReport, DirectionChoice,
    ExpertChoice, SurgeryOptions, SurgeryPlan, SurgeryRecord, VerifyReport, EDIT_RECORD_FILE,
};
use crate::{Error, Result};
use std::path::Path;

/// What probe is asked to do: the one definition of probe's options, filled from the command
/// line or from a recipe's `[probe]` and `[direction]` sections.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    /// Streams to capture; the recommendation comes from the first.
    pub streams: Vec<HookPoint>,
    /// Positions from the end, e.g. `-1` or `-3..-1`.
    pub positions: String,
    /// Prompts per forward pass.
    pub batch: usize,
    /// Ranking rule.
    pub rule: RankRule,
    /// Layers the recommendation may pick from (None: 20 %–80 % of the depth).
    pub candidates: Option<String>,
    /// A fixed layer instead of the ranking's choice.
    pub layer: Option<usize>,
    /// Extra directions at the recommended layer.
    pub extra: ExtraDirections,
    /// Also write the variants orthogonal to the harmless mean.
    pub projected: bool,
    /// Keep every prompt's activations (activations.safetensors).
    pub keep: bool,
}

impl ProbeRequest {
    /// The probe settings for a model with `num_layers` layers.
    pub fn settings(&self, num_layers: usize) -> Result<ProbeSettings> {
        if self.streams.is_empty() {
            return Err(Error::Invalid("probe needs at least one stream".into()));
        }
        if let Some(l) = self.layer.filter(|&l| l >= num_layers) {
            return Err(Error::Invalid(format!("layer {l} is outside 0..{num_layers}")));
        }
        let candidates = match &self.candidates {
            Some(c) => parse_layers(c, num_layers)?,
            None => default_candidates(num_layers),
        };
        Ok(ProbeSettings {
            capture: CaptureSettings {
                streams: self.streams.clone(),
                layers: (0..num_layers).collect(),
                from_end: parse_positions(&self.positions)?,
                batch: self.batch,
                keep: self.keep,
            },
            rule: self.rule,
            candidates,
            fixed_layer: self.layer,
            extra: self.extra,
            projected: self.projected,
        })
    }
}

/// Parse stream names, `first` (if any) moved to the front, duplicates dropped.
pub fn parse_streams<S: AsRef<str>>(names: &[S], first: Option<&str>) -> Result<Vec<HookPoint>> {
    let mut out: Vec<HookPoint> = Vec::new();
    for name in first.into_iter().chain(names.iter().map(AsRef::as_ref)) {
        let s = parse_stream(name)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Writer names (`embed`, `attn`, `mlp`) to kinds, sorted, without duplicates.
pub fn parse_targets<S: AsRef<str>>(names: &[S]) -> Result<Vec<WriterKind>> {
    let mut kinds = Vec::new();
    for name in names.iter().map(AsRef::as_ref).filter(|n| !n.trim().is_empty()) {
        let kind = WriterKind::parse(name)
            .ok_or_else(|| Error::Invalid(format!("unknown target `{name}` (choose from embed, attn, mlp, ple)")))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(Error::Invalid("no targets (choose from embed, attn, mlp, ple)".into()));
    }
    kinds.sort();
    Ok(kinds)
}

/// The edit a user asked for, before it is resolved against a directions file: the one
/// definition of the surgery options (`ablate`/`verify` flags and a recipe's `[ablate]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SurgerySettings {
    /// Layer selection (`all`, `8..20`, ...).
    pub layers: String,
    /// The layer whose direction is used for every edit (None: the recommended one).
    pub direction_layer: Option<usize>,
    /// The direction's stream (None: the recommended one).
    pub stream: Option<String>,
    /// Each layer uses its own direction.
    pub per_layer: bool,
    /// Writers to edit.
    pub targets: Vec<WriterKind>,
    /// λ.
    pub strength: f64,
    /// Keep column norms.
    pub norm_preserve: bool,
    /// Keep the original head when it is tied.
    pub untie: bool,
    /// Edit output biases.
    pub biases: bool,
    /// Which experts of sparse layers are edited.
    pub experts: ExpertChoice,
}

impl SurgerySettings {
    /// Resolve against a model of `num_layers` layers and a directions file.
    pub fn options(&self, num_layers: usize, directions: &DirectionsFile) -> Result<SurgeryOptions> {
        let direction = if self.per_layer {
            let stream = self
                .stream
                .clone()
                .or_else(|| directions.recommended().map(|(s, _)| s))
                .unwrap_or_else(|| "resid_pre".into());
            DirectionChoice::PerLayer { stream }
        } else {
            let chosen = directions.select(self.stream.as_deref(), self.direction_layer)?;
            DirectionChoice::Fixed { name: chosen.name.clone() }
        };
        Ok(SurgeryOptions {
            layers: parse_layers(&self.layers, num_layers)?,
            targets: self.targets.clone(),
            direction,
            strength: self.strength,
            norm_preserve: self.norm_preserve,
            untie: self.untie,
            biases: self.biases,
            profile: None,
            experts: self.experts.clone(),
        })
    }
}

/// An edit to write.
pub struct AblateRequest<'a> {
    /// The source model.
    pub model: &'a ModelDir,
    /// The directions file.
    pub directions: &'a Path,
    /// What to edit.
    pub options: &'a SurgeryOptions,
    /// The output folder.
    pub out: &'a Path,
    /// Replace `out` if it exists.
    pub force: bool,
    /// Read the written files back and verify them before they are moved into place.
    pub verify: bool,
    /// How the edit was asked for (recorded; may be empty).
    pub command: &'a str,
    /// The search trial this edit is (recorded in the edit record and the model card).
    pub search_trial: Option<serde_json::Value>,
    /// Record the inputs' absolute paths (else their names, sizes and hashes only).
    pub record_paths: bool,
}

/// Plan the edit, show it to `announce` (before any work), write and verify it.
pub fn ablate_step(
    request: &AblateRequest<'_>,
    announce: &dyn Fn(&SurgeryPlan),
    progress: &dyn Progress,
) -> Result<(SurgeryPlan, AblateReport)> {
    crate::checkpoint::check_overlap(request.out, &[&request.model.root, request.directions])?;
    let directions = DirectionsFile::load(request.directions)?;
    let surgery = plan(request.model, &directions, request.options)?;
    announce(&surgery);
    let record = edit_record_of(request, &surgery)?;
    let report = ablate(request.model, &surgery, &record, request.out, request.force, request.verify, progress)?;
    Ok((surgery, report))
}

/// The provenance record of `request`'s edit: its inputs by name, size and hash, their
/// absolute paths only with `record_paths`.
fn edit_record_of(request: &AblateRequest<'_>, surgery: &SurgeryPlan) -> Result<SurgeryRecord> {
    let source = InputRecord::of_model(&request.model.root, request.record_paths)?;
    let directions = InputRecord::of_file(request.directions, request.record_paths)?;
    let named = |r: &InputRecord| r.path.clone().unwrap_or_else(|| r.name.clone());
    let mut record = surgery.record(&named(&source), &named(&directions), request.command);
    record.source = Some(source);
    record.directions = Some(directions);
    record.search_trial = request.search_trial.clone();
    if let (false, Some(search)) =
        (request.record_paths, record.search_trial.as_mut().and_then(|t| t.get_mut("search")))
    {
        if let Some(name) = search.as_str().and_then(|p| Path::new(p).file_name()).map(|n| n.to_string_lossy()) {
            *search = serde_json::Value::String(name.into_owned());
        }
    }
    Ok(record)
}

/// The unedited model of an edit, for `verify` and `export --adapter`: `given`, which must be
/// the model the record names (weight bytes and content hash), or else the folder at the path
/// the record holds (records written with `--record-paths`, and older ones) when it opens and
/// matches.
pub fn original_model(record: Option<&SurgeryRecord>, given: Option<ModelDir>) -> Result<Option<ModelDir>> {
    match given {
        Some(model) => {
            if let Some(source) = record.and_then(|r| r.source.as_ref()) {
                source.check_model(&model.root, "original model")?;
            }
            Ok(Some(model))
        }
        None => Ok(record.and_then(recorded_original)),
    }
}

/// The edit record `ablate` left in an edited folder, if any.
pub fn edit_record(edited: &ModelDir) -> Result<Option<SurgeryRecord>> {
    let path = edited.root.join(EDIT_RECORD_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|source| Error::Json { path, source })
}

/// Verify an edited model against `directions`: with `options`, that selection; otherwise the
/// one its edit record holds (whose direction hashes must match the file's). `original` is the
/// unedited model, needed for λ ≠ 1 (default: the record's source model).
pub fn verify_step(
    edited: &ModelDir,
    directions_path: &Path,
    options: Option<&SurgeryOptions>,
    original: Option<&ModelDir>,
) -> Result<(SurgeryOptions, VerifyReport)> {
    let directions = DirectionsFile::load(directions_path)?;
    let record = edit_record(edited)?;
    let options = match (options, record.clone()) {
        (Some(o), _) => o.clone(),
        (None, Some(record)) => {
            let planned = plan(edited, &directions, &record.options)?;
            for (done, now) in record.edits.iter().zip(&planned.edits) {
                if done.tensor == now.tensor && done.direction_hash != now.direction_hash {
                    return Err(Error::Invalid(format!(
                        "{} differs from the directions used for the edit (`{}` had hash {}, now {})",
                        directions_path.display(),
                        done.direction,
                        done.direction_hash,
                        now.direction_hash
                    )));
                }
            }
            record.options
        }
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{} has no {EDIT_RECORD_FILE}: give the selection (--layers, --targets, ...)",
                edited.root.display()
            )))
        }
    };
    let planned = plan(edited, &directions, &options)?;
    let partial = planned.edits.iter().find(|e| (expected_strength(&planned, e) - 1.0).abs() > 1e-12);
    if let (None, Some(edit)) = (original, partial) {
        let named = match &record {
            Some(r) if r.source_path().is_none() => format!(
                "; the edit record names it as {} but holds no path (the edit was written without --record-paths)",
                r.source_description()
            ),
            Some(r) => format!("; the edit record's {} does not open as that model", r.source_description()),
            None => String::new(),
        };
        return Err(Error::Invalid(format!(
            "{} was edited with λ = {} (`{}`): verifying it needs the original model{named}; pass it with --original",
            edited.root.display(),
            expected_strength(&planned, edit),
            edit.tensor
        )));
    }
    let report = verify_with_original(edited, &planned, original)?;
    Ok((options, report))
}

/// Held-out prompts for an evaluation.
#[derive(Debug, Clone, Default)]
pub struct EvalSets {
    /// Prompts the original refuses.
    pub harmful: Vec<String>,
    /// Everyday prompts.
    pub harmless: Vec<String>,
    /// Texts whose cross-entropy is measured, if any.
    pub texts: Option<Vec<String>>,
    /// Prompts answered by both models side by side (with an original only).
    pub samples: Vec<String>,
}

/// What an evaluation measures of one model.
struct Measured {
    name: String,
    refusals: RefusalScore,
    over_refusals: RefusalScore,
    cross_entropy: Option<CrossEntropy>,
    /// The first generated token's logits on the harmless prompts (when there is an original).
    logits: Option<Vec<Vec<f32>>>,
    /// Answers to `EvalSets::samples` (when there is an original).
    samples: Vec<String>,
}

/// Measure one model on `sets`; `paired`: it is compared with another one (KL, samples).
fn measure(
    source: &mut dyn SubjectSource,
    sets: &EvalSets,
    max_tokens: usize,
    batch: usize,
    paired: bool,
    progress: &dyn Progress,
) -> Result<Measured> {
    let mut out = None;
    source.with_subject(&mut |s| {
        out = Some(Measured {
            name: s.name.clone(),
            refusals: refusals(s, &sets.harmful, max_tokens, batch, progress)?,
            over_refusals: refusals(s, &sets.harmless, max_tokens, batch, progress)?,
            cross_entropy: sets.texts.as_ref().map(|t| cross_entropy(s, t, batch)).transpose()?,
            logits: paired.then(|| next_token_logits(s, &sets.harmless, batch)).transpose()?,
            samples: match paired && !sets.samples.is_empty() {
                true => greedy_answers(s, &sets.samples, max_tokens, batch, progress)?,
                false => Vec::new(),
            },
        });
        Ok(())
    })?;
    out.ok_or_else(|| Error::Other("the model source measured nothing".into()))
}

/// Refusals, over-refusals, cross-entropy, and with the original (unedited) model the same for
/// it plus `KL(original ‖ model)` on the harmless prompts and both models' answers to
/// `sets.samples` (original left; the report keeps its numbers as `baseline_*`). The original is
/// measured first and the model after, so that sources which load their model
/// ([`crate::eval::OnDemand`]) hold one model at a time.
pub fn eval_step(
    model: &mut dyn SubjectSource,
    original: Option<&mut dyn SubjectSource>,
    sets: &EvalSets,
    max_tokens: usize,
    batch: usize,
    progress: &dyn Progress,
) -> Result<(EvalReport, Vec<SideBySide>)> {
    let paired = original.is_some();
    let base = original.map(|b| measure(b, sets, max_tokens, batch, true, progress)).transpose()?;
    let m = measure(model, sets, max_tokens, batch, paired, progress)?;
    let (kl, samples) = match (&base, &m.logits) {
        (Some(b), Some(q)) => {
            let p = b.logits.as_deref().unwrap_or_default();
            let kl = kl_of_logits(p, q, &sets.harmless, &b.name, &m.name)?;
            (Some(kl), pair(&sets.samples, b.samples.clone(), m.samples))
        }
        _ => (None, Vec::new()),
    };
    let report = EvalReport {
        refusals: m.refusals,
        over_refusals: m.over_refusals,
        kl,
        cross_entropy: m.cross_entropy,
        baseline_cross_entropy: base.as_ref().and_then(|b| b.cross_entropy.clone()),
        baseline_refusals: base.as_ref().map(|b| b.refusals.clone()),
        baseline_over_refusals: base.map(|b| b.over_refusals),
    };
    Ok((report, samples))
}
