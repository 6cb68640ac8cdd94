//! Checks of a model folder against its config.json before any work: every tensor scalpel
//! reads has the shape the config implies (computed with checked arithmetic), no tensor has a
//! zero-size dimension, and tensors the config does not use are named.

use super::model_dir::ModelDir;
use crate::arch::{AttentionLayout, ExpertNames, MlpLayout};
use crate::{Error, Result};
use std::collections::BTreeSet;

/// Check every tensor the config names against its expected shape, and that no stored tensor
/// has a zero-size dimension.
pub fn check_shapes(model: &ModelDir) -> Result<()> {
    let spec = &model.spec;
    let checkpoint = &model.checkpoint;
    for name in checkpoint.names() {
        let view = checkpoint.tensor(name)?;
        if view.shape.contains(&0) {
            return Err(Error::bad_tensor(name, format!("shape {:?} has a zero-size dimension", view.shape)));
        }
    }
    let product = |a: usize, b: usize, what: &str| {
        a.checked_mul(b).ok_or_else(|| Error::BadConfig {
            path: model.root.join("config.json"),
            message: format!("{what} ({a} × {b}) overflows"),
        })
    };
    let h = spec.hidden_size;
    let expect = |name: &str, shape: &[usize]| -> Result<()> {
        let Ok(view) = checkpoint.tensor(name) else { return Ok(()) };
        if view.shape != shape {
            return Err(Error::bad_tensor(
                name,
                format!(
                    "shape {:?}, but config.json implies {shape:?} ({})",
                    view.shape,
                    model.root.join("config.json").display()
                ),
            ));
        }
        Ok(())
    };
    // Input-side matrices read the residual stream: their last dimension is its width.
    let reads_hidden = |name: &str| -> Result<()> {
        let Ok(view) = checkpoint.tensor(name) else { return Ok(()) };
        if view.shape.len() != 2 || view.shape[1] != h {
            return Err(Error::bad_tensor(
                name,
                format!("shape {:?}, but it must read the hidden size {h}", view.shape),
            ));
        }
        Ok(())
    };
    expect(&spec.embed_name(), &[spec.vocab_size, h])?;
    expect(&spec.lm_head_name(), &[spec.vocab_size, h])?;
    expect(&spec.final_norm_name(), &[h])?;
    if let Some(inputs) = &spec.per_layer_inputs {
        let all = product(spec.num_layers, inputs.width, "num_hidden_layers × hidden_size_per_layer_input")?;
        expect(&spec.per_layer_embed_name(), &[inputs.vocab_size, all])?;
        expect(&spec.per_layer_model_projection_name(), &[all, h])?;
        expect(&spec.per_layer_projection_norm_name(), &[inputs.width])?;
    }
    for layer in 0..spec.num_layers {
        let n = spec.layer_names(layer);
        let head_dim = spec.head_dim_for(layer);
        let q_width = product(spec.num_heads, head_dim, "num_attention_heads × head_dim")?;
        let kv_width = product(spec.kv_heads_for(layer), head_dim, "key/value heads × head_dim")?;
        expect(&n.attn_norm, &[h])?;
        if let Some(scalar) = &n.layer_scalar {
            expect(scalar, &[1])?;
        }
        expect(&n.mlp_norm, &[h])?;
        for norm in [&n.attn_post_norm, &n.mlp_post_norm].into_iter().flatten() {
            expect(norm, &[h])?;
        }
        // Per-head q/k norms scale one head's width; OLMo 2's scale the whole projection.
        let (q_norm_width, k_norm_width) = if spec.qk_norm_full { (q_width, kv_width) } else { (head_dim, head_dim) };
        if let Some(norm) = &n.q_norm {
            expect(norm, &[q_norm_width])?;
        }
        if let Some(norm) = &n.k_norm {
            expect(norm, &[k_norm_width])?;
        }
        expect(&n.o_proj, &[h, q_width])?;
        let inter = spec.intermediate_size_for(layer);
        if !spec.is_sparse(layer) {
            expect(&n.down_proj, &[h, inter])?;
        }
        for bias in [&n.o_proj_bias, &n.down_proj_bias].into_iter().flatten() {
            expect(bias, &[h])?;
        }
        match &n.attention {
            AttentionLayout::Separate { q, k, v, .. } => {
                expect(q, &[q_width, h])?;
                expect(k, &[kv_width, h])?;
                expect(v, &[kv_width, h])?;
            }
            AttentionLayout::KeysAsValues { q, k, .. } => {
                expect(q, &[q_width, h])?;
                expect(k, &[kv_width, h])?;
            }
            AttentionLayout::QueryOnly { q, .. } => expect(q, &[q_width, h])?,
            AttentionLayout::Fused { qkv, .. } => reads_hidden(qkv)?,
        }
        if let (Some(p), Some(inputs)) = (&n.per_layer, &spec.per_layer_inputs) {
            expect(&p.gate, &[inputs.width, h])?;
            expect(&p.projection, &[h, inputs.width])?;
            expect(&p.post_norm, &[h])?;
        }
        match &n.mlp {
            MlpLayout::Gated { gate, up, .. } => {
                expect(gate, &[inter, h])?;
                expect(up, &[inter, h])?;
            }
            MlpLayout::FusedGateUp { gate_up } => reads_hidden(gate_up)?,
            MlpLayout::QwenW1W2 { w1, w2 } => {
                reads_hidden(w1)?;
                reads_hidden(w2)?;
            }
            MlpLayout::Sparse(sparse) => {
                let Some(moe) = &spec.moe else { continue };
                let (experts, inter) = (moe.num_experts, moe.expert_intermediate_size);
                expect(&sparse.router, &[experts, h])?;
                match &sparse.experts {
                    ExpertNames::PerExpert(names) => {
                        for e in names {
                            expect(&e.gate, &[inter, h])?;
                            expect(&e.up, &[inter, h])?;
                            expect(&e.down, &[h, inter])?;
                        }
                    }
                    // A stacked tensor in another layout (e.g. `[E, H, 2I]`) would be read wrongly.
                    ExpertNames::Stacked { gate_up, down, experts } => {
                        expect(gate_up, &[*experts, product(2, inter, "2 × moe intermediate size")?, h])?;
                        expect(down, &[*experts, h, inter])?;
                    }
                }
                if let (Some((shared, gate)), Some(width)) = (&sparse.shared, moe.shared_expert_intermediate_size) {
                    expect(&shared.gate, &[width, h])?;
                    expect(&shared.up, &[width, h])?;
                    expect(&shared.down, &[h, width])?;
                    expect(gate, &[1, h])?;
                }
            }
        }
    }
    Ok(())
}

