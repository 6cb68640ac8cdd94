//! Oracles 3 and 4 of docs/DESIGN.md on every family: orthogonality read back, untouched bytes,
//! norm preservation, the γ-aware Gemma 2/3 edit, tied heads, biases, shards and dtypes.

use crate::common;

use common::{directions, fixture};
use scalpel::arch::{NormKind, WriterKind};
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::fixture::{FixtureDtype, FixtureOptions};
use scalpel::progress::Silent;
use scalpel::surgery::{ablate, plan, projection, verify, Basis, DirectionChoice, SurgeryOptions, SurgeryPlan};
use std::path::Path;

fn options(model: &ModelDir, direction: &str) -> SurgeryOptions {
    common::surgery_options(model.spec.num_layers, direction)
}

fn edit(model: &ModelDir, dirs: &Path, options: &SurgeryOptions, out: &Path) -> (SurgeryPlan, ModelDir) {
    let directions = DirectionsFile::load(dirs).unwrap();
    let plan = plan(model, &directions, options).unwrap();
    let record = plan.record("src", "dirs", "");
    ablate(model, &plan, &record, out, false, true, &Silent).unwrap();
    (plan, ModelDir::open(out).unwrap())
}

/// Every tensor not in the plan is byte-identical; every tensor in it changed.
fn check_untouched(original: &ModelDir, edited: &ModelDir, plan: &SurgeryPlan) {
    for name in original.checkpoint.names() {
        let a = original.checkpoint.tensor(name).unwrap();
        let b = edited.checkpoint.tensor(name).unwrap();
        assert_eq!(a.dtype, b.dtype, "{name}");
        assert_eq!(a.shape, b.shape, "{name}");
        if plan.edits.iter().any(|e| e.tensor == name) {
            assert_ne!(a.data, b.data, "{name} should have been edited");
        } else {
            assert_eq!(a.data, b.data, "{name} should be byte-identical");
        }
    }
}

#[test]
fn every_family_edits_verify_and_leave_other_bytes_alone() {
    let tmp = tempfile::tempdir().unwrap();
    for family in common::all_fixtures() {
        let src = fixture(tmp.path(), family, family, &FixtureOptions { num_layers: 3, ..Default::default() });
        let model = ModelDir::open(&src).unwrap();
        let dirs = directions(tmp.path(), model.spec.hidden_size, 3, 1, 1);
        let out = tmp.path().join(format!("{family}-edited"));
        let (plan, edited) = edit(&model, &dirs, &options(&model, "resid_pre.1"), &out);
        // The embedding, and per layer the attention output and every MLP writer (each expert's
        // and the shared expert's in a sparse layer).
        let layers: Vec<usize> = (0..3).collect();
        let writers = model.spec.writers(&layers, &WriterKind::ALL).len();
        let sparse = (0..3).filter(|&l| model.spec.is_sparse(l)).count();
        assert!(family.contains("moe") == (sparse > 0) || family == "mixtral", "{family}: sparse layers");
        assert_eq!(plan.edits.iter().filter(|e| !e.is_bias).count(), writers, "{family}");
        let report = verify(&edited, &plan).unwrap();
        assert!(report.all_pass(), "{family}: worst {}", report.worst());
        assert!(report.worst() < 1e-6, "{family}: f32 edit should be exact, worst {}", report.worst());
        // The original does not pass: the check can fail.
        let before = verify(&model, &plan).unwrap();
        assert!(!before.all_pass() && before.worst() > 1e-2, "{family}: original worst {}", before.worst());
        check_untouched(&model, &edited, &plan);
        // Side files come along; the record is written.
        for file in ["config.json", "tokenizer.json", "tokenizer_config.json", "scalpel_edit.json"] {
            assert!(out.join(file).is_file(), "{family}: {file}");
        }
        assert_eq!(
            std::fs::read(src.join("tokenizer.json")).unwrap(),
            std::fs::read(out.join("tokenizer.json")).unwrap()
        );
    }
}

