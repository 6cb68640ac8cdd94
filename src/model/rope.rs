//! Rotary position embeddings: inverse frequencies (with llama3 / linear scaling) and per-row
//! cos/sin tables for arbitrary position ids (left padding makes positions differ per row).

use crate::arch::RopeScaling;
use candle_core::{DType, Device, Tensor};

/// Inverse frequencies of one rotary configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rope {
    inv_freq: Vec<f64>,
}

impl Rope {
    /// Frequencies for `rotary_dim` dimensions with base `theta`, scaled as configured.
    pub fn new(rotary_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Rope {
        let base: Vec<f64> =
            (0..rotary_dim / 2).map(|i| 1.0 / theta.powf(2.0 * i as f64 / rotary_dim as f64)).collect();
        let inv_freq = match scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = *original_max_position_embeddings;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Rope { inv_freq }
    }

    /// Gemma 4's proportional rope over a whole head of `head_dim`: the first `angles` pairs at
    /// `θ^(−2i/head_dim)` (the exponent over the whole head, not the rotated part), the others
    /// at frequency 0 (cos 1, sin 0: exactly unrotated), then scaled as configured.
    pub fn proportional(head_dim: usize, angles: usize, theta: f64, scaling: Option<&RopeScaling>) -> Rope {
        let mut rope = Rope::new(head_dim, theta, scaling);
        for f in rope.inv_freq.iter_mut().skip(angles) {
            *f = 0.0;
        }
        rope
    }

    /// The inverse frequency of each rotated pair of dimensions.
    pub fn inverse_frequencies(&self) -> &[f64] {
        &self.inv_freq
    }

    /// `(cos, sin)`, each `[batch, tokens, rotary_dim / 2]`, for `positions[b][t]`.
    pub fn tables(
        &self,
        positions: &[Vec<u32>],
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let b = positions.len();
        let t = positions.first().map_or(0, Vec::len);
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for row in positions {
            for &p in row {
                for f in &self.inv_freq {
                    let angle = f64::from(p) * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let cos = Tensor::from_vec(cos, (b, t, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, t, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// Apply rotary embeddings to `x` `[batch, heads, tokens, head_dim]` (the Hugging Face
/// "rotate half" layout) on its first `2 * cos.dim(2)` dimensions.
pub(crate) fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let head_dim = x.dim(3)?;
    let rotary = 2 * cos.dim(2)?;
    if rotary == head_dim {
        return candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin);
    }
    let rotated = candle_nn::rotary_emb::rope(&x.narrow(3, 0, rotary)?.contiguous()?, cos, sin)?;
    Tensor::cat(&[&rotated, &x.narrow(3, rotary, head_dim - rotary)?], 3)
}
