//! Export: every family llama.cpp knows, written to GGUF at f16 and q8_0, reads back through
//! scalpel's importer to the same tensors and runs in candle-transformers' quantized models (an
//! independent runtime) to scalpel's logits; `--type same` byte-copies what the edit left alone;
//! and on every family base + LoRA adapter runs as the edited checkpoint.

use crate::common;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use scalpel::arch::WriterKind;
use scalpel::checkpoint::{EditableDtype, ModelDir};
use scalpel::directions::DirectionsFile;
use scalpel::export::{export_adapter, export_gguf, merge_adapter, GgufOptions, GgufType};
use scalpel::fixture::FixtureOptions;
use scalpel::import::{import_gguf, ImportOptions};
use scalpel::progress::Silent;
use scalpel::surgery::{ablate, plan, DirectionChoice, SurgeryOptions, SurgeryPlan};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Dense families llama.cpp runs, whose GGUF scalpel's importer reads back (Qwen-1 is not
/// exported).
const EXPORTED: &[&str] =
    &["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2", "granite", "glm4", "smollm3"];

const IDS: [u32; 9] = [5, 17, 42, 99, 3, 250, 7, 120, 64];

fn relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

fn gguf(model: &ModelDir, out: &Path, ty: GgufType) {
    let options = GgufOptions { ty, source_gguf: None, force: false, modelfile: true };
    export_gguf(model, out, &options, &Silent).unwrap_or_else(|e| panic!("{}: {e}", model.root.display()));
}

/// The last position's logits of candle-transformers' quantized model of `family` on `path`.
fn candle_logits(family: &str, path: &Path, ids: &[u32]) -> Vec<f32> {
    use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};
    let dev = Device::Cpu;
    let mut file = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let x = Tensor::new(ids, &dev).unwrap().unsqueeze(0).unwrap();
    let out = match family {
        "llama" | "mistral" => {
            quantized_llama::ModelWeights::from_gguf(content, &mut file, &dev).unwrap().forward(&x, 0)
        }
        "qwen2" => quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &dev).unwrap().forward(&x, 0),
        "qwen3" => quantized_qwen3::ModelWeights::from_gguf(content, &mut file, &dev).unwrap().forward(&x, 0),
        other => panic!("no candle model for {other}"),
    };
    out.unwrap().squeeze(0).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// A fixture of `family` that llama.cpp's graph can hold: SmolLM3's skips the rotary embedding
/// on every fourth layer (llama.cpp's fixed rule), not on every other one (the fixture's).
fn llama_cpp_fixture(dir: &Path, name: &str, family: &str) -> std::path::PathBuf {
    if family != "smollm3" {
        return common::fixture(dir, name, family, &FixtureOptions::default());
    }
    let layers = 4;
    let src = common::fixture(dir, name, family, &FixtureOptions { num_layers: layers, ..Default::default() });
    let path = src.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["no_rope_layers"] = serde_json::json!((0..layers).map(|l| u8::from((l + 1) % 4 != 0)).collect::<Vec<_>>());
    std::fs::write(&path, config.to_string()).unwrap();
    src
}

