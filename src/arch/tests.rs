use super::*;
use serde_json::json;
use std::path::Path;

fn base_config(model_type: &str) -> serde_json::Value {
    json!({
        "model_type": model_type,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0
    })
}

fn spec_of(value: serde_json::Value) -> ModelSpec {
    spec_from_config(&value, Path::new("config.json")).expect("valid config")
}

#[test]
fn every_family_parses_and_names_its_writers() {
    for family in Family::ALL {
        let mut config = base_config(family.model_type());
        if family == Family::Qwen {
            config["kv_channels"] = json!(16);
        }
        let spec = spec_of(config);
        assert_eq!(spec.family, family);
        let writers = spec.writers(&[0, 3], &WriterKind::ALL);
        assert_eq!(writers.len(), 5, "{family}: embed + 2 per layer");
        assert_eq!(writers[0].kind, WriterKind::Embed);
        for w in &writers[1..] {
            let layer = w.layer.expect("layer writer");
            assert!(w.weight.contains(&format!(".{layer}.")), "{family}: {}", w.weight);
            assert!(!spec.layer_names(layer).input_side().contains(&w.weight));
        }
    }
}

#[test]
fn qwen1_writers_are_c_proj_and_w1_w2_are_input_side() {
    let mut config = base_config("qwen");
    config["no_bias"] = json!(true);
    let spec = spec_of(config);
    assert_eq!(spec.intermediate_size, 64, "Qwen-1 stores twice the MLP width");
    let names = spec.layer_names(1);
    assert_eq!(names.o_proj, "transformer.h.1.attn.c_proj.weight");
    assert_eq!(names.down_proj, "transformer.h.1.mlp.c_proj.weight");
    let inputs = names.input_side();
    assert!(inputs.contains(&"transformer.h.1.mlp.w1.weight".to_string()));
    assert!(inputs.contains(&"transformer.h.1.mlp.w2.weight".to_string()));
    assert_eq!(spec.embed_name(), "transformer.wte.weight");
}

#[test]
fn gemma2_and_gemma3_writers_carry_their_post_norms() {
    for model_type in ["gemma2", "gemma3_text", "gemma3"] {
        let spec = spec_of(base_config(model_type));
        assert_eq!(spec.norm_kind, NormKind::RmsOnePlus);
        assert!(spec.tie_word_embeddings);
        let w = spec.writers(&[2], &[WriterKind::Attn, WriterKind::Mlp]);
        assert_eq!(w[0].post_norm.as_deref(), Some("model.layers.2.post_attention_layernorm.weight"));
        assert_eq!(w[1].post_norm.as_deref(), Some("model.layers.2.post_feedforward_layernorm.weight"));
        assert_eq!(spec.layer_names(2).mlp_norm, "model.layers.2.pre_feedforward_layernorm.weight");
    }
    let llama = spec_of(base_config("llama"));
    assert!(llama.writers(&[0], &WriterKind::ALL).iter().all(|w| w.post_norm.is_none()));
}

#[test]
fn gemma3_sliding_pattern_and_local_rope() {
    let mut config = base_config("gemma3_text");
    config["num_hidden_layers"] = json!(6);
    config["sliding_window_pattern"] = json!(3);
    config["sliding_window"] = json!(4);
    config["rope_theta"] = json!(1_000_000.0);
    let spec = spec_of(config);
    assert_eq!(spec.sliding_layers, vec![true, true, false, true, true, false]);
    assert_eq!(spec.rope_theta_for(0), 10_000.0);
    assert_eq!(spec.rope_theta_for(2), 1_000_000.0);
    assert_eq!(spec.window_for(0), Some(4));
    assert_eq!(spec.window_for(2), None);
}

#[test]
fn multimodal_gemma3_uses_the_language_model_prefix() {
    let config = json!({
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": base_config("gemma3_text"),
    });
    let spec = spec_of(config);
    assert_eq!(spec.embed_name(), "language_model.model.embed_tokens.weight");
}

#[test]
fn biases_follow_the_config() {
    let mut config = base_config("llama");
    config["attention_bias"] = json!(true);
    config["mlp_bias"] = json!(true);
    let spec = spec_of(config);
    let w = spec.writers(&[0], &[WriterKind::Attn, WriterKind::Mlp]);
    assert_eq!(w[0].bias.as_deref(), Some("model.layers.0.self_attn.o_proj.bias"));
    assert_eq!(w[1].bias.as_deref(), Some("model.layers.0.mlp.down_proj.bias"));
    let qwen2 = spec_of(base_config("qwen2"));
    assert!(qwen2.qkv_bias && !qwen2.o_proj_bias);
}

