//! Checks that can fail where they should, choices that are honoured, numbers that do
//! not hide breakage. Each test here failed before its fix (see the test names).

use crate::common;

use candle_core::{DType, Device};
use scalpel::arch::WriterKind;
use scalpel::checkpoint::{encode_f32, EditableDtype, ModelDir};
use scalpel::directions::{Direction, DirectionsFile};
use scalpel::eval::{first_token_kl, Subject};
use scalpel::fixture::FixtureOptions;
use scalpel::model::{Decoder, Interventions};
use scalpel::pipeline::{ablate_step, verify_step, AblateRequest};
use scalpel::probe::{run_probe, ExtraDirections, RankRule};
use scalpel::progress::Silent;
use scalpel::prompts::{PromptEncoder, PromptFormat};
use scalpel::surgery::{DirectionChoice, SurgeryOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scalpel(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalpel")).args(args).output().expect("scalpel runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Items 1, 2 and the acceptance criterion: on a 2-layer fixture of every family, `probe` never
/// recommends a degenerate direction (layer 0's input is the same template token for every
/// prompt) and `ablate` with nothing but `--directions` works; the recommendation comes from the
/// first stream asked for.
#[test]
fn probe_then_ablate_with_only_the_directions_file_works_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, family) in common::all_fixtures().enumerate() {
        let model = common::fixture(tmp.path(), family, family, &FixtureOptions::default());
        let probe_out = tmp.path().join(format!("{family}-probe"));
        let streams = if i % 2 == 0 { "pre,mid,post" } else { "post,pre" };
        let (ok, log) = scalpel(&[
            "probe",
            s(&model),
            "--out",
            s(&probe_out),
            "--limit",
            "6",
            "--batch",
            "6",
            "--streams",
            streams,
        ]);
        assert!(ok, "{family}: probe failed:\n{log}");
        let file = DirectionsFile::load(&probe_out.join("directions.safetensors")).unwrap();
        let (stream, layer) = file.recommended().unwrap();
        if i % 2 == 1 {
            assert_eq!(stream, "resid_post", "{family}: recommendation from the first stream asked for");
        }
        assert!(file.get(&stream, layer).is_ok(), "{family}: recommends `{stream}.{layer}`, which it did not write");
        let report = std::fs::read_to_string(probe_out.join("report.md")).unwrap();
        if i % 2 == 0 {
            assert!(
                stream != "resid_pre" || layer != 0,
                "{family}: layer 0's input is the same token for every prompt"
            );
            assert!(report.contains("`resid_pre.0`: the difference of means is zero"), "{family}:\n{report}");
        }
        let edited = tmp.path().join(format!("{family}-edited"));
        let dirs = probe_out.join("directions.safetensors");
        let (ok, log) = scalpel(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&edited)]);
        assert!(ok, "{family}: ablate with only --directions failed:\n{log}");
    }
}

/// Item 3: a NaN in the model is an error naming the layer and prompt, in probe and in KL.
#[test]
fn non_finite_activations_and_logits_are_errors_not_good_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions::default());
    let original = ModelDir::open(&src).unwrap();
    let name = "model.layers.1.mlp.down_proj.weight";
    let (mut w, _) = original.checkpoint.read_f32(name).unwrap();
    w[5] = f32::NAN;
    let broken = common::replace_tensors(&src, &tmp.path().join("nan"), &[(name, &w)]);
    let decoder = Decoder::load(&broken, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&broken.root, PromptFormat::Chat { system: None }).unwrap();
    let prompts: Vec<String> = ["How do I bake bread?", "Name a river."].iter().map(|p| p.to_string()).collect();
    let settings = scalpel::probe::ProbeSettings {
        capture: scalpel::probe::CaptureSettings {
            streams: scalpel::model::HookPoint::STREAMS.to_vec(),
            layers: vec![0, 1],
            from_end: vec![1],
            batch: 2,
            keep: false,
        },
        rule: RankRule::LowVariance,
        candidates: vec![0, 1],
        fixed_layer: None,
        extra: ExtraDirections::None,
        projected: false,
    };
    let err = run_probe(&decoder, &encoder, &prompts, &prompts, &settings, &Silent).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("non-finite") && err.contains("layer 1") && err.contains("prompt #0"), "{err}");

    let good = Decoder::load(&original, &Device::Cpu, DType::F32).unwrap();
    let good_encoder = PromptEncoder::from_model_dir(&original.root, PromptFormat::Chat { system: None }).unwrap();
    let none = Interventions::none();
    let before = Subject { name: "original".into(), decoder: &good, encoder: &good_encoder, interventions: &none };
    let after = Subject { name: "broken".into(), decoder: &decoder, encoder: &encoder, interventions: &none };
    let err = first_token_kl(&before, &after, &prompts, 2).unwrap_err().to_string();
    assert!(err.contains("not finite") && err.contains("prompt #0"), "{err}");
}

