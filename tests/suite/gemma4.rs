//! Gemma 4's config.json: the text model alone or nested in the multimodal config, Hugging
//! Face's defaults and its forced global last layer, and each feature the decoder does not run
//! refused by the field that turns it on.

use scalpel::arch::{spec_from_config, AttentionLayout, Family, NormKind, RopeScaling};
use serde_json::{json, Value};
use std::path::Path;

fn text_config() -> Value {
    json!({
        "model_type": "gemma4_text", "architectures": ["Gemma4ForCausalLM"],
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32, "num_global_key_value_heads": 1,
        "attention_k_eq_v": true, "vocab_size": 300, "hidden_size_per_layer_input": 0,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
    })
}

fn parse(config: &Value) -> scalpel::Result<scalpel::arch::ModelSpec> {
    spec_from_config(config, Path::new("config.json"))
}

#[test]
fn the_text_config_gives_two_attention_geometries_and_hugging_faces_defaults() {
    let spec = parse(&text_config()).unwrap();
    assert_eq!(spec.family, Family::Gemma4);
    assert_eq!(spec.norm_kind, NormKind::Rms, "Gemma 4's norms scale by w");
    assert_eq!(spec.query_scale, Some(1.0));
    assert!(spec.v_norm && spec.layer_scalars && spec.qk_norm && spec.tie_word_embeddings);
    // Hugging Face makes the last layer global whatever layer_types says.
    assert_eq!(spec.sliding_layers, [true, false, true, false]);
    assert_eq!((spec.head_dim_for(0), spec.kv_heads_for(0)), (16, 2));
    assert_eq!((spec.head_dim_for(1), spec.kv_heads_for(1)), (32, 1));
    assert!(matches!(spec.layer_names(0).attention, AttentionLayout::Separate { .. }));
    assert!(matches!(spec.layer_names(3).attention, AttentionLayout::KeysAsValues { .. }));
    assert_eq!(spec.layer_names(2).layer_scalar.as_deref(), Some("model.layers.2.layer_scalar"));
    let rope = spec.proportional_rope.unwrap();
    assert_eq!((rope.local_fraction, rope.global_fraction), (1.0, 0.25));
    assert_eq!((spec.rope_local_theta, spec.rope_theta), (Some(10_000.0), 1_000_000.0));
    assert_eq!(spec.sliding_window, Some(512));
    // Without the keys as values, Hugging Face keeps num_key_value_heads for the full layers.
    let mut config = text_config();
    config["attention_k_eq_v"] = json!(false);
    let spec = parse(&config).unwrap();
    assert_eq!(spec.kv_heads_for(1), 2);
    assert!(matches!(spec.layer_names(1).attention, AttentionLayout::Separate { .. }));
    // Without layer_types, every sixth layer is global.
    config["layer_types"] = Value::Null;
    config["num_hidden_layers"] = json!(7);
    assert_eq!(parse(&config).unwrap().sliding_layers, [true, true, true, true, true, false, false]);
}

#[test]
fn the_multimodal_config_nests_the_text_model_and_its_tensors() {
    let config = json!({
        "model_type": "gemma4", "architectures": ["Gemma4ForConditionalGeneration"],
        "text_config": text_config(), "vision_config": {"hidden_size": 16},
    });
    let spec = parse(&config).unwrap();
    assert_eq!(spec.family, Family::Gemma4);
    assert_eq!(spec.embed_name(), "model.language_model.embed_tokens.weight");
    assert_eq!(spec.layer_names(0).o_proj, "model.language_model.layers.0.self_attn.o_proj.weight");
    assert_eq!(spec.lm_head_name(), "lm_head.weight");
    assert_eq!(spec.head_dim_for(1), 32);
}

#[test]
fn rope_parameters_are_read_per_layer_type() {
    let mut config = text_config();
    config["rope_parameters"] = json!({
        "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 2e6, "factor": 4.0},
    });
    let spec = parse(&config).unwrap();
    assert_eq!((spec.rope_local_theta, spec.rope_theta), (Some(5000.0), 2e6));
    assert_eq!(spec.proportional_rope.unwrap().global_fraction, 0.5);
    assert_eq!(spec.rope_scaling, Some(RopeScaling::Linear { factor: 4.0 }));
}

#[test]
fn what_the_decoder_does_not_run_is_refused_by_its_field() {
    let refused: [(&str, Value, &str); 8] = [
        ("hidden_size_per_layer_input", json!(256), "hidden_size_per_layer_input = 256"),
        ("num_kv_shared_layers", json!(2), "num_kv_shared_layers = 2"),
        ("enable_moe_block", json!(true), "enable_moe_block"),
        ("use_bidirectional_attention", json!("all"), "use_bidirectional_attention"),
        (
            "layer_types",
            json!(["sliding_attention", "chunked_attention", "full_attention", "full_attention"]),
            "layer_types",
        ),
        (
            "rope_parameters",
            json!({"sliding_attention": {"rope_type": "yarn"}, "full_attention": {}}),
            "rope_parameters.sliding_attention.rope_type",
        ),
        (
            "rope_parameters",
            json!({"sliding_attention": {"rope_type": "proportional", "factor": 2.0}, "full_attention": {}}),
            "rope_parameters.sliding_attention.factor",
        ),
        ("rope_parameters", json!({"sliding_attention": {}}), "full_attention"),
    ];
    for (field, value, expected) in refused {
        let mut config = text_config();
        config[field] = value;
        let err = parse(&config).unwrap_err().to_string();
        assert!(err.contains(expected), "{field}: {err}");
    }
    // Absent, the per-layer inputs take Hugging Face's default width (on); null turns them off.
    let mut config = text_config();
    config.as_object_mut().unwrap().remove("hidden_size_per_layer_input");
    let err = parse(&config).unwrap_err().to_string();
    assert!(err.contains("hidden_size_per_layer_input = 256") && err.contains("absent"), "{err}");
    config["hidden_size_per_layer_input"] = Value::Null;
    parse(&config).unwrap();
    // Vision-only bidirectional attention leaves text causal.
    config["use_bidirectional_attention"] = json!("vision");
    parse(&config).unwrap();
}