/// A GGUF tensor's values, dequantized.
fn gguf_values(content: &Content, file: &mut std::fs::File, name: &str) -> Vec<f32> {
    let q = content.tensor(file, name, &Device::Cpu).unwrap();
    q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

#[test]
fn every_family_exports_to_gguf_and_reads_back_to_the_same_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    for family in EXPORTED {
        let src = llama_cpp_fixture(tmp.path(), family, family);
        let model = ModelDir::open(&src).unwrap();
        for (ty, name) in [(GgufType::F16, "f16"), (GgufType::Q8_0, "q8_0")] {
            let out = tmp.path().join(format!("{family}-{name}.gguf"));
            gguf(&model, &out, ty);
            let mut file = std::fs::File::open(&out).unwrap();
            let content = Content::read(&mut file).unwrap();
            let vocab = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap().len();
            let rows = model.checkpoint.tensor(&model.spec.embed_name()).unwrap().shape[0];
            assert_eq!(vocab, rows, "{family}: the token list matches the embedding");
            let want = if ty == GgufType::F16 { GgmlDType::F16 } else { GgmlDType::Q8_0 };
            assert_eq!(content.tensor_infos["token_embd.weight"].ggml_dtype, want, "{family} {name}");
            assert_eq!(content.tensor_infos["output_norm.weight"].ggml_dtype, GgmlDType::F32);
            let back = tmp.path().join(format!("{family}-{name}-imported"));
            let options = ImportOptions { dtype: Some(EditableDtype::F32), force: false };
            import_gguf(&out, &back, &options, &Silent).unwrap_or_else(|e| panic!("{family} {name}: {e}"));
            let back = ModelDir::open(&back).unwrap();
            assert_eq!(back.spec.sliding_layers, model.spec.sliding_layers, "{family} {name}: sliding layers");
            assert_eq!(back.spec.nope_layers, model.spec.nope_layers, "{family} {name}: layers without rope");
            let mut names = model.checkpoint.names();
            names.sort();
            let mut back_names = back.checkpoint.names();
            back_names.sort();
            assert_eq!(names, back_names, "{family} {name}: the same tensors");
            for t in names {
                let (a, shape) = model.checkpoint.read_f32(t).unwrap();
                let (b, _) = back.checkpoint.read_f32(t).unwrap();
                let amax = a.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    let ok = if shape.len() == 1 {
                        // Vectors stay F32; Gemma's norms pass through `1 + w` and back.
                        (x - y).abs() <= 1e-6 * (1.0 + x.abs())
                    } else if ty == GgufType::F16 {
                        f16_round(*x) == *y
                    } else {
                        // q8_0: each block of 32 is scaled by its largest |value| / 127.
                        (x - y).abs() <= amax / 127.0 * 0.5 * 1.01 + 1e-7
                    };
                    assert!(ok, "{family} {name} {t}[{i}]: {x} came back as {y}");
                }
            }
        }
    }
}

#[test]
fn candle_transformers_runs_the_exported_gguf_to_scalpels_logits() {
    let tmp = tempfile::tempdir().unwrap();
    // Not Gemma 3: candle-transformers 0.11's quantized Gemma 3 gates its MLP with SiLU where
    // Gemma uses GELU-tanh (and lets a sliding layer see one position more), so it is no oracle;
    // the Gemmas are checked by reading their GGUF back through the importer.
    for family in ["llama", "mistral", "qwen2", "qwen3"] {
        let src = common::fixture(tmp.path(), family, family, &FixtureOptions::default());
        let model = ModelDir::open(&src).unwrap();
        let ids: &[u32] = &IDS;
        let ours = common::last_logits(&model, ids);
        for (ty, name, limit) in [(GgufType::F16, "f16", 1e-2), (GgufType::Q8_0, "q8_0", 5e-2)] {
            let out = tmp.path().join(format!("{family}-{name}.gguf"));
            gguf(&model, &out, ty);
            let theirs = candle_logits(family, &out, ids);
            let rel = relative(&theirs, &ours);
            assert!(rel < limit, "{family} {name}: candle's logits differ from scalpel's by {rel:.2e} (limit {limit})");
        }
    }
}

