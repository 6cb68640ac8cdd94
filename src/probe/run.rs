//! The whole probe: capture both sets, analyse, extract one or more directions.

use super::analysis::{analyse, degenerate, directions, ProbeAnalysis};
use super::capture::{CaptureModel, CaptureSettings, SetStats};
use super::extract::{mean_difference, pair_pca};
use super::ranking::RankRule;
use crate::directions::{entry_name, Direction};
use crate::model::{basis_tensor, HookPoint, Interventions};
use crate::progress::Progress;
use crate::prompts::PromptEncoder;
use crate::surgery::Basis;
use crate::{Error, Result};
use std::time::Instant;

/// How many directions to extract at the recommended layer, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraDirections {
    /// One: the difference of means.
    None,
    /// K by iterating: extract, ablate what was found at runtime, extract again.
    Iterative(usize),
    /// The top K principal components of the differences `h_i − b_j` over every pair of a
    /// harmful and a harmless prompt (see [`pair_pca`]).
    Pca(usize),
}

/// What kind of direction a recipe (`direction.kind`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionKind {
    /// The difference of means.
    Mean,
    /// The difference of means orthogonal to the harmless mean (`{stream}_projected.{layer}`).
    Projected,
    /// K directions by iterating (extract, ablate, re-extract).
    Iterative,
    /// The top K principal components of every harmful–harmless pair's difference.
    Pca,
}

impl crate::names::Named for DirectionKind {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("mean", DirectionKind::Mean),
        ("projected", DirectionKind::Projected),
        ("iterative", DirectionKind::Iterative),
        ("pca", DirectionKind::Pca),
    ];
}

impl std::str::FromStr for DirectionKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        crate::names::Named::from_name(s)
    }
}

impl DirectionKind {
    /// The extra directions this kind asks for, with `count` directions.
    pub fn extra(self, count: usize) -> ExtraDirections {
        match self {
            DirectionKind::Iterative if count > 1 => ExtraDirections::Iterative(count),
            DirectionKind::Pca => ExtraDirections::Pca(count.max(1)),
            _ => ExtraDirections::None,
        }
    }
}

/// Probe settings. The first captured stream is the one the recommendation is taken from.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// What to capture.
    pub capture: CaptureSettings,
    /// Ranking rule for the recommendation.
    pub rule: RankRule,
    /// Layers the ranking may recommend.
    pub candidates: Vec<usize>,
    /// A layer to use instead of the ranking's choice.
    pub fixed_layer: Option<usize>,
    /// Extra directions at the recommended layer.
    pub extra: ExtraDirections,
    /// Also write the variants orthogonal to the harmless mean.
    pub projected: bool,
}

/// The result of a probe.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    /// Metrics, rankings, recommendation.
    pub analysis: ProbeAnalysis,
    /// Directions to save.
    pub directions: Vec<Direction>,
    /// The harmful set's statistics.
    pub harmful: SetStats,
    /// The harmless set's statistics.
    pub harmless: SetStats,
    /// Prompts per second over the first capture.
    pub prompts_per_second: f64,
    /// Each sparse layer's experts' writes along the recommended direction (empty for a dense
    /// model, and until [`probe_to_folder`] reads them from the weights).
    pub write_shares: Vec<crate::surgery::LayerWriteShares>,
}

