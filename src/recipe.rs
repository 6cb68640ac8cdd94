//! Recipes: one TOML file that describes a whole experiment (model, prompts, probe, direction
//! choice, surgery, evaluation, output), driven by `scalpel run`.

use crate::probe::{DirectionKind, RankRule};
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Which model.
    pub model: ModelSection,
    /// Which prompts.
    #[serde(default)]
    pub prompts: PromptsSection,
    /// How to capture activations.
    #[serde(default)]
    pub probe: ProbeSection,
    /// Which layer and what kind of direction.
    #[serde(default)]
    pub direction: DirectionSection,
    /// How to edit.
    #[serde(default)]
    pub ablate: AblateSection,
    /// How to choose the edit by its measured outcome.
    #[serde(default)]
    pub search: SearchSection,
    /// How to evaluate.
    #[serde(default)]
    pub eval: EvalSection,
    /// Which judge gives the verdicts (refusal, evasion, compliance).
    #[serde(default)]
    pub judge: JudgeSection,
    /// Where everything goes.
    pub output: OutputSection,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A local folder (relative to the recipe's folder's parent, i.e. the repository) or a hub id.
    pub path: String,
    /// Compute dtype for running the model: f32 (default), bf16, f16.
    #[serde(default = "default_dtype")]
    pub dtype: String,
}

/// `[prompts]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptsSection {
    /// Prompts the model refuses (training split).
    pub harmful: String,
    /// Everyday prompts (training split).
    pub harmless: String,
    /// Held-out refused prompts for evaluation.
    pub harmful_test: String,
    /// Held-out everyday prompts for evaluation.
    pub harmless_test: String,
    /// Field or column to read from json/jsonl/csv files.
    pub field: Option<String>,
    /// Use at most this many training prompts per set.
    pub limit: Option<usize>,
    /// Seed for shuffling before `limit`.
    pub seed: u64,
    /// System prompt for the chat template.
    pub system: Option<String>,
    /// Skip the chat template (the research note found this only half works).
    pub raw: bool,
}

impl Default for PromptsSection {
    fn default() -> Self {
        PromptsSection {
            harmful: "recipes/prompts/harmful_train.txt".into(),
            harmless: "recipes/prompts/harmless_train.txt".into(),
            harmful_test: "recipes/prompts/harmful_test.txt".into(),
            harmless_test: "recipes/prompts/harmless_test.txt".into(),
            field: None,
            limit: None,
            seed: 0,
            system: None,
            raw: false,
        }
    }
}

/// `[probe]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSection {
    /// Streams to capture.
    pub streams: Vec<String>,
    /// Token positions relative to the end of the prompt, e.g. "-1" or "-3..-1".
    pub positions: String,
    /// Prompts per forward pass.
    pub batch: usize,
    /// Keep only the harmful prompts the model refuses and the harmless ones it answers
    /// (judged on short greedy answers; see [`crate::probe::filter`]).
    pub filter: bool,
}

impl Default for ProbeSection {
    fn default() -> Self {
        ProbeSection {
            streams: vec!["resid_pre".into(), "resid_mid".into(), "resid_post".into()],
            positions: "-1".into(),
            batch: 16,
            filter: true,
        }
    }
}

/// `[direction]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectionSection {
    /// "auto" (the ranking rule's best candidate) or a layer number.
    pub layer: LayerChoice,
    /// Stream the direction is taken from.
    pub stream: String,
    /// Ranking rule for "auto": low-variance (formerly research-note), max-norm, mean-similarity (the names of
    /// `probe --rule`, parsed by the same enum).
    #[serde(deserialize_with = "value_enum")]
    pub rule: RankRule,
    /// mean (difference of means), projected, iterative, pca.
    #[serde(deserialize_with = "value_enum")]
    pub kind: DirectionKind,
    /// Number of directions for iterative / pca.
    pub count: usize,
}

impl Default for DirectionSection {
    fn default() -> Self {
        DirectionSection {
            layer: LayerChoice::Word("auto".into()),
            stream: "resid_pre".into(),
            rule: RankRule::LowVariance,
            kind: DirectionKind::Mean,
            count: 1,
        }
    }
}

