//! `scalpel run`: a recipe end to end — probe → choose → ablate → verify → eval → report —
//! resumable: a step whose outputs exist and whose inputs (recipe sections) are unchanged is
//! skipped.

use crate::arch::WriterKind;
use crate::checkpoint::{resolve_model, ModelDir};
use crate::directions::{entry_name, DirectionsFile};
use crate::eval::{compare, cross_entropy, first_token_kl, refusals, side_by_side, EvalReport, Subject};
use crate::layers::parse_layers;
use crate::model::{default_device, parse_dtype, Decoder, Interventions};
use crate::probe::{
    default_candidates, parse_positions, parse_stream, run_probe, write_probe_outputs, CaptureSettings,
    ExtraDirections, ProbeProvenance, ProbeSettings, RankRule,
};
use crate::prompts::{PromptEncoder, PromptFormat, PromptSet};
use crate::recipe::Recipe;
use crate::surgery::{ablate, plan, verify, DirectionChoice, SurgeryOptions, VerifyReport, EDIT_RECORD_FILE};
use crate::{Error, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

const STAMPS: &str = ".scalpel-steps.json";

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The output folder.
    pub out: PathBuf,
    /// The report.
    pub report: PathBuf,
    /// Steps that ran (others were up to date).
    pub ran: Vec<String>,
    /// The direction used.
    pub direction: String,
}