fn read_bytes(path: &Path, content: &Content, name: &str) -> Vec<u8> {
    let info = &content.tensor_infos[name];
    let n = info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
    let mut file = std::fs::File::open(path).unwrap();
    file.seek(SeekFrom::Start(content.tensor_data_offset + info.offset)).unwrap();
    let mut buf = vec![0u8; n];
    file.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn type_same_byte_copies_untouched_tensors_from_the_source_gguf_and_requantizes_edited_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions::default());
    let model = ModelDir::open(&src).unwrap();
    let source = tmp.path().join("source-q8_0.gguf");
    gguf(&model, &source, GgufType::Q8_0);
    let imported = tmp.path().join("imported");
    import_gguf(&source, &imported, &ImportOptions { dtype: Some(EditableDtype::F32), force: false }, &Silent).unwrap();
    let imported = ModelDir::open(&imported).unwrap();
    let dirs = common::directions(tmp.path(), imported.spec.hidden_size, imported.spec.num_layers, 1, 1);
    let edited = common::ablate_everything(&imported, &dirs, &tmp.path().join("edited"), false);
    let out = tmp.path().join("edited-same.gguf");
    let options = GgufOptions { ty: GgufType::Same, source_gguf: Some(source.clone()), force: false, modelfile: false };
    let report = export_gguf(&edited, &out, &options, &Silent).unwrap();
    let record = scalpel::export::gguf::edit_record(&edited).unwrap().unwrap();
    let edited_gguf: Vec<String> = record
        .edits
        .iter()
        .map(|e| match e.tensor.as_str() {
            "model.embed_tokens.weight" => "token_embd.weight".to_string(),
            t => {
                let rest = t.strip_prefix("model.layers.").unwrap();
                let (l, part) = rest.split_once('.').unwrap();
                let part = part.replace("self_attn.o_proj", "attn_output").replace("mlp.down_proj", "ffn_down");
                format!("blk.{l}.{part}")
            }
        })
        .collect();
    let read = |p: &Path| {
        let mut f = std::fs::File::open(p).unwrap();
        Content::read(&mut f).unwrap()
    };
    let (a, b) = (read(&source), read(&out));
    assert_eq!(a.tensor_infos.len(), b.tensor_infos.len());
    assert_eq!(report.copied, a.tensor_infos.len() - edited_gguf.len());
    for (name, info) in &a.tensor_infos {
        let theirs = read_bytes(&source, &a, name);
        let ours = read_bytes(&out, &b, name);
        assert_eq!(b.tensor_infos[name].ggml_dtype, info.ggml_dtype, "{name} keeps its type");
        if edited_gguf.contains(name) {
            assert_ne!(ours, theirs, "{name} was edited");
        } else {
            assert!(ours == theirs, "{name} is byte-identical to the source");
        }
    }
    // The file runs, and as the edited folder does.
    let rel = relative(&candle_logits("llama", &out, &IDS), &common::last_logits(&edited, &IDS));
    assert!(rel < 5e-2, "{rel}");
    // A GGUF that is not the folder's source is refused.
    let other = common::fixture(tmp.path(), "other", "llama", &FixtureOptions { seed: 9, ..Default::default() });
    let other_gguf = tmp.path().join("other.gguf");
    gguf(&ModelDir::open(&other).unwrap(), &other_gguf, GgufType::Q8_0);
    let options = GgufOptions { source_gguf: Some(other_gguf), ..options };
    let err = export_gguf(&edited, &tmp.path().join("x.gguf"), &options, &Silent).unwrap_err().to_string();
    assert!(err.contains("not imported from this GGUF"), "{err}");
    assert!(!tmp.path().join("x.gguf").exists());
}

#[test]
fn export_is_atomic_and_does_not_replace_files_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions::default());
    let model = ModelDir::open(&src).unwrap();
    let out = tmp.path().join("out").join("m.gguf");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    std::fs::write(&out, b"mine").unwrap();
    let err = export_gguf(&model, &out, &GgufOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let forced = GgufOptions { force: true, ..GgufOptions::default() };
    export_gguf(&model, &out, &forced, &Silent).unwrap();
    let names = common::entries(out.parent().unwrap());
    assert_eq!(names, vec!["m.Modelfile".to_string(), "m.gguf".to_string()], "no temporary file left");
    let modelfile = std::fs::read_to_string(out.with_extension("Modelfile")).unwrap();
    assert!(modelfile.contains("FROM ./m.gguf"), "{modelfile}");
    assert!(modelfile.contains("PARAMETER stop \"<|im_end|>\"\n"), "the turn end stops an answer: {modelfile}");
}

fn edit_plan(model: &ModelDir, dirs: &Path, norm_preserve: bool, untie: bool) -> SurgeryPlan {
    let directions = DirectionsFile::load(dirs).unwrap();
    let options = SurgeryOptions {
        layers: (0..model.spec.num_layers).collect(),
        targets: WriterKind::ALL.to_vec(),
        direction: DirectionChoice::Fixed { name: "resid_pre.1".into() },
        strength: 1.3,
        norm_preserve,
        untie,
        biases: true,
        profile: None,
        experts: Default::default(),
    };
    plan(model, &directions, &options).unwrap()
}