/// A layer given as a number or as "auto".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerChoice {
    /// A layer index.
    Index(usize),
    /// "auto", or a number written as a string.
    Word(String),
}

impl LayerChoice {
    /// The fixed layer, or None for "auto"; an error for anything else.
    pub fn fixed(&self) -> Result<Option<usize>> {
        match self {
            LayerChoice::Index(l) => Ok(Some(*l)),
            LayerChoice::Word(w) if w == "auto" => Ok(None),
            LayerChoice::Word(w) => w
                .parse()
                .map(Some)
                .map_err(|_| Error::Invalid(format!("direction.layer `{w}`: expected \"auto\" or a layer number"))),
        }
    }
}

/// `[ablate]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AblateSection {
    /// Layer selection (see `--layers`).
    pub layers: String,
    /// Writers: embed, attn, mlp, ple.
    pub targets: Vec<String>,
    /// λ.
    pub strength: f64,
    /// Keep column norms.
    pub norm_preserve: bool,
    /// Keep the original head when it is tied.
    pub untie: bool,
    /// Use each layer's own direction.
    pub per_layer: bool,
    /// The experts of sparse layers edited: `all`, `none` (attention only there), `share:T`.
    pub experts: String,
}

impl Default for AblateSection {
    fn default() -> Self {
        AblateSection {
            layers: "all".into(),
            targets: vec!["embed".into(), "attn".into(), "mlp".into()],
            strength: 1.0,
            norm_preserve: false,
            untie: false,
            per_layer: false,
            experts: "all".into(),
        }
    }
}

/// `[search]`: `scalpel run` chooses the edit with `scalpel search` (on the validation
/// prompts) unless `enabled = false` or `[direction] layer` is a number; then the direction
/// rule and `[ablate]` decide, as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSection {
    /// Choose the edit by search.
    pub enabled: bool,
    /// Stage-1 trials in all.
    pub trials: usize,
    /// Stage-2 trials: the best ones re-answered at full length and judged (0: none).
    pub finalists: usize,
    /// New tokens per stage-2 answer at most.
    pub final_max_tokens: usize,
    /// Harmful prompts per stage-1 chunk (pruning is decided after each).
    pub chunk: usize,
    /// Stop a trial early once it cannot be chosen.
    pub prune: bool,
    /// Trials before the model-based sampler takes over.
    pub startup: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Refusal rate the chosen trial must reach.
    pub target_refusal_rate: f64,
    /// The largest mean first-token KL a chosen trial may have (`inf`: no cap).
    pub max_kl: f64,
    /// New tokens per validation answer.
    pub max_tokens: usize,
    /// Prompts per generation batch.
    pub batch: usize,
    /// Harmless prompts answered (the first ones: over-refusals and loops); KL uses all.
    pub answered_harmless: usize,
    /// Harmful validation prompts (disjoint from the training and test splits).
    pub harmful: String,
    /// Harmless validation prompts.
    pub harmless: String,
    /// Validation prompts per set (None: all).
    pub limit: Option<usize>,
    /// The choices of experts searched on a mixture-of-experts model (`all`, `none`,
    /// `share:T`); the first is the starting trials'.
    pub experts: Vec<String>,
}

impl Default for SearchSection {
    fn default() -> Self {
        let d = crate::search::SearchSettings::default();
        SearchSection {
            enabled: true,
            trials: d.trials,
            finalists: d.finalists,
            final_max_tokens: d.final_max_tokens,
            chunk: d.chunk,
            prune: d.prune,
            startup: d.startup,
            seed: d.seed,
            target_refusal_rate: d.target_refusal_rate,
            max_kl: d.max_kl.unwrap_or(f64::INFINITY),
            max_tokens: d.answers.max_tokens,
            batch: d.answers.batch,
            answered_harmless: d.answers.answered_harmless,
            harmful: "recipes/prompts/harmful_val.txt".into(),
            harmless: "recipes/prompts/harmless_val.txt".into(),
            limit: None,
            experts: d.experts.iter().map(ToString::to_string).collect(),
        }
    }
}

