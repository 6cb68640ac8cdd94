//! GGUF tensor names ↔ Hugging Face names (one table, read both ways by import and export), and
//! the value changes llama.cpp's converter makes.

/// What to do to a tensor's values on the way back to Hugging Face layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fix {
    /// Nothing.
    None,
    /// Undo llama.cpp's q/k row permutation with this many heads.
    Unpermute(usize),
    /// llama.cpp stores Gemma norms as `1 + w`; Hugging Face stores `w`.
    MinusOne,
}

/// Whether an architecture's blocks end in post-norms under Hugging Face's Gemma 2 names (Gemma
/// 2/3's four norms per layer, OLMo 2's two), so that `post_attention_layernorm` is the attention
/// output's norm and `ffn_norm` the pre-feed-forward one.
fn four_norms(arch: &str) -> bool {
    matches!(arch, "gemma2" | "gemma3" | "gemma4" | "olmo2")
}

/// Whether llama.cpp permutes an architecture's q/k rows (its converter's Llama subclasses,
/// which also carry Llama 3's rope scaling as `rope_freqs`).
pub(crate) fn permuted(arch: &str) -> bool {
    matches!(arch, "llama" | "granite" | "smollm3")
}

/// Tensors outside the layers: (GGUF name, Hugging Face name).
const GLOBAL: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Per-layer tensors named whole, without a `.weight` on the Hugging Face side: (GGUF name
/// after `blk.{l}.`, Hugging Face name after `model.layers.{l}.`, architectures).
const WHOLE: &[(&str, &str, Scope)] = &[("layer_output_scale.weight", "layer_scalar", Scope::Only(&["gemma4"]))];

/// Per-layer tensors: (GGUF base, Hugging Face base, architectures it applies to: all, the
/// post-norm ones of [`four_norms`], all but them, or those named). The one table both directions read; the first row that
/// admits an architecture wins, so the rows of one family come first.
const LAYER: &[(&str, &str, Scope)] = &[
    // GLM-4: norms after both writers under their own names; GLM-4 and Phi-3: a fused gate/up
    // matrix (gate rows over up rows, as llama.cpp's fused SwiGLU splits it).
    ("post_attention_norm", "post_self_attn_layernorm", Scope::Only(&["glm4"])),
    ("post_ffw_norm", "post_mlp_layernorm", Scope::Only(&["glm4"])),
    ("ffn_up", "mlp.gate_up_proj", Scope::Only(&["glm4", "phi3"])),
    // Phi-3: q, k and v fused in that order, as llama.cpp's `attn_qkv` views them.
    ("attn_qkv", "self_attn.qkv_proj", Scope::Only(&["phi3"])),
    ("attn_norm", "input_layernorm", Scope::All),
    ("attn_q", "self_attn.q_proj", Scope::All),
    ("attn_k", "self_attn.k_proj", Scope::All),
    ("attn_v", "self_attn.v_proj", Scope::All),
    ("attn_output", "self_attn.o_proj", Scope::All),
    ("attn_q_norm", "self_attn.q_norm", Scope::All),
    ("attn_k_norm", "self_attn.k_norm", Scope::All),
    ("ffn_norm", "pre_feedforward_layernorm", Scope::FourNorms),
    ("ffn_norm", "post_attention_layernorm", Scope::Others),
    ("post_attention_norm", "post_attention_layernorm", Scope::FourNorms),
    ("post_ffw_norm", "post_feedforward_layernorm", Scope::FourNorms),
    ("ffn_gate", "mlp.gate_proj", Scope::All),
    ("ffn_up", "mlp.up_proj", Scope::All),
    ("ffn_down", "mlp.down_proj", Scope::All),
    // Mixtral's router, per-expert layout first (what import writes), then the stacked one's.
    ("ffn_gate_inp", "block_sparse_moe.gate", Scope::Only(&["llama"])),
    ("ffn_gate_inp", "mlp.gate", Scope::Only(&["llama", "qwen2moe", "qwen3moe"])),
    ("ffn_gate_inp_shexp", "mlp.shared_expert_gate", Scope::Only(&["qwen2moe"])),
    ("ffn_gate_shexp", "mlp.shared_expert.gate_proj", Scope::Only(&["qwen2moe"])),
    ("ffn_up_shexp", "mlp.shared_expert.up_proj", Scope::Only(&["qwen2moe"])),
    ("ffn_down_shexp", "mlp.shared_expert.down_proj", Scope::Only(&["qwen2moe"])),
];

/// Routed experts: (GGUF base of the tensor stacked over the experts `[experts, rows, cols]`,
/// Hugging Face prefix of the per-expert matrices, projection name, architectures). Expert `e`
/// of `blk.{l}.{base}.weight` is `model.layers.{l}.{prefix}.{e}.{projection}.weight`.
const EXPERTS: &[(&str, &str, &str, Scope)] = &[
    ("ffn_gate_exps", "block_sparse_moe.experts", "w1", Scope::Only(&["llama"])),
    ("ffn_up_exps", "block_sparse_moe.experts", "w3", Scope::Only(&["llama"])),
    ("ffn_down_exps", "block_sparse_moe.experts", "w2", Scope::Only(&["llama"])),
    ("ffn_gate_exps", "mlp.experts", "gate_proj", Scope::Only(&["qwen2moe", "qwen3moe"])),
    ("ffn_up_exps", "mlp.experts", "up_proj", Scope::Only(&["qwen2moe", "qwen3moe"])),
    ("ffn_down_exps", "mlp.experts", "down_proj", Scope::Only(&["qwen2moe", "qwen3moe"])),
];

/// The Hugging Face name of expert `expert` of a stacked GGUF expert tensor (None: not one).
pub(crate) fn hf_expert_name(arch: &str, gguf: &str, expert: usize) -> Option<String> {
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let base = part.strip_suffix(".weight")?;
    let (_, prefix, projection, _) = EXPERTS.iter().find(|(g, _, _, scope)| *g == base && scope.admits(arch))?;
    Some(format!("model.layers.{layer}.{prefix}.{expert}.{projection}.weight"))
}

/// The stacked GGUF tensor a per-expert Hugging Face matrix belongs to, and its expert.
pub(crate) fn gguf_expert_name(arch: &str, hf: &str) -> Option<(String, usize)> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let part = part.strip_suffix(".weight")?;
    EXPERTS.iter().filter(|(_, _, _, scope)| scope.admits(arch)).find_map(|(g, prefix, projection, _)| {
        let middle = part.strip_prefix(prefix)?.strip_prefix('.')?.strip_suffix(projection)?.strip_suffix('.')?;
        let expert: usize = middle.parse().ok()?;
        Some((format!("blk.{layer}.{g}.weight"), expert))
    })
}