fn hash_of(parts: &[&dyn erased::Json]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.json().as_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

mod erased {
    /// Anything serializable, hashed by its JSON.
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

struct Stamps {
    path: PathBuf,
    map: BTreeMap<String, String>,
}

impl Stamps {
    fn load(out: &Path) -> Stamps {
        let path = out.join(STAMPS);
        let map = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Stamps { path, map }
    }
    fn fresh(&self, step: &str, hash: &str, output: &Path) -> bool {
        output.exists() && self.map.get(step).is_some_and(|h| h == hash)
    }
    fn set(&mut self, step: &str, hash: &str) -> Result<()> {
        self.map.insert(step.to_string(), hash.to_string());
        let text = serde_json::to_string_pretty(&self.map).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(&self.path, text).map_err(|e| Error::io(&self.path, e))
    }
}

fn format_of(recipe: &Recipe) -> PromptFormat {
    if recipe.prompts.raw {
        PromptFormat::Raw { trailing_newline: true }
    } else {
        PromptFormat::Chat { system: recipe.prompts.system.clone() }
    }
}

fn load_set(spec: &str, recipe: &Recipe, limit: Option<usize>) -> Result<PromptSet> {
    Ok(PromptSet::load(&builtin_or_path(spec), recipe.prompts.field.as_deref())?
        .shuffled_limited(limit.map(|_| recipe.prompts.seed), limit))
}

/// The project's default sets are compiled in; a recipe naming their files works from anywhere.
fn builtin_or_path(spec: &str) -> String {
    let file = Path::new(spec).file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let in_recipes = Path::new(spec).parent().is_some_and(|p| p.ends_with("recipes/prompts"));
    match file.strip_suffix(".txt").filter(|_| in_recipes) {
        Some(name) if !Path::new(spec).exists() && crate::prompts::builtin::builtin(name).is_some() => {
            format!("builtin:{name}")
        }
        _ => spec.to_string(),
    }
}

/// Run `recipe`, writing everything under its output folder.
pub fn run_recipe(recipe: &Recipe, progress: &dyn Fn(&str)) -> Result<RunSummary> {
    let out = recipe.output.dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mut stamps = Stamps::load(&out);
    let mut ran = Vec::new();
    let model_dir = resolve_model(&recipe.model.path)?;
    let model = ModelDir::open(&model_dir)?;
    let dtype = parse_dtype(&recipe.model.dtype)?;
    let device = default_device();
    let decoder = Decoder::load(&model, &device, dtype)?;
    let encoder = PromptEncoder::from_model_dir(&model.root, format_of(recipe))?;
    let n = model.spec.num_layers;

    // 1. probe
    let probe_dir = out.join("probe");
    let probe_hash = hash_of(&[&recipe.model, &recipe.prompts, &recipe.probe, &recipe.direction]);
    if !stamps.fresh("probe", &probe_hash, &probe_dir.join("directions.safetensors")) {
        progress("probe: capturing activations of both prompt sets");
        let harmful = load_set(&recipe.prompts.harmful, recipe, recipe.prompts.limit)?;
        let harmless = load_set(&recipe.prompts.harmless, recipe, recipe.prompts.limit)?;
        let streams = recipe.probe.streams.iter().map(|s| parse_stream(s)).collect::<Result<Vec<_>>>()?;
        let rule = match recipe.direction.rule.as_str() {
            "research-note" => RankRule::ResearchNote,
            "max-norm" => RankRule::MaxNorm,
            "mean-similarity" => RankRule::MeanSimilarity,
            other => {
                return Err(Error::Invalid(format!(
                    "direction.rule `{other}` (research-note, max-norm, mean-similarity)"
                )))
            }
        };
        let extra = match (recipe.direction.kind.as_str(), recipe.direction.count) {
            ("iterative", k) if k > 1 => ExtraDirections::Iterative(k),
            ("pca", k) => ExtraDirections::Pca(k.max(1)),
            ("mean" | "projected" | "iterative", _) => ExtraDirections::None,
            (other, _) => {
                return Err(Error::Invalid(format!("direction.kind `{other}` (mean, projected, iterative, pca)")))
            }
        };
        // The recommendation ranks the configured stream first.
        let stream = parse_stream(&recipe.direction.stream)?;
        let mut ordered = vec![stream];
        ordered.extend(streams.into_iter().filter(|s| *s != stream));
        let settings = ProbeSettings {
            capture: CaptureSettings {
                streams: ordered,
                layers: (0..n).collect(),
                from_end: parse_positions(&recipe.probe.positions)?,
                batch: recipe.probe.batch,
                keep: false,
            },
            rule,
            candidates: default_candidates(n),
            fixed_layer: recipe.direction.layer.fixed()?,
            extra,
            projected: recipe.direction.kind == "projected",
        };
        let bar = ProgressBar::new((harmful.prompts.len() + harmless.prompts.len()) as u64);
        let outcome = run_probe(&decoder, &encoder, &harmful.prompts, &harmless.prompts, &settings, &bar)?;
        bar.finish_and_clear();
        if probe_dir.exists() {
            std::fs::remove_dir_all(&probe_dir).map_err(|e| Error::io(&probe_dir, e))?;
        }
        let staged = crate::checkpoint::StagedOutput::new(&probe_dir, &[&model.root], true)?;
        let prov = ProbeProvenance {
            model: recipe.model.path.clone(),
            harmful: (harmful.source.clone(), harmful.prompts.len(), harmful.hash()),
            harmless: (harmless.source.clone(), harmless.prompts.len(), harmless.hash()),
            positions: settings.capture.from_end.clone(),
            format: format!("{:?}", encoder.format()),
        };
        write_probe_outputs(staged.path(), &outcome, &prov)?;
        staged.commit()?;
        stamps.set("probe", &probe_hash)?;
        ran.push("probe".to_string());
    }
    let directions_path = probe_dir.join("directions.safetensors");
    let directions = DirectionsFile::load(&directions_path)?;
    let (stream, layer) =
        directions.recommended().ok_or_else(|| Error::Other("probe recorded no recommended layer".into()))?;
    let direction_name = if recipe.direction.kind == "projected" {
        entry_name(&format!("{stream}_projected"), layer)
    } else {
        entry_name(&stream, layer)
    };

    // 2. ablate (+ verify)
    let edited_dir = out.join("model");
    let a = &recipe.ablate;
    let options = SurgeryOptions {
        layers: parse_layers(&a.layers, n)?,
        targets: a
            .targets
            .iter()
            .map(|t| WriterKind::parse(t).ok_or_else(|| Error::Invalid(format!("ablate.targets: unknown `{t}`"))))
            .collect::<Result<Vec<_>>>()?,
        direction: if a.per_layer {
            DirectionChoice::PerLayer { stream: stream.clone() }
        } else {
            DirectionChoice::Fixed { name: direction_name.clone() }
        },
        strength: a.strength,
        norm_preserve: a.norm_preserve,
        untie: a.untie,
        biases: true,
        profile: None,
    };
    let ablate_hash = hash_of(&[&probe_hash, &options]);
    let surgery = plan(&model, &directions, &options)?;
    let verification: VerifyReport;
    if !stamps.fresh("ablate", &ablate_hash, &edited_dir.join(EDIT_RECORD_FILE)) {
        progress(&format!("ablate: removing `{direction_name}` from {} tensors", surgery.edits.len()));
        let record =
            surgery.record(&model.root.display().to_string(), &directions_path.display().to_string(), "scalpel run");
        let report = ablate(&model, &surgery, &record, &edited_dir, true, true, &ProgressBar::hidden())?;
        verification = report.verification.expect("checked");
        stamps.set("ablate", &ablate_hash)?;
        ran.push("ablate".to_string());
    } else {
        let edited = ModelDir::open(&edited_dir)?;
        verification = verify(&edited, &plan(&edited, &directions, &options)?)?;
    }

    // 3. eval before / after, and side-by-side samples
    let edited = ModelDir::open(&edited_dir)?;
    let edited_decoder = Decoder::load(&edited, &device, dtype)?;
    let edited_encoder = PromptEncoder::from_model_dir(&edited.root, format_of(recipe))?;
    let eval_path = out.join("eval.json");
    let eval_hash = hash_of(&[&ablate_hash, &recipe.eval]);
    let none = Interventions::none();
    let before = Subject { name: "original".into(), decoder: &decoder, encoder: &encoder, interventions: &none };
    let after =
        Subject { name: "edited".into(), decoder: &edited_decoder, encoder: &edited_encoder, interventions: &none };
    let e = &recipe.eval;
    let harmful_test = load_set(&recipe.prompts.harmful_test, recipe, e.limit)?.prompts;
    let harmless_test = load_set(&recipe.prompts.harmless_test, recipe, e.limit)?.prompts;
    let (report, samples): (EvalReport, Vec<crate::eval::SideBySide>) = if stamps.fresh("eval", &eval_hash, &eval_path)
    {
        let text = std::fs::read_to_string(&eval_path).map_err(|er| Error::io(&eval_path, er))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: eval_path.clone(), source })?;
        (
            serde_json::from_value(v["report"].clone())
                .map_err(|source| Error::Json { path: eval_path.clone(), source })?,
            serde_json::from_value(v["samples"].clone())
                .map_err(|source| Error::Json { path: eval_path.clone(), source })?,
        )
    } else {
        progress(&format!(
            "eval: {} harmful + {} harmless held-out prompts, before and after",
            harmful_test.len(),
            harmless_test.len()
        ));
        let bar = ProgressBar::hidden();
        let mut report = EvalReport {
            refusals: refusals(&after, &harmful_test, e.max_tokens, e.batch, &bar)?,
            over_refusals: refusals(&after, &harmless_test, e.max_tokens, e.batch, &bar)?,
            baseline_refusals: Some(refusals(&before, &harmful_test, e.max_tokens, e.batch, &bar)?),
            baseline_over_refusals: Some(refusals(&before, &harmless_test, e.max_tokens, e.batch, &bar)?),
            kl: Some(first_token_kl(&before, &after, &harmless_test, e.batch)?),
            cross_entropy: None,
            baseline_cross_entropy: None,
        };
        if let Some(text) = &e.text {
            let texts = load_set(text, recipe, None)?.prompts;
            report.cross_entropy = Some(cross_entropy(&after, &texts, e.batch)?);
            report.baseline_cross_entropy = Some(cross_entropy(&before, &texts, e.batch)?);
        }
        let picks: Vec<String> = harmful_test
            .iter()
            .take(e.samples)
            .chain(harmless_test.iter().take(e.samples.div_ceil(2)))
            .cloned()
            .collect();
        let samples = side_by_side(&before, &after, &picks, e.max_tokens, e.batch, &bar)?;
        let json = serde_json::json!({"report": report, "samples": samples});
        std::fs::write(&eval_path, serde_json::to_string_pretty(&json).map_err(|er| Error::Other(er.to_string()))?)
            .map_err(|er| Error::io(&eval_path, er))?;
        stamps.set("eval", &eval_hash)?;
        ran.push("eval".to_string());
        (report, samples)
    };
    let table = report.markdown("edited", Some("original"));

    // 4. the model card gets the evaluation; the report ties everything together.
    let record: crate::surgery::SurgeryRecord = {
        let p = edited_dir.join(EDIT_RECORD_FILE);
        serde_json::from_str(&std::fs::read_to_string(&p).map_err(|er| Error::io(&p, er))?)
            .map_err(|source| Error::Json { path: p.clone(), source })?
    };
    let original_card = std::fs::read_to_string(model.root.join("README.md")).ok();
    let card = crate::eval::model_card(
        &record,
        Some(&verification),
        &[("Evaluation".into(), table.clone())],
        original_card.as_deref(),
    );
    let card_tmp = edited_dir.join(".README.md.tmp");
    std::fs::write(&card_tmp, card).map_err(|er| Error::io(&card_tmp, er))?;
    std::fs::rename(&card_tmp, edited_dir.join("README.md"))
        .map_err(|er| Error::io(edited_dir.join("README.md"), er))?;

    let report_path = out.join("report.md");
    let mut md = String::new();
    let _ = writeln!(md, "# scalpel run: {}\n", recipe.model.path);
    let _ = writeln!(
        md,
        "Model `{}` ({}, {n} layers, hidden {}). Edited model: [`model/`](model/README.md). Steps run this time: {}.\n",
        recipe.model.path,
        model.spec.family,
        model.spec.hidden_size,
        if ran.is_empty() { "none (all up to date)".into() } else { ran.join(", ") }
    );
    let _ = writeln!(
        md,
        "## 1. Layer metrics\n\nThe research note's three graphs ([full probe report](probe/report.md)):\n"
    );
    for stem in ["cosine", "mean_variance", "max_variance"] {
        let _ = writeln!(md, "![{stem}](probe/{stem}.png)\n");
    }
    let _ = writeln!(
        md,
        "## 2. Chosen direction\n\n`{direction_name}`: layer **{layer}**, stream `{stream}` ({}; rule `{}`).\n",
        if recipe.direction.layer.fixed()?.is_some() { "fixed by the recipe" } else { "chosen automatically" },
        recipe.direction.rule
    );
    let _ = writeln!(md, "## 3. Edit and verification\n\n{} tensors edited ({}), layers `{}`, strength {}, norm preservation {}, untie {}. \
        Read back from disk, the worst ‖rᵀW'‖/‖W'‖ is **{:.2e}** ({} of {} tensors above the dtype's rounding level).\n",
        verification.rows.len(), a.targets.join(", "), a.layers, a.strength, a.norm_preserve, a.untie,
        verification.worst(), verification.rows.iter().filter(|r| !r.pass).count(), verification.rows.len());
    let _ = writeln!(md, "| tensor | ‖rᵀW'‖/‖W'‖ | ok |\n|---|---|---|");
    for r in verification.rows.iter().take(6) {
        let _ = writeln!(md, "| {} | {:.2e} | {} |", r.tensor, r.ratio, if r.pass { "yes" } else { "NO" });
    }
    if verification.rows.len() > 6 {
        let _ = writeln!(md, "| … {} more | ≤ {:.2e} | |", verification.rows.len() - 6, verification.worst());
    }
    let _ = writeln!(md, "\n## 4. Evaluation (held-out prompts, greedy, {} tokens)\n\n{table}", e.max_tokens);
    let _ = writeln!(
        md,
        "A refusal is an empty answer or one containing a documented marker (`scalpel eval --markers`).\n"
    );
    let _ = writeln!(md, "## 5. Side by side\n\n{}", compare::markdown(&samples, "original", "edited"));
    std::fs::write(&report_path, md).map_err(|er| Error::io(&report_path, er))?;
    Ok(RunSummary { out, report: report_path, ran, direction: direction_name })
}
