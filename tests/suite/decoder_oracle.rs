//! Oracle 1 of docs/DESIGN.md: our decoder's logits match candle-transformers' own implementations
//! (an independent implementation) on the tiny fixtures (the mixture-of-experts families against
//! candle's `mixtral`, `qwen2_moe` and `qwen3_moe`; Qwen-1 through its Qwen 2 equivalent,
//! Granite through candle's Granite on weights with its multipliers folded in, Gemma 4 through
//! candle's `gemma4` on weights with its differences folded in), and batching with left padding or a
//! KV cache, or computing a shared prefix once, does not change them. Each runs once per kernel
//! path of the products that this CPU has (row-major weights, AVX-512 panels, AMX tiles), forced
//! through `KernelConfig`; a path the CPU lacks says that it is skipped.

use crate::common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models as m;
use scalpel::checkpoint::ModelDir;
use scalpel::fixture::{FixtureDtype, FixtureOptions, FAMILIES};
use scalpel::kernels::{isa, KernelConfig};
use scalpel::model::{
    generate, prefill, CaptureSpec, Decoder, ForwardRequest, GenerateOptions, HookPoint, Interventions, KvCache,
    LoadOptions, LogitsMode, Sampling, WeightLayout, MIN_SHARED_PREFIX,
};
use scalpel::prompts::shared_prefix_len;
use std::path::Path;

const PROMPT: [u32; 11] = [5, 77, 200, 13, 90, 91, 92, 15, 260, 8, 42];

/// A kernel path of the products: the kernels allowed, the fixture dtype whose weights take it
/// (AMX packs weights exact in bf16) and the layout the linears must then be in (any, `None`).
#[derive(Debug, Clone, Copy)]
struct KernelPath {
    name: &'static str,
    kernels: KernelConfig,
    dtype: FixtureDtype,
    layout: Option<WeightLayout>,
}

/// The kernel paths this CPU has (with `f32_only`, those of f32 fixtures), each named on stderr;
/// the others are named as skipped.
fn kernel_paths(f32_only: bool) -> Vec<KernelPath> {
    let all = [
        (
            KernelPath {
                name: "rows",
                kernels: KernelConfig::ROWS,
                dtype: FixtureDtype::F32,
                layout: Some(WeightLayout::Rows),
            },
            true,
            "",
        ),
        (
            KernelPath {
                name: "panels",
                kernels: KernelConfig::PANELS,
                dtype: FixtureDtype::F32,
                layout: Some(WeightLayout::Panels),
            },
            isa::has_avx512f(),
            "no AVX-512",
        ),
        (
            KernelPath {
                name: "amx",
                kernels: KernelConfig::AMX,
                dtype: FixtureDtype::BF16,
                layout: Some(WeightLayout::Amx),
            },
            isa::has_amx() && !f32_only,
            if f32_only { "AMX takes bf16 weights" } else { "no AVX-512/AMX" },
        ),
    ];
    all.into_iter()
        .filter_map(|(path, available, why)| {
            if available {
                eprintln!("kernel path {}", path.name);
                Some(path)
            } else {
                eprintln!("kernel path {}: skipped: {why}", path.name);
                None
            }
        })
        .collect()
}

/// The fixture options of `path`.
fn fixture_options(path: &KernelPath) -> FixtureOptions {
    FixtureOptions { dtype: path.dtype, ..FixtureOptions::default() }
}

/// `model` loaded with `path`'s kernels, checked to run them.
fn load(model: &ModelDir, path: &KernelPath) -> Decoder {
    let options = LoadOptions { kernels: path.kernels, ..LoadOptions::default() };
    let decoder = Decoder::load_with_options(model, &Device::Cpu, DType::F32, options).unwrap();
    let layouts = decoder.weight_layouts();
    match path.layout {
        None => {}
        Some(WeightLayout::Rows) => assert_eq!(layouts, [WeightLayout::Rows].into(), "{}", path.name),
        Some(layout) => assert!(layouts.contains(&layout), "{}: the weights are in {layouts:?}", path.name),
    }
    decoder
}

/// The default path's kernels (whatever this CPU has), for the tests of other concerns.
const DEFAULT: KernelPath =
    KernelPath { name: "default", kernels: KernelConfig::AUTO, dtype: FixtureDtype::F32, layout: None };

