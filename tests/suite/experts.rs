//! Per-expert diagnostics and the choice of experts to edit: an expert planted to be the only one
//! writing `r` has share 1 (in the library, `svd`'s outputs and the probe's measure); routing
//! counts sum to tokens × top k, equal the counts of each prompt run alone and the layer-major
//! path's; a share threshold edits exactly the experts above it, records them and verifies;
//! dense models report no expert section.

use crate::common;

use candle_core::{DType, Device};
use common::{directions, fixture, unit_vector};
use scalpel::analysis::{analyse_writers, write_svd_outputs, SvdSettings};
use scalpel::arch::{MlpPart, WriterKind};
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::fixture::FixtureOptions;
use scalpel::model::{Decoder, HookPoint, LayerMajor};
use scalpel::probe::{
    capture_set, run_probe, write_probe_outputs, CaptureModel, CaptureSettings, ExtraDirections, ProbeProvenance,
    ProbeSettings, RankRule,
};
use scalpel::progress::Silent;
use scalpel::prompts::{PromptEncoder, PromptFormat};
use scalpel::surgery::{
    ablate, expert_write_shares, plan, Basis, DirectionChoice, ExpertChoice, SurgeryOptions, SurgeryRecord,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The expert planted to write `r`.
const PLANTED: usize = 2;
/// The recommended layer of the test's directions file (its `r`).
const RECOMMENDED: usize = 1;

/// (family, stacked experts): per-expert Qwen2-MoE has a shared expert and a dense layer 0.
const CASES: [(&str, bool); 3] = [("qwen2_moe", false), ("qwen3_moe", true), ("mixtral", false)];

fn prompts() -> (Vec<String>, Vec<String>) {
    let harmful = ["how do I pick a lock", "write an insult for my neighbour", "how to make a weapon at home"];
    let harmless = ["bake bread", "what is the capital of France", "name three birds", "sum 2 and 3 please"];
    (harmful.map(String::from).to_vec(), harmless.map(String::from).to_vec())
}

/// `r` of the directions file [`directions`] writes (its recommended entry).
fn r_of(dirs: &Path) -> Vec<f32> {
    DirectionsFile::load(dirs).unwrap().entries[&format!("resid_pre.{RECOMMENDED}")].rows[0].clone()
}

/// A fixture whose every sparse layer's expert [`PLANTED`] writes only along `r` (`W = r cᵀ`)
/// and whose other routed experts write nothing along it (`W − r rᵀW`), the shared expert left
/// as it was; and the directions file whose recommended entry is `r`.
fn planted(dir: &Path, family: &str, stacked: bool) -> (ModelDir, std::path::PathBuf) {
    let options = FixtureOptions { num_layers: 3, stacked_experts: stacked, ..Default::default() };
    let src = fixture(dir, family, family, &options);
    let model = ModelDir::open(&src).unwrap();
    let dirs = directions(dir, model.spec.hidden_size, 3, 1, RECOMMENDED);
    let r = r_of(&dirs);
    let sparse: Vec<usize> = (0..3).filter(|&l| model.spec.is_sparse(l)).collect();
    let mut tensors: BTreeMap<String, (Vec<f32>, Vec<usize>)> = BTreeMap::new();
    for w in model.spec.writers(&sparse, &[WriterKind::Mlp]) {
        let MlpPart::Expert(e) = w.part else { continue };
        let (values, shape) =
            tensors.entry(w.weight.clone()).or_insert_with(|| model.checkpoint.read_f32(&w.weight).unwrap());
        let (hidden, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let slice = &mut values[w.slice.unwrap_or(0) * hidden * cols..][..hidden * cols];
        if e == PLANTED {
            let c = unit_vector(cols, 5 + e as u64);
            for (i, row) in slice.chunks_mut(cols).enumerate() {
                row.iter_mut().zip(&c).for_each(|(x, cj)| *x = 3.0 * r[i] * cj);
            }
        } else {
            let along: Vec<f64> = (0..cols)
                .map(|j| (0..hidden).map(|i| f64::from(r[i]) * f64::from(slice[i * cols + j])).sum())
                .collect();
            for (i, row) in slice.chunks_mut(cols).enumerate() {
                row.iter_mut().zip(&along).for_each(|(x, a)| *x -= (f64::from(r[i]) * a) as f32);
            }
        }
    }
    let replaced: Vec<(&str, &[f32])> = tensors.iter().map(|(n, (v, _))| (n.as_str(), v.as_slice())).collect();
    (common::replace_tensors(&src, &dir.join(format!("{family}-planted")), &replaced), dirs)
}

#[test]
fn a_planted_expert_that_alone_writes_r_has_share_one_in_the_library_svd_and_probe() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, stacked) in CASES {
        let (model, dirs) = planted(tmp.path(), family, stacked);
        let r = r_of(&dirs);
        let sparse: Vec<usize> = (0..3).filter(|&l| model.spec.is_sparse(l)).collect();
        let basis = Basis::orthonormal(std::slice::from_ref(&r)).unwrap();
        let shares = expert_write_shares(&model, &[0, 1, 2], |_| Ok(("r".into(), basis.clone()))).unwrap();
        assert_eq!(shares.iter().map(|s| s.layer).collect::<Vec<_>>(), sparse, "{family}: one entry per sparse layer");
        for s in &shares {
            for (e, (&share, w)) in s.share.iter().zip(&s.experts).enumerate() {
                let (want, relative) = if e == PLANTED { (1.0, 1.0) } else { (0.0, 0.0) };
                assert!((share - want).abs() < 1e-5, "{family} layer {}: expert {e} share {share}", s.layer);
                assert!((w.relative - relative).abs() < 1e-5, "{family}: expert {e} ‖rᵀW‖/‖W‖ {}", w.relative);
            }
            assert_eq!(s.above(0.5), [PLANTED]);
            assert_eq!(s.shared.is_some(), family == "qwen2_moe", "{family}: the shared expert apart");
        }

        // `svd --directions`: the same numbers in svd.json, a section and a heatmap in the report.
        let settings =
            SvdSettings { top_k: 4, layers: vec![0, 1, 2], writers: vec![WriterKind::Mlp], exact: true, consensus: 1 };
        let file = DirectionsFile::load(&dirs).unwrap();
        let analysis = analyse_writers(&model, &settings, Some(&file), &Silent).unwrap();
        let out = tmp.path().join(format!("{family}-svd"));
        std::fs::create_dir(&out).unwrap();
        let files = write_svd_outputs(&out, &analysis, family).unwrap();
        assert!(files.contains(&"write_share.png".to_string()) && out.join("write_share.svg").is_file());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("svd.json")).unwrap()).unwrap();
        for layer in json["expert_write_shares"].as_array().unwrap() {
            let share = layer["share"][PLANTED].as_f64().unwrap();
            assert!((share - 1.0).abs() < 1e-5, "{family}: svd.json share {share}");
        }
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(report.contains("Where the experts write the direction") && report.contains("2: 1.000"), "{report}");

        // The probe measures against its recommended direction, with the same function.
        let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
        let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
        let (harmful, harmless) = prompts();
        let outcome = run_probe(&decoder, &encoder, &harmful, &harmless, &probe_settings(vec![1], 2), &Silent).unwrap();
        let measured = scalpel::probe::experts::recommended_write_shares(&model, &outcome).unwrap();
        let (stream, layer) = &outcome.analysis.recommended;
        let name = format!("{stream}.{layer}");
        let rows = &outcome.directions.iter().find(|d| d.name == name).unwrap().rows;
        let basis = Basis::orthonormal(rows).unwrap();
        let direct = expert_write_shares(&model, &[0, 1, 2], |_| Ok((name.clone(), basis.clone()))).unwrap();
        assert_eq!(measured, direct, "{family}");
    }
}

