//! `scalpel run`: a recipe end to end — probe → choose → ablate → verify → eval → report —
//! resumable: a step whose outputs exist and whose inputs (recipe sections and the model's
//! files) are unchanged is skipped. Each step is the function the matching subcommand calls
//! ([`steps`]); this module only wires them to a recipe.

mod report;
pub mod stamps;
pub mod steps;

use crate::checkpoint::{resolve_model, Hub, ModelDir};
use crate::directions::DirectionsFile;
use crate::eval::judge::JudgeSpec;
use crate::eval::{EvalReport, Loaded, OnDemand, SideBySide};
use crate::model::{default_device, parse_dtype, Decoder, Interventions};
use crate::probe::{confirmed_prompts, probe_to_folder, DirectionKind, ProbeFolder};
use crate::progress::{Reporter, Unit};
use crate::prompts::{PromptEncoder, PromptFormat, PromptSet};
use crate::recipe::{Recipe, SearchSection};
use crate::search::{search_step, trial_edit, TrialEdit, Validation, CHOSEN_FILE};
use crate::surgery::{DirectionChoice, SurgeryOptions, VerifyReport, EDIT_RECORD_FILE};
use crate::{Error, Result};
use stamps::{hash_of, json, model_identity, Stamps};
use std::path::{Path, PathBuf};
pub use steps::{
    ablate_step, edit_record, eval_step, original_model, parse_streams, parse_targets, verify_step, AblateRequest,
    EvalSets, ProbeRequest, SurgerySettings,
};

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

