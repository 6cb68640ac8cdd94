//! A sparse mixture-of-experts block (Mixtral, Qwen2-MoE, Qwen3-MoE): the router's softmax over
//! every expert, the top k of each token, optionally renormalised, the chosen experts' outputs
//! summed with those weights, plus a shared expert scaled by `sigmoid(gate · x)` where the family
//! has one. Tokens are gathered per expert and their outputs added back (`index_add`), as
//! candle-transformers' and Hugging Face's reference loops do; every product goes through the
//! model's one adapter ([`super::ops`]).

use super::ops;
use super::weights::{Linear, Loader};
use crate::arch::{Activation, ExpertNames, GatedNames, ModelSpec, MoeSpec, SparseNames};
use crate::Result;
use candle_core::{DType, Tensor};

/// A gated MLP `down(act(gate(x)) · up(x))`, its gate and up projections fused into one weight
/// whose first half goes through the activation ([`ops::gated`]).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    pub gate_up: Linear,
    pub act: Activation,
    pub down_proj: Linear,
}

impl Mlp {
    /// The MLP's output for input `x` `[..., hidden]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.down_proj.forward(&ops::gated(x, &self.gate_up, self.act)?)
    }

    /// The bytes its weights take in memory.
    pub fn bytes(&self) -> usize {
        self.gate_up.bytes() + self.down_proj.bytes()
    }

    /// One stored as three matrices `gate`, `up` `[inter, hidden]` and `down` `[hidden, inter]`.
    fn load(loader: &Loader<'_>, names: &GatedNames, act: Activation, h: usize, inter: usize) -> Result<Mlp> {
        let gate_up =
            Linear::fuse(&[loader.linear(&names.gate, None, inter, h)?, loader.linear(&names.up, None, inter, h)?])?;
        Ok(Mlp {
            gate_up: loader.finish(gate_up)?,
            act,
            down_proj: loader.finish(loader.linear(&names.down, None, h, inter)?)?,
        })
    }
}

/// The shared expert and its gate `[1, hidden]`.
#[derive(Debug, Clone)]
pub(crate) struct SharedExpert {
    pub mlp: Mlp,
    pub gate: Linear,
}

/// A sparse block's weights and routing.
#[derive(Debug, Clone)]
pub(crate) struct Moe {
    /// `[experts, hidden]`.
    pub router: Linear,
    pub experts: Vec<Mlp>,
    pub shared: Option<SharedExpert>,
    pub top_k: usize,
    pub norm_topk_prob: bool,
}

