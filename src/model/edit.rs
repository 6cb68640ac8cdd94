//! A copy of a running model with some of its writers' tensors replaced: the primitive under a
//! search trial's in-memory edit (`Decoder::with_edits`, defined by [`crate::search`], which
//! applies the checkpoint writer's own per-tensor edit through it).

use super::decoder::{Decoder, Embedding};
use super::layer::Ffn;
use super::weights::Linear;
use crate::arch::MlpPart;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// A writer tensor of the running model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterTensor {
    /// The embedding `[vocab, hidden]` (a head tied to it is rebuilt from it on request).
    Embedding,
    /// Layer `layer`'s attention output projection: its matrix, or with `bias` its bias.
    AttnOut {
        /// The layer.
        layer: usize,
        /// The bias rather than the matrix.
        bias: bool,
    },
    /// Layer `layer`'s MLP output projection (in a sparse layer, that of expert `part`): its
    /// matrix, or with `bias` its bias.
    MlpOut {
        /// The layer.
        layer: usize,
        /// The bias rather than the matrix.
        bias: bool,
        /// Which of the block's writers: the dense MLP's, a routed expert's or the shared expert's.
        part: MlpPart,
    },
    /// Layer `layer`'s per-layer input projection (Gemma 4's E models).
    PerLayerOut {
        /// The layer.
        layer: usize,
    },
}

impl Decoder {
    /// A copy of this model with each of `targets` replaced by its values after
    /// `edit(index into targets, values in f32, shape)`. Unedited tensors are shared with `self`
    /// (candle tensors are reference-counted), so the copy costs the edited tensors only. With
    /// `retie_head`, the head is rebuilt from the (edited) embedding, as a tied head follows it.
    ///
    /// A matrix whose values are all exact in bf16 (a bf16 checkpoint's) is rounded to bf16
    /// after the edit, as a checkpoint in bf16 stores it, and kept in its in-memory dtype; any
    /// other comes back unrounded in the compute dtype. Either way the result does not depend on
    /// how the weights are stored (16-bit or widened, packed or not). Edited matrices are packed
    /// as the ones they replace.
    pub fn with_writers_edited(
        &self,
        targets: &[WriterTensor],
        retie_head: bool,
        mut edit: impl FnMut(usize, &mut [f32], &[usize]) -> Result<()>,
    ) -> Result<Decoder> {
        let mut edited = self.clone();
        let dtype = self.dtype();
        for (i, target) in targets.iter().enumerate() {
            let mut apply = |t: &Tensor| edited_tensor(t, dtype, |values, shape| edit(i, values, shape));
            match *target {
                WriterTensor::Embedding => edited.embed = Embedding::Own(apply(&edited.embedding()?)?),
                WriterTensor::AttnOut { layer, bias } => {
                    let linear = &edited.layer(layer)?.o_proj;
                    edited.layers[layer].o_proj = edited_linear(linear, bias, layer, &mut apply)?
                }
                WriterTensor::MlpOut { layer, bias, part } => {
                    let linear = mlp_writer(&mut edited, layer, part)?;
                    *linear = edited_linear(linear, bias, layer, &mut apply)?
                }
                WriterTensor::PerLayerOut { layer } => {
                    let block = edited.layers.get_mut(layer).and_then(|l| l.per_layer.as_mut()).ok_or_else(|| {
                        Error::Invalid(format!("layer {layer} has no per-layer block in the running model"))
                    })?;
                    block.projection = edited_linear(&block.projection, false, layer, &mut apply)?
                }
            }
        }
        if retie_head {
            edited.lm_head = Linear { w: self.lm_head.w.prepared_like(edited.embedding()?)?, b: None };
            edited.embed = Embedding::Head;
        }
        Ok(edited)
    }

    fn layer(&self, layer: usize) -> Result<&super::layer::Layer> {
        self.layers.get(layer).ok_or_else(|| Error::Invalid(format!("layer {layer} is past the model's last")))
    }
}

/// The output projection of `part` of layer `layer`'s MLP block.
fn mlp_writer(decoder: &mut Decoder, layer: usize, part: MlpPart) -> Result<&mut Linear> {
    decoder.layer(layer)?;
    let missing =
        || Error::Invalid(format!("layer {layer} has no MLP writer `{}` in the running model", part.describe()));
    match (&mut decoder.layers[layer].ffn, part) {
        (Ffn::Dense(mlp), MlpPart::Dense) => Ok(&mut mlp.down_proj),
        (Ffn::Sparse(moe), MlpPart::Expert(e)) => moe.experts.get_mut(e).map(|m| &mut m.down_proj).ok_or_else(missing),
        (Ffn::Sparse(moe), MlpPart::SharedExpert) => {
            moe.shared.as_mut().map(|s| &mut s.mlp.down_proj).ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

fn edited_linear(
    linear: &Linear,
    bias: bool,
    layer: usize,
    apply: &mut impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Linear> {
    Ok(if bias {
        let b = linear
            .b
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("layer {layer}'s writer has no bias in the running model")))?;
        Linear { b: Some(apply(b)?), ..linear.clone() }
    } else {
        Linear { w: linear.w.prepared_like(apply(&linear.weight()?)?)?, b: linear.b.clone() }
    })
}

/// Whether every value is exact in bf16 (its low 16 bits zero), as a bf16 checkpoint's are once
/// widened.
fn exact_in_bf16(values: &[f32]) -> bool {
    values.par_iter().all(|v| v.to_bits() & 0xffff == 0)
}

/// `t` edited in f32 by `edit` and returned on its device, rounded as [`Decoder::with_writers_edited`] says.
fn edited_tensor(t: &Tensor, dtype: DType, edit: impl FnOnce(&mut [f32], &[usize]) -> Result<()>) -> Result<Tensor> {
    let mut values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let bf16_exact = exact_in_bf16(&values);
    edit(&mut values, t.dims())?;
    let edited = Tensor::from_vec(values, t.shape(), t.device())?;
    Ok(if bf16_exact {
        let kept = if t.dtype() == DType::BF16 { DType::BF16 } else { dtype };
        edited.to_dtype(DType::BF16)?.to_dtype(kept)?
    } else {
        edited.to_dtype(dtype)?
    })
}
