//! Oracle 1 of DESIGN.md: our decoder's logits match candle-transformers' own implementations
//! (an independent implementation) on the tiny fixtures, and batching with left padding or a
//! KV cache does not change them.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models as m;
use scalpel::checkpoint::ModelDir;
use scalpel::fixture::{FixtureOptions, FAMILIES};
use scalpel::model::{Decoder, ForwardRequest, Interventions, KvCache, LogitsMode};
use std::path::Path;

const PROMPT: [u32; 11] = [5, 77, 200, 13, 90, 91, 92, 15, 260, 8, 42];

fn ours(model: &ModelDir, ids: &[u32]) -> Vec<f32> {
    let decoder = Decoder::load(model, &Device::Cpu, DType::F32).unwrap();
    let iv = Interventions::none();
    let req = ForwardRequest { capture: None, interventions: &iv, logits: LogitsMode::Last };
    let out = decoder.forward(&[ids.to_vec()], &[vec![1; ids.len()]], None, &req).unwrap();
    out.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

fn theirs(family: &str, dir: &Path, ids: &[u32]) -> Vec<f32> {
    let dev = Device::Cpu;
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
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
        "phi3" => m::phi3::Model::new(&serde_json::from_str(&config).unwrap(), vb).unwrap().forward(&input, 0).unwrap(),
        other => panic!("no reference for {other}"),
    };
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn logits_match_candle_transformers_for_every_family_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES.iter().filter(|f| **f != "qwen") {
        let dir = common::fixture(tmp.path(), family, family, &FixtureOptions::default());
        if family.starts_with("gemma") {
            // candle-transformers deviates from Hugging Face on sliding windows (Gemma 2: applied
            // to every layer; Gemma 2/3: a window of w + 1 tokens where HF attends to w, i.e.
            // `kv_idx > q_idx - w`). Widen the window so it does not bind here; our window
            // semantics are tested against Hugging Face's rule in `sliding_window_follows_hugging_face`.
            let path = dir.join("config.json");
            let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            config["sliding_window"] = serde_json::json!(64);
            std::fs::write(&path, config.to_string()).unwrap();
        }
        let model = ModelDir::open(&dir).unwrap();
        let a = ours(&model, &PROMPT);
        let b = theirs(family, &dir, &PROMPT);
        let spread = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(spread > 0.1, "{family}: logits are not degenerate ({spread})");
        let diff = max_diff(&a, &b);
        assert!(diff < 1e-4, "{family}: max |Δlogit| = {diff}");
    }
}

#[test]
fn left_padded_batches_and_kv_cache_match_single_runs() {
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let dir = common::fixture(tmp.path(), family, family, &FixtureOptions::default());
        let model = ModelDir::open(&dir).unwrap();
        let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
        let iv = Interventions::none();
        let req = ForwardRequest { capture: None, interventions: &iv, logits: LogitsMode::Last };
        let short = PROMPT[..6].to_vec();
        let long = PROMPT.to_vec();
        let single = |ids: &Vec<u32>| ours(&model, ids);
        let pad = 0u32;
        let padded = vec![[vec![pad; long.len() - short.len()], short.clone()].concat(), long.clone()];
        let mask = vec![[vec![0u8; long.len() - short.len()], vec![1; short.len()]].concat(), vec![1; long.len()]];
        let batched: Vec<Vec<f32>> =
            decoder.forward(&padded, &mask, None, &req).unwrap().logits.unwrap().to_vec2().unwrap();
        assert!(max_diff(&batched[0], &single(&short)) < 1e-4, "{family}: padded row");
        assert!(max_diff(&batched[1], &single(&long)) < 1e-4, "{family}: full row");

        // Prefill all but the last token, then one cached step.
        let mut cache = KvCache::new(model.spec.num_layers);
        let n = long.len();
        decoder.forward(&[long[..n - 1].to_vec()], &[vec![1; n - 1]], Some(&mut cache), &req).unwrap();
        assert_eq!(cache.len(), n - 1);
        let step = decoder.forward(&[vec![long[n - 1]]], &[vec![1; n]], Some(&mut cache), &req).unwrap();
        let step: Vec<f32> = step.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        assert!(max_diff(&step, &single(&long)) < 1e-4, "{family}: kv cache");
    }
}

#[test]
fn sliding_window_follows_hugging_face() {
    // HF: a sliding layer's query at i attends to keys j with i - w < j <= i (w keys). With
    // w = 4 and an 11-token prompt the window binds; widening it past the prompt must change
    // the logits of gemma2/gemma3 (their window layers are real), and a window of 1 leaves
    // each sliding-layer query attending to itself only.
    let tmp = tempfile::tempdir().unwrap();
    for family in ["gemma2", "gemma3_text"] {
        let dir = common::fixture(tmp.path(), family, family, &FixtureOptions::default());
        let narrow = ours(&ModelDir::open(&dir).unwrap(), &PROMPT);
        let path = dir.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["sliding_window"] = serde_json::json!(PROMPT.len());
        std::fs::write(&path, config.to_string()).unwrap();
        let wide = ours(&ModelDir::open(&dir).unwrap(), &PROMPT);
        assert!(max_diff(&narrow, &wide) > 1e-3, "{family}: the window must bind");
        // The window covers exactly w keys: a window of PROMPT.len() equals no window at all.
        config["sliding_window"] = serde_json::json!(1000);
        std::fs::write(&path, config.to_string()).unwrap();
        let none = ours(&ModelDir::open(&dir).unwrap(), &PROMPT);
        assert!(max_diff(&wide, &none) < 1e-6, "{family}: w = T already sees every key");
        config["sliding_window"] = serde_json::json!(PROMPT.len() - 1);
        std::fs::write(&path, config.to_string()).unwrap();
        let one_short = ours(&ModelDir::open(&dir).unwrap(), &PROMPT);
        assert!(max_diff(&wide, &one_short) > 1e-4, "{family}: w = T - 1 hides the first key from the last query");
    }
}
