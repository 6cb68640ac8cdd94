//! Gemma 4's per-layer inputs (its E models): a second token table holds a slice of
//! `width` values per layer; each slice, mixed with a normed projection of the embedded stream,
//! is what that layer's per-layer block multiplies its gated stream by before projecting it back
//! into the stream through a norm.

use super::ops::{self, add, rms_norm};
use super::weights::{Linear, Loader};
use crate::arch::{Activation, ModelSpec, PerLayerNames};
use crate::{Error, Result};
use candle_core::Tensor;

/// The model-level part: the projection of the embedded stream and its norm (the token table
/// is read by the caller: a tensor in memory, or rows of the mapped checkpoint).
#[derive(Debug, Clone)]
pub(crate) struct PerLayerMixer {
    /// `per_layer_model_projection` `[layers · width, hidden]`.
    projection: Linear,
    /// `per_layer_projection_norm` `[width]`.
    norm: Tensor,
}

impl PerLayerMixer {
    /// Load the mixer of `spec` (None where the model has no per-layer inputs).
    pub fn load(loader: &Loader<'_>, spec: &ModelSpec) -> Result<Option<PerLayerMixer>> {
        let Some(inputs) = &spec.per_layer_inputs else { return Ok(None) };
        let all = spec.num_layers * inputs.width;
        let projection =
            loader.finish(loader.linear(&spec.per_layer_model_projection_name(), None, all, spec.hidden_size)?)?;
        let norm = loader.norm(&spec.per_layer_projection_norm_name(), inputs.width)?;
        Ok(Some(PerLayerMixer { projection, norm }))
    }

    /// Every layer's per-layer input `[B, T, layers, width]` from the stored token-table rows
    /// of the batch's tokens `tokens` `[B, T, layers · width]` and the embedded stream
    /// `embedded` `[B, T, hidden]` as layer 0 reads it: Hugging Face's
    /// `(norm(P·e / √hidden) + √width · table[id]) / √2`.
    pub fn inputs(&self, spec: &ModelSpec, tokens: &Tensor, embedded: &Tensor) -> Result<Tensor> {
        let Some(inputs) = &spec.per_layer_inputs else {
            return Err(Error::Invalid("per-layer inputs of a model without them".into()));
        };
        let (b, t, _) = embedded.dims3()?;
        let shape = (b, t, spec.num_layers, inputs.width);
        let dtype = embedded.dtype();
        let scalar = |v: f64| Tensor::new(v as f32, embedded.device())?.to_dtype(dtype);
        let projected =
            self.projection.forward(embedded)?.broadcast_mul(&scalar(1.0 / (spec.hidden_size as f64).sqrt())?)?;
        let projected = rms_norm(&projected.reshape(shape)?, &self.norm, spec.norm_eps)?;
        let tokens = tokens.to_dtype(dtype)?.reshape(shape)?.broadcast_mul(&scalar((inputs.width as f64).sqrt())?)?;
        Ok(add(&projected, &tokens)?.broadcast_mul(&scalar(std::f64::consts::FRAC_1_SQRT_2)?)?)
    }

    /// The bytes its tensors take in memory.
    pub fn bytes(&self) -> usize {
        self.projection.bytes() + self.norm.elem_count() * self.norm.dtype().size_in_bytes()
    }
}

/// A layer's per-layer block.
#[derive(Debug, Clone)]
pub(crate) struct PerLayerBlock {
    /// `per_layer_input_gate` `[width, hidden]`.
    gate: Linear,
    /// `per_layer_projection` `[hidden, width]`: the writer.
    pub projection: Linear,
    /// `post_per_layer_input_norm` `[hidden]`.
    pub post_norm: Tensor,
    act: Activation,
}

impl PerLayerBlock {
    /// Load the block named `names` of a model of `spec`.
    pub fn load(loader: &Loader<'_>, spec: &ModelSpec, names: &PerLayerNames) -> Result<PerLayerBlock> {
        let Some(inputs) = &spec.per_layer_inputs else {
            return Err(Error::Invalid("a per-layer block in a model without per-layer inputs".into()));
        };
        let (h, width) = (spec.hidden_size, inputs.width);
        Ok(PerLayerBlock {
            gate: loader.finish(loader.linear(&names.gate, None, width, h)?)?,
            projection: loader.finish(loader.linear(&names.projection, None, h, width)?)?,
            post_norm: loader.norm(&names.post_norm, h)?,
            act: spec.activation,
        })
    }

    /// The block's raw output (before its norm): `projection(act(gate(h)) · input)` for the
    /// stream `h` `[B, T, hidden]` and this layer's per-layer input `[B, T, width]`.
    pub fn forward(&self, h: &Tensor, input: &Tensor) -> candle_core::Result<Tensor> {
        let gated = (ops::activation(&self.gate.forward(h)?, self.act)? * input)?;
        self.projection.forward(&gated)
    }

    /// The bytes its tensors take in memory.
    pub fn bytes(&self) -> usize {
        self.gate.bytes()
            + self.projection.bytes()
            + self.post_norm.elem_count() * self.post_norm.dtype().size_in_bytes()
    }
}