/// Probe `harmful` against `harmless` on `decoder` (the whole model, or
/// [`crate::model::LayerMajor`] for one layer at a time).
pub fn run_probe<M: CaptureModel + ?Sized>(
    decoder: &M,
    encoder: &PromptEncoder,
    harmful: &[String],
    harmless: &[String],
    settings: &ProbeSettings,
    progress: &dyn Progress,
) -> Result<ProbeOutcome> {
    if harmful.is_empty() || harmless.is_empty() {
        return Err(Error::Invalid("both prompt sets need at least one prompt".into()));
    }
    let started = Instant::now();
    let none = Interventions::none();
    let mut both = decoder.capture_sets(encoder, &[harmful, harmless], &settings.capture, &none, progress)?;
    let (b, h) = (both.pop().expect("two sets"), both.pop().expect("two sets"));
    let prompts_per_second = (harmful.len() + harmless.len()) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    check_finite(&h, "harmful", harmful)?;
    check_finite(&b, "harmless", harmless)?;
    let mut analysis = analyse(&h, &b, &settings.candidates, settings.rule, &settings.capture.streams)?;
    if let Some(layer) = settings.fixed_layer {
        // The first stream (in the order asked) whose direction at that layer is usable.
        let usable = |s: &HookPoint| !analysis.skipped.iter().any(|k| k.stream == s.name() && k.layer == layer);
        let stream = settings.capture.streams.iter().find(|s| usable(s)).unwrap_or(&settings.capture.streams[0]);
        analysis.recommended = (stream.name().to_string(), layer);
    }
    let mut dirs = directions(&h, &b, settings.projected);
    let (stream_name, layer) = analysis.recommended.clone();
    let stream = HookPoint::parse(&stream_name).expect("recommended stream was captured");
    let again = Recapture { decoder, encoder, harmful, harmless, settings, progress };
    let mean = mean_difference(h.get(stream, layer), b.get(stream, layer));
    if let Some(reason) = degenerate(&mean, h.get(stream, layer).mean_norm()) {
        return Err(Error::Invalid(format!("`{}` cannot be used: {reason}", entry_name(stream.name(), layer))));
    }
    let extra = match settings.extra {
        ExtraDirections::None => None,
        ExtraDirections::Iterative(k) => Some(iterative(&again, stream, layer, k, mean)?),
        ExtraDirections::Pca(k) => Some(pca(&again, stream, layer, k, &mean)?),
    };
    if let Some(rows) = extra {
        let name = entry_name(stream.name(), layer);
        dirs.retain(|d| d.name != name);
        dirs.push(Direction { name, rows });
    }
    Ok(ProbeOutcome {
        analysis,
        directions: dirs,
        harmful: h,
        harmless: b,
        prompts_per_second,
        write_shares: Vec::new(),
    })
}

/// A NaN or infinity in any captured activation is an error naming the set, stream, layer and prompt.
fn check_finite(stats: &SetStats, set: &str, prompts: &[String]) -> Result<()> {
    for (stream, layers) in &stats.streams {
        for (layer, s) in layers {
            if let Some(i) = s.first_non_finite() {
                let prompt = prompts.get(i as usize).map_or(String::new(), |p| format!(": {p:?}"));
                return Err(Error::Invalid(format!(
                    "non-finite activation at `{}` layer {layer} for {set} prompt #{i}{prompt}",
                    stream.name()
                )));
            }
        }
    }
    Ok(())
}

fn orthonormal_rows(rows: &[Vec<f64>]) -> Result<Vec<Vec<f32>>> {
    let basis = Basis::orthonormal(rows)?;
    Ok(basis.rows().iter().map(|r| r.iter().map(|&x| x as f32).collect()).collect())
}

/// Everything needed to capture both sets again at one stream and layer.
struct Recapture<'a, M: ?Sized> {
    decoder: &'a M,
    encoder: &'a PromptEncoder,
    harmful: &'a [String],
    harmless: &'a [String],
    settings: &'a ProbeSettings,
    progress: &'a dyn Progress,
}

impl<M: CaptureModel + ?Sized> Recapture<'_, M> {
    /// Both sets' statistics at `stream`/`layer` under `interventions` (keeping each prompt's vector if `keep`).
    fn both(
        &self,
        stream: HookPoint,
        layer: usize,
        keep: bool,
        interventions: &Interventions,
    ) -> Result<(SetStats, SetStats)> {
        let capture =
            CaptureSettings { streams: vec![stream], layers: vec![layer], keep, ..self.settings.capture.clone() };
        self.progress.inc_length((self.harmful.len() + self.harmless.len()) as u64);
        let sets = [self.harmful, self.harmless];
        let mut both = self.decoder.capture_sets(self.encoder, &sets, &capture, interventions, self.progress)?;
        let (b, h) = (both.pop().expect("two sets"), both.pop().expect("two sets"));
        Ok((h, b))
    }
}