#[test]
fn post_norm_families_are_edited_against_gamma_times_r() {
    let tmp = tempfile::tempdir().unwrap();
    // Gemma 2/3 scale by `1 + w`, Gemma 4 by `w`.
    for (family, kind) in
        [("gemma2", NormKind::RmsOnePlus), ("gemma3_text", NormKind::RmsOnePlus), ("gemma4_text", NormKind::Rms)]
    {
        let src = fixture(tmp.path(), family, family, &FixtureOptions::default());
        let model = ModelDir::open(&src).unwrap();
        assert_eq!(model.spec.norm_kind, kind);
        let hidden = model.spec.hidden_size;
        let dirs = directions(tmp.path(), hidden, model.spec.num_layers, 1, 0);
        let out = tmp.path().join(format!("{family}-edited"));
        let (plan, edited) = edit(&model, &dirs, &options(&model, "resid_pre.0"), &out);
        let r = Basis::orthonormal(&DirectionsFile::load(&dirs).unwrap().entries["resid_pre.0"].rows).unwrap();
        for e in plan.edits.iter().filter(|e| e.kind != WriterKind::Embed) {
            let norm = e.through_norm.as_ref().expect("Gemma writers sit behind post-norms");
            let (w, shape) = edited.checkpoint.read_f32(&e.tensor).unwrap();
            let (g, _) = edited.checkpoint.read_f32(norm).unwrap();
            let gamma: Vec<f32> = g.iter().map(|x| x + kind.offset()).collect();
            let u = r.through_norm(&gamma).unwrap();
            let (along_u, total) = projection::column_residual(&w, shape[1], &u);
            let (along_r, _) = projection::column_residual(&w, shape[1], &r);
            assert!(along_u / total < 1e-6, "{}: uᵀW' should vanish", e.tensor);
            assert!(along_r / total > 1e-3, "{}: rᵀW' should not (the norm re-weights it)", e.tensor);
            // Through the norm: n = γ ⊙ (W' x) / rms has no component along r, for any x.
            let x: Vec<f32> = (0..shape[1]).map(|j| ((j * 7 % 13) as f32) - 6.0).collect();
            let y: Vec<f64> = (0..hidden)
                .map(|i| (0..shape[1]).map(|j| f64::from(w[i * shape[1] + j]) * f64::from(x[j])).sum())
                .collect();
            let n: Vec<f64> = y.iter().zip(&gamma).map(|(a, g)| a * f64::from(*g)).collect();
            let along: f64 = r.rows()[0].iter().zip(&n).map(|(a, b)| a * b).sum();
            let len = n.iter().map(|a| a * a).sum::<f64>().sqrt();
            assert!(along.abs() < 1e-5 * len, "{}: r·norm(W'x) = {along}", e.tensor);
        }
    }
}

#[test]
fn norm_preservation_keeps_every_written_vector_length() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "llama", "llama", &FixtureOptions::default());
    let model = ModelDir::open(&src).unwrap();
    let dirs = directions(tmp.path(), model.spec.hidden_size, model.spec.num_layers, 1, 0);
    let mut opts = options(&model, "resid_pre.0");
    opts.norm_preserve = true;
    let (plan, edited) = edit(&model, &dirs, &opts, &tmp.path().join("out"));
    assert!(verify(&edited, &plan).unwrap().all_pass());
    for e in &plan.edits {
        let (a, shape) = model.checkpoint.read_f32(&e.tensor).unwrap();
        let (b, _) = edited.checkpoint.read_f32(&e.tensor).unwrap();
        let (na, nb) = if e.kind == WriterKind::Embed {
            let h = shape[1];
            let rows = |v: &[f32]| {
                v.chunks(h).map(|r| r.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()).collect::<Vec<_>>()
            };
            (rows(&a), rows(&b))
        } else {
            (projection::column_norms(&a, shape[1]), projection::column_norms(&b, shape[1]))
        };
        for (x, y) in na.iter().zip(&nb) {
            assert!((x - y).abs() <= 1e-5 * x.max(1e-6), "{}: {x} vs {y}", e.tensor);
        }
    }
}

#[test]
fn biases_are_edited_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "llama", "llama", &FixtureOptions { output_biases: true, ..Default::default() });
    let model = ModelDir::open(&src).unwrap();
    let dirs = directions(tmp.path(), model.spec.hidden_size, model.spec.num_layers, 1, 0);
    let (plan, edited) = edit(&model, &dirs, &options(&model, "resid_pre.0"), &tmp.path().join("out"));
    let biases: Vec<&str> = plan.edits.iter().filter(|e| e.is_bias).map(|e| e.tensor.as_str()).collect();
    assert_eq!(biases.len(), 2 * model.spec.num_layers, "{biases:?}");
    assert!(biases.iter().all(|b| b.ends_with("o_proj.bias") || b.ends_with("down_proj.bias")));
    assert!(verify(&edited, &plan).unwrap().all_pass());
    let mut opts = options(&model, "resid_pre.0");
    opts.biases = false;
    let (plan, _) = edit(&model, &dirs, &opts, &tmp.path().join("out-nobias"));
    assert!(plan.edits.iter().all(|e| !e.is_bias));
}

