//! Write a large synthetic Llama- or Qwen2-shaped checkpoint (random weights) for benchmarks.
//!
//! `cargo run --release --example synthetic_checkpoint -- OUT [--family llama|qwen2]
//! [--hidden 2048] [--layers 12] [--intermediate 5632] [--vocab 32000] [--heads N]
//! [--kv-heads N] [--tie 0|1] [--dtype bf16|f16|f32] [--shards 2] [--tokenizer-from DIR]`
//! The default is about 1.5 GB in bf16. `--family qwen2` adds the q/k/v biases;
//! `--tokenizer-from DIR` copies a real model's tokenizer files, so that prompts can be run
//! (probe); its vocabulary must fit `--vocab`. Weights are not a trained model: they exist to
//! measure I/O, memory and throughput. Qwen2.5-3B's shape (6.2 GB in bf16):
//! `--family qwen2 --hidden 2048 --intermediate 11008 --layers 36 --heads 16 --kv-heads 2
//! --vocab 151936 --tie 1`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out =
        PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: synthetic_checkpoint OUT [--hidden N] ..."))?);
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    while let Some(key) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{key} needs a value"))?;
        opts.insert(key.trim_start_matches("--").to_string(), value);
    }
    let get = |k: &str, d: usize| opts.get(k).map_or(Ok(d), |v| v.parse::<usize>());
    let hidden = get("hidden", 2048)?;
    let layers = get("layers", 12)?;
    let inter = get("intermediate", 5632)?;
    let vocab = get("vocab", 32000)?;
    let shards = get("shards", 2)?.max(1);
    let heads = get("heads", (hidden / 128).max(1))?;
    let kv = get("kv-heads", (heads / 4).max(1))?;
    let family = opts.get("family").map(String::as_str).unwrap_or("llama");
    anyhow::ensure!(family == "llama" || family == "qwen2", "--family must be llama or qwen2");
    let qwen2 = family == "qwen2";
    let tie = get("tie", 0)? != 0;
    let head_dim = hidden / heads;
    let dtype = opts.get("dtype").map(String::as_str).unwrap_or("bf16");
    let (st_dtype, size) = match dtype {
        "bf16" => ("BF16", 2),
        "f16" => ("F16", 2),
        "f32" => ("F32", 4),
        other => anyhow::bail!("unknown dtype {other}"),
    };
    std::fs::create_dir_all(&out)?;
    let mut tensors: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), vec![vocab, hidden])];
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        tensors.push((format!("{p}input_layernorm.weight"), vec![hidden]));
        tensors.push((format!("{p}self_attn.q_proj.weight"), vec![heads * head_dim, hidden]));
        tensors.push((format!("{p}self_attn.k_proj.weight"), vec![kv * head_dim, hidden]));
        tensors.push((format!("{p}self_attn.v_proj.weight"), vec![kv * head_dim, hidden]));
        if qwen2 {
            tensors.push((format!("{p}self_attn.q_proj.bias"), vec![heads * head_dim]));
            tensors.push((format!("{p}self_attn.k_proj.bias"), vec![kv * head_dim]));
            tensors.push((format!("{p}self_attn.v_proj.bias"), vec![kv * head_dim]));
        }
        tensors.push((format!("{p}self_attn.o_proj.weight"), vec![hidden, heads * head_dim]));
        tensors.push((format!("{p}post_attention_layernorm.weight"), vec![hidden]));
        tensors.push((format!("{p}mlp.gate_proj.weight"), vec![inter, hidden]));
        tensors.push((format!("{p}mlp.up_proj.weight"), vec![inter, hidden]));
        tensors.push((format!("{p}mlp.down_proj.weight"), vec![hidden, inter]));
    }
    tensors.push(("model.norm.weight".into(), vec![hidden]));
    if !tie {
        tensors.push(("lm_head.weight".into(), vec![vocab, hidden]));
    }
    let total: usize = tensors.iter().map(|(_, s)| s.iter().product::<usize>() * size).sum();
    let per_shard = total.div_ceil(shards);
    let mut groups: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut filled = 0;
    for t in tensors {
        let bytes = t.1.iter().product::<usize>() * size;
        if filled > 0 && filled + bytes > per_shard && groups.len() < shards {
            groups.push(Vec::new());
            filled = 0;
        }
        filled += bytes;
        groups.last_mut().expect("one group").push(t);
    }
    let n = groups.len();
    let mut weight_map = serde_json::Map::new();
    let mut state = 0x2545F4914F6CDD1Du64;
    for (i, group) in groups.iter().enumerate() {
        let file =
            if n == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{n:05}.safetensors", i + 1) };
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut offset = 0;
        for (name, shape) in group {
            let bytes = shape.iter().product::<usize>() * size;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
            weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
        }
        let mut h = serde_json::to_vec(&header)?;
        while h.len() % 8 != 0 {
            h.push(b' ');
        }
        let mut w = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(out.join(&file))?);
        w.write_all(&(h.len() as u64).to_le_bytes())?;
        w.write_all(&h)?;
        let mut buf = Vec::with_capacity(1 << 20);
        for (name, shape) in group {
            let count: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight");
            let bias = name.ends_with(".bias");
            for _ in 0..count {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = if norm {
                    1.0
                } else {
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * if bias { 0.2 } else { 0.04 }
                };
                match size {
                    4 => buf.extend_from_slice(&v.to_le_bytes()),
                    _ if dtype == "f16" => buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                    _ => buf.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                }
                if buf.len() >= 1 << 20 {
                    w.write_all(&buf)?;
                    buf.clear();
                }
            }
        }
        w.write_all(&buf)?;
        w.flush()?;
    }
    if n > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        std::fs::write(out.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index)?)?;
    }
    let (architecture, eps, theta) =
        if qwen2 { ("Qwen2ForCausalLM", 1e-6, 1_000_000.0) } else { ("LlamaForCausalLM", 1e-5, 10000.0) };
    let config = serde_json::json!({
        "architectures": [architecture], "model_type": family, "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "rms_norm_eps": eps, "rope_theta": theta,
        "max_position_embeddings": 4096, "tie_word_embeddings": tie, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "use_sliding_window": false
    });
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    if let Some(from) = opts.get("tokenizer-from") {
        for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
            let src = PathBuf::from(from).join(name);
            if src.is_file() {
                std::fs::copy(&src, out.join(name))?;
            }
        }
    }
    println!("{} ({:.2} GB in {n} shard(s))", out.display(), total as f64 / 1e9);
    Ok(())
}
