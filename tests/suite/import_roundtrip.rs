//! Import round trip: a fixture exported to GGUF (candle's writer, llama.cpp's naming and q/k
//! permutation) and imported back gives identical tensors (F32), F16-exact tensors (F16), the
//! same tokenization and identical logits, Llama 3's rope scaling included (llama.cpp stores it
//! as the tensor `rope_freqs.weight`). Bad GGUF input is a clear error with nothing written.

use crate::common;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use scalpel::arch::RopeScaling;
use scalpel::checkpoint::{EditableDtype, ModelDir};
use scalpel::fixture::FixtureOptions;
use scalpel::import::{import_gguf, permute_rows, ImportOptions};
use scalpel::progress::Silent;
use std::path::Path;

fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let part = part
        .replace("input_layernorm", "attn_norm")
        .replace("self_attn.q_proj", "attn_q")
        .replace("self_attn.k_proj", "attn_k")
        .replace("self_attn.v_proj", "attn_v")
        .replace("self_attn.o_proj", "attn_output")
        .replace("post_attention_layernorm", "ffn_norm")
        .replace("mlp.gate_proj", "ffn_gate")
        .replace("mlp.up_proj", "ffn_up")
        .replace("mlp.down_proj", "ffn_down");
    format!("blk.{layer}.{part}")
}

/// Export a llama fixture as llama.cpp would.
pub fn export(model: &ModelDir, path: &Path, dtype: GgmlDType) {
    let spec = &model.spec;
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.root.join("tokenizer.json")).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let special: Vec<usize> =
        tok["added_tokens"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap() as usize).collect();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.root.join("config.json")).unwrap()).unwrap();
    let tok_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.root.join("tokenizer_config.json")).unwrap()).unwrap();
    let u32v = |v: usize| Value::U32(v as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", u32v(spec.num_layers)),
        ("llama.embedding_length", u32v(spec.hidden_size)),
        ("llama.feed_forward_length", u32v(spec.intermediate_size)),
        ("llama.attention.head_count", u32v(spec.num_heads)),
        ("llama.attention.head_count_kv", u32v(spec.num_kv_heads)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(spec.norm_eps as f32)),
        ("llama.rope.freq_base", Value::F32(spec.rope_theta as f32)),
        ("llama.context_length", u32v(spec.max_position_embeddings)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect())),
        (
            "tokenizer.ggml.token_type",
            Value::Array((0..tokens.len()).map(|i| Value::I32(if special.contains(&i) { 3 } else { 1 })).collect()),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(
                tok["model"]["merges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| Value::String(m.as_str().unwrap().into()))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id", u32v(config["bos_token_id"].as_u64().unwrap() as usize)),
        ("tokenizer.ggml.eos_token_id", u32v(config["eos_token_id"].as_u64().unwrap() as usize)),
        ("tokenizer.chat_template", Value::String(tok_config["chat_template"].as_str().unwrap().into())),
    ];
    let mut tensors = Vec::new();
    for name in model.checkpoint.names() {
        let (mut values, shape) = model.checkpoint.read_f32(name).unwrap();
        if name.ends_with("q_proj.weight") {
            values = permute_rows(&values, shape[0], shape[1], spec.num_heads);
        } else if name.ends_with("k_proj.weight") {
            values = permute_rows(&values, shape[0], shape[1], spec.num_kv_heads);
        }
        let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, if shape.len() == 1 { GgmlDType::F32 } else { dtype }).unwrap();
        tensors.push((gguf_name(name), q));
    }
    if let Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) =
        spec.rope_scaling
    {
        // llama.cpp's convert_hf_to_gguf.py: one divisor per rotated pair.
        let (low_wavelen, high_wavelen) =
            (original_max_position_embeddings / low_freq_factor, original_max_position_embeddings / high_freq_factor);
        let divisors: Vec<f32> = (0..spec.head_dim / 2)
            .map(|i| {
                let freq = 1.0 / spec.rope_theta.powf(2.0 * i as f64 / spec.head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let d = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                d as f32
            })
            .collect();
        let t = Tensor::from_vec(divisors, spec.head_dim / 2, &Device::Cpu).unwrap();
        tensors.push(("rope_freqs.weight".to_string(), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let mut file = std::fs::File::create(path).unwrap();
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &meta, &ts).unwrap();
}

#[test]
fn llama_fixture_round_trips_through_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(
        tmp.path(),
        "llama",
        "llama",
        &FixtureOptions { tie_embeddings: Some(false), ..Default::default() },
    );
    let original = ModelDir::open(&src).unwrap();
    for (dtype, name) in [(GgmlDType::F32, "f32"), (GgmlDType::F16, "f16")] {
        let gguf = tmp.path().join(format!("{name}.gguf"));
        export(&original, &gguf, dtype);
        let out = tmp.path().join(format!("imported-{name}"));
        import_gguf(&gguf, &out, &ImportOptions { dtype: Some(EditableDtype::F32), force: false }, &Silent).unwrap();
        let imported = ModelDir::open(&out).unwrap();
        assert_eq!(imported.spec.num_layers, original.spec.num_layers);
        assert_eq!(imported.spec.num_kv_heads, original.spec.num_kv_heads);
        assert_eq!(original.checkpoint.names(), imported.checkpoint.names());
        for t in original.checkpoint.names() {
            let (a, _) = original.checkpoint.read_f32(t).unwrap();
            let (b, _) = imported.checkpoint.read_f32(t).unwrap();
            let expected: Vec<f32> = if name == "f16" && !t.ends_with("norm.weight") {
                a.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect()
            } else {
                a
            };
            assert_eq!(expected, b, "{name}: {t}");
        }
        // Same tokenization and template.
        let ta = tokenizers::Tokenizer::from_file(src.join("tokenizer.json")).unwrap();
        let tb = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
        let text = "<|start_header_id|>user<|end_header_id|>\n\nHow is the weather? 123 tests!<|eot_id|>";
        assert_eq!(ta.encode(text, false).unwrap().get_ids(), tb.encode(text, false).unwrap().get_ids());
        let tc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
        assert!(tc["chat_template"].as_str().unwrap().contains("start_header_id"));
        if name == "f32" {
            let ids: Vec<u32> = ta.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(common::last_logits(&original, &ids), common::last_logits(&imported, &ids), "identical logits");
        }
    }
}

#[test]
fn llama3_rope_scaling_survives_the_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions::default());
    let path = src.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // With head_dim 16 and theta 10000 the rotated pairs fall in all three bands of the scaling.
    let scaling = serde_json::json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    config["rope_scaling"] = scaling.clone();
    std::fs::write(&path, config.to_string()).unwrap();
    let original = ModelDir::open(&src).unwrap();
    let gguf = tmp.path().join("scaled.gguf");
    export(&original, &gguf, GgmlDType::F32);
    let out = tmp.path().join("imported");
    let report = import_gguf(&gguf, &out, &ImportOptions::default(), &Silent).unwrap();
    assert!(report.skipped.contains(&"rope_freqs.weight".to_string()), "not written as a weight");
    let imported = ModelDir::open(&out).unwrap();
    assert_eq!(imported.config["rope_scaling"], scaling);
    let ids = [5u32, 77, 200, 13, 90, 91, 92, 15];
    assert_eq!(common::last_logits(&original, &ids), common::last_logits(&imported, &ids), "identical logits");
    // The scaling matters here: without it the logits differ.
    config.as_object_mut().unwrap().remove("rope_scaling");
    std::fs::write(&path, config.to_string()).unwrap();
    assert_ne!(common::last_logits(&ModelDir::open(&src).unwrap(), &ids), common::last_logits(&imported, &ids));
}