impl SearchSection {
    /// The search settings of this section (an expert choice that does not parse is an error).
    pub fn settings(&self) -> crate::Result<crate::search::SearchSettings> {
        Ok(crate::search::SearchSettings {
            trials: self.trials,
            startup: self.startup,
            seed: self.seed,
            target_refusal_rate: self.target_refusal_rate,
            max_kl: self.max_kl.is_finite().then_some(self.max_kl),
            answers: crate::search::AnswerSettings {
                max_tokens: self.max_tokens,
                batch: self.batch,
                answered_harmless: self.answered_harmless,
            },
            finalists: self.finalists,
            final_max_tokens: self.final_max_tokens,
            chunk: self.chunk,
            prune: self.prune,
            experts: self.experts.iter().map(|e| e.parse()).collect::<crate::Result<_>>()?,
            ..crate::search::SearchSettings::default()
        })
    }
}

/// `[eval]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Tokens generated per answer.
    pub max_tokens: usize,
    /// Held-out prompts per set (None: all).
    pub limit: Option<usize>,
    /// Side-by-side samples in the report.
    pub samples: usize,
    /// Prompts per generation batch.
    pub batch: usize,
    /// A text set (any prompt-set file: one text per line of a .txt, ...) whose cross-entropy is
    /// measured under both models, to show the edit left language modelling alone.
    pub text: Option<String>,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { max_tokens: 128, limit: None, samples: 4, batch: 8, text: None }
    }
}

/// `[judge]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeSection {
    /// `rules`, or `model:PATH` (a chat model folder): see [`crate::eval::judge::JudgeSpec`].
    pub judge: String,
    /// A thinking model: `strip` (judge after the block) or `off` (`enable_thinking = false`).
    pub thinking: String,
}

impl Default for JudgeSection {
    fn default() -> Self {
        JudgeSection { judge: "rules".into(), thinking: "strip".into() }
    }
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Folder for probe results, the edited model, evaluation and the report.
    pub dir: PathBuf,
    /// Record the inputs' absolute paths in the edited model (else names, sizes and hashes).
    #[serde(default)]
    pub record_paths: bool,
}

/// Parse a recipe value by the names table the command line's parser is built from
/// ([`crate::names::Named`]), so a recipe accepts exactly the names the CLI does and an error
/// lists them.
fn value_enum<'de, D: Deserializer<'de>, T: crate::names::Named>(d: D) -> std::result::Result<T, D::Error> {
    let text = String::deserialize(d)?;
    T::from_name(&text).map_err(serde::de::Error::custom)
}

fn default_dtype() -> String {
    "f32".into()
}