#[test]
fn base_plus_adapter_runs_as_the_edited_checkpoint_on_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for family in common::all_fixtures() {
        for untie in [false, true] {
            let name = format!("{family}-{untie}");
            let src = common::fixture(tmp.path(), &name, family, &FixtureOptions::default());
            let base = ModelDir::open(&src).unwrap();
            if untie && !base.head_is_tied() {
                continue;
            }
            let dirs = common::directions(tmp.path(), base.spec.hidden_size, base.spec.num_layers, 2, 1);
            let p = edit_plan(&base, &dirs, false, untie);
            let edited_dir = tmp.path().join(format!("{name}-edited"));
            ablate(&base, &p, &p.record("", "", ""), &edited_dir, false, true, &Silent).unwrap();
            let edited = ModelDir::open(&edited_dir).unwrap();
            let adapter = tmp.path().join(format!("{name}-adapter"));
            let report = export_adapter(&base, &p, None, Some(&edited), &adapter, false, &Silent)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report.rank, 2);
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
            assert_eq!(config["r"], config["lora_alpha"], "scaling 1");
            let merged = merge_adapter(&base, &adapter, &Silent).unwrap();
            let (want, got) = (common::last_logits(&edited, &IDS), common::last_logits(&merged.model, &IDS));
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-4 * scale.max(1.0), "{name}: base + adapter differs from the edit by {diff:e}");
            // And the edit did change the model.
            let before = common::last_logits(&base, &IDS);
            assert!(relative(&before, &want) > 1e-3, "{name}: the edit changes the logits");
        }
    }
}

#[test]
fn adapters_refuse_what_is_not_low_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions::default());
    let base = ModelDir::open(&src).unwrap();
    let dirs = common::directions(tmp.path(), base.spec.hidden_size, base.spec.num_layers, 1, 1);
    let p = edit_plan(&base, &dirs, true, false);
    let out = tmp.path().join("adapter");
    let err = export_adapter(&base, &p, None, None, &out, false, &Silent).unwrap_err().to_string();
    assert!(err.contains("norm-preserving"), "{err}");
    assert!(!out.exists());
    // An edited folder that is not this edit of the base is refused by the check.
    let p = edit_plan(&base, &dirs, false, false);
    let other_dir = tmp.path().join("other-edit");
    let other_plan = edit_plan(
        &base,
        &common::directions(tmp.path(), base.spec.hidden_size, base.spec.num_layers, 2, 0),
        false,
        false,
    );
    ablate(&base, &other_plan, &other_plan.record("", "", ""), &other_dir, false, true, &Silent).unwrap();
    let err = export_adapter(&base, &p, None, Some(&ModelDir::open(&other_dir).unwrap()), &out, false, &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not this low-rank edit"), "{err}");
    assert!(!out.exists());
    // Output biases are refused.
    let biased =
        common::fixture(tmp.path(), "biased", "llama", &FixtureOptions { output_biases: true, ..Default::default() });
    let biased = ModelDir::open(&biased).unwrap();
    let p = edit_plan(&biased, &dirs, false, false);
    let err = export_adapter(&biased, &p, None, None, &out, false, &Silent).unwrap_err().to_string();
    assert!(err.contains("bias"), "{err}");
}

