//! Probe on a fixture with a planted direction: harmful and harmless prompts are built from two
//! disjoint token sets whose embeddings differ along a known `r`; probe must recover `r` at
//! layer 0 (cosine > 0.99), and the outputs must be complete. A fixture planted to refuse the
//! prompts that contain those harmful tokens shows the prompt filter keeping exactly the
//! prompts its answers confirm.

use crate::common;

use candle_core::{DType, Device};
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::fixture::FixtureOptions;
use scalpel::model::{Decoder, HookPoint};
use scalpel::probe::{
    run_probe, write_probe_outputs, CaptureSettings, ExtraDirections, ProbeProvenance, ProbeSettings, RankRule,
};
use scalpel::progress::Silent;
use scalpel::prompts::{PromptEncoder, PromptFormat};

const HARMFUL_LETTERS: &[char] = &['q', 'x', 'z', 'j', 'k'];
const HARMLESS_LETTERS: &[char] = &['v', 'y', 'g', 'f', 'p'];

fn prompts(letters: &[char], n: usize, seed: usize) -> Vec<String> {
    (0..n).map(|i| (0..6).map(|j| letters[(i * 7 + j * 3 + seed) % letters.len()]).collect()).collect()
}

fn planted_model(dir: &std::path::Path) -> (ModelDir, Vec<f32>) {
    let src = common::fixture(dir, "llama", "llama", &FixtureOptions { num_layers: 3, ..Default::default() });
    let model = ModelDir::open(&src).unwrap();
    let tok = tokenizers::Tokenizer::from_file(src.join("tokenizer.json")).unwrap();
    let hidden = model.spec.hidden_size;
    let r = common::unit_vector(hidden, 77);
    let (mut embed, _) = model.checkpoint.read_f32(&model.spec.embed_name()).unwrap();
    for (letters, sign) in [(HARMFUL_LETTERS, 1.0f32), (HARMLESS_LETTERS, -1.0)] {
        for c in letters {
            let id = tok.token_to_id(&c.to_string()).unwrap() as usize;
            for (e, x) in embed[id * hidden..(id + 1) * hidden].iter_mut().zip(&r) {
                *e += sign * 20.0 * x;
            }
        }
    }
    let planted = common::replace_tensors(&src, &dir.join("planted"), &[(&model.spec.embed_name(), &embed)]);
    (planted, r)
}

fn settings(extra: ExtraDirections) -> ProbeSettings {
    ProbeSettings {
        capture: CaptureSettings {
            streams: HookPoint::STREAMS.to_vec(),
            layers: vec![0, 1, 2],
            from_end: vec![1],
            batch: 8,
            keep: false,
        },
        rule: RankRule::LowVariance,
        candidates: vec![0, 1, 2],
        fixed_layer: Some(0),
        extra,
        projected: true,
    }
}

#[test]
fn probe_recovers_a_planted_direction() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, r) = planted_model(tmp.path());
    let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Raw { trailing_newline: false }).unwrap();
    let (harmful, harmless) = (prompts(HARMFUL_LETTERS, 40, 0), prompts(HARMLESS_LETTERS, 40, 1));
    let outcome =
        run_probe(&decoder, &encoder, &harmful, &harmless, &settings(ExtraDirections::None), &Silent).unwrap();
    let found = &outcome.directions.iter().find(|d| d.name == "resid_pre.0").unwrap().rows[0];
    let cos: f32 = found.iter().zip(&r).map(|(a, b)| a * b).sum();
    assert!(cos > 0.99, "recovered direction has cosine {cos}");
    // The metrics agree with the math: at layer 0 the means point apart along r.
    let m0 = outcome.analysis.metrics.iter().find(|m| m.stream == "resid_pre" && m.layer == 0).unwrap();
    assert!(m0.cos_means < 0.0, "means pulled apart: {}", m0.cos_means);
    assert!(m0.diff_norm > 30.0 && m0.signal_to_noise > 1.0, "{m0:?}");
    assert_eq!(outcome.analysis.recommended, ("resid_pre".to_string(), 0));

    // Outputs: a directions file ablate can use, metrics, plots, report.
    let out = tmp.path().join("probe-out");
    std::fs::create_dir(&out).unwrap();
    let files = write_probe_outputs(&out, &outcome, &ProbeProvenance { model: "planted".into(), ..Default::default() })
        .unwrap();
    for f in [
        "directions.safetensors",
        "metrics.json",
        "metrics.csv",
        "cosine.png",
        "mean_variance.svg",
        "max_variance.png",
        "report.md",
    ] {
        assert!(files.contains(&f.to_string()) && out.join(f).is_file(), "{f}");
    }
    let file = DirectionsFile::load(&out.join("directions.safetensors")).unwrap();
    assert_eq!(file.recommended(), Some(("resid_pre".to_string(), 0)));
    assert!(file.entries.contains_key("resid_pre_projected.0") && file.entries.contains_key("resid_post.2"));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 3, "a row per stream and layer");
}

#[test]
fn iterative_and_pca_directions_are_orthonormal_and_lead_with_r() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, r) = planted_model(tmp.path());
    let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Raw { trailing_newline: false }).unwrap();
    let (harmful, harmless) = (prompts(HARMFUL_LETTERS, 24, 0), prompts(HARMLESS_LETTERS, 24, 1));
    for extra in [ExtraDirections::Iterative(3), ExtraDirections::Pca(3)] {
        let outcome = run_probe(&decoder, &encoder, &harmful, &harmless, &settings(extra), &Silent).unwrap();
        let rows = &outcome.directions.iter().find(|d| d.name == "resid_pre.0").unwrap().rows;
        assert_eq!(rows.len(), 3, "{extra:?}");
        for (i, a) in rows.iter().enumerate() {
            for (j, b) in rows.iter().enumerate() {
                let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4, "{extra:?}: rows {i},{j}: {d}");
            }
        }
        let cos: f32 = rows[0].iter().zip(&r).map(|(a, b)| a * b).sum();
        assert!(cos > 0.98, "{extra:?}: first direction cosine {cos}");
    }
}