/// The GGUF tensors a Hugging Face tensor stacked over the experts becomes: each with the part
/// of every expert's rows it takes and the number of parts (`mlp.experts.gate_up_proj`
/// `[E, 2I, H]` holds each expert's gate rows over its up rows; `mlp.experts.down_proj`
/// `[E, H, I]` is llama.cpp's layout as it is).
pub(crate) fn gguf_stacked_names(arch: &str, hf: &str) -> Option<Vec<(String, usize, usize)>> {
    if !EXPERTS.iter().any(|(_, _, _, scope)| scope.admits(arch)) {
        return None;
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let name = |base: &str| format!("blk.{layer}.{base}.weight");
    match part {
        "mlp.experts.gate_up_proj" => Some(vec![(name("ffn_gate_exps"), 0, 2), (name("ffn_up_exps"), 1, 2)]),
        "mlp.experts.down_proj" => Some(vec![(name("ffn_down_exps"), 0, 1)]),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Scope {
    All,
    FourNorms,
    Others,
    Only(&'static [&'static str]),
}

impl Scope {
    fn admits(self, arch: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::FourNorms => four_norms(arch),
            Scope::Others => !four_norms(arch),
            Scope::Only(arches) => arches.contains(&arch),
        }
    }
}

/// The Hugging Face name of a GGUF tensor (None for tensors with no Hugging Face counterpart,
/// such as llama.cpp's precomputed `rope_freqs`).
pub(crate) fn hf_name(arch: &str, gguf: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if let Some((_, hf, _)) = WHOLE.iter().find(|(g, _, scope)| *g == part && scope.admits(arch)) {
        return Some(format!("model.layers.{layer}.{hf}"));
    }
    let (base, suffix) = part.rsplit_once('.')?;
    let (_, mapped, _) = LAYER.iter().find(|(g, _, scope)| *g == base && scope.admits(arch))?;
    Some(format!("model.layers.{layer}.{mapped}.{suffix}"))
}

/// The GGUF name of a Hugging Face tensor (`model.`-prefixed names as the families store them;
/// None for tensors llama.cpp has no name for).
pub(crate) fn gguf_name(arch: &str, hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if let Some((g, _, _)) = WHOLE.iter().find(|(_, h, scope)| *h == part && scope.admits(arch)) {
        return Some(format!("blk.{layer}.{g}"));
    }
    let (base, suffix) = part.rsplit_once('.')?;
    let (mapped, _, _) = LAYER.iter().find(|(_, h, scope)| *h == base && scope.admits(arch))?;
    Some(format!("blk.{layer}.{mapped}.{suffix}"))
}

/// The fix a tensor needs.
pub(crate) fn fix_for(arch: &str, gguf: &str, heads: usize, kv_heads: usize) -> Fix {
    if permuted(arch) && gguf.ends_with("attn_q.weight") {
        Fix::Unpermute(heads)
    } else if permuted(arch) && gguf.ends_with("attn_k.weight") {
        Fix::Unpermute(kv_heads)
    } else if matches!(arch, "gemma" | "gemma2" | "gemma3") && gguf.ends_with("norm.weight") {
        Fix::MinusOne
    } else {
        Fix::None
    }
}

/// llama.cpp's permutation of q/k rows (`convert_hf_to_gguf.py`'s `permute`), for tests and export.
pub fn permute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    remap_rows(values, rows, cols, heads, true)
}