fn ours(model: &ModelDir, ids: &[u32], path: &KernelPath) -> Vec<f32> {
    let decoder = load(model, path);
    let iv = Interventions::none();
    let req = ForwardRequest { capture: None, interventions: &iv, logits: LogitsMode::Last };
    let out = decoder.forward(&[ids.to_vec()], &[vec![1; ids.len()]], None, &req).unwrap();
    out.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

pub(crate) fn theirs(family: &str, dir: &Path, ids: &[u32]) -> Vec<f32> {
    let dev = Device::Cpu;
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    // SAFETY: the fixture's file is written before and not changed while it is mapped.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &dev).unwrap() };
    let input = Tensor::new(ids, &dev).unwrap().unsqueeze(0).unwrap();
    let logits = match family {
        "llama" => {
            let cfg = serde_json::from_str::<m::llama::LlamaConfig>(&config).unwrap().into_config(false);
            let model = m::llama::Llama::load(vb, &cfg).unwrap();
            let mut cache = m::llama::Cache::new(false, DType::F32, &cfg, &dev).unwrap();
            model.forward(&input, 0, &mut cache).unwrap()
        }
        "mistral" => {
            m::mistral::Model::new(&serde_json::from_str(&config).unwrap(), vb).unwrap().forward(&input, 0).unwrap()
        }
        "qwen2" => m::qwen2::ModelForCausalLM::new(&serde_json::from_str(&config).unwrap(), vb)
            .unwrap()
            .forward(&input, 0)
            .unwrap(),
        "qwen3" => m::qwen3::ModelForCausalLM::new(&serde_json::from_str(&config).unwrap(), vb)
            .unwrap()
            .forward(&input, 0)
            .unwrap(),
        "gemma" => m::gemma::Model::new(false, &serde_json::from_str(&config).unwrap(), vb)
            .unwrap()
            .forward(&input, 0)
            .unwrap(),
        "gemma2" => m::gemma2::Model::new(false, &serde_json::from_str(&config).unwrap(), vb)
            .unwrap()
            .forward(&input, 0)
            .unwrap(),
        "gemma3_text" => {
            // candle-transformers 0.11's Gemma 3 appends non-contiguous values to its KV cache and
            // fails on multi-token inputs with several KV heads; feed the prompt one token at a time.
            let mut model = m::gemma3::Model::new(false, &serde_json::from_str(&config).unwrap(), vb).unwrap();
            let mut last = None;
            for (i, id) in ids.iter().enumerate() {
                let token = Tensor::new(&[*id], &dev).unwrap().unsqueeze(0).unwrap();
                last = Some(model.forward(&token, i).unwrap());
            }
            last.unwrap()
        }
        "gemma4_text" => {
            let cfg: m::gemma4::config::Gemma4TextConfig = serde_json::from_str(&config).unwrap();
            let vb = VarBuilder::from_tensors(gemma4_as_candle_reads_it(dir), DType::F32, &dev);
            m::gemma4::text::TextModel::new(&cfg, vb).unwrap().forward(&input, 0).unwrap()
        }
        "phi3" => m::phi3::Model::new(&serde_json::from_str(&config).unwrap(), vb).unwrap().forward(&input, 0).unwrap(),
        "olmo2" => {
            m::olmo2::Model::new(&serde_json::from_str(&config).unwrap(), vb).unwrap().forward(&input, 0).unwrap()
        }
        "smollm3" => m::smol::smollm3::ModelForCausalLM::new(&serde_json::from_str(&config).unwrap(), vb)
            .unwrap()
            .forward(&input, 0)
            .unwrap(),
        // candle's `glm4_new` is GLM-4-0414 (`Glm4ForCausalLM`); its `glm4` is the older ChatGLM.
        "glm4" => m::glm4_new::ModelForCausalLM::new(&serde_json::from_str(&config).unwrap(), vb)
            .unwrap()
            .forward(&input, 0)
            .unwrap(),
        "mixtral" => {
            m::mixtral::Model::new(&serde_json::from_str(&config).unwrap(), vb).unwrap().forward(&input, 0).unwrap()
        }
        "qwen2_moe" => {
            m::qwen2_moe::Model::new(&serde_json::from_str(&config).unwrap(), vb).unwrap().forward(&input, 0).unwrap()
        }
        "qwen3_moe" => m::qwen3_moe::ModelForCausalLM::new(&serde_json::from_str(&config).unwrap(), vb)
            .unwrap()
            .forward(&input, 0)
            .unwrap(),
        "granite" => {
            let cfg = serde_json::from_str::<m::granite::GraniteConfig>(&config).unwrap().into_config(false);
            let model = m::granite::Granite::load(vb, &cfg).unwrap();
            let mut cache = m::granite::Cache::new(false, DType::F32, &cfg, &dev).unwrap();
            model.forward(&input, 0, &mut cache).unwrap()
        }
        other => panic!("no reference for {other}"),
    };
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

/// A Gemma 4 fixture's weights as candle-transformers 0.11's Gemma 4 computes Hugging Face's
/// model with them, which is exact algebra on four points where candle's model differs:
/// - its norms scale by `1 + w` (Hugging Face's Gemma 4: `w`): every norm weight minus 1;
/// - it scales the scores by `1/√head_dim` (Hugging Face: 1): each layer's q norm times
///   `√head_dim` (the rotation is linear, so q is scaled before it the same);
/// - it always reads `v_proj` (Hugging Face's full layers with `attention_k_eq_v` have none and
///   use the raw keys): `v_proj` is a copy of `k_proj` there;
/// - it has no `layer_scalar`: with `P_l` the product of the scalars of the layers before `l`,
///   Hugging Face's stream is `P_l` times candle's, so layer `l`'s post-norms are divided by
///   `P_l` (the norms that read the stream are invariant to its scale, up to ε).
fn gemma4_as_candle_reads_it(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    let mut tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    for t in tensors.values_mut() {
        *t = t.to_dtype(DType::F32).unwrap();
    }
    let scalar = |name: &str| tensors[name].to_vec1::<f32>().unwrap()[0] as f64;
    let mut before = 1.0f64;
    let mut layer = 0;
    let mut folded = std::collections::HashMap::new();
    while tensors.contains_key(&format!("model.layers.{layer}.layer_scalar")) {
        let p = format!("model.layers.{layer}.");
        for post in ["post_attention_layernorm", "post_feedforward_layernorm"] {
            let name = format!("{p}{post}.weight");
            folded.insert(name.clone(), ((&tensors[&name] / before).unwrap() - 1.0).unwrap());
        }
        let q = format!("{p}self_attn.q_norm.weight");
        let head_dim = tensors[&q].dim(0).unwrap() as f64;
        folded.insert(q.clone(), ((&tensors[&q] * head_dim.sqrt()).unwrap() - 1.0).unwrap());
        let v = format!("{p}self_attn.v_proj.weight");
        if !tensors.contains_key(&v) {
            folded.insert(v, tensors[&format!("{p}self_attn.k_proj.weight")].clone());
        }
        before *= scalar(&format!("{p}layer_scalar"));
        layer += 1;
    }
    assert!(layer > 0, "a Gemma 4 fixture stores layer scalars");
    for (name, t) in &tensors {
        let other_norm =
            name.ends_with("layernorm.weight") || name.ends_with("k_norm.weight") || name == "model.norm.weight";
        if other_norm && !folded.contains_key(name) {
            folded.insert(name.clone(), (t - 1.0).unwrap());
        }
    }
    tensors.extend(folded);
    tensors
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn logits_match_candle_transformers_for_every_family_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    for path in kernel_paths(false) {
        for family in FAMILIES.iter().filter(|f| !matches!(**f, "qwen" | "granite")) {
            let name = format!("{family}-{}", path.name);
            let dir = common::fixture(tmp.path(), &name, family, &fixture_options(&path));
            if family.starts_with("gemma") {
                // candle-transformers deviates from Hugging Face on sliding windows (Gemma 2: applied
                // to every layer; Gemma 2/3: a window of w + 1 tokens where HF attends to w, i.e.
                // `kv_idx > q_idx - w`). Widen the window so it does not bind here; our window
                // semantics are tested against Hugging Face's rule in `sliding_window_follows_hugging_face`.
                let path = dir.join("config.json");
                let mut config: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                config["sliding_window"] = serde_json::json!(64);
                std::fs::write(&path, config.to_string()).unwrap();
            }
            let model = ModelDir::open(&dir).unwrap();
            let a = ours(&model, &PROMPT, &path);
            let b = theirs(family, &dir, &PROMPT);
            let spread = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(spread > 0.1, "{name}: logits are not degenerate ({spread})");
            let diff = max_diff(&a, &b);
            assert!(diff < 1e-4, "{name}: max |Δlogit| = {diff}");
        }
    }
}

/// Qwen-1 has no candle-transformers model, but it is Qwen 2 with fused, renamed tensors (HF's
/// `QWenMLP` computes `w1(x) * silu(w2(x))`, so `w2` is the gate). Rewrite the fixture's tensors
/// into Qwen 2's layout and compare our Qwen-1 path with candle's Qwen 2.
#[test]
fn qwen1_matches_candle_qwen2_on_the_same_weights() {
    use safetensors::{tensor::TensorView, Dtype, SafeTensors};
    let tmp = tempfile::tempdir().unwrap();
    let qwen = common::fixture(tmp.path(), "qwen", "qwen", &FixtureOptions::default());
    let bytes = std::fs::read(qwen.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(qwen.join("config.json")).unwrap()).unwrap();
    let hidden = config["hidden_size"].as_u64().unwrap() as usize;

    let mut renamed: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let data = view.data().to_vec();
        let shape = view.shape().to_vec();
        let target = name
            .replace("transformer.wte.", "model.embed_tokens.")
            .replace("transformer.ln_f.", "model.norm.")
            .replace("transformer.h.", "model.layers.")
            .replace(".ln_1.", ".input_layernorm.")
            .replace(".ln_2.", ".post_attention_layernorm.")
            .replace(".attn.c_proj.", ".self_attn.o_proj.")
            .replace(".mlp.w1.", ".mlp.up_proj.")
            .replace(".mlp.w2.", ".mlp.gate_proj.")
            .replace(".mlp.c_proj.", ".mlp.down_proj.");
        if let Some(prefix) = target.strip_suffix(".attn.c_attn.weight").or(target.strip_suffix(".attn.c_attn.bias")) {
            // Rows [q; k; v], each `hidden` rows (Qwen-1 has as many KV heads as query heads).
            let kind = if target.ends_with("weight") { "weight" } else { "bias" };
            let part = data.len() / 3;
            for (i, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let mut part_shape = shape.clone();
                part_shape[0] = hidden;
                renamed.push((
                    format!("{prefix}.self_attn.{proj}.{kind}"),
                    part_shape,
                    data[i * part..(i + 1) * part].to_vec(),
                ));
            }
        } else {
            renamed.push((target, shape, data));
        }
    }
    let qwen2 = tmp.path().join("as-qwen2");
    std::fs::create_dir(&qwen2).unwrap();
    let views: Vec<(String, TensorView<'_>)> =
        renamed.iter().map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &qwen2.join("model.safetensors")).unwrap();
    let qwen2_config = serde_json::json!({
        "vocab_size": config["vocab_size"], "hidden_size": hidden,
        "intermediate_size": config["intermediate_size"].as_u64().unwrap() / 2,
        "num_hidden_layers": config["num_hidden_layers"], "num_attention_heads": config["num_attention_heads"],
        "num_key_value_heads": config["num_attention_heads"], "max_position_embeddings": 512,
        "sliding_window": 512, "max_window_layers": config["num_hidden_layers"], "use_sliding_window": false,
        "tie_word_embeddings": false, "rope_theta": config["rotary_emb_base"],
        "rms_norm_eps": config["layer_norm_epsilon"], "hidden_act": "silu",
    });
    std::fs::write(qwen2.join("config.json"), qwen2_config.to_string()).unwrap();

    let b = theirs("qwen2", &qwen2, &PROMPT);
    for path in kernel_paths(true) {
        let a = ours(&ModelDir::open(&qwen).unwrap(), &PROMPT, &path);
        assert!(a.iter().fold(0f32, |m, x| m.max(x.abs())) > 0.1, "logits are not degenerate");
        let diff = max_diff(&a, &b);
        assert!(diff < 1e-4, "{}: Qwen-1 vs candle Qwen 2 on the same weights: max |Δlogit| = {diff}", path.name);
    }
}

/// candle-transformers 0.11's Granite is Llama without Granite's four multipliers, so it is
/// run on the fixture's weights with the multipliers folded in, which is exact algebra: the
/// embedding times `embedding_multiplier`; q times `attention_multiplier · √head_dim` (candle
/// scales the scores by `1/√head_dim`); each writer (o_proj, down_proj) times
/// `residual_multiplier`; the head divided by `logits_scaling` (and untied, as candle's Granite
/// always reads `lm_head`).
#[test]
fn granite_matches_candle_granite_with_its_multipliers_folded_into_the_weights() {
    use safetensors::{tensor::TensorView, Dtype, SafeTensors};
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::fixture(tmp.path(), "granite", "granite", &FixtureOptions::default());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let f = |key: &str| config[key].as_f64().unwrap() as f32;
    let (embed_m, residual_m, attention_m, logits_s) =
        (f("embedding_multiplier"), f("residual_multiplier"), f("attention_multiplier"), f("logits_scaling"));
    for m in [embed_m, residual_m, logits_s] {
        assert!((m - 1.0).abs() > 0.1, "the fixture's multipliers must bind");
    }
    let head_dim = (config["hidden_size"].as_u64().unwrap() / config["num_attention_heads"].as_u64().unwrap()) as f32;
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut folded: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let scaled = |data: &[u8], by: f32| -> Vec<u8> {
        data.chunks(4).flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * by).to_le_bytes()).collect()
    };
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let by = if name == "model.embed_tokens.weight" {
            let head = scaled(view.data(), 1.0 / logits_s);
            if !st.names().contains(&"lm_head.weight") {
                folded.push(("lm_head.weight".into(), view.shape().to_vec(), head));
            }
            embed_m
        } else if name == "lm_head.weight" {
            1.0 / logits_s
        } else if name.ends_with("q_proj.weight") {
            attention_m * head_dim.sqrt()
        } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            residual_m
        } else {
            1.0
        };
        folded.push((name.to_string(), view.shape().to_vec(), scaled(view.data(), by)));
    }
    let plain = tmp.path().join("folded");
    std::fs::create_dir(&plain).unwrap();
    let views: Vec<(String, TensorView<'_>)> =
        folded.iter().map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &plain.join("model.safetensors")).unwrap();
    std::fs::copy(dir.join("config.json"), plain.join("config.json")).unwrap();

    let b = theirs("granite", &plain, &PROMPT);
    for path in kernel_paths(true) {
        let a = ours(&ModelDir::open(&dir).unwrap(), &PROMPT, &path);
        assert!(a.iter().fold(0f32, |m, x| m.max(x.abs())) > 0.1, "logits are not degenerate");
        let diff = max_diff(&a, &b);
        assert!(diff < 1e-4, "{}: Granite vs candle Granite on the folded weights: max |Δlogit| = {diff}", path.name);
    }
}