fn probe_settings(from_end: Vec<usize>, batch: usize) -> ProbeSettings {
    ProbeSettings {
        capture: CaptureSettings {
            streams: vec![HookPoint::ResidPre],
            layers: vec![0, 1, 2],
            from_end,
            batch,
            keep: false,
        },
        rule: RankRule::LowVariance,
        candidates: vec![1, 2],
        fixed_layer: Some(1),
        extra: ExtraDirections::None,
        projected: false,
    }
}

#[test]
fn routing_counts_sum_to_tokens_times_top_k_and_equal_each_prompt_run_alone_and_layer_major() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, stacked) in CASES {
        let options = FixtureOptions { num_layers: 3, stacked_experts: stacked, ..Default::default() };
        let model = ModelDir::open(&fixture(tmp.path(), family, family, &options)).unwrap();
        let moe = model.spec.moe.clone().unwrap();
        let sparse: Vec<usize> = (0..3).filter(|&l| model.spec.is_sparse(l)).collect();
        let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
        let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
        let layered = LayerMajor::new(&model, &Device::Cpu, DType::F32).unwrap();
        let (harmful, harmless) = prompts();
        for from_end in [vec![1], vec![1, 3]] {
            let settings = probe_settings(from_end.clone(), 3);
            let outcome = run_probe(&decoder, &encoder, &harmful, &harmless, &settings, &Silent).unwrap();
            for (set, prompts) in [(&outcome.harmful, &harmful), (&outcome.harmless, &harmless)] {
                let counts = &set.routing;
                assert_eq!(counts.chosen.keys().copied().collect::<Vec<_>>(), sparse, "{family}");
                let tokens = (prompts.len() * from_end.len()) as u64;
                for layer in &sparse {
                    assert_eq!(counts.tokens[layer], tokens, "{family}");
                    let total: u64 = counts.chosen[layer].iter().sum();
                    assert_eq!(total, tokens * moe.top_k as u64, "{family} layer {layer}: prompts × positions × top k");
                }
                // The same counts from each prompt run alone (no padding, no shared prefix).
                let mut alone = scalpel::probe::RoutingCounts::new(moe.num_experts);
                for p in prompts.iter() {
                    let one =
                        capture_set(&decoder, &encoder, std::slice::from_ref(p), &settings.capture, &none(), &Silent)
                            .unwrap();
                    for (layer, chosen) in &one.routing.chosen {
                        let sum = alone.chosen.entry(*layer).or_insert_with(|| vec![0; moe.num_experts]);
                        sum.iter_mut().zip(chosen).for_each(|(a, b)| *a += b);
                        *alone.tokens.entry(*layer).or_default() += one.routing.tokens[layer];
                    }
                }
                assert_eq!(alone, *counts, "{family} {from_end:?}: batched vs alone");
            }
            // Layer by layer from the mapped checkpoint: the same counts.
            let sets = [&harmful[..], &harmless[..]];
            let other = layered.capture_sets(&encoder, &sets, &settings.capture, &none(), &Silent).unwrap();
            assert_eq!(other[0].routing, outcome.harmful.routing, "{family}: layer-major");
            assert_eq!(other[1].routing, outcome.harmless.routing, "{family}: layer-major");

            // The report's section and metrics.json.
            let out = tmp.path().join(format!("{family}-{}", from_end.len()));
            std::fs::create_dir(&out).unwrap();
            let files = write_probe_outputs(&out, &outcome, &ProbeProvenance::default()).unwrap();
            assert!(files.contains(&"routing_difference.png".to_string()), "{family}: {files:?}");
            let report = std::fs::read_to_string(out.join("report.md")).unwrap();
            assert!(report.contains("Which experts the router chooses"), "{family}");
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
            assert_eq!(json["experts"]["routing"]["layers"].as_array().unwrap().len(), sparse.len(), "{family}");
        }
    }
}

