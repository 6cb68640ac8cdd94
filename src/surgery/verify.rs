//! Verification of an edited checkpoint, reading back what was saved: `‖Q W'‖ / ‖W'‖` per
//! edited tensor must be at the stored dtype's rounding level.

use super::plan::{Layout, SurgeryPlan};
use super::projection::{column_residual, row_residual};
use crate::checkpoint::{unit_roundoff, EditableDtype, ModelDir};
use crate::Result;
use rayon::prelude::*;
use serde::Serialize;

/// One verified tensor.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    /// Tensor name.
    pub tensor: String,
    /// Writer kind name.
    pub kind: String,
    /// Layer.
    pub layer: Option<usize>,
    /// Stored dtype.
    pub dtype: String,
    /// `‖Q W'‖ / ‖W'‖` (0 for an all-zero tensor).
    pub ratio: f64,
    /// The largest ratio that counts as rounding error for this dtype.
    pub threshold: f64,
    /// Whether the ratio is within the threshold (always checked for λ = 1).
    pub pass: bool,
}

/// The result of verifying every planned edit.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// One row per edited tensor.
    pub rows: Vec<VerifyRow>,
    /// The strength the edit used; only λ = 1 promises orthogonality.
    pub strength: f64,
}

impl VerifyReport {
    /// Whether every row passed.
    pub fn all_pass(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }

    /// The largest ratio seen.
    pub fn worst(&self) -> f64 {
        self.rows.iter().map(|r| r.ratio).fold(0.0, f64::max)
    }
}

/// The rounding-level threshold for a dtype: twice its unit roundoff. A random matrix scores
/// about `1/sqrt(hidden)`, far above this for any real hidden size.
pub fn threshold_for(dtype: EditableDtype) -> f64 {
    2.0 * unit_roundoff(dtype)
}

/// Read every tensor of `plan` back from `model` and measure what it still writes along the basis.
/// With λ ≠ 1 the edit does not promise orthogonality: rows are reported and marked passing
/// only if the ratio is finite.
pub fn verify(model: &ModelDir, plan: &SurgeryPlan) -> Result<VerifyReport> {
    let rows = plan
        .edits
        .par_iter()
        .map(|edit| {
            let view = model.checkpoint.tensor(&edit.tensor)?;
            let dtype = EditableDtype::of(view.dtype, view.name)?;
            let values = view.to_f32()?;
            let (along, total) = match edit.layout {
                Layout::Columns => column_residual(&values, view.shape[1], &edit.basis),
                Layout::Rows => row_residual(&values, &edit.basis),
            };
            let ratio = if total > 0.0 { along / total } else { 0.0 };
            let threshold = threshold_for(dtype);
            let exact = (edit.strength - 1.0).abs() < 1e-12;
            Ok(VerifyRow {
                tensor: edit.tensor.clone(),
                kind: if edit.is_bias { format!("{} bias", edit.kind.name()) } else { edit.kind.name().to_string() },
                layer: edit.layer,
                dtype: format!("{:?}", view.dtype),
                ratio,
                threshold,
                pass: if exact { ratio <= threshold } else { ratio.is_finite() },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(VerifyReport { rows, strength: plan.options.strength })
}