#[test]
fn tied_heads_are_edited_with_the_embedding_unless_untied() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "gemma", "gemma", &FixtureOptions::default());
    let model = ModelDir::open(&src).unwrap();
    assert!(model.head_is_tied());
    let dirs = directions(tmp.path(), model.spec.hidden_size, model.spec.num_layers, 1, 0);
    let (plan, edited) = edit(&model, &dirs, &options(&model, "resid_pre.0"), &tmp.path().join("tied"));
    assert!(plan.edits_tied_head);
    assert!(edited.head_is_tied() && !edited.checkpoint.contains("lm_head.weight"));

    let mut opts = options(&model, "resid_pre.0");
    opts.untie = true;
    let out = tmp.path().join("untied");
    let (_, untied) = edit(&model, &dirs, &opts, &out);
    assert!(!untied.head_is_tied());
    assert_eq!(
        untied.checkpoint.tensor("lm_head.weight").unwrap().data,
        model.checkpoint.tensor("model.embed_tokens.weight").unwrap().data,
        "the untied head is the original embedding"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tie_word_embeddings"], serde_json::json!(false));
}

#[test]
fn sharded_checkpoints_stay_sharded_with_a_valid_index() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions { shards: 3, ..Default::default() });
    let model = ModelDir::open(&src).unwrap();
    assert_eq!(model.checkpoint.shards().len(), 3);
    let dirs = directions(tmp.path(), model.spec.hidden_size, model.spec.num_layers, 2, 0);
    let out = tmp.path().join("out");
    let (plan, edited) = edit(&model, &dirs, &options(&model, "resid_pre.0"), &out);
    assert!(plan.edits.iter().all(|e| e.basis.k() == 2), "two directions, orthonormalized");
    assert_eq!(
        model.checkpoint.shards().iter().map(|s| s.file_name()).collect::<Vec<_>>(),
        edited.checkpoint.shards().iter().map(|s| s.file_name()).collect::<Vec<_>>()
    );
    for name in model.checkpoint.names() {
        assert_eq!(model.checkpoint.shard_of(name), edited.checkpoint.shard_of(name), "{name} moved shard");
    }
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap()).unwrap();
    assert_eq!(index["metadata"]["total_size"].as_u64().unwrap(), edited.checkpoint.total_bytes());
    assert!(verify(&edited, &plan).unwrap().all_pass());
    check_untouched(&model, &edited, &plan);
}

#[test]
fn half_precision_edits_round_once_and_pass_at_their_rounding_level() {
    let tmp = tempfile::tempdir().unwrap();
    for (dtype, name) in [(FixtureDtype::F16, "f16"), (FixtureDtype::BF16, "bf16")] {
        let src = fixture(tmp.path(), name, "mistral", &FixtureOptions { dtype, ..Default::default() });
        let model = ModelDir::open(&src).unwrap();
        let dirs = directions(tmp.path(), model.spec.hidden_size, model.spec.num_layers, 1, 0);
        let (plan, edited) =
            edit(&model, &dirs, &options(&model, "resid_pre.0"), &tmp.path().join(format!("{name}-out")));
        let report = verify(&edited, &plan).unwrap();
        assert!(report.all_pass(), "{name}: worst {}", report.worst());
        assert!(report.rows.iter().all(|r| r.dtype == name.to_uppercase()), "dtype kept");
        check_untouched(&model, &edited, &plan);
    }
}

#[test]
fn per_layer_directions_use_each_layers_own_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "qwen3", "qwen3", &FixtureOptions { num_layers: 3, ..Default::default() });
    let model = ModelDir::open(&src).unwrap();
    let dirs = directions(tmp.path(), model.spec.hidden_size, 3, 1, 0);
    let mut opts = options(&model, "unused");
    opts.direction = DirectionChoice::PerLayer { stream: "resid_pre".into() };
    opts.layers = vec![1, 2];
    let (plan, edited) = edit(&model, &dirs, &opts, &tmp.path().join("out"));
    for e in &plan.edits {
        let expected = format!("resid_pre.{}", e.layer.unwrap_or(0));
        assert_eq!(e.direction, expected, "{}", e.tensor);
    }
    assert!(verify(&edited, &plan).unwrap().all_pass());
    assert!(!plan.edits.iter().any(|e| e.layer == Some(0)), "layer 0 not selected");
}
