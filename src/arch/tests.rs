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
        if family == Family::Gemma4 {
            // Hugging Face's default turns on per-layer inputs, which are refused.
            config["hidden_size_per_layer_input"] = json!(0);
        }
        let spec = spec_of(config);
        assert_eq!(spec.family, family);
        let writers = spec.writers(&[0, 3], &WriterKind::ALL);
        // A sparse layer writes through every expert (Hugging Face's default counts here) and,
        // in Qwen2-MoE, its shared expert.
        let mlp_writers = |layer| match (&spec.moe, spec.is_sparse(layer)) {
            (Some(moe), true) => moe.num_experts + usize::from(moe.shared_expert_intermediate_size.is_some()),
            _ => 1,
        };
        assert_eq!(writers.len(), 3 + mlp_writers(0) + mlp_writers(3), "{family}: embed + attn and MLP per layer");
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

fn moe_config(model_type: &str) -> serde_json::Value {
    let mut config = base_config(model_type);
    for (k, v) in [
        ("num_local_experts", json!(4)),
        ("num_experts", json!(4)),
        ("num_experts_per_tok", json!(2)),
        ("moe_intermediate_size", json!(32)),
        ("shared_expert_intermediate_size", json!(48)),
        ("decoder_sparse_step", json!(2)),
        ("mlp_only_layers", json!([3])),
    ] {
        config[k] = v;
    }
    config
}

#[test]
fn moe_families_name_every_expert_as_a_writer_and_the_router_as_input_side() {
    let mixtral = spec_of(moe_config("mixtral"));
    let moe = mixtral.moe.as_ref().unwrap();
    assert_eq!((moe.num_experts, moe.top_k, moe.expert_intermediate_size), (4, 2, 128));
    assert!(moe.norm_topk_prob && moe.shared_expert_intermediate_size.is_none());
    assert_eq!(moe.sparse_layers, [true; 4], "every Mixtral layer is sparse");
    let w = mixtral.writers(&[2], &[WriterKind::Mlp]);
    assert_eq!(w.len(), 4);
    assert_eq!(w[3].weight, "model.layers.2.block_sparse_moe.experts.3.w2.weight");
    assert_eq!(w[3].part, MlpPart::Expert(3));
    let inputs = mixtral.layer_names(2).input_side();
    assert!(inputs.contains(&"model.layers.2.block_sparse_moe.gate.weight".to_string()));
    assert!(inputs.contains(&"model.layers.2.block_sparse_moe.experts.0.w1.weight".to_string()));
    assert!(inputs.contains(&"model.layers.2.block_sparse_moe.experts.0.w3.weight".to_string()));
    assert!(w.iter().all(|w| !inputs.contains(&w.weight)));

    // Qwen2-MoE: layers 1 and 3 are on the step, 3 is listed dense: only 1 is sparse.
    let qwen = spec_of(moe_config("qwen2_moe"));
    assert_eq!(qwen.moe.as_ref().unwrap().sparse_layers, [false, true, false, false]);
    let dense = qwen.writers(&[3], &[WriterKind::Mlp]);
    assert_eq!(dense.len(), 1);
    assert_eq!(dense[0].weight, "model.layers.3.mlp.down_proj.weight");
    let sparse = qwen.writers(&[1], &[WriterKind::Mlp]);
    assert_eq!(sparse.len(), 5, "4 experts and the shared expert");
    assert_eq!(sparse[4].weight, "model.layers.1.mlp.shared_expert.down_proj.weight");
    assert_eq!(sparse[4].part, MlpPart::SharedExpert);
    let inputs = qwen.layer_names(1).input_side();
    for name in ["mlp.gate.weight", "mlp.shared_expert_gate.weight", "mlp.shared_expert.up_proj.weight"] {
        assert!(inputs.contains(&format!("model.layers.1.{name}")), "{name}");
    }

    // Stacked storage: one tensor, a writer per slice.
    let mut stacked = spec_of(moe_config("qwen3_moe"));
    assert!(stacked.qk_norm && stacked.moe.as_ref().unwrap().shared_expert_intermediate_size.is_none());
    stacked.detect_expert_storage(|name| name == "model.layers.1.mlp.experts.down_proj");
    let w = stacked.writers(&[1], &[WriterKind::Mlp]);
    assert_eq!(w.len(), 4);
    assert!(w
        .iter()
        .enumerate()
        .all(|(e, w)| w.weight == "model.layers.1.mlp.experts.down_proj" && w.slice == Some(e)));
    assert!(stacked.layer_names(1).input_side().contains(&"model.layers.1.mlp.experts.gate_up_proj".to_string()));
}

#[test]
fn moe_configs_out_of_range_are_errors() {
    let mut config = moe_config("qwen3_moe");
    config["num_experts_per_tok"] = json!(5);
    let err = spec_from_config(&config, Path::new("config.json")).unwrap_err().to_string();
    assert!(err.contains("num_experts_per_tok"), "{err}");
    let mut config = moe_config("qwen2_moe");
    config["decoder_sparse_step"] = json!(0);
    let err = spec_from_config(&config, Path::new("config.json")).unwrap_err().to_string();
    assert!(err.contains("decoder_sparse_step"), "{err}");
}
