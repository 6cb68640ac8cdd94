//! A running model with a surgery plan applied to its weights in memory: what each trial is
//! measured on. It uses the same per-tensor edit as the written checkpoint
//! ([`crate::surgery::edit_values`]), so a trial's model is the checkpoint `ablate` would write,
//! up to the checkpoint's rounding to its stored dtype.

use crate::arch::WriterKind;
use crate::model::{Decoder, WriterTensor};
use crate::surgery::{edit_values, Layout, SurgeryPlan};
use crate::{Error, Result};

impl Decoder {
    /// A copy of this model with `plan` applied to its writers. Unedited tensors are shared
    /// with `self`, so the copy costs the edited tensors only. A tied head follows the edited
    /// embedding unless the plan unties it.
    pub fn with_edits(&self, plan: &SurgeryPlan) -> Result<Decoder> {
        let targets = plan
            .edits
            .iter()
            .map(|edit| match (edit.kind, edit.layer) {
                (WriterKind::Embed, _) => Ok(WriterTensor::Embedding),
                (WriterKind::Attn, Some(layer)) => Ok(WriterTensor::AttnOut { layer, bias: edit.is_bias }),
                (WriterKind::Mlp, Some(layer)) => {
                    Ok(WriterTensor::MlpOut { layer, bias: edit.is_bias, part: edit.part })
                }
                (WriterKind::PerLayer, Some(layer)) => Ok(WriterTensor::PerLayerOut { layer }),
                (kind, None) => Err(Error::Invalid(format!("a {} edit without a layer: {}", kind.name(), edit.tensor))),
            })
            .collect::<Result<Vec<_>>>()?;
        let norm_preserve = plan.options.norm_preserve;
        self.with_writers_edited(&targets, plan.edits_tied_head && !plan.options.untie, |i, values, shape| {
            let edit = &plan.edits[i];
            let cols = match edit.layout {
                Layout::Columns => *shape
                    .get(1)
                    .ok_or_else(|| Error::bad_tensor(&edit.tensor, "a column edit of a tensor without columns"))?,
                Layout::Rows => 0,
            };
            edit_values(values, cols, edit, norm_preserve);
            Ok(())
        })
    }
}