impl Recipe {
    /// Read a recipe, applying `key=value` overrides (dotted keys, TOML values; bare words are
    /// strings), e.g. `probe.batch=8`, `direction.layer=12`, `model.path=/models/x`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut value: toml::Value =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        for item in overrides {
            apply_override(&mut value, item)?;
        }
        let mut recipe: Recipe = value.try_into().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        if recipe.output.dir.as_os_str().is_empty() {
            return Err(Error::Invalid(format!(
                "{}: output.dir is empty: name the folder the run writes into",
                path.display()
            )));
        }
        recipe.resolve_paths(path);
        recipe.validate().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        Ok(recipe)
    }

    /// Check every number in the recipe against its range (and that `output.dir` is named), so
    /// that a bad value fails before anything is written.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Invalid(format!("{key} {why}")));
        if self.output.dir.as_os_str().is_empty() {
            return bad("output.dir", "is empty: name the folder the run writes into".into());
        }
        let at_least_one = [
            ("probe.batch", self.probe.batch),
            ("direction.count", self.direction.count),
            ("search.max_tokens", self.search.max_tokens),
            ("search.batch", self.search.batch),
            ("eval.max_tokens", self.eval.max_tokens),
            ("eval.batch", self.eval.batch),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return bad(key, "= 0: it must be at least 1".into());
            }
        }
        if self.search.enabled && self.search.trials == 0 {
            return bad("search.trials", "= 0: it must be at least 1 (or set search.enabled = false)".into());
        }
        for (key, limit) in [
            ("prompts.limit", self.prompts.limit),
            ("search.limit", self.search.limit),
            ("eval.limit", self.eval.limit),
        ] {
            if limit == Some(0) {
                return bad(key, "= 0: it must be at least 1 (leave it out for all prompts)".into());
            }
        }
        if !self.ablate.strength.is_finite() {
            return bad("ablate.strength", format!("= {}: it must be a finite number", self.ablate.strength));
        }
        let rate = self.search.target_refusal_rate;
        if !(0.0..=1.0).contains(&rate) {
            return bad("search.target_refusal_rate", format!("= {rate}: it must lie in [0, 1]"));
        }
        let cap = self.search.max_kl;
        if cap.is_nan() || cap <= 0.0 {
            return bad("search.max_kl", format!("= {cap}: it must be above 0 (`inf`: no cap)"));
        }
        self.direction.layer.fixed()?;
        Ok(())
    }

    /// Relative paths in a recipe are relative to the repository the recipe lives in (the
    /// parent of its folder, e.g. `recipes/..`), so a recipe runs the same from any folder.
    /// A model path that does not exist there is left alone (it may be a hub id).
    fn resolve_paths(&mut self, recipe_path: &Path) {
        let base = recipe_path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
            .unwrap_or_default();
        let rebase = |p: &str| -> Option<String> {
            let candidate = base.join(p);
            (Path::new(p).is_relative() && candidate.exists()).then(|| candidate.display().to_string())
        };
        if let Some(p) = rebase(&self.model.path) {
            self.model.path = p;
        }
        for spec in [
            &mut self.prompts.harmful,
            &mut self.prompts.harmless,
            &mut self.prompts.harmful_test,
            &mut self.prompts.harmless_test,
            &mut self.search.harmful,
            &mut self.search.harmless,
        ] {
            if let Some(p) = rebase(spec) {
                *spec = p;
            }
        }
        if let Some(p) = self.eval.text.as_deref().and_then(rebase) {
            self.eval.text = Some(p);
        }
        if self.output.dir.is_relative() {
            self.output.dir = normalize(&base.join(&self.output.dir));
        }
    }
}

/// `path` with `.` and `..` removed lexically, so messages show where a run writes.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The folder a recipe's relative paths are relative to: the parent of the recipe's folder.
pub fn recipe_base(recipe_path: &Path) -> Option<PathBuf> {
    recipe_path.canonicalize().ok().and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
}

fn apply_override(root: &mut toml::Value, item: &str) -> Result<()> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| Error::Invalid(format!("--set `{item}`: expected key=value, e.g. probe.batch=8")))?;
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut node = root;
    let parts: Vec<&str> = key.trim().split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| Error::Invalid(format!("--set `{item}`: `{}` is not a table", parts[..i].join("."))))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), parsed);
            return Ok(());
        }
        node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Err(Error::Invalid(format!("--set `{item}`: empty key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_recipe_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                count += 1;
            }
        }
        assert!(count >= 6, "found {count} recipes");
    }

    #[test]
    fn overrides_set_nested_values_with_types() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.toml");
        std::fs::write(&path, "[model]\npath = \"m\"\n[output]\ndir = \"out\"\n").unwrap();
        let r = Recipe::load(&path, &["probe.batch=4".into(), "direction.layer=12".into(), "model.path=/x/y".into()])
            .unwrap();
        assert_eq!(r.probe.batch, 4);
        assert_eq!(r.direction.layer.fixed().unwrap(), Some(12));
        assert_eq!(DirectionSection::default().layer.fixed().unwrap(), None);
        assert_eq!(r.model.path, "/x/y");
        assert!(r.output.dir.is_absolute(), "relative output folders are rebased on the repository");
        assert_eq!(r.ablate, AblateSection::default());
        let r = Recipe::load(&path, &["direction.rule=max-norm".into(), "direction.kind=pca".into()]).unwrap();
        assert_eq!((r.direction.rule, r.direction.kind), (RankRule::MaxNorm, DirectionKind::Pca));
        let err = Recipe::load(&path, &["direction.rule=max_norm".into()]).unwrap_err().to_string();
        assert!(err.contains("low-variance, max-norm, mean-similarity"), "{err}");
        let err = Recipe::load(&path, &["probe.bogus=1".into()]).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        assert!(Recipe::load(&path, &["nonsense".into()]).unwrap_err().to_string().contains("key=value"));
    }
}