#[test]
fn left_padded_batches_and_kv_cache_match_single_runs() {
    let tmp = tempfile::tempdir().unwrap();
    for path in kernel_paths(false) {
        for family in common::all_fixtures() {
            let name = format!("{family}-{}", path.name);
            let dir = common::fixture(tmp.path(), &name, family, &fixture_options(&path));
            let model = ModelDir::open(&dir).unwrap();
            let decoder = load(&model, &path);
            let iv = Interventions::none();
            let req = ForwardRequest { capture: None, interventions: &iv, logits: LogitsMode::Last };
            let short = PROMPT[..6].to_vec();
            let long = PROMPT.to_vec();
            let single = |ids: &Vec<u32>| ours(&model, ids, &path);
            let pad = 0u32;
            let padded = vec![[vec![pad; long.len() - short.len()], short.clone()].concat(), long.clone()];
            let mask = vec![[vec![0u8; long.len() - short.len()], vec![1; short.len()]].concat(), vec![1; long.len()]];
            let batched: Vec<Vec<f32>> =
                decoder.forward(&padded, &mask, None, &req).unwrap().logits.unwrap().to_vec2().unwrap();
            assert!(max_diff(&batched[0], &single(&short)) < 1e-4, "{name}: padded row");
            assert!(max_diff(&batched[1], &single(&long)) < 1e-4, "{name}: full row");

            // Prefill all but the last token, then one cached step.
            let mut cache = KvCache::new(model.spec.num_layers);
            let n = long.len();
            decoder.forward(&[long[..n - 1].to_vec()], &[vec![1; n - 1]], Some(&mut cache), &req).unwrap();
            assert_eq!(cache.len(), n - 1);
            let step = decoder.forward(&[vec![long[n - 1]]], &[vec![1; n]], Some(&mut cache), &req).unwrap();
            let step: Vec<f32> = step.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap();
            assert!(max_diff(&step, &single(&long)) < 1e-4, "{name}: kv cache");
        }
    }
}

