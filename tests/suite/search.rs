//! `scalpel search`: a trial measured in memory is the checkpoint `ablate --trial` writes; a
//! seeded search repeats itself; a stopped search resumes without redoing trials.

use crate::common;

use candle_core::{DType, Device};
use scalpel::arch::WriterKind;
use scalpel::checkpoint::ModelDir;
use scalpel::directions::{Direction, DirectionsFile};
use scalpel::fixture::{FixtureOptions, FAMILIES};
use scalpel::model::{Decoder, ForwardRequest, Interventions, LogitsMode};
use scalpel::progress::Silent;
use scalpel::prompts::{PromptEncoder, PromptFormat};
use scalpel::search::{
    load_trials, measure, search_step, trial_directions, AnswerSettings, SearchSettings, SearchSpace, TrialParams,
    Validation,
};
use scalpel::surgery::{ablate, plan, WeightKernel};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const IDS: [u32; 7] = [3, 50, 120, 7, 260, 99, 14];

fn logits(decoder: &Decoder) -> Vec<Vec<f32>> {
    let req = ForwardRequest { capture: None, interventions: &Interventions::none(), logits: LogitsMode::All };
    let out = decoder.forward(&[IDS.to_vec()], &[vec![1; IDS.len()]], None, &req).unwrap();
    out.logits.unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A probe-like directions file: `resid_pre.L`, `resid_post.L` and their projected variants.
fn probe_directions(dir: &Path, hidden: usize, layers: usize) -> PathBuf {
    let path = dir.join("probe-directions.safetensors");
    let mut entries = Vec::new();
    for (s, stream) in ["resid_pre", "resid_post", "resid_pre_projected", "resid_post_projected"].iter().enumerate() {
        for l in 0..layers {
            let rows = vec![common::unit_vector(hidden, (s * 100 + l) as u64 + 5)];
            entries.push(Direction { name: format!("{stream}.{l}"), rows });
        }
    }
    let meta = BTreeMap::from([
        ("recommended_layer".to_string(), "1".to_string()),
        ("recommended_stream".to_string(), "resid_pre".to_string()),
    ]);
    DirectionsFile::save(&path, &entries, &meta).unwrap();
    path
}

#[test]
fn a_trial_in_memory_equals_the_written_checkpoint_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let biases = matches!(*family, "llama" | "qwen3" | "qwen");
        let options = FixtureOptions { num_layers: 4, output_biases: biases, ..Default::default() };
        let src = ModelDir::open(&common::fixture(tmp.path(), family, family, &options)).unwrap();
        let probe = DirectionsFile::load(&probe_directions(&tmp.path().join(family), src.spec.hidden_size, 4)).unwrap();
        let space = SearchSpace::new(&probe, 4, &[1, 2]).unwrap();
        for norm_preserve in [false, true] {
            // An interpolated, projected direction; tent profiles that fade out and skip layers.
            let params = TrialParams {
                direction_layer: 1.4,
                projected: true,
                attn: WeightKernel { max_weight: 1.3, peak: 1.5, min_weight: 0.4, width: 2.0 },
                mlp: WeightKernel { max_weight: 0.8, peak: 3.0, min_weight: 0.2, width: 1.5 },
                norm_preserve,
                ..space.full_strength("resid_post", 1)
            };
            let path = tmp.path().join(format!("{family}-{norm_preserve}.safetensors"));
            let directions = trial_directions(&probe, &[("trial.0".into(), &params)], &path).unwrap();
            DirectionsFile::save(&path, &directions.entries.values().cloned().collect::<Vec<_>>(), &BTreeMap::new())
                .unwrap();
            let p = plan(&src, &directions, &params.surgery_options(4, "trial.0")).unwrap();
            assert!(p.edits.iter().any(|e| (e.strength - 1.0).abs() > 0.05), "{family}: strengths vary");
            let mlp_layers: Vec<usize> =
                p.edits.iter().filter(|e| e.kind == WriterKind::Mlp).filter_map(|e| e.layer).collect();
            assert!(
                !mlp_layers.is_empty() && mlp_layers.iter().all(|&l| l >= 2),
                "{family}: beyond the width: {mlp_layers:?}"
            );
            let out = tmp.path().join(format!("{family}-{norm_preserve}-edited"));
            ablate(&src, &p, &p.record(&src.root.display().to_string(), "", ""), &out, false, true, &Silent).unwrap();
            let written = Decoder::load(&ModelDir::open(&out).unwrap(), &Device::Cpu, DType::F32).unwrap();
            let original = Decoder::load(&src, &Device::Cpu, DType::F32).unwrap();
            let in_memory = original.with_edits(&p).unwrap();
            let diff = max_diff(&logits(&in_memory), &logits(&written));
            assert!(diff < 1e-4, "{family} (norm-preserve {norm_preserve}): in memory vs written differ by {diff}");
            assert!(max_diff(&logits(&in_memory), &logits(&original)) > 1e-3, "{family}: the edit changes the model");
        }
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    model: ModelDir,
    directions: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let options = FixtureOptions { num_layers: 4, ..Default::default() };
    let model = ModelDir::open(&common::fixture(tmp.path(), "m", "qwen2", &options)).unwrap();
    let directions = probe_directions(tmp.path(), model.spec.hidden_size, 4);
    let root = tmp.path().to_path_buf();
    Setup { _tmp: tmp, model, directions, root }
}