#[test]
fn bad_gguf_files_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let err = import_gguf(&junk, &out, &ImportOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.contains("junk.gguf"), "{err}");
    // An architecture scalpel does not import.
    let mamba = tmp.path().join("mamba.gguf");
    let arch = Value::String("mamba".into());
    gguf_file::write(&mut std::fs::File::create(&mamba).unwrap(), &[("general.architecture", &arch)], &[]).unwrap();
    let err = import_gguf(&mamba, &out, &ImportOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.contains("mamba") && err.contains("llama"), "{err}");
    // Experts under an architecture read without them (llama.cpp's Mixtral is `llama`, read).
    let mixtral = tmp.path().join("mixtral.gguf");
    let (arch, experts) = (Value::String("qwen2".into()), Value::U32(8));
    let meta = [("general.architecture", &arch), ("qwen2.expert_count", &experts)];
    gguf_file::write(&mut std::fs::File::create(&mixtral).unwrap(), &meta, &[]).unwrap();
    let err = import_gguf(&mixtral, &out, &ImportOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.contains("8 experts") && err.contains("mixtral.gguf"), "{err}");
    // OLMo 3 is llama.cpp's `olmo2` with sliding windows, which scalpel's OLMo 2 lacks.
    let olmo3 = tmp.path().join("olmo3.gguf");
    let (arch, window) = (Value::String("olmo2".into()), Value::U32(4096));
    let meta = [("general.architecture", &arch), ("olmo2.attention.sliding_window", &window)];
    gguf_file::write(&mut std::fs::File::create(&olmo3).unwrap(), &meta, &[]).unwrap();
    let err = import_gguf(&olmo3, &out, &ImportOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.contains("OLMo 3") && err.contains("olmo3.gguf"), "{err}");
    // Phi-3's LongRoPE factors, which scalpel's Phi-3 does not apply.
    let phi = tmp.path().join("phi3-128k.gguf");
    let arch = Value::String("phi3".into());
    let factors =
        QTensor::quantize(&Tensor::ones(8, candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap();
    let meta = [("general.architecture", &arch)];
    gguf_file::write(&mut std::fs::File::create(&phi).unwrap(), &meta, &[("rope_factors_long.weight", &factors)])
        .unwrap();
    let err = import_gguf(&phi, &out, &ImportOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.contains("LongRoPE"), "{err}");
    assert!(!out.exists());
    assert!(std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".scalpel-tmp")));
}