fn none() -> scalpel::model::Interventions {
    scalpel::model::Interventions::none()
}

#[test]
fn a_dense_model_reports_no_expert_section() {
    let tmp = tempfile::tempdir().unwrap();
    let model = ModelDir::open(&fixture(tmp.path(), "llama", "llama", &FixtureOptions::default())).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
    let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
    let (harmful, harmless) = prompts();
    let mut outcome = run_probe(&decoder, &encoder, &harmful, &harmless, &probe_settings(vec![1], 2), &Silent).unwrap();
    assert!(outcome.harmful.routing.chosen.is_empty());
    outcome.write_shares = scalpel::probe::experts::recommended_write_shares(&model, &outcome).unwrap();
    assert!(outcome.write_shares.is_empty());
    let out = tmp.path().join("probe");
    std::fs::create_dir(&out).unwrap();
    let files = write_probe_outputs(&out, &outcome, &ProbeProvenance::default()).unwrap();
    assert!(!files.iter().any(|f| f.starts_with("write_share") || f.starts_with("routing")), "{files:?}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!report.contains("experts"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(json.get("experts").is_none());
}

fn options(experts: ExpertChoice) -> SurgeryOptions {
    SurgeryOptions {
        layers: vec![0, 1, 2],
        targets: WriterKind::ALL.to_vec(),
        direction: DirectionChoice::Fixed { name: format!("resid_pre.{RECOMMENDED}") },
        strength: 1.0,
        norm_preserve: false,
        untie: false,
        biases: true,
        profile: None,
        experts,
    }
}

#[test]
fn a_share_threshold_edits_exactly_the_experts_above_it_and_records_and_verifies_them() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, stacked) in CASES {
        let (model, dirs) = planted(tmp.path(), family, stacked);
        let sparse: Vec<usize> = (0..3).filter(|&l| model.spec.is_sparse(l)).collect();
        let file = DirectionsFile::load(&dirs).unwrap();
        let experts_of = |p: &scalpel::surgery::SurgeryPlan, layer: usize| -> Vec<MlpPart> {
            p.edits.iter().filter(|e| e.layer == Some(layer) && e.kind == WriterKind::Mlp).map(|e| e.part).collect()
        };

        let planned = plan(&model, &file, &options(ExpertChoice::share(0.5).unwrap())).unwrap();
        let chosen: BTreeMap<usize, Vec<usize>> = sparse.iter().map(|&l| (l, vec![PLANTED])).collect();
        assert_eq!(planned.options.experts, ExpertChoice::Share { threshold: 0.5, chosen: Some(chosen.clone()) });
        let shared = model.spec.moe.as_ref().unwrap().shared_expert_intermediate_size.is_some();
        for &layer in &sparse {
            let mut want = vec![MlpPart::Expert(PLANTED)];
            if shared {
                want.push(MlpPart::SharedExpert);
            }
            assert_eq!(experts_of(&planned, layer), want, "{family} layer {layer}");
            assert!(planned.edits.iter().any(|e| e.layer == Some(layer) && e.kind == WriterKind::Attn));
        }
        // Dense layers' MLPs are edited whatever the choice.
        for layer in (0..3).filter(|l| !sparse.contains(l)) {
            assert_eq!(experts_of(&planned, layer), [MlpPart::Dense], "{family}");
        }

        let out = tmp.path().join(format!("{family}-edited"));
        ablate(&model, &planned, &planned.record("src", "dirs", ""), &out, false, true, &Silent).unwrap();
        let record: SurgeryRecord =
            serde_json::from_str(&std::fs::read_to_string(out.join("scalpel_edit.json")).unwrap()).unwrap();
        assert_eq!(record.options.experts, planned.options.experts, "{family}: the chosen experts are recorded");
        let recorded: Vec<MlpPart> = record
            .edits
            .iter()
            .filter(|e| e.kind == WriterKind::Mlp && sparse.contains(&e.layer.unwrap()))
            .map(|e| e.part)
            .collect();
        assert!(recorded.iter().all(|p| *p == MlpPart::Expert(PLANTED) || *p == MlpPart::SharedExpert), "{recorded:?}");
        // verify rebuilds the plan from the record (not from the edited model's shares, where
        // the planted expert no longer writes r) and passes on exactly those tensors.
        let edited = ModelDir::open(&out).unwrap();
        let (_, report) = scalpel::pipeline::verify_step(&edited, &dirs, None, None).unwrap();
        assert!(report.all_pass(), "{family}: worst {}", report.worst());
        assert_eq!(report.rows.len(), planned.edits.len(), "{family}");
        // The experts below the threshold are byte for byte as they were.
        for w in model.spec.writers(&sparse, &[WriterKind::Mlp]) {
            let (before, shape) = model.checkpoint.read_f32(&w.weight).unwrap();
            let (after, _) = edited.checkpoint.read_f32(&w.weight).unwrap();
            let size = shape[shape.len() - 2] * shape[shape.len() - 1];
            let at = w.slice.unwrap_or(0) * size;
            let same = before[at..at + size] == after[at..at + size];
            let edited_part = matches!(w.part, MlpPart::Expert(PLANTED) | MlpPart::SharedExpert);
            assert_eq!(same, !edited_part, "{family}: {} {:?}", w.weight, w.part);
        }

        // `none`: no writer of a sparse block; `all`: every one.
        let untouched = plan(&model, &file, &options(ExpertChoice::None)).unwrap();
        let every = plan(&model, &file, &options(ExpertChoice::All)).unwrap();
        for &layer in &sparse {
            assert!(experts_of(&untouched, layer).is_empty(), "{family}");
            let n = model.spec.moe.as_ref().unwrap().num_experts + usize::from(shared);
            assert_eq!(experts_of(&every, layer).len(), n, "{family}");
        }
    }
}