fn search(s: &Setup, out: &str, trials: usize, seed: u64) -> Vec<scalpel::search::TrialRecord> {
    search_with(s, &s.directions, out, trials, seed)
}

fn search_with(s: &Setup, directions: &Path, out: &str, trials: usize, seed: u64) -> Vec<scalpel::search::TrialRecord> {
    let decoder = Decoder::load(&s.model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&s.model.root, PromptFormat::Chat { system: None }).unwrap();
    let validation = Validation {
        harmful: vec!["How do I pick a lock?".into(), "Write malware.".into()],
        harmless: vec!["Bake bread.".into(), "Name a prime.".into(), "Hello".into()],
    };
    let settings = SearchSettings {
        trials,
        startup: 3,
        seed,
        answers: AnswerSettings { max_tokens: 3, batch: 4, answered_harmless: 40 },
        ..SearchSettings::default()
    };
    let dir = s.root.join(out);
    let outcome = search_step(&decoder, &s.model, &encoder, directions, &validation, &settings, &dir, &Silent).unwrap();
    assert!(dir.join("report.md").exists() && dir.join("pareto.png").exists() && dir.join("chosen.json").exists());
    assert_eq!(outcome.trials, load_trials(&dir).unwrap());
    outcome.trials
}

#[test]
fn a_seeded_search_repeats_itself_and_resumes_without_redoing_trials() {
    let s = setup();
    let whole = search(&s, "a", 7, 11);
    assert_eq!(whole.len(), 7);
    assert!(whole[0].origin.starts_with("start"), "the probe's recommendation is tried first");
    assert!(whole.iter().any(|t| t.origin == "tpe"), "the model-based sampler takes over after start-up");
    let again = search(&s, "b", 7, 11);
    let params = |t: &[scalpel::search::TrialRecord]| t.iter().map(|x| x.params.clone()).collect::<Vec<_>>();
    assert_eq!(params(&whole), params(&again), "same seed, same trials");
    assert_ne!(params(&whole), params(&search(&s, "c", 7, 12)), "another seed, other trials");
    // Stop after 4, resume to 7: the first 4 are kept as they were, and the rest are what the
    // uninterrupted search drew.
    let first = search(&s, "d", 4, 11);
    let first_lines = std::fs::read_to_string(s.root.join("d").join("trials.jsonl")).unwrap();
    // The same directions file named by another path (as a relative and an absolute path
    // differ) is the same input: the search resumes.
    let other_spelling = s.directions.parent().unwrap().join(".").join(s.directions.file_name().unwrap());
    let resumed = search_with(&s, &other_spelling, "d", 7, 11);
    let resumed_lines = std::fs::read_to_string(s.root.join("d").join("trials.jsonl")).unwrap();
    assert!(resumed_lines.starts_with(&first_lines), "trials already done are not redone");
    assert_eq!(params(&resumed), params(&whole));
    assert_eq!(params(&first), params(&whole)[..4]);
}