/// A one-layer fixture that refuses (answers with its end-of-turn token at once, an empty answer)
/// exactly the prompts containing one of `HARMFUL_LETTERS`, and answers every other prompt. q
/// and k are zero, so attention averages the prompt's positions; v and o carry each token's
/// component along `u` (only the trigger letters' embeddings have one) into the last position,
/// the MLP writes nothing, and the head's end-of-turn rows read `u` (no other row does).
fn refusing_model(dir: &std::path::Path) -> ModelDir {
    let options = FixtureOptions { num_layers: 1, tie_embeddings: Some(false), ..Default::default() };
    let src = common::fixture(dir, "refusing-src", "llama", &options);
    let model = ModelDir::open(&src).unwrap();
    let tok = tokenizers::Tokenizer::from_file(src.join("tokenizer.json")).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
    let hidden = model.spec.hidden_size;
    let u = common::unit_vector(hidden, 5);
    let without_u = |rows: &mut [f32]| {
        for row in rows.chunks_exact_mut(hidden) {
            let along: f32 = row.iter().zip(&u).map(|(a, b)| a * b).sum();
            row.iter_mut().zip(&u).for_each(|(a, b)| *a -= along * b);
        }
    };
    let read = |name: &str| model.checkpoint.read_f32(name).unwrap();
    let (mut embed, _) = read(&model.spec.embed_name());
    without_u(&mut embed);
    for c in HARMFUL_LETTERS {
        let id = tok.token_to_id(&c.to_string()).unwrap() as usize;
        embed[id * hidden..(id + 1) * hidden].iter_mut().zip(&u).for_each(|(e, x)| *e += 10.0 * x);
    }
    let (mut head, _) = read(&model.spec.lm_head_name());
    without_u(&mut head);
    for &id in encoder.eos_ids() {
        head[id as usize * hidden..(id as usize + 1) * hidden].iter_mut().zip(&u).for_each(|(h, x)| *h = 10.0 * x);
    }
    let names = model.spec.layer_names(0);
    let scalpel::arch::AttentionLayout::Separate { q, k, v, .. } = &names.attention else {
        panic!("llama has separate q, k, v")
    };
    let mut replace: Vec<(String, Vec<f32>)> =
        [q, k, &names.down_proj].into_iter().map(|name| (name.clone(), vec![0.0; read(name).0.len()])).collect();
    let mut value = vec![0.0; read(v).0.len()];
    value[..hidden].copy_from_slice(&u); // kv head 0, dim 0 = u · norm(x)
    replace.push((v.clone(), value));
    let (o, o_shape) = read(&names.o_proj);
    let mut output = vec![0.0; o.len()];
    for (row, x) in u.iter().enumerate() {
        output[row * o_shape[1]] = 10.0 * x; // query head 0, dim 0 → 10 u
    }
    replace.push((names.o_proj.clone(), output));
    for name in [names.attn_norm.clone(), model.spec.final_norm_name()] {
        replace.push((name, vec![1.0; hidden]));
    }
    replace.push((model.spec.embed_name(), embed));
    replace.push((model.spec.lm_head_name(), head));
    let replace: Vec<(&str, &[f32])> = replace.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    common::replace_tensors(&src, &dir.join("refusing"), &replace)
}

#[test]
fn the_probe_keeps_only_the_prompts_the_models_answers_confirm() {
    let tmp = tempfile::tempdir().unwrap();
    let model = refusing_model(tmp.path());
    let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
    let set = |name: &str, prompts: Vec<String>| scalpel::prompts::PromptSet {
        source: format!("{name}.txt"),
        ..scalpel::prompts::PromptSet::from_prompts(name, prompts)
    };
    // 20 harmful prompts the model refuses and 4 it answers; 20 harmless it answers, 3 it refuses.
    let (refused, answered) = (prompts(HARMFUL_LETTERS, 23, 0), prompts(HARMLESS_LETTERS, 24, 1));
    let harmful = set("harmful", [&refused[..20], &answered[20..]].concat());
    let harmless = set("harmless", [&answered[..20], &refused[20..]].concat());
    let said = std::cell::RefCell::new(Vec::new());
    let (kept_harmful, kept_harmless) =
        scalpel::probe::confirmed_prompts(&decoder, &encoder, &harmful, &harmless, &|s| {
            said.borrow_mut().push(s.to_string())
        })
        .unwrap();
    assert_eq!(kept_harmful.prompts, refused[..20], "the harmful prompts the model refuses, in order");
    assert_eq!(kept_harmless.prompts, answered[..20], "the harmless prompts the model answers, in order");
    let said = said.into_inner();
    assert!(said[0].contains("kept the 20 of 24") && said[1].contains("kept the 20 of 23"), "{said:?}");

    // Too few refusals to keep (the default keeps at least 16): the harmful set stays whole.
    let mostly_answered = set("harmful", [&refused[..10], &answered[..14]].concat());
    let (whole, _) =
        scalpel::probe::confirmed_prompts(&decoder, &encoder, &mostly_answered, &harmless, &|_| {}).unwrap();
    assert_eq!(whole.prompts, mostly_answered.prompts);
}