#[test]
fn sliding_window_follows_hugging_face() {
    // HF: a sliding layer's query at i attends to keys j with i - w < j <= i (w keys). With
    // w = 4 and an 11-token prompt the window binds; widening it past the prompt must change
    // the logits of gemma2/gemma3 (their window layers are real), and a window of 1 leaves
    // each sliding-layer query attending to itself only.
    let tmp = tempfile::tempdir().unwrap();
    for family in ["gemma2", "gemma3_text", "gemma4_text"] {
        let dir = common::fixture(tmp.path(), family, family, &FixtureOptions::default());
        let narrow = ours(&ModelDir::open(&dir).unwrap(), &PROMPT, &DEFAULT);
        let path = dir.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["sliding_window"] = serde_json::json!(PROMPT.len());
        std::fs::write(&path, config.to_string()).unwrap();
        let wide = ours(&ModelDir::open(&dir).unwrap(), &PROMPT, &DEFAULT);
        assert!(max_diff(&narrow, &wide) > 1e-3, "{family}: the window must bind");
        // The window covers exactly w keys: a window of PROMPT.len() equals no window at all.
        config["sliding_window"] = serde_json::json!(1000);
        std::fs::write(&path, config.to_string()).unwrap();
        let none = ours(&ModelDir::open(&dir).unwrap(), &PROMPT, &DEFAULT);
        assert!(max_diff(&wide, &none) < 1e-6, "{family}: w = T already sees every key");
        config["sliding_window"] = serde_json::json!(PROMPT.len() - 1);
        std::fs::write(&path, config.to_string()).unwrap();
        let one_short = ours(&ModelDir::open(&dir).unwrap(), &PROMPT, &DEFAULT);
        assert!(max_diff(&wide, &one_short) > 1e-4, "{family}: w = T - 1 hides the first key from the last query");
    }
}