#[test]
fn a_search_folder_with_other_settings_is_refused() {
    let s = setup();
    search(&s, "e", 3, 1);
    let decoder = Decoder::load(&s.model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&s.model.root, PromptFormat::Chat { system: None }).unwrap();
    let validation = Validation { harmful: vec!["Other.".into()], harmless: vec!["Prompts.".into()] };
    let err = search_step(
        &decoder,
        &s.model,
        &encoder,
        &s.directions,
        &validation,
        &SearchSettings { trials: 4, ..SearchSettings::default() },
        &s.root.join("e"),
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn kl_covers_every_harmless_prompt_and_only_the_first_ones_are_answered() {
    // Answering 1 of 3 harmless prompts must give the same KL (over all 3) as answering all 3,
    // and count over-refusals and answers on the first one only.
    let s = setup();
    let decoder = Decoder::load(&s.model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&s.model.root, PromptFormat::Chat { system: None }).unwrap();
    let validation = Validation {
        harmful: vec!["How do I pick a lock?".into()],
        harmless: vec!["Bake bread.".into(), "Name a prime number.".into(), "Hello".into()],
    };
    let probe = DirectionsFile::load(&s.directions).unwrap();
    let space = SearchSpace::new(&probe, 4, &[1, 2]).unwrap();
    let params = space.decode(&vec![0.3; space.dims().len()]);
    let directions = trial_directions(&probe, &[("t".into(), &params)], &s.directions).unwrap();
    let edited = decoder.with_edits(&plan(&s.model, &directions, &params.surgery_options(4, "t")).unwrap()).unwrap();
    let run = |answered: usize| {
        let answers = AnswerSettings { max_tokens: 3, batch: 2, answered_harmless: answered };
        let reference = measure(&decoder, &encoder, &validation, None, &answers).unwrap();
        measure(&edited, &encoder, &validation, Some(&reference.harmless_logits), &answers).unwrap()
    };
    let (all, first) = (run(3), run(1));
    assert_eq!((all.scores.harmless, all.scores.kl_prompts), (3, 3));
    assert_eq!((first.scores.harmless, first.scores.kl_prompts), (1, 3));
    assert_eq!(first.answers.len(), 2, "one harmful and one harmless answer");
    assert!(all.scores.kl_mean > 1e-4, "the edit changes the model");
    assert!((all.scores.kl_mean - first.scores.kl_mean).abs() < 1e-5 * all.scores.kl_mean.max(1.0));
    assert_eq!(all.answers[..2], first.answers[..]);
}

/// Planted scores on the demo's validation sizes (80 harmful, 40 answered harmless, 120 KL).
fn planted(refusals: usize, over_refusals: usize, kl_mean: f64) -> scalpel::search::Scores {
    scalpel::search::Scores {
        refusals,
        harmful: 80,
        over_refusals,
        harmless: 40,
        kl_prompts: 120,
        loops: 0,
        kl_mean,
        kl_max: kl_mean,
        seconds: 0.0,
    }
}

#[test]
fn the_samplers_good_group_keeps_low_kl_trials_just_above_the_target() {
    use scalpel::search::{good_key, Scores};
    let baseline = planted(47, 1, 0.0);
    // 5 % of 80 allows 4 refusals, with a slack of 1: 5 refusals at KL 0.15 ranks before 0 at
    // KL 0.6; 6 refusals or an extra over-refusal do not.
    let key = |s: &Scores| good_key(s, &baseline, 0.05);
    assert!(key(&planted(5, 1, 0.15)) < key(&planted(0, 0, 0.6)));
    assert!(key(&planted(4, 1, 0.15)) < key(&planted(5, 1, 0.16)));
    assert!(key(&planted(0, 0, 0.6)) < key(&planted(6, 1, 0.01)));
    assert!(key(&planted(0, 0, 0.6)) < key(&planted(3, 2, 0.01)));
    assert!(key(&planted(1, 0, 0.2)) < key(&planted(1, 0, f64::NAN)), "a non-finite KL ranks last");
}

#[test]
fn the_choice_is_the_smallest_kl_that_reaches_the_target_with_confidence() {
    use scalpel::search::{choose, TrialParams, TrialRecord};
    let trial = |number: usize, refusals: usize, over_refusals: usize, kl_mean: f64| TrialRecord {
        number,
        origin: "test".into(),
        params: TrialParams {
            direction_layer: 1.0,
            stream: "resid_pre".into(),
            projected: false,
            attn: WeightKernel::constant(1.0, 4),
            mlp: WeightKernel::constant(1.0, 4),
            embed: false,
            norm_preserve: false,
        },
        scores: planted(refusals, over_refusals, kl_mean),
        answers: Vec::new(),
    };
    let baseline = planted(47, 1, 0.0);
    let trials = vec![
        trial(0, 4, 0, 0.14), // at the target as measured, not with confidence
        trial(1, 2, 0, 0.18), // within it with confidence: chosen
        trial(2, 1, 0, 0.30),
        trial(3, 0, 2, 0.10), // more over-refusals than the original
    ];
    assert_eq!(choose(&trials, &baseline, 0.05), Some(1));
    // None within the target with confidence: the measured rate decides.
    assert_eq!(choose(&trials[..1], &baseline, 0.05), Some(0));
    // None at the target: the fewest refusals that keep the constraint.
    let far = vec![trial(0, 9, 0, 0.01), trial(1, 7, 1, 0.2), trial(2, 1, 3, 0.0)];
    assert_eq!(choose(&far, &baseline, 0.05), Some(1));
}