impl Moe {
    /// Load the sparse block named by `names`.
    pub fn load(loader: &Loader<'_>, spec: &ModelSpec, moe: &MoeSpec, names: &SparseNames) -> Result<Moe> {
        let (h, inter, n) = (spec.hidden_size, moe.expert_intermediate_size, moe.num_experts);
        let act = spec.activation;
        let experts = match &names.experts {
            ExpertNames::PerExpert(experts) => {
                experts.iter().map(|e| Mlp::load(loader, e, act, h, inter)).collect::<Result<Vec<_>>>()?
            }
            ExpertNames::Stacked { gate_up, down, experts } => {
                let gate_ups = loader.stacked_linears(gate_up, *experts, 2 * inter, h)?;
                let downs = loader.stacked_linears(down, *experts, h, inter)?;
                gate_ups
                    .into_iter()
                    .zip(downs)
                    .map(|(gate_up, down)| {
                        Ok(Mlp { gate_up: loader.finish(gate_up)?, act, down_proj: loader.finish(down)? })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let shared = match (&names.shared, moe.shared_expert_intermediate_size) {
            (Some((mlp, gate)), Some(width)) => Some(SharedExpert {
                mlp: Mlp::load(loader, mlp, act, h, width)?,
                gate: loader.finish(loader.linear(gate, None, 1, h)?)?,
            }),
            _ => None,
        };
        Ok(Moe {
            router: loader.finish(loader.linear(&names.router, None, n, h)?)?,
            experts,
            shared,
            top_k: moe.top_k,
            norm_topk_prob: moe.norm_topk_prob,
        })
    }

    /// The bytes its weights take in memory.
    pub fn bytes(&self) -> usize {
        let shared = self.shared.as_ref().map_or(0, |s| s.mlp.bytes() + s.gate.bytes());
        self.router.bytes() + self.experts.iter().map(Mlp::bytes).sum::<usize>() + shared
    }

    /// Every linear of the block.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut all = vec![&self.router];
        all.extend(self.experts.iter().flat_map(|e| [&e.gate_up, &e.down_proj]));
        if let Some(s) = &self.shared {
            all.extend([&s.mlp.gate_up, &s.mlp.down_proj, &s.gate]);
        }
        all
    }

    /// The block's output for normed input `x` `[B, T, hidden]`. With `chosen`, each token's
    /// experts (row-major over `B × T`, best first) are written into it.
    pub fn forward(&self, x: &Tensor, mut chosen: Option<&mut Vec<Vec<usize>>>) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let xs = x.reshape((b * t, h))?;
        let logits: Vec<Vec<f32>> = self.router.forward(&xs)?.to_dtype(DType::F32)?.to_vec2()?;
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); self.experts.len()];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); self.experts.len()];
        if let Some(c) = chosen.as_deref_mut() {
            c.clear();
        }
        for (row, logits) in logits.iter().enumerate() {
            let routed = route(logits, self.top_k, self.norm_topk_prob);
            if let Some(c) = chosen.as_deref_mut() {
                c.push(routed.iter().map(|r| r.0).collect());
            }
            for (e, w) in routed {
                rows[e].push(row as u32);
                weights[e].push(w);
            }
        }
        let mut ys = xs.zeros_like()?;
        for (e, expert) in self.experts.iter().enumerate() {
            if rows[e].is_empty() {
                continue;
            }
            let index = Tensor::new(rows[e].as_slice(), xs.device())?;
            let w =
                Tensor::new(weights[e].as_slice(), xs.device())?.reshape((rows[e].len(), 1))?.to_dtype(xs.dtype())?;
            let out = expert.forward(&xs.index_select(&index, 0)?)?.broadcast_mul(&w)?;
            ys = ys.index_add(&index, &out, 0)?;
        }
        if let Some(shared) = &self.shared {
            let gate = candle_nn::ops::sigmoid(&shared.gate.forward(&xs)?)?;
            ys = (ys + shared.mlp.forward(&xs)?.broadcast_mul(&gate)?)?;
        }
        ys.reshape((b, t, h))
    }
}

/// The experts one token is routed to and their weights: the softmax over every router logit
/// (in f32), its `top_k` largest (the lower index first among equals), divided by their sum
/// when `normalise`.
pub(crate) fn route(logits: &[f32], top_k: usize, normalise: bool) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&i, &j| exps[j].total_cmp(&exps[i]).then(i.cmp(&j)));
    let chosen: Vec<(usize, f32)> = order.into_iter().take(top_k).map(|e| (e, exps[e] / sum)).collect();
    if !normalise {
        return chosen;
    }
    let total: f32 = chosen.iter().map(|c| c.1).sum();
    chosen.into_iter().map(|(e, w)| (e, w / total)).collect()
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routing_takes_the_softmax_over_every_expert_then_the_top_k() {
        let logits = [0.5f32, 2.0, -1.0, 1.0];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        let raw = route(&logits, 2, false);
        assert_eq!(raw.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3]);
        assert!((raw[0].1 - 2f32.exp() / z).abs() < 1e-6 && (raw[1].1 - 1f32.exp() / z).abs() < 1e-6);
        let normed = route(&logits, 2, true);
        let s = 2f32.exp() + 1f32.exp();
        assert!((normed[0].1 - 2f32.exp() / s).abs() < 1e-6 && (normed[1].1 - 1f32.exp() / s).abs() < 1e-6);
        // Equal logits: the lower index first.
        assert_eq!(route(&[1.0, 3.0, 3.0], 1, true), [(1, 1.0)]);
    }
}