/// The inverse of [`permute_rows`].
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    remap_rows(values, rows, cols, heads, false)
}

/// Within each head of `head_dim = rows / heads` rows, Hugging Face row `s·half + j`
/// (s ∈ {0, 1}, j < half) is GGUF row `2j + s`.
fn remap_rows(values: &[f32], rows: usize, cols: usize, heads: usize, to_gguf: bool) -> Vec<f32> {
    let head_dim = rows / heads.max(1);
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let hf = h * head_dim + s * half + j;
                let gg = h * head_dim + 2 * j + s;
                let (src, dst) = if to_gguf { (hf, gg) } else { (gg, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_matches_llama_cpp() {
        // 2 heads of dim 4, one column: HF rows [a0 a1 b0 b1 | c0 c1 d0 d1] interleave pairwise.
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let gg = permute_rows(&hf, 8, 1, 2);
        assert_eq!(gg, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(unpermute_rows(&gg, 8, 1, 2), hf);
    }

    #[test]
    fn names_map_per_family() {
        assert_eq!(
            hf_name("llama", "blk.3.ffn_norm.weight").unwrap(),
            "model.layers.3.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("gemma3", "blk.3.ffn_norm.weight").unwrap(),
            "model.layers.3.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_name("gemma3", "blk.0.post_ffw_norm.weight").unwrap(),
            "model.layers.0.post_feedforward_layernorm.weight"
        );
        assert_eq!(hf_name("qwen2", "blk.1.attn_q.bias").unwrap(), "model.layers.1.self_attn.q_proj.bias");
        assert!(hf_name("llama", "rope_freqs.weight").is_none());
        assert_eq!(fix_for("llama", "blk.0.attn_k.weight", 9, 3), Fix::Unpermute(3));
        assert_eq!(fix_for("gemma3", "blk.0.attn_norm.weight", 9, 3), Fix::MinusOne);
        assert_eq!(fix_for("qwen2", "blk.0.attn_q.weight", 9, 3), Fix::None);
    }

    #[test]
    fn the_table_reads_both_ways() {
        for arch in [
            "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma4", "olmo2", "granite", "glm4", "smollm3",
            "qwen2moe", "qwen3moe",
        ] {
            for gguf in [
                "token_embd.weight",
                "output.weight",
                "output_norm.weight",
                "blk.2.attn_norm.weight",
                "blk.2.ffn_norm.weight",
                "blk.0.attn_q.bias",
                "blk.7.ffn_down.weight",
                "blk.1.attn_k_norm.weight",
            ] {
                let hf = hf_name(arch, gguf).unwrap();
                assert_eq!(gguf_name(arch, &hf).as_deref(), Some(gguf), "{arch}: {gguf} → {hf}");
            }
        }
        assert_eq!(
            gguf_name("gemma3", "model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.post_attention_norm.weight"
        );
        assert_eq!(
            gguf_name("qwen2", "model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(
            hf_name("gemma", "blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert!(gguf_name("llama", "model.layers.0.mlp.gate_up_proj.weight").is_none());

        // OLMo 2's post-norms carry Gemma 2's names; GLM-4's its own, and a fused gate/up.
        for (arch, hf, gguf) in [
            ("olmo2", "model.layers.0.post_attention_layernorm.weight", "blk.0.post_attention_norm.weight"),
            ("olmo2", "model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight"),
            ("glm4", "model.layers.0.post_self_attn_layernorm.weight", "blk.0.post_attention_norm.weight"),
            ("glm4", "model.layers.0.post_mlp_layernorm.weight", "blk.0.post_ffw_norm.weight"),
            ("glm4", "model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"),
            ("glm4", "model.layers.0.mlp.gate_up_proj.weight", "blk.0.ffn_up.weight"),
            ("phi3", "model.layers.0.mlp.gate_up_proj.weight", "blk.0.ffn_up.weight"),
            ("phi3", "model.layers.0.self_attn.qkv_proj.weight", "blk.0.attn_qkv.weight"),
        ] {
            assert_eq!(gguf_name(arch, hf).as_deref(), Some(gguf), "{arch}: {hf}");
            assert_eq!(hf_name(arch, gguf).as_deref(), Some(hf), "{arch}: {gguf}");
        }
        assert_eq!(hf_name("qwen2", "blk.0.ffn_up.weight").unwrap(), "model.layers.0.mlp.up_proj.weight");
        // Gemma 4's layer scalar has no `.weight`, and its norms scale by `w`.
        assert_eq!(hf_name("gemma4", "blk.3.layer_output_scale.weight").unwrap(), "model.layers.3.layer_scalar");
        assert_eq!(gguf_name("gemma4", "model.layers.3.layer_scalar").unwrap(), "blk.3.layer_output_scale.weight");
        assert!(gguf_name("gemma3", "model.layers.3.layer_scalar").is_none());
        assert_eq!(fix_for("gemma4", "blk.0.attn_norm.weight", 4, 2), Fix::None);
        for arch in ["llama", "granite", "smollm3"] {
            assert_eq!(fix_for(arch, "blk.0.attn_q.weight", 4, 2), Fix::Unpermute(4), "{arch}");
        }
        for arch in ["olmo2", "glm4", "qwen3"] {
            assert_eq!(fix_for(arch, "blk.0.attn_q.weight", 4, 2), Fix::None, "{arch}");
        }

        // Routers and the shared expert.
        for (arch, gguf) in [
            ("llama", "blk.1.ffn_gate_inp.weight"),
            ("qwen2moe", "blk.1.ffn_gate_inp.weight"),
            ("qwen3moe", "blk.1.ffn_gate_inp.weight"),
            ("qwen2moe", "blk.1.ffn_gate_inp_shexp.weight"),
            ("qwen2moe", "blk.1.ffn_gate_shexp.weight"),
            ("qwen2moe", "blk.1.ffn_up_shexp.weight"),
            ("qwen2moe", "blk.1.ffn_down_shexp.weight"),
        ] {
            let hf = hf_name(arch, gguf).unwrap();
            assert_eq!(gguf_name(arch, &hf).as_deref(), Some(gguf), "{arch}: {gguf} → {hf}");
        }
        assert_eq!(
            hf_name("llama", "blk.1.ffn_gate_inp.weight").unwrap(),
            "model.layers.1.block_sparse_moe.gate.weight"
        );
        assert_eq!(gguf_name("llama", "model.layers.1.mlp.gate.weight").unwrap(), "blk.1.ffn_gate_inp.weight");
        assert_eq!(hf_name("qwen3moe", "blk.1.ffn_gate_inp.weight").unwrap(), "model.layers.1.mlp.gate.weight");
        assert!(hf_name("qwen2", "blk.1.ffn_gate_inp.weight").is_none());
        assert!(hf_name("qwen3moe", "blk.1.ffn_gate_shexp.weight").is_none());

        // Routed experts: one stacked GGUF tensor, one Hugging Face matrix per expert.
        for arch in ["llama", "qwen2moe", "qwen3moe"] {
            for base in ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] {
                let gguf = format!("blk.3.{base}.weight");
                assert!(hf_name(arch, &gguf).is_none());
                for e in [0, 7, 59] {
                    let hf = hf_expert_name(arch, &gguf, e).unwrap();
                    assert_eq!(gguf_expert_name(arch, &hf), Some((gguf.clone(), e)), "{arch}: {gguf} → {hf}");
                    assert!(gguf_name(arch, &hf).is_none());
                }
            }
        }
        assert_eq!(
            hf_expert_name("llama", "blk.0.ffn_up_exps.weight", 5).unwrap(),
            "model.layers.0.block_sparse_moe.experts.5.w3.weight"
        );
        assert_eq!(
            hf_expert_name("qwen3moe", "blk.0.ffn_down_exps.weight", 2).unwrap(),
            "model.layers.0.mlp.experts.2.down_proj.weight"
        );
        assert!(hf_expert_name("qwen2", "blk.0.ffn_down_exps.weight", 2).is_none());
        assert_eq!(
            gguf_stacked_names("qwen3moe", "model.layers.4.mlp.experts.gate_up_proj").unwrap(),
            vec![("blk.4.ffn_gate_exps.weight".to_string(), 0, 2), ("blk.4.ffn_up_exps.weight".to_string(), 1, 2)]
        );
        assert_eq!(
            gguf_stacked_names("llama", "model.layers.4.mlp.experts.down_proj").unwrap(),
            vec![("blk.4.ffn_down_exps.weight".to_string(), 0, 1)]
        );
        assert!(gguf_stacked_names("qwen2", "model.layers.4.mlp.experts.down_proj").is_none());
    }
}