/// Every tensor name the config's architecture reads.
fn used_names(model: &ModelDir) -> BTreeSet<String> {
    let spec = &model.spec;
    let mut used: BTreeSet<String> = spec.model_tensors().into_iter().collect();
    used.extend((0..spec.num_layers).flat_map(|layer| spec.layer_names(layer).tensors()));
    // A family without a norm in some place (OLMo 2 has no pre-norms) names it "".
    used.remove("");
    used
}

/// Tensors the config's architecture reads that the checkpoint lacks (the output head only
/// where it is not tied to the embedding).
pub fn missing_tensors(model: &ModelDir) -> Vec<String> {
    // (`ModelDir::open` requires only the writers, so that writer-only folders can be planned and verified.)
    let head = model.spec.lm_head_name();
    used_names(model).into_iter().filter(|n| !model.checkpoint.contains(n) && *n != head).collect()
}

/// Stored tensors the config's architecture does not use (rotary caches excepted): a sign that
/// config.json describes another model than the weights.
pub fn unused_tensors(model: &ModelDir) -> Vec<String> {
    let used = used_names(model);
    model
        .checkpoint
        .names()
        .into_iter()
        .filter(|n| !used.contains(*n) && !n.ends_with("rotary_emb.inv_freq"))
        .map(str::to_string)
        .collect()
}