/// Mixtral, Qwen3-MoE and Qwen2-MoE, per expert and stacked: f32 GGUF with llama.cpp's names
/// and stacked `[experts, rows, cols]` expert tensors, which scalpel's importer reads back (one
/// matrix per expert) to the fixture's logits. A Qwen2-MoE with a dense layer, which llama.cpp's
/// `qwen2moe` cannot hold, is refused.
#[test]
fn mixtures_of_experts_export_with_stacked_experts_and_import_to_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, arch, prefix) in
        [("mixtral", "llama", "block_sparse_moe"), ("qwen3_moe", "qwen3moe", "mlp"), ("qwen2_moe", "qwen2moe", "mlp")]
    {
        for stacked in [false, true] {
            let name = format!("{family}-{stacked}");
            let options = FixtureOptions { stacked_experts: stacked, all_sparse: true, ..Default::default() };
            let src = common::fixture(tmp.path(), &name, family, &options);
            let model = ModelDir::open(&src).unwrap();
            let moe = model.spec.moe.clone().unwrap();
            let out = tmp.path().join(format!("{name}.gguf"));
            gguf(&model, &out, GgufType::F32);
            let mut file = std::fs::File::open(&out).unwrap();
            let content = Content::read(&mut file).unwrap();
            assert_eq!(content.metadata["general.architecture"].to_string().unwrap(), arch);
            assert_eq!(content.metadata[&format!("{arch}.expert_count")].to_u32().unwrap() as usize, moe.num_experts);
            assert_eq!(content.metadata[&format!("{arch}.expert_used_count")].to_u32().unwrap() as usize, moe.top_k);
            let (h, i, e) = (model.spec.hidden_size, moe.expert_intermediate_size, moe.num_experts);
            for layer in 0..model.spec.num_layers {
                let dims =
                    |base: &str| content.tensor_infos[&format!("blk.{layer}.{base}.weight")].shape.dims().to_vec();
                assert_eq!(dims("ffn_gate_inp"), vec![e, h], "{name}");
                assert_eq!(dims("ffn_gate_exps"), vec![e, i, h], "{name}");
                assert_eq!(dims("ffn_up_exps"), vec![e, i, h], "{name}");
                assert_eq!(dims("ffn_down_exps"), vec![e, h, i], "{name}");
                assert_eq!(
                    content.tensor_infos[&format!("blk.{layer}.ffn_gate_inp.weight")].ggml_dtype,
                    GgmlDType::F32
                );
            }
            assert!(!content.tensor_infos.keys().any(|k| k.contains("experts.")), "{name}");
            if let Some(shared) = moe.shared_expert_intermediate_size {
                let key = format!("{arch}.expert_shared_feed_forward_length");
                assert_eq!(content.metadata[&key].to_u32().unwrap() as usize, shared);
                let dims = |base: &str| content.tensor_infos[&format!("blk.1.{base}.weight")].shape.dims().to_vec();
                assert_eq!(dims("ffn_gate_shexp"), vec![shared, h]);
                assert_eq!(dims("ffn_down_shexp"), vec![h, shared]);
                assert_eq!(dims("ffn_gate_inp_shexp"), vec![1, h]);
                assert!(content.tensor_infos.contains_key("output.weight"), "llama.cpp's qwen2moe needs it");
            }
            let back = tmp.path().join(format!("{name}-back"));
            import_gguf(&out, &back, &ImportOptions { dtype: Some(EditableDtype::F32), force: false }, &Silent)
                .unwrap();
            let imported = ModelDir::open(&back).unwrap();
            assert_eq!(imported.spec.family, model.spec.family);
            let expert = format!("model.layers.1.{prefix}.experts.{}.", e - 1);
            assert!(imported.checkpoint.names().iter().any(|n| n.starts_with(&expert)), "{name}: {expert}");
            let (a, b) = (common::last_logits(&model, &IDS), common::last_logits(&imported, &IDS));
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{name}: logits differ by {diff}");
            // Q4_K_M: each expert row quantized; ffn_down_exps follows ffn_down's rule.
            let q = tmp.path().join(format!("{name}-q4.gguf"));
            gguf(&model, &q, GgufType::Q4KM);
            let content = Content::read(&mut std::fs::File::open(&q).unwrap()).unwrap();
            assert_eq!(content.tensor_infos["blk.0.ffn_gate_inp.weight"].ggml_dtype, GgmlDType::F32);
        }
    }
    let src = common::fixture(tmp.path(), "qwen2_moe", "qwen2_moe", &FixtureOptions::default());
    let options = GgufOptions { ty: GgufType::F32, source_gguf: None, force: false, modelfile: false };
    let err = export_gguf(&ModelDir::open(&src).unwrap(), &tmp.path().join("q2.gguf"), &options, &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 0 is dense"), "{err}");
}