/// The model as the reports name it: as the recipe gives it only where the user asked for
/// local paths (`[output] record_paths`), else by its folder name or hub id.
fn model_name(recipe: &Recipe, model: &ModelDir) -> String {
    if recipe.output.record_paths {
        recipe.model.path.clone()
    } else {
        crate::checkpoint::display_name(&model.root)
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

/// The recipe's probe settings (`[probe]` and `[direction]`).
pub fn probe_request(recipe: &Recipe) -> Result<ProbeRequest> {
    let d = &recipe.direction;
    Ok(ProbeRequest {
        streams: parse_streams(&recipe.probe.streams, Some(&d.stream))?,
        positions: recipe.probe.positions.clone(),
        batch: recipe.probe.batch,
        rule: d.rule,
        candidates: None,
        layer: d.layer.fixed()?,
        extra: d.kind.extra(d.count),
        // The search also tries the directions made orthogonal to the harmless mean.
        projected: d.kind == DirectionKind::Projected || searches(recipe)?,
        keep: false,
    })
}

/// The recipe's surgery settings (`[ablate]`, and `[direction]`'s kind): the recommended
/// direction of `stream` (its projected variant for `kind = "projected"`).
pub fn surgery_settings(recipe: &Recipe, stream: &str) -> Result<SurgerySettings> {
    let a = &recipe.ablate;
    let projected = recipe.direction.kind == DirectionKind::Projected;
    Ok(SurgerySettings {
        layers: a.layers.clone(),
        direction_layer: None,
        stream: Some(if projected && !a.per_layer { format!("{stream}_projected") } else { stream.to_string() }),
        per_layer: a.per_layer,
        targets: parse_targets(&a.targets)?,
        strength: a.strength,
        norm_preserve: a.norm_preserve,
        untie: a.untie,
        biases: true,
        experts: a.experts.parse()?,
    })
}

/// Whether `scalpel run` chooses the edit by search: `[search] enabled` (the default) and no
/// fixed `[direction] layer`.
pub fn searches(recipe: &Recipe) -> Result<bool> {
    Ok(recipe.search.enabled && recipe.direction.layer.fixed()?.is_none())
}

/// The loaded model and where its run writes.
struct Run<'r> {
    recipe: &'r Recipe,
    out: PathBuf,
    stamps: Stamps,
    ran: Vec<String>,
    model: ModelDir,
    /// The original model, loaded by the first step that runs it; eval takes it.
    decoder: Option<Decoder>,
    encoder: PromptEncoder,
    reporter: &'r dyn Reporter,
}

/// Run `recipe`, writing everything under its output folder.
///
/// The whole recipe is checked before anything is written. `output.dir` must be new, empty or
/// a folder an earlier run wrote (it holds the run's stamps); each step replaces its output
/// only where the stamps record the step as its writer, so nothing scalpel did not write is
/// ever replaced. A hub id in `model.path` is found (or downloaded) as `hub` says.
pub fn run_recipe(recipe: &Recipe, hub: &Hub, reporter: &dyn Reporter) -> Result<RunSummary> {
    validate_recipe(recipe)?;
    let out = recipe.output.dir.clone();
    let model = ModelDir::open(&resolve_model(&recipe.model.path, hub)?)?;
    let encoder = PromptEncoder::from_model_dir(&model.root, format_of(recipe))?;
    claim_output_dir(&out, &model.root)?;
    let stamps = Stamps::load(&out);
    let mut run = Run { recipe, out, stamps, ran: Vec::new(), model, decoder: None, encoder, reporter };
    let probe_hash = run.probe()?;
    let probe_directions = run.out.join("probe").join("directions.safetensors");
    let directions = DirectionsFile::load(&probe_directions)?;
    let (stream, layer) =
        directions.recommended().ok_or_else(|| Error::Other("probe recorded no recommended layer".into()))?;
    let (upstream_hash, directions_path, options, search_trial) = if searches(recipe)? {
        let (hash, edit) = run.search(&probe_hash, &probe_directions)?;
        let summary = edit.summary(&run.out.join("search"));
        (hash, edit.directions.path.clone(), edit.options, Some(summary))
    } else {
        let options = surgery_settings(recipe, &stream)?.options(run.model.spec.num_layers, &directions)?;
        (probe_hash, probe_directions, options, None)
    };
    let (ablate_hash, verification) = run.ablate(&upstream_hash, &directions_path, &options, search_trial)?;
    let (report, samples) = run.eval(&ablate_hash)?;
    run.own("report")?;
    let direction = direction_label(&options);
    let record = edit_record(&ModelDir::open(&run.out.join("model"))?)?
        .ok_or_else(|| Error::Other(format!("the edited model lacks {EDIT_RECORD_FILE}")))?;
    let facts = report::Facts {
        recipe,
        model: &run.model,
        ran: &run.ran,
        direction: &direction,
        layer,
        stream: &stream,
        verification: &verification,
        eval: &report,
        samples: &samples,
        search: searches(recipe)?.then(|| report::search_section(&run.out.join("search"))).transpose()?,
    };
    report::write_card(&facts, &record, &run.out.join("model"))?;
    let report_path = report::write_report(&facts, &run.out)?;
    Ok(RunSummary { out: run.out, report: report_path, ran: run.ran, direction })
}

/// Check every value of `recipe` that can be checked without the model, so that a bad value
/// fails before the output folder is created or any step runs.
pub fn validate_recipe(recipe: &Recipe) -> Result<()> {
    recipe.validate()?;
    probe_request(recipe)?;
    surgery_settings(recipe, &recipe.direction.stream)?;
    recipe.search.settings()?;
    parse_dtype(&recipe.model.dtype)?;
    Ok(())
}

/// The output steps write, by step name.
const STEP_OUTPUTS: [(&str, &str); 5] =
    [("probe", "probe"), ("search", "search"), ("ablate", "model"), ("eval", "eval.json"), ("report", "report.md")];

/// Make `out` the run's folder: create it, or accept it when it is empty or holds the stamps of
/// an earlier run; refuse it when it holds other files, holds the model, or is a home folder,
/// the current folder or a git work tree.
fn claim_output_dir(out: &Path, model_root: &Path) -> Result<()> {
    if out.as_os_str().is_empty() {
        return Err(Error::Invalid("output.dir is empty: name the folder the run writes into".into()));
    }
    crate::checkpoint::check_overlap(out, &[model_root])?;
    let stamped = out.join(stamps::STAMPS).is_file();
    if out.exists() {
        if !out.is_dir() {
            return Err(Error::Invalid(format!("output.dir {} is not a folder", out.display())));
        }
        let foreign: Vec<String> = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != stamps::STAMPS && n != crate::checkpoint::MARKER_FILE)
            .collect();
        if !stamped && !foreign.is_empty() {
            return Err(Error::Invalid(format!(
                "output.dir {} already holds files scalpel did not write (e.g. {}); choose a new or empty folder",
                out.display(),
                foreign[0]
            )));
        }
        if stamped {
            // An earlier run's folder: refused where `--force` would be refused.
            crate::checkpoint::replaceable(out, out)?;
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if !out.join(crate::checkpoint::MARKER_FILE).is_file() {
        crate::checkpoint::write_marker(out)?;
    }
    Ok(())
}

impl Run<'_> {
    /// Let `step` write its output: refused when the output exists and the stamps do not
    /// record `step` as its writer.
    fn own(&mut self, step: &str) -> Result<PathBuf> {
        let name = STEP_OUTPUTS.iter().find(|(s, _)| *s == step).map(|(_, n)| *n).unwrap_or(step);
        let path = self.out.join(name);
        if path.symlink_metadata().is_ok() && !self.stamps.owns(step) {
            return Err(Error::Invalid(format!(
                "{} exists but was not written by this run's `{step}` step (the stamps in {} do not record it); move it away or choose another output.dir",
                path.display(),
                self.out.join(stamps::STAMPS).display()
            )));
        }
        self.stamps.claim(step)?;
        Ok(path)
    }

    /// Step 1: probe (unless up to date); returns its stamp hash.
    fn probe(&mut self) -> Result<String> {
        let r = self.recipe;
        let probe_dir = self.own("probe")?;
        let hash = hash_of(&[
            model_identity(&self.model.root)?,
            json(&r.model)?,
            json(&r.prompts)?,
            json(&r.probe)?,
            json(&r.direction)?,
            json(&searches(r)?)?,
        ]);
        if self.stamps.fresh("probe", &hash, &probe_dir.join("directions.safetensors")) {
            return Ok(hash);
        }
        self.reporter.note("probe: capturing activations of both prompt sets");
        let harmful = load_set(&r.prompts.harmful, r, r.prompts.limit)?;
        let harmless = load_set(&r.prompts.harmless, r, r.prompts.limit)?;
        let settings = probe_request(r)?.settings(self.model.spec.num_layers)?;
        let decoder = original_decoder(&mut self.decoder, &self.model, r)?;
        let (harmful, harmless) = if r.probe.filter {
            confirmed_prompts(decoder, &self.encoder, &harmful, &harmless, &|note| {
                self.reporter.note(&format!("probe: {note}"))
            })?
        } else {
            (harmful, harmless)
        };
        let name = model_name(r, &self.model);
        let inputs = ProbeFolder {
            model_dir: &self.model,
            name: &name,
            encoder: &self.encoder,
            harmful: &harmful,
            harmless: &harmless,
        };
        let bar = self.reporter.progress("probe: prompts", Unit::Items);
        bar.set_length((harmful.prompts.len() + harmless.prompts.len()) as u64);
        probe_to_folder(decoder, &inputs, &settings, &probe_dir, true, bar.as_ref())?;
        bar.finish();
        self.stamps.set("probe", &hash)?;
        self.ran.push("probe".into());
        Ok(hash)
    }

    /// Step 2 (unless the recipe fixes the layer or turns it off): search the edit on the
    /// validation prompts; a search stopped half-way resumes. Returns its stamp hash and the
    /// chosen trial.
    fn search(&mut self, probe_hash: &str, probe_directions: &Path) -> Result<(String, TrialEdit)> {
        let r = self.recipe;
        let dir = self.own("search")?;
        let hash = hash_of(&[json(&probe_hash)?, json(&r.search)?, json(&r.judge)?]);
        let n = self.model.spec.num_layers;
        if self.stamps.fresh("search", &hash, &dir.join(CHOSEN_FILE)) {
            return Ok((hash, trial_edit(&dir, None, n)?));
        }
        // A search with other inputs cannot be resumed: start it afresh. More trials or other
        // stage-2 settings can: they are not among its inputs.
        let inputs = hash_of(&[
            json(&probe_hash)?,
            json(&SearchSection { trials: 0, finalists: 0, final_max_tokens: 0, ..r.search.clone() })?,
        ]);
        if !self.stamps.fresh("search-inputs", &inputs, &dir) && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        self.stamps.set("search-inputs", &inputs)?;
        let s = &r.search;
        self.reporter.note(&format!(
            "search: {} trials on the validation prompts, then {} finalists at full length",
            s.trials, s.finalists
        ));
        // The first `limit` prompts, unshuffled (as `scalpel search --limit`): the first
        // harmless ones are the answered ones.
        let first = |spec: &str| -> Result<Vec<String>> {
            Ok(PromptSet::load(&builtin_or_path(spec), r.prompts.field.as_deref())?
                .shuffled_limited(None, s.limit)
                .prompts)
        };
        let validation = Validation { harmful: first(&s.harmful)?, harmless: first(&s.harmless)? };
        let judge = self.judge()?;
        let bar = self.reporter.progress("search: trials", Unit::Items);
        let outcome = search_step(
            original_decoder(&mut self.decoder, &self.model, r)?,
            &self.model,
            &self.encoder,
            probe_directions,
            &validation,
            &s.settings()?,
            judge.as_ref(),
            &dir,
            bar.as_ref(),
        )?;
        bar.finish();
        self.reporter.note(&format!("search: chose trial {}", outcome.chosen));
        self.stamps.set("search", &hash)?;
        self.ran.push("search".into());
        Ok((hash, trial_edit(&dir, None, n)?))
    }

    /// Step 3: ablate and verify (verify only, when the edit is up to date).
    fn ablate(
        &mut self,
        upstream_hash: &str,
        directions: &Path,
        options: &SurgeryOptions,
        search_trial: Option<serde_json::Value>,
    ) -> Result<(String, VerifyReport)> {
        let edited_dir = self.own("ablate")?;
        let record_paths = self.recipe.output.record_paths;
        // Recording paths changes the written record; the default keeps the hashes of earlier runs.
        let mut parts = vec![json(&upstream_hash)?, json(options)?];
        if record_paths {
            parts.push(json(&"record_paths")?);
        }
        let hash = hash_of(&parts);
        if self.stamps.fresh("ablate", &hash, &edited_dir.join(EDIT_RECORD_FILE)) {
            let edited = ModelDir::open(&edited_dir)?;
            let (_, report) = verify_step(&edited, directions, Some(options), Some(&self.model))?;
            return Ok((hash, report));
        }
        let request = AblateRequest {
            model: &self.model,
            directions,
            options,
            out: &edited_dir,
            force: true,
            verify: true,
            command: "scalpel run",
            search_trial,
            record_paths,
        };
        let reporter = self.reporter;
        let announce = |plan: &crate::surgery::SurgeryPlan| {
            reporter.note(&format!(
                "ablate: removing `{}` from {} tensors",
                direction_label(options),
                plan.edits.len()
            ));
        };
        let bar = self.reporter.progress("ablate: writing", Unit::Bytes);
        let (_, report) = ablate_step(&request, &announce, bar.as_ref())?;
        bar.finish();
        let verification = report.verification.ok_or_else(|| Error::Other("ablate skipped verification".into()))?;
        self.stamps.set("ablate", &hash)?;
        self.ran.push("ablate".into());
        Ok((hash, verification))
    }

    /// Step 4: evaluate before and after on held-out prompts, with side-by-side samples.
    fn eval(&mut self, ablate_hash: &str) -> Result<(EvalReport, Vec<SideBySide>)> {
        let (r, e) = (self.recipe, &self.recipe.eval);
        let eval_path = self.own("eval")?;
        let hash = hash_of(&[json(&ablate_hash)?, json(e)?, json(&r.judge)?]);
        if self.stamps.fresh("eval", &hash, &eval_path) {
            return read_eval(&eval_path);
        }
        let sets = EvalSets {
            harmful: load_set(&r.prompts.harmful_test, r, e.limit)?.prompts,
            harmless: load_set(&r.prompts.harmless_test, r, e.limit)?.prompts,
            texts: e.text.as_deref().map(|t| load_set(t, r, None).map(|s| s.prompts)).transpose()?,
            samples: Vec::new(),
        };
        let picks: Vec<String> = sets
            .harmful
            .iter()
            .take(e.samples)
            .chain(sets.harmless.iter().take(e.samples.div_ceil(2)))
            .cloned()
            .collect();
        let sets = EvalSets { samples: picks, ..sets };
        self.reporter.note(&format!(
            "eval: {} harmful + {} harmless held-out prompts, before and after",
            sets.harmful.len(),
            sets.harmless.len()
        ));
        // One model at a time: the original (kept from the earlier steps, or loaded now) is
        // measured and dropped before the edited one is loaded.
        let mut held = self.decoder.take();
        let (model, format) = (&self.model, format_of(r));
        let mut before = OnDemand {
            name: "original".into(),
            load: Box::new(|| {
                let decoder = match held.take() {
                    Some(d) => d,
                    None => load_decoder(model, r)?,
                };
                let encoder = PromptEncoder::from_model_dir(&model.root, format.clone())?;
                Ok(Loaded { decoder, encoder, interventions: Interventions::none() })
            }),
        };
        let edited_dir = self.out.join("model");
        let mut after = OnDemand {
            name: "edited".into(),
            load: Box::new(|| {
                let edited = ModelDir::open(&edited_dir)?;
                let decoder = load_decoder(&edited, r)?;
                let encoder = PromptEncoder::from_model_dir(&edited.root, format.clone())?;
                Ok(Loaded { decoder, encoder, interventions: Interventions::none() })
            }),
        };
        let bar = self.reporter.progress("eval: answers", Unit::Items);
        let (mut report, samples) =
            eval_step(&mut after, Some(&mut before), &sets, e.max_tokens, e.batch, bar.as_ref())?;
        bar.finish();
        // Both models are dropped by now: a judge model has the memory to itself.
        if JudgeSpec::parse(&r.judge.judge)?.runs_a_model() {
            self.reporter.note(&format!("eval: judging the answers with {}", r.judge.judge));
            report.rejudge(self.judge()?.as_ref())?;
        }
        let text = serde_json::to_string_pretty(&serde_json::json!({"report": report, "samples": samples}))
            .map_err(|er| Error::Other(er.to_string()))?;
        std::fs::write(&eval_path, text).map_err(|er| Error::io(&eval_path, er))?;
        self.stamps.set("eval", &hash)?;
        self.ran.push("eval".into());
        Ok((report, samples))
    }
}

impl Run<'_> {
    /// The recipe's judge (`[judge] judge`); a model judge caches its verdicts in the output
    /// folder, so a resumed or repeated run does not judge an answer twice.
    fn judge(&self) -> Result<Box<dyn crate::eval::Judge>> {
        let r = self.recipe;
        JudgeSpec::parse(&r.judge.judge)?.open(
            &default_device(),
            parse_dtype(&r.model.dtype)?,
            Some(&self.out.join("judge-cache")),
            4,
        )
    }
}