#[test]
fn a_shared_prefix_computed_once_gives_each_prompt_its_own_run() {
    // Three prompts share their first 7 tokens (longer than the Gemma fixtures' sliding
    // window, so the window must count positions, not slots, across the padding between the
    // prefix and the shorter suffixes). Captures at the last two tokens, last-token logits and
    // greedy continuations must equal each prompt run alone, for every family.
    let tmp = tempfile::tempdir().unwrap();
    let prefix = [5u32, 77, 200, 13, 90, 91, 92];
    let prompts: Vec<Vec<u32>> = [&[15u32, 260, 8, 42][..], &[31, 9], &[100, 101, 102, 103, 104, 105]]
        .iter()
        .map(|suffix| [&prefix[..], suffix].concat())
        .collect();
    assert_eq!(shared_prefix_len(&prompts, 2), prefix.len());
    assert!(prefix.len() >= MIN_SHARED_PREFIX, "the prefix path is the one tested");
    for path in kernel_paths(false) {
        for family in common::all_fixtures() {
            let name = format!("{family}-{}", path.name);
            let dir = common::fixture(tmp.path(), &name, family, &fixture_options(&path));
            let model = ModelDir::open(&dir).unwrap();
            let decoder = load(&model, &path);
            let iv = Interventions::none();
            let layers: Vec<usize> = (0..model.spec.num_layers).collect();
            let spec = CaptureSpec {
                points: vec![HookPoint::ResidPre, HookPoint::ResidPost],
                layers,
                from_end: vec![1, 2],
                routing: false,
            };
            let req = ForwardRequest { capture: Some(&spec), interventions: &iv, logits: LogitsMode::Last };
            let together = prefill(&decoder, &prompts, 0, &req, 2).unwrap().output;
            let logits: Vec<Vec<f32>> = together.logits.unwrap().to_vec2().unwrap();
            for (i, ids) in prompts.iter().enumerate() {
                let alone = prefill(&decoder, std::slice::from_ref(ids), 0, &req, 2).unwrap().output;
                assert!(max_diff(&logits[i], &alone.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap()) < 1e-4);
                assert!(max_diff(&logits[i], &ours(&model, ids, &path)) < 1e-4, "{name}: prompt {i} logits");
                for (key, value) in &alone.captures.values {
                    let row: Vec<f32> =
                        together.captures.values[key].get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                    let single: Vec<f32> = value.flatten_all().unwrap().to_vec1().unwrap();
                    assert!(max_diff(&row, &single) < 1e-4, "{name}: prompt {i} capture {key:?}");
                }
            }
            let options = GenerateOptions { max_tokens: 5, sampling: Sampling::default(), stop_ids: vec![] };
            let batched = generate(&decoder, &prompts, 0, &options, &iv, &mut |_, _| false).unwrap();
            for (ids, g) in prompts.iter().zip(&batched) {
                let single =
                    generate(&decoder, std::slice::from_ref(ids), 0, &options, &iv, &mut |_, _| false).unwrap();
                assert_eq!(g.ids, single[0].ids, "{name}: greedy continuation");
                assert!(max_diff(&g.first_logits, &single[0].first_logits) < 1e-4);
            }
        }
    }
}