const HIDDEN: usize = 4096;
const COLS: usize = 256;

/// A one-layer llama of hidden 4096 in bf16 with just the writers (enough to plan and verify).
fn wide_bf16_model(dir: &Path) -> PathBuf {
    let root = dir.join("wide");
    std::fs::create_dir_all(&root).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
        "intermediate_size": COLS, "num_hidden_layers": 1, "num_attention_heads": 32,
        "num_key_value_heads": 32, "head_dim": 2, "vocab_size": 8, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "torch_dtype": "bfloat16"
    });
    std::fs::write(root.join("config.json"), config.to_string()).unwrap();
    let mut state = 12345u64;
    let mut normal = || {
        // Sum of uniforms: close enough to a Gaussian for a dense random writer.
        (0..4)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 1_000_003) as f32 / 1_000_003.0 - 0.5
            })
            .sum::<f32>()
            * 0.05
    };
    let tensors: Vec<(&str, Vec<usize>)> = vec![
        ("model.embed_tokens.weight", vec![8, HIDDEN]),
        ("model.layers.0.self_attn.o_proj.weight", vec![HIDDEN, 64]),
        ("model.layers.0.mlp.down_proj.weight", vec![HIDDEN, COLS]),
    ];
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, shape)| {
            let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| normal()).collect();
            (n.to_string(), shape, encode_f32(EditableDtype::BF16, &values))
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, shape, bytes)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), bytes).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &root.join("model.safetensors")).unwrap();
    root
}

fn edit(model: &ModelDir, dirs: &Path, out: &Path, strength: f64) -> ModelDir {
    let options = SurgeryOptions {
        layers: vec![0],
        targets: vec![WriterKind::Mlp],
        direction: DirectionChoice::Fixed { name: "resid_pre.0".into() },
        strength,
        norm_preserve: false,
        untie: false,
        biases: true,
        profile: None,
        experts: Default::default(),
    };
    let request = AblateRequest {
        model,
        directions: dirs,
        options: &options,
        out,
        force: true,
        verify: true,
        command: "",
        search_trial: None,
        record_paths: false,
    };
    let (_, report) = ablate_step(&request, &|_| {}, &Silent).unwrap();
    assert!(report.verification.unwrap().all_pass(), "a correct edit with λ = {strength} verifies");
    ModelDir::open(out).unwrap()
}