/// OLMo 2, Granite, GLM-4 and SmolLM3 in llama.cpp's layout for each (post-norm names, the
/// fused gate/up matrix, Granite's multipliers, the permuted q/k rows of llama.cpp's Llama
/// subclasses), read back to the fixture's logits; a model llama.cpp's graph cannot hold is
/// refused, on export and on import.
#[test]
fn the_newer_dense_families_export_in_llama_cpps_layout_and_import_to_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, arch) in [("olmo2", "olmo2"), ("granite", "granite"), ("glm4", "glm4"), ("smollm3", "smollm3")] {
        let src = llama_cpp_fixture(tmp.path(), family, family);
        let model = ModelDir::open(&src).unwrap();
        let spec = &model.spec;
        let out = tmp.path().join(format!("{family}.gguf"));
        gguf(&model, &out, GgufType::F32);
        let mut file = std::fs::File::open(&out).unwrap();
        let content = Content::read(&mut file).unwrap();
        assert_eq!(content.metadata["general.architecture"].to_string().unwrap(), arch);
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let dims = |name: &str| content.tensor_infos[name].shape.dims().to_vec();
        match family {
            "olmo2" => {
                assert!(!has("blk.0.attn_norm.weight") && !has("blk.0.ffn_norm.weight"), "no pre-norms");
                assert!(has("blk.0.post_attention_norm.weight") && has("blk.0.post_ffw_norm.weight"));
                assert_eq!(dims("blk.0.attn_q_norm.weight"), vec![spec.num_heads * spec.head_dim]);
            }
            "glm4" => {
                assert_eq!(dims("blk.0.ffn_up.weight"), vec![2 * spec.intermediate_size, spec.hidden_size]);
                assert!(!has("blk.0.ffn_gate.weight"));
                assert!(has("blk.0.post_attention_norm.weight") && has("blk.0.post_ffw_norm.weight"));
                assert!(has("blk.0.ffn_norm.weight") && has("blk.0.attn_q.bias"));
                let rot = content.metadata["glm4.rope.dimension_count"].to_u32().unwrap() as usize;
                assert_eq!(rot, spec.head_dim / 2);
            }
            "granite" => {
                for (key, want) in [
                    ("attention.scale", spec.query_scale),
                    ("embedding_scale", spec.embedding_scale),
                    ("residual_scale", spec.residual_multiplier),
                    ("logit_scale", spec.logits_scaling),
                ] {
                    let got = content.metadata[&format!("granite.{key}")].to_f32().unwrap();
                    assert_eq!(got, want.unwrap() as f32, "{key}");
                }
            }
            _ => {}
        }
        // llama.cpp's Llama subclasses store q/k rows permuted.
        let (q, _) =
            model.checkpoint.read_f32(&format!("{}layers.0.self_attn.q_proj.weight", spec.tensor_prefix)).unwrap();
        let stored = gguf_values(&content, &mut file, "blk.0.attn_q.weight");
        assert_eq!(stored == q, !matches!(family, "granite" | "smollm3"), "{family}: q rows");
        let back = tmp.path().join(format!("{family}-back"));
        import_gguf(&out, &back, &ImportOptions { dtype: Some(EditableDtype::F32), force: false }, &Silent)
            .unwrap_or_else(|e| panic!("{family}: {e}"));
        let imported = ModelDir::open(&back).unwrap();
        assert_eq!(imported.spec.family, spec.family);
        let (a, b) = (common::last_logits(&model, &IDS), common::last_logits(&imported, &IDS));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{family}: logits differ by {diff}");
    }

    let options = GgufOptions { ty: GgufType::F32, source_gguf: None, force: false, modelfile: false };
    let refused = |src: &Path| {
        let out = tmp.path().join("refused.gguf");
        let err = export_gguf(&ModelDir::open(src).unwrap(), &out, &options, &Silent).unwrap_err().to_string();
        assert!(!out.exists());
        err
    };
    // The fixture's SmolLM3 skips rope on every other layer; llama.cpp on every fourth only.
    let src = common::fixture(tmp.path(), "smollm3-odd", "smollm3", &FixtureOptions::default());
    let err = refused(&src);
    assert!(err.contains("layer 1 skips the rotary embedding"), "{err}");
    // llama.cpp's OLMo 2 graph has no attention output bias.
    let biased = FixtureOptions { output_biases: true, ..Default::default() };
    let src = common::fixture(tmp.path(), "olmo2-biased", "olmo2", &biased);
    let err = refused(&src);
    assert!(err.contains("no output biases"), "{err}");
}

