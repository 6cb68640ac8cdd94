//! Gemma 4's config.json: the text model alone or nested in the multimodal config, Hugging
//! Face's defaults and its forced global last layer, the E models' per-layer inputs and shared
//! keys and values, and each feature the decoder does not run refused by the field that turns
//! it on.

use scalpel::arch::{spec_from_config, AttentionLayout, Family, KvSharing, NormKind, RopeScaling, WriterKind};
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
    let refused: [(&str, Value, &str); 9] = [
        // Every layer reusing keys leaves none to compute them; the last three (sliding, full
        // and the forced full last) include a full one, and the one layer before them is sliding.
        ("num_kv_shared_layers", json!(4), "num_kv_shared_layers = 4 leaves no layer"),
        ("num_kv_shared_layers", json!(3), "no earlier layer of its kind"),
        ("vocab_size_per_layer_input", json!(0), "vocab_size_per_layer_input"),
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
        if field == "vocab_size_per_layer_input" {
            config["hidden_size_per_layer_input"] = json!(8);
        }
        let err = parse(&config).unwrap_err().to_string();
        assert!(err.contains(expected), "{field}: {err}");
    }
    // Vision-only bidirectional attention leaves text causal.
    let mut config = text_config();
    config["use_bidirectional_attention"] = json!("vision");
    parse(&config).unwrap();
}

#[test]
fn the_e_models_per_layer_inputs_and_shared_keys_follow_hugging_face() {
    // Ten layers, every fifth full, the last four reusing keys: Hugging Face's
    // `kv_sharing_modes` (transformers 5.24) are
    // [None, None, None, None, store, store, reuse, reuse, reuse, reuse].
    let mut config = text_config();
    config["num_hidden_layers"] = json!(10);
    config["layer_types"] = json!((0..10)
        .map(|l| if (l + 1) % 5 == 0 { "full_attention" } else { "sliding_attention" })
        .collect::<Vec<_>>());
    config["num_kv_shared_layers"] = json!(4);
    config["use_double_wide_mlp"] = json!(true);
    config.as_object_mut().unwrap().remove("hidden_size_per_layer_input");
    let spec = parse(&config).unwrap();
    use KvSharing::{Own, Reuse, Store};
    assert_eq!(spec.kv_sharing, [Own, Own, Own, Own, Store, Store, Reuse, Reuse, Reuse, Reuse]);
    // Absent, the per-layer inputs take Hugging Face's defaults: 256 wide, 262144 rows.
    let inputs = spec.per_layer_inputs.as_ref().unwrap();
    assert_eq!((inputs.width, inputs.vocab_size), (256, 262_144));
    assert_eq!((spec.intermediate_size_for(5), spec.intermediate_size_for(6)), (128, 256), "double-wide when reusing");
    // A reusing layer has a q projection and no k/v projections or k norm; its per-layer
    // projection writes into the stream behind its own norm.
    let names = spec.layer_names(6);
    assert!(matches!(&names.attention, AttentionLayout::QueryOnly { q, .. } if q.ends_with("self_attn.q_proj.weight")));
    assert!(names.k_norm.is_none() && names.q_norm.is_some());
    let writers = spec.writers(&[6], &[WriterKind::PerLayer]);
    assert_eq!(writers.len(), 1);
    assert_eq!(writers[0].weight, "model.layers.6.per_layer_projection.weight");
    assert_eq!(writers[0].post_norm.as_deref(), Some("model.layers.6.post_per_layer_input_norm.weight"));
    assert!(names.input_side().contains(&"model.layers.6.per_layer_input_gate.weight".to_string()));
    // null turns the per-layer inputs off.
    config["hidden_size_per_layer_input"] = Value::Null;
    let spec = parse(&config).unwrap();
    assert!(spec.per_layer_inputs.is_none() && spec.layer_names(6).per_layer.is_none());
    assert!(spec.writers(&[6], &[WriterKind::PerLayer]).is_empty());
}