#[test]
fn architectures_field_is_used_when_model_type_is_missing() {
    let mut config = base_config("llama");
    config.as_object_mut().unwrap().remove("model_type");
    config["architectures"] = json!(["Qwen2ForCausalLM"]);
    assert_eq!(spec_of(config).family, Family::Qwen2);
}

#[test]
fn unknown_architecture_lists_the_supported_ones() {
    let mut config = base_config("mamba");
    config["architectures"] = json!(["MambaForCausalLM"]);
    let err = spec_from_config(&config, Path::new("m/config.json")).unwrap_err().to_string();
    assert!(err.contains("mamba") && err.contains("m/config.json"), "{err}");
    for family in Family::ALL {
        assert!(err.contains(family.model_type()), "{err}");
    }
}

#[test]
fn missing_fields_and_bad_head_counts_are_clear_errors() {
    let mut config = base_config("llama");
    config.as_object_mut().unwrap().remove("hidden_size");
    let err = spec_from_config(&config, Path::new("config.json")).unwrap_err().to_string();
    assert!(err.contains("hidden_size"), "{err}");
    let mut config = base_config("llama");
    config["num_key_value_heads"] = json!(3);
    let err = spec_from_config(&config, Path::new("config.json")).unwrap_err().to_string();
    assert!(err.contains("num_key_value_heads"), "{err}");
}

#[test]
fn olmo2_and_glm4_writers_carry_their_post_norms() {
    let olmo = spec_of(base_config("olmo2"));
    assert!(!olmo.pre_norms && olmo.qk_norm_full && olmo.qk_norm);
    assert_eq!(olmo.norm_kind, NormKind::Rms);
    let w = olmo.writers(&[1], &[WriterKind::Attn, WriterKind::Mlp]);
    assert_eq!(w[0].post_norm.as_deref(), Some("model.layers.1.post_attention_layernorm.weight"));
    assert_eq!(w[1].post_norm.as_deref(), Some("model.layers.1.post_feedforward_layernorm.weight"));
    assert!(olmo.layer_names(1).attn_norm.is_empty() && olmo.layer_names(1).mlp_norm.is_empty());

    let glm = spec_of(base_config("glm4"));
    assert!(glm.pre_norms && glm.rope_interleaved && glm.qkv_bias && !glm.o_proj_bias);
    assert_eq!(glm.partial_rotary_factor, 0.5);
    let w = glm.writers(&[0], &[WriterKind::Attn, WriterKind::Mlp]);
    assert_eq!(w[0].post_norm.as_deref(), Some("model.layers.0.post_self_attn_layernorm.weight"));
    assert_eq!(w[1].post_norm.as_deref(), Some("model.layers.0.post_mlp_layernorm.weight"));
    let names = glm.layer_names(0);
    assert_eq!(names.mlp_norm, "model.layers.0.post_attention_layernorm.weight");
    assert_eq!(names.input_side().last().map(String::as_str), Some("model.layers.0.mlp.gate_up_proj.weight"));
}

#[test]
fn smollm3_nope_layers_follow_the_list_or_the_interval() {
    let spec = spec_of(base_config("smollm3"));
    assert_eq!(spec.nope_layers, vec![false, false, false, true], "every 4th layer by default");
    let mut config = base_config("smollm3");
    config["no_rope_layers"] = json!([1, 0, 0, 1]);
    assert_eq!(spec_of(config.clone()).nope_layers, vec![false, true, true, false]);
    config["no_rope_layers"] = json!([1, 0]);
    let err = spec_from_config(&config, Path::new("config.json")).unwrap_err().to_string();
    assert!(err.contains("no_rope_layers"), "{err}");
}

#[test]
fn granite_reads_its_multipliers_with_hugging_face_defaults() {
    let mut config = base_config("granite");
    config["embedding_multiplier"] = json!(12.0);
    config["residual_multiplier"] = json!(0.22);
    config["attention_multiplier"] = json!(0.0078125);
    config["logits_scaling"] = json!(16.0);
    let spec = spec_of(config);
    assert_eq!(spec.embedding_scale, Some(12.0));
    assert_eq!(spec.residual_multiplier, Some(0.22));
    assert_eq!(spec.query_scale, Some(0.0078125));
    assert_eq!(spec.logits_scaling, Some(16.0));
    let plain = spec_of(base_config("granite"));
    assert_eq!(plain.query_scale, Some(1.0), "Hugging Face's default attention_multiplier is 1");
}