/// Gemma 4 in llama.cpp's `gemma4` layout: the sliding layers' geometry under `_swa` keys, key/value
/// heads per layer, no value projection where the values are the keys, the layer scalar, norms
/// that scale by `w` as they are, and the full layers' proportional rope as `rope_freqs` divisors
/// (1 for the rotated pairs, 1e30 for the rest); read back to the fixture's logits. Sliding layers
/// that rotate part of each head, which llama.cpp rotates whole, are refused, as are the E
/// models' per-layer inputs.
#[test]
fn gemma4_exports_in_llama_cpps_layout_and_imports_to_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let options = FixtureOptions { num_layers: 4, ..Default::default() };
    let src = common::fixture(tmp.path(), "gemma4", "gemma4_text", &options);
    let model = ModelDir::open(&src).unwrap();
    let spec = &model.spec;
    let global = spec.global_attention.clone().unwrap();
    let out = tmp.path().join("gemma4.gguf");
    gguf(&model, &out, GgufType::F32);
    let mut file = std::fs::File::open(&out).unwrap();
    let content = Content::read(&mut file).unwrap();
    let meta = |key: &str| content.metadata[&format!("gemma4.{key}")].clone();
    assert_eq!(meta("attention.key_length").to_u32().unwrap() as usize, global.head_dim);
    assert_eq!(meta("attention.key_length_swa").to_u32().unwrap() as usize, spec.head_dim);
    let kv: Vec<u32> = meta("attention.head_count_kv").to_vec().unwrap().iter().map(|v| v.to_u32().unwrap()).collect();
    let flags: Vec<bool> =
        meta("attention.sliding_window_pattern").to_vec().unwrap().iter().map(|v| v.to_bool().unwrap()).collect();
    assert_eq!(flags, spec.sliding_layers);
    for (l, (&sliding, &heads)) in spec.sliding_layers.iter().zip(&kv).enumerate() {
        assert_eq!(heads as usize, if sliding { spec.num_kv_heads } else { global.num_kv_heads }, "layer {l}");
        assert_eq!(
            content.tensor_infos.contains_key(&format!("blk.{l}.attn_v.weight")),
            sliding || !global.values_are_keys
        );
        assert!(content.tensor_infos.contains_key(&format!("blk.{l}.layer_output_scale.weight")));
    }
    let read = |file: &mut std::fs::File, name: &str| gguf_values(&content, file, name);
    let divisors = read(&mut file, "rope_freqs.weight");
    let turning = (spec.proportional_rope.unwrap().global_fraction * global.head_dim as f64 / 2.0) as usize;
    assert_eq!(divisors.len(), global.head_dim / 2);
    assert!(divisors.iter().enumerate().all(|(i, d)| *d == if i < turning { 1.0 } else { 1e30 }), "{divisors:?}");
    let (norm, _) = model.checkpoint.read_f32("model.layers.0.input_layernorm.weight").unwrap();
    assert_eq!(read(&mut file, "blk.0.attn_norm.weight"), norm, "no `1 + w`");

    let back = tmp.path().join("gemma4-back");
    import_gguf(&out, &back, &ImportOptions { dtype: Some(EditableDtype::F32), force: false }, &Silent).unwrap();
    let imported = ModelDir::open(&back).unwrap();
    assert_eq!(imported.spec.global_attention, spec.global_attention);
    assert_eq!(imported.spec.proportional_rope, spec.proportional_rope);
    assert_eq!(imported.spec.sliding_layers, spec.sliding_layers);
    let (a, b) = (common::last_logits(&model, &IDS), common::last_logits(&imported, &IDS));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "logits differ by {diff}");

    let path = src.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["rope_parameters"]["sliding_attention"] =
        serde_json::json!({"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 10000.0});
    std::fs::write(&path, config.to_string()).unwrap();
    let options = GgufOptions { ty: GgufType::F32, source_gguf: None, force: false, modelfile: false };
    let refused = tmp.path().join("refused.gguf");
    let err = export_gguf(&ModelDir::open(&src).unwrap(), &refused, &options, &Silent).unwrap_err().to_string();
    assert!(err.contains("rotate part of each head") && !refused.exists(), "{err}");
    // The E models' per-layer inputs and shared keys are refused by name, with nothing written.
    let e_model = ModelDir::open(&common::fixture(
        tmp.path(),
        "e",
        common::GEMMA4_E,
        &FixtureOptions { num_layers: 4, ..Default::default() },
    ))
    .unwrap();
    let err = export_gguf(&e_model, &refused, &options, &Silent).unwrap_err().to_string();
    assert!(err.contains("per-layer inputs and shared keys") && !refused.exists(), "{err}");
}
