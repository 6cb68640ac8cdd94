//! `scalpel inspect`: what a model folder holds and what scalpel would edit.

use super::common::{human_bytes, open_model};
use clap::Args as ClapArgs;
use scalpel::arch::KvSharing;

/// Show a model's architecture, sizes, dtypes, shards, tied head, and the tensors scalpel edits.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id (owner/name) found in the cache or downloaded.
    pub model: String,
    /// Print the full summary as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// Run `inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.model)?;
    let s = model.summary();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let spec = &s.spec;
    println!("model        {}", s.path);
    println!("family       {} ({} layers)", spec.family, spec.num_layers);
    println!(
        "sizes        hidden {}, heads {} (kv {}, head_dim {}), mlp {}, vocab {}",
        spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.intermediate_size, spec.vocab_size
    );
    println!(
        "norms        {:?}, eps {}; activation {:?}; rope θ {}",
        spec.norm_kind, spec.norm_eps, spec.activation, spec.rope_theta
    );
    if let Some(g) = &spec.global_attention {
        let full = (0..spec.num_layers).filter(|&l| !spec.sliding_layers[l]).count();
        println!(
            "full layers  {full} of {}: head_dim {}, kv {}{}; sliding window {}",
            spec.num_layers,
            g.head_dim,
            g.num_kv_heads,
            if g.values_are_keys { ", values are the keys" } else { "" },
            spec.sliding_window.map_or("none".to_string(), |w| w.to_string())
        );
    }
    if spec.layer_scalars {
        println!("layer scalar each layer's output stream is multiplied by its `layer_scalar` (not edited)");
    }
    if let Some(inputs) = &spec.per_layer_inputs {
        println!(
            "per-layer    inputs of width {} per layer ({} token rows); each layer's per_layer_projection writes \
             the stream (edited: target `ple`)",
            inputs.width, inputs.vocab_size
        );
    }
    let reusing: Vec<usize> = (0..spec.num_layers).filter(|&l| spec.kv_sharing_of(l) == KvSharing::Reuse).collect();
    if let (Some(first), Some(last)) = (reusing.first(), reusing.last()) {
        println!(
            "shared kv    layers {first}..={last} reuse the keys and values of the last earlier layer of their kind{}",
            if spec.double_wide_mlp { " (with a double-wide MLP)" } else { "" }
        );
    }
    let dtypes: Vec<String> = s.dtypes.iter().map(|(d, n)| format!("{d} × {n}")).collect();
    println!("dtypes       {}", dtypes.join(", "));
    println!("parameters   {:.1} M", s.parameters as f64 / 1e6);
    println!("weights      {} shard(s), {}: {}", s.shards.len(), human_bytes(s.bytes), s.shards.join(", "));
    if s.tied_head {
        println!("tied head    yes: editing the embedding also edits the output head (ablate --untie keeps the original head)");
    } else {
        println!("tied head    no");
    }
    println!("writers scalpel edits (output side):");
    for (kind, writers) in &s.writers {
        let first = &writers[0];
        let biases = writers.iter().filter(|w| w.bias.is_some()).count();
        let norms = writers.iter().filter(|w| w.post_norm.is_some()).count();
        println!("  {kind:<6} ×{:<3} e.g. {} {:?}", writers.len(), first.tensor, first.shape);
        let slices = writers.iter().filter(|w| w.slice.is_some()).count();
        if slices > 0 {
            println!(
                "         {slices} of them slices of stacked [experts, hidden, in] tensors, each edited on its own"
            );
        }
        if biases > 0 {
            println!("         + {biases} output bias(es), e.g. {}", first.bias.as_deref().unwrap_or("-"));
        }
        if norms > 0 {
            println!(
                "         behind post-norms (edited against γ ⊙ r), e.g. {}",
                first.post_norm.as_deref().unwrap_or("-")
            );
        }
    }
    println!("never edited (input side), e.g. layer 0: {}", s.input_side_example.join(", "));
    if let Some(moe) = &spec.moe {
        let sparse: Vec<usize> = (0..spec.num_layers).filter(|&l| spec.is_sparse(l)).collect();
        let shared = moe.shared_expert_intermediate_size.map_or("none".to_string(), |w| format!("width {w}"));
        println!(
            "experts      {} per sparse layer (width {}), top {} per token (renormalised: {}), shared expert: {shared}; \
             {} of {} layers sparse, stored {:?}",
            moe.num_experts,
            moe.expert_intermediate_size,
            moe.top_k,
            moe.norm_topk_prob,
            sparse.len(),
            spec.num_layers,
            moe.storage
        );
        if let Some(&first) = sparse.first() {
            if let scalpel::arch::MlpLayout::Sparse(names) = spec.layer_names(first).mlp {
                println!("router       input side, never edited, e.g. {}", names.router);
            }
        }
    }
    if !s.unrecognised_tensors.is_empty() {
        println!(
            "other tensors ({}), left untouched: {}",
            s.unrecognised_tensors.len(),
            s.unrecognised_tensors.join(", ")
        );
    }
    Ok(())
}
