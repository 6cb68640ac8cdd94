//! A running model with a surgery plan applied to its weights in memory: what `scalpel search`
//! measures each trial on. It uses the same per-tensor edit as the written checkpoint
//! ([`crate::surgery::edit_values`]), so a trial's model is the checkpoint `ablate` would write,
//! up to the checkpoint's rounding to its stored dtype.

use super::decoder::Decoder;
use super::weights::Linear;
use crate::arch::WriterKind;
use crate::surgery::{edit_values, Layout, PlannedEdit, SurgeryPlan};
use crate::{Error, Result};
use candle_core::{DType, Tensor};

impl Decoder {
    /// A copy of this model with `plan` applied to its writers. Unedited tensors are shared
    /// with `self` (candle tensors are reference-counted), so the copy costs the edited
    /// tensors only. A tied head follows the edited embedding unless the plan unties it.
    pub fn with_edits(&self, plan: &SurgeryPlan) -> Result<Decoder> {
        let mut edited = self.clone();
        let dtype = self.dtype();
        for edit in &plan.edits {
            let norm_preserve = plan.options.norm_preserve;
            match (edit.kind, edit.layer) {
                (WriterKind::Embed, _) => {
                    edited.embed = Some(edited_tensor(&edited.embedding()?, edit, norm_preserve, dtype)?)
                }
                (WriterKind::Attn, Some(l)) => {
                    edited.layers[l].o_proj = edited_linear(&edited.layers[l].o_proj, edit, norm_preserve, dtype)?
                }
                (WriterKind::Mlp, Some(l)) => {
                    edited.layers[l].down_proj = edited_linear(&edited.layers[l].down_proj, edit, norm_preserve, dtype)?
                }
                (kind, None) => {
                    return Err(Error::Invalid(format!("a {} edit without a layer: {}", kind.name(), edit.tensor)))
                }
            }
        }
        if plan.edits_tied_head && !plan.options.untie {
            edited.lm_head = repacked(Linear::new(edited.embedding()?, None), &self.lm_head)?;
            if edited.lm_head.panels.is_some() {
                // The edited head's panels serve the lookup, as in the original.
                edited.embed = None;
            }
        }
        Ok(edited)
    }
}

fn edited_linear(linear: &Linear, edit: &PlannedEdit, norm_preserve: bool, dtype: DType) -> Result<Linear> {
    Ok(if edit.is_bias {
        let b = linear.b.as_ref().ok_or_else(|| Error::bad_tensor(&edit.tensor, "the running model has no bias"))?;
        Linear { b: Some(edited_tensor(b, edit, norm_preserve, dtype)?), ..linear.clone() }
    } else {
        repacked(Linear::new(edited_tensor(&linear.weight()?, edit, norm_preserve, dtype)?, linear.b.clone()), linear)?
    })
}

/// `edited` packed as the linear it replaces was (for AMX, or in panels).
fn repacked(edited: Linear, original: &Linear) -> Result<Linear> {
    Ok(edited.packed(original.amx.is_some(), original.panels.is_some())?)
}

/// `t` edited in f32 and returned on its device. A matrix whose values are all exact in bf16 (a
/// bf16 checkpoint's) is rounded to bf16 after the edit, as the checkpoint `ablate` writes it,
/// and kept in its in-memory dtype; any other comes back unrounded in the compute dtype
/// `dtype`. Either way a trial's scores do not depend on how the weights are stored (16-bit or
/// widened, packed for AMX or not), and on a bf16 checkpoint the trial runs the very weights
/// `ablate` would write.
fn edited_tensor(t: &Tensor, edit: &PlannedEdit, norm_preserve: bool, dtype: DType) -> Result<Tensor> {
    let cols = match edit.layout {
        Layout::Columns => t.dim(1)?,
        Layout::Rows => 0,
    };
    let mut values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let bf16_exact = super::amx::exact_in_bf16(&values);
    edit_values(&mut values, cols, edit, norm_preserve);
    let edited = Tensor::from_vec(values, t.shape(), t.device())?;
    Ok(if bf16_exact {
        let kept = if t.dtype() == DType::BF16 { DType::BF16 } else { dtype };
        edited.to_dtype(DType::BF16)?.to_dtype(kept)?
    } else {
        edited.to_dtype(dtype)?
    })
}