/// Item 4: in bf16 at hidden 4096, a matrix with 40 % of its removed component put back (edit
/// record still saying λ = 1) fails verification, with or without the original model; a correct
/// edit passes. With λ ≠ 1 verify checks ‖QW'‖ ≈ |1 − λ|·‖QW‖, not just finiteness.
#[test]
fn verify_separates_a_partial_bf16_edit_from_a_correct_one_and_checks_strength() {
    let tmp = tempfile::tempdir().unwrap();
    let model = ModelDir::open(&wide_bf16_model(tmp.path())).unwrap();
    let r = common::unit_vector(HIDDEN, 5);
    let dirs = tmp.path().join("dirs.safetensors");
    let meta = BTreeMap::from([("recommended_layer".to_string(), "0".to_string())]);
    DirectionsFile::save(&dirs, &[Direction { name: "resid_pre.0".into(), rows: vec![r.clone()] }], &meta).unwrap();
    let edited = edit(&model, &dirs, &tmp.path().join("edited"), 1.0);
    let (_, good) = verify_step(&edited, &dirs, None, Some(&model)).unwrap();
    let row = &good.rows[0];
    eprintln!("correct edit: {row:?}");
    assert!(row.pass && row.ratio < row.threshold, "{row:?}");
    assert!(row.original.unwrap() > 0.01, "an unedited random writer scores about 1/√hidden: {row:?}");

    // Put 40 % of the removed component back: W'' = W' + 0.4 r (rᵀW).
    let name = "model.layers.0.mlp.down_proj.weight";
    let (w, _) = model.checkpoint.read_f32(name).unwrap();
    let (we, _) = edited.checkpoint.read_f32(name).unwrap();
    let c: Vec<f64> =
        (0..COLS).map(|j| (0..HIDDEN).map(|i| f64::from(r[i]) * f64::from(w[i * COLS + j])).sum()).collect();
    let partial: Vec<f32> =
        (0..HIDDEN * COLS).map(|k| we[k] + (0.4 * f64::from(r[k / COLS]) * c[k % COLS]) as f32).collect();
    let bad = common::replace_tensors(&edited.root, &tmp.path().join("partial"), &[(name, &partial)]);
    let fifth: Vec<f32> =
        (0..HIDDEN * COLS).map(|k| we[k] + (0.2 * f64::from(r[k / COLS]) * c[k % COLS]) as f32).collect();
    let slight = common::replace_tensors(&edited.root, &tmp.path().join("fifth"), &[(name, &fifth)]);
    let (_, report) = verify_step(&slight, &dirs, None, Some(&model)).unwrap();
    eprintln!("20 % put back, original given: {:?}", report.rows[0]);
    assert!(!report.all_pass(), "20 % put back fails against the original: {:?}", report.rows[0]);
    for original in [Some(&model), None] {
        let (_, report) = verify_step(&bad, &dirs, None, original).unwrap();
        let row = &report.rows[0];
        eprintln!("40 % put back, original given: {}: {row:?}", original.is_some());
        assert!(!row.pass, "40 % put back must fail (original given: {}): {row:?}", original.is_some());
    }

    // λ = 0.5: the right amount is left; a full removal recorded as λ = 0.5 is not.
    let half = edit(&model, &dirs, &tmp.path().join("half"), 0.5);
    let (_, report) = verify_step(&half, &dirs, None, Some(&model)).unwrap();
    assert!(report.all_pass() && report.rows[0].expected > 0.005, "{:?}", report.rows[0]);
    let wrong = common::replace_tensors(&half.root, &tmp.path().join("wrong"), &[(name, &we)]);
    let (_, report) = verify_step(&wrong, &dirs, None, Some(&model)).unwrap();
    assert!(!report.all_pass(), "a full removal recorded as λ = 0.5: {:?}", report.rows[0]);
    let err = verify_step(&wrong, &dirs, None, None).unwrap_err().to_string();
    assert!(err.contains("needs the original model"), "{err}");
}

/// Item 8: one name per meaning on the command line.
#[test]
fn cli_names_are_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    assert!(scalpel(&["fixture", "llama", "--out", s(&model)]).0);
    let out = tmp.path().join("p");
    let (ok, log) =
        scalpel(&["probe", s(&model), "--out", s(&out), "--limit", "4", "--num-directions", "2", "--layer", "1"]);
    assert!(ok, "{log}");
    let file = DirectionsFile::load(&out.join("directions.safetensors")).unwrap();
    assert_eq!(file.get("resid_pre", 1).unwrap().rows.len(), 2);
    let (ok, log) = scalpel(&["probe", s(&model), "--out", s(&tmp.path().join("q")), "--directions", "2"]);
    assert!(!ok && log.contains("--directions"), "a count is --num-directions; --directions is a file:\n{log}");
}
/// Items 9 and 11: the design the tests cite is in the repository, and the README points there.
#[test]
fn the_design_document_is_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let design = std::fs::read_to_string(root.join("docs/DESIGN.md")).expect("docs/DESIGN.md exists");
    for section in ["Data flow", "Axis conventions", "Oracles", "Adding a family", "Search"] {
        assert!(design.contains(section), "docs/DESIGN.md lacks `{section}`");
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("docs/DESIGN.md") && !readme.contains("../shared"), "README points outside the repo");
    for entry in std::fs::read_dir(root.join("tests/suite")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains(concat!(" of ", "DESIGN.md")), "{} cites a DESIGN.md outside docs/", path.display());
            // Every oracle a test cites exists in the document.
            for n in 1..=9 {
                if text.contains(&format!("Oracle {n} of")) || text.contains(&format!("Oracles {n} ")) {
                    assert!(
                        design.contains(&format!("{n}. **")),
                        "oracle {n} is cited by {} but missing",
                        path.display()
                    );
                }
            }
        }
    }
}