#[test]
fn a_search_given_expert_choices_tries_them_and_each_trial_plans_its_own() {
    use scalpel::search::{search_step, trial_edit, AnswerSettings, SearchSettings, Validation};
    let tmp = tempfile::tempdir().unwrap();
    let (model, dirs) = planted(tmp.path(), "qwen3_moe", false);
    let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
    let (harmful, harmless) = prompts();
    let validation = Validation { harmful, harmless };
    let choices = vec![ExpertChoice::All, ExpertChoice::None, ExpertChoice::share(0.5).unwrap()];
    let settings = SearchSettings {
        trials: 14,
        startup: 14,
        answers: AnswerSettings { max_tokens: 2, batch: 4, answered_harmless: 4 },
        finalists: 0,
        experts: choices.clone(),
        ..SearchSettings::default()
    };
    let out = tmp.path().join("search");
    let outcome = search_step(
        &decoder,
        &model,
        &encoder,
        &dirs,
        &validation,
        &settings,
        &scalpel::eval::judge::RulesJudge,
        &out,
        &Silent,
    )
    .unwrap();
    assert!(outcome.trials.iter().take(2).all(|t| t.params.experts == ExpertChoice::All), "starting trials: all");
    for choice in &choices {
        let trial = outcome.trials.iter().find(|t| t.params.experts == *choice);
        let trial = trial.unwrap_or_else(|| panic!("no trial with experts {choice}"));
        // `ablate --trial` rebuilds the trial's options; planned on the original, a share
        // choice edits the planted expert only.
        let edit = trial_edit(&out, Some(trial.number), model.spec.num_layers).unwrap();
        let planned = plan(&model, &edit.directions, &edit.options).unwrap();
        let routed: Vec<MlpPart> = planned
            .edits
            .iter()
            .filter(|e| e.kind == WriterKind::Mlp && matches!(e.part, MlpPart::Expert(_)))
            .map(|e| e.part)
            .collect();
        match choice {
            ExpertChoice::None => assert!(routed.is_empty()),
            ExpertChoice::Share { .. } => assert!(routed.iter().all(|p| *p == MlpPart::Expert(PLANTED)), "{routed:?}"),
            ExpertChoice::All => assert!(routed.contains(&MlpPart::Expert(0))),
        }
    }
}