/// K directions by iterating: ablate what was found at every layer, take the new difference of means.
fn iterative<M: CaptureModel + ?Sized>(
    again: &Recapture<'_, M>,
    stream: HookPoint,
    layer: usize,
    k: usize,
    first: Vec<f64>,
) -> Result<Vec<Vec<f32>>> {
    let mut found = vec![first];
    while found.len() < k {
        let basis = basis_tensor(&orthonormal_rows(&found)?, again.decoder.device())?;
        let iv = Interventions::ablate_everywhere(basis, again.decoder.spec().num_layers, &HookPoint::STREAMS);
        let (h, b) = again.both(stream, layer, false, &iv)?;
        found.push(mean_difference(h.get(stream, layer), b.get(stream, layer)));
    }
    orthonormal_rows(&found)
}

/// The top K principal components of every harmful–harmless pair's difference (see [`pair_pca`]),
/// oriented along the mean difference.
fn pca<M: CaptureModel + ?Sized>(
    again: &Recapture<'_, M>,
    stream: HookPoint,
    layer: usize,
    k: usize,
    mean: &[f64],
) -> Result<Vec<Vec<f32>>> {
    let (hk, bk) = again.both(stream, layer, true, &Interventions::none())?;
    let (hv, bv) = (&hk.kept[&(stream, layer)], &bk.kept[&(stream, layer)]);
    orthonormal_rows(&pair_pca(hv, bv, k, mean)?)
}

/// What a probe that writes its outputs runs on (see [`probe_to_folder`]).
pub struct ProbeFolder<'a> {
    /// The model folder (its root is protected from being overwritten).
    pub model_dir: &'a crate::checkpoint::ModelDir,
    /// The model's name as recorded in the outputs.
    pub name: &'a str,
    /// Its prompt encoder.
    pub encoder: &'a PromptEncoder,
    /// Prompts it refuses.
    pub harmful: &'a crate::prompts::PromptSet,
    /// Everyday prompts.
    pub harmless: &'a crate::prompts::PromptSet,
}

/// Probe on `model` (whole or layer-major) and write every output into `out` (staged, renamed
/// into place when complete), for any [`CaptureModel`] (`scalpel probe` and `scalpel run`). Returns the outcome, the files written and the folder.
pub fn probe_to_folder<M: CaptureModel + ?Sized>(
    model: &M,
    inputs: &ProbeFolder<'_>,
    settings: &ProbeSettings,
    out: &std::path::Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<(ProbeOutcome, Vec<String>, std::path::PathBuf)> {
    let staged = crate::checkpoint::StagedOutput::new(out, &[&inputs.model_dir.root], force)?;
    let (h, b) = (inputs.harmful, inputs.harmless);
    let mut outcome = run_probe(model, inputs.encoder, &h.prompts, &b.prompts, settings, progress)?;
    progress.finish();
    outcome.write_shares = super::experts::recommended_write_shares(inputs.model_dir, &outcome)?;
    let prov = super::ProbeProvenance {
        model: inputs.name.to_string(),
        harmful: (h.recorded_source(), h.prompts.len(), h.hash()),
        harmless: (b.recorded_source(), b.prompts.len(), b.hash()),
        positions: settings.capture.from_end.clone(),
        format: inputs.encoder.format().to_string(),
    };
    let files = super::write_probe_outputs(staged.path(), &outcome, &prov)?;
    let dir = staged.commit()?;
    Ok((outcome, files, dir))
}