/// The original model's decoder, loaded into `slot` on first use.
fn original_decoder<'d>(slot: &'d mut Option<Decoder>, model: &ModelDir, recipe: &Recipe) -> Result<&'d Decoder> {
    if slot.is_none() {
        *slot = Some(load_decoder(model, recipe)?);
    }
    Ok(slot.as_ref().expect("loaded above"))
}

/// `model`'s decoder on the default device in the recipe's dtype.
fn load_decoder(model: &ModelDir, recipe: &Recipe) -> Result<Decoder> {
    Decoder::load(model, &default_device(), parse_dtype(&recipe.model.dtype)?)
}

/// The direction an edit uses: its entry name, or `{stream}.L` for per-layer edits.
pub fn direction_label(options: &SurgeryOptions) -> String {
    match &options.direction {
        DirectionChoice::Fixed { name } => name.clone(),
        DirectionChoice::PerLayer { stream } => format!("{stream}.L"),
    }
}

fn read_eval(path: &Path) -> Result<(EvalReport, Vec<SideBySide>)> {
    let text = std::fs::read_to_string(path).map_err(|er| Error::io(path, er))?;
    let bad = |source| Error::Json { path: path.to_path_buf(), source };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    Ok((
        serde_json::from_value(v["report"].clone()).map_err(bad)?,
        serde_json::from_value(v["samples"].clone()).map_err(bad)?,
    ))
}
