//! Verification of an edited checkpoint, reading back what was saved.
//!
//! For every edited tensor `W'` (its written vectors: the columns of an attention/MLP writer
//! `[hidden, in]`, the rows of the embedding `[vocab, hidden]`, a bias as one row) it measures
//! `ratio = ‖Q W'‖ / ‖W'‖`, what is still written along the edit's orthonormal basis `Q` (the
//! direction `r`, or `u = γ⊙r/‖γ⊙r‖` behind a Gemma 2/3 post-norm). The edit promises
//! `Q W' = (1 − λ) s Q W` per written vector (`s` the norm-preserving rescale, else 1), so with
//! the original `W` the **expected** ratio is known exactly; λ = 1 expects 0.
//!
//! The tolerance is what rounding `W'` to its stored dtype (unit roundoff `u`) can leave:
//! - `K·u·√(Σ_ij (Σ_q Q_qi²) W'_ij²) / ‖W'‖` (`K` = [`ROUNDING_FACTOR`]): independent rounding
//!   errors summed by a `d`-dimensional dot product; about `K·u/√d` for a dense writer, so it
//!   shrinks with the hidden size as an unedited matrix's own ratio (≈ 1/√d) does;
//! - plus what rounding can *undo*: where the edit of an element is below half a unit in the
//!   last place, the element keeps its old value. That is at most the part of the original
//!   ratio `ρ₀ = ‖Q W‖/‖W‖` removed, and shrinks fast once `λρ₀ ≫ u`: bounded by
//!   `|λ|ρ₀·exp(−|λ|ρ₀/u)` with the original, by its maximum `u/e` without it (λ = 1 only).
//!   (Simulated bf16 edits of Gaussian writers at d = 576 and 4096 leave at most 0.1·u in all,
//!   largest near ρ₀ ≈ u/3; this bound is at least twice that everywhere.)
//!
//! A row passes when its ratio is finite and within the tolerance of the expected ratio. λ ≠ 1
//! needs the original model (given, or at the path the edit record holds).

use super::apply::EDIT_RECORD_FILE;
use super::plan::{Layout, PlannedEdit, SurgeryPlan, SurgeryRecord};
use super::projection::Basis;
use crate::checkpoint::{unit_roundoff, EditableDtype, ModelDir};
use crate::{Error, Result};
use rayon::prelude::*;
use serde::Serialize;

/// `K` of the rounding term of the tolerance (see the module documentation).
pub const ROUNDING_FACTOR: f64 = 16.0;

/// One verified tensor.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    /// Tensor name.
    pub tensor: String,
    /// Writer kind name.
    pub kind: String,
    /// Layer.
    pub layer: Option<usize>,
    /// The slice of a stacked experts tensor this row measures (None: the whole tensor).
    pub slice: Option<usize>,
    /// Stored dtype.
    pub dtype: String,
    /// `‖Q W'‖ / ‖W'‖` read back (0 for an all-zero tensor).
    pub ratio: f64,
    /// The ratio the edit promises: `|1 − λ|`-scaled original component, 0 for λ = 1.
    pub expected: f64,
    /// The original `‖Q W‖ / ‖W‖`, when the original model was read.
    pub original: Option<f64>,
    /// The largest `|ratio − expected|` that rounding to the stored dtype explains.
    pub threshold: f64,
    /// Whether `ratio` is finite and within `threshold` of `expected`.
    pub pass: bool,
}

/// The result of verifying every planned edit.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// One row per edited tensor.
    pub rows: Vec<VerifyRow>,
    /// The strength of the edit (the plan's).
    pub strength: f64,
    /// The original model the expected ratios came from, if one was read.
    pub original: Option<String>,
}

impl VerifyReport {
    /// Whether every row passed.
    pub fn all_pass(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }

    /// The largest ratio seen (NaN if any ratio is NaN).
    pub fn worst(&self) -> f64 {
        self.rows.iter().map(|r| r.ratio).fold(0.0, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) })
    }
}

/// The strength λ a tensor was edited with: the plan's strength times its profile's weight.
pub fn expected_strength(_plan: &SurgeryPlan, edit: &PlannedEdit) -> f64 {
    edit.strength
}

/// What a tensor writes along a basis, per written vector.
struct Written {
    /// `‖Q v‖²` per written vector.
    along_sq: Vec<f64>,
    /// `‖v‖²` per written vector.
    norm_sq: Vec<f64>,
    /// `Σ_ij (Σ_q Q_qi²) v_ij²`, the variance scale of rounding errors seen through `Q`.
    spread_sq: f64,
}

impl Written {
    fn along(&self) -> f64 {
        self.along_sq.iter().sum::<f64>().sqrt()
    }
    fn total(&self) -> f64 {
        self.norm_sq.iter().sum::<f64>().sqrt()
    }
}

fn written(values: &[f32], layout: Layout, shape: &[usize], basis: &Basis, name: &str) -> Result<Written> {
    let hidden = basis.hidden();
    let weight: Vec<f64> = (0..hidden).map(|i| basis.rows().iter().map(|q| q[i] * q[i]).sum()).collect();
    match layout {
        Layout::Rows => {
            let per: Vec<(f64, f64, f64)> = values
                .par_chunks(hidden)
                .map(|row| {
                    let along = basis.rows().iter().map(|q| dot32(q, row).powi(2)).sum();
                    let norm = row.iter().map(|&x| f64::from(x).powi(2)).sum();
                    let spread = row.iter().zip(&weight).map(|(&x, w)| w * f64::from(x).powi(2)).sum();
                    (along, norm, spread)
                })
                .collect();
            Ok(Written {
                along_sq: per.iter().map(|p| p.0).collect(),
                norm_sq: per.iter().map(|p| p.1).collect(),
                spread_sq: per.iter().map(|p| p.2).sum(),
            })
        }
        Layout::Columns => {
            let cols = *shape.get(1).ok_or_else(|| Error::bad_tensor(name, "expected a matrix"))?;
            let k = basis.k();
            let zero = || (vec![0f64; k * cols], vec![0f64; cols], 0f64);
            let (c, n, spread_sq) = values
                .par_chunks(cols)
                .enumerate()
                .fold(zero, |(mut c, mut n, mut s), (i, row)| {
                    for (q, ck) in basis.rows().iter().zip(c.chunks_exact_mut(cols)) {
                        ck.iter_mut().zip(row).for_each(|(acc, &x)| *acc += q[i] * f64::from(x));
                    }
                    n.iter_mut().zip(row).for_each(|(acc, &x)| *acc += f64::from(x).powi(2));
                    s += weight[i] * row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
                    (c, n, s)
                })
                .reduce(zero, |(mut c1, mut n1, s1), (c2, n2, s2)| {
                    c1.iter_mut().zip(c2).for_each(|(a, b)| *a += b);
                    n1.iter_mut().zip(n2).for_each(|(a, b)| *a += b);
                    (c1, n1, s1 + s2)
                });
            let along_sq = (0..cols).map(|j| (0..k).map(|q| c[q * cols + j].powi(2)).sum()).collect();
            Ok(Written { along_sq, norm_sq: n, spread_sq })
        }
    }
}

fn dot32(q: &[f64], v: &[f32]) -> f64 {
    q.iter().zip(v).map(|(a, &b)| a * f64::from(b)).sum()
}

/// `‖Q W'‖` the edit promises, from the original's per-vector components: `|1 − λ| s_t ‖Q w_t‖`
/// with `s_t` the norm-preserving rescale (`‖w_t‖ / ‖w_t − λQᵀQw_t‖`) or 1.
fn expected_along(original: &Written, strength: f64, norm_preserve: bool) -> f64 {
    original
        .along_sq
        .iter()
        .zip(&original.norm_sq)
        .map(|(&a, &n)| {
            let after = (n - (2.0 * strength - strength * strength) * a).max(0.0);
            let s_sq = if norm_preserve && after > 0.0 { n / after } else { 1.0 };
            (1.0 - strength).powi(2) * s_sq * a
        })
        .sum::<f64>()
        .sqrt()
}

fn verify_edit(
    model: &ModelDir,
    original: Option<&ModelDir>,
    plan: &SurgeryPlan,
    edit: &PlannedEdit,
) -> Result<VerifyRow> {
    let view = model.checkpoint.tensor(&edit.tensor)?;
    let dtype = EditableDtype::of(view.dtype, view.name)?;
    let (values, shape) = edited_values(view.to_f32()?, view.shape, edit)?;
    // A NaN or infinity makes every norm below NaN, which no comparison may read as a pass.
    let finite = values.iter().all(|v| v.is_finite());
    let now = written(&values, edit.layout, &shape, &edit.basis, &edit.tensor)?;
    let strength = expected_strength(plan, edit);
    let u = unit_roundoff(dtype);
    let total = now.total();
    let scale = |x: f64| if total > 0.0 { x / total } else { 0.0 };
    let (expected, rho0, undone) = match original {
        Some(orig) => {
            let before = orig.checkpoint.tensor(&edit.tensor)?;
            if before.shape != view.shape {
                return Err(Error::bad_tensor(
                    &edit.tensor,
                    format!("shape {:?} in the edited model, {:?} in the original", view.shape, before.shape),
                ));
            }
            let (before_values, before_shape) = edited_values(before.to_f32()?, before.shape, edit)?;
            let was = written(&before_values, edit.layout, &before_shape, &edit.basis, &edit.tensor)?;
            let rho0 = if was.total() > 0.0 { was.along() / was.total() } else { 0.0 };
            let lam = strength.abs() * rho0;
            (scale(expected_along(&was, strength, plan.options.norm_preserve)), Some(rho0), lam * (-lam / u).exp())
        }
        None if (strength - 1.0).abs() < 1e-12 => (0.0, None, u / std::f64::consts::E),
        None => {
            return Err(Error::Invalid(format!(
                "verifying `{}` edited with λ = {strength} needs the original model (‖Q W'‖ ≈ |1 − λ|·‖Q W‖)",
                edit.tensor
            )))
        }
    };
    let ratio = if finite { scale(now.along()) } else { f64::NAN };
    let threshold = ROUNDING_FACTOR * u * scale(now.spread_sq.sqrt()) + undone;
    let kind = match (edit.is_bias, edit.part.describe()) {
        (true, _) => format!("{} bias", edit.kind.name()),
        (false, part) if part.is_empty() => edit.kind.name().to_string(),
        (false, part) => format!("{} {part}", edit.kind.name()),
    };
    Ok(VerifyRow {
        tensor: edit.tensor.clone(),
        kind,
        layer: edit.layer,
        slice: edit.slice,
        dtype: format!("{:?}", view.dtype),
        ratio,
        expected,
        original: rho0,
        threshold,
        pass: finite && ratio.is_finite() && (ratio - expected).abs() <= threshold,
    })
}

/// The values an edit promises something about (its slice of a stacked experts tensor, else the
/// whole tensor) and their shape.
fn edited_values(mut values: Vec<f32>, shape: &[usize], edit: &PlannedEdit) -> Result<(Vec<f32>, Vec<usize>)> {
    if edit.slice.is_none() {
        return Ok((values, shape.to_vec()));
    }
    let (part, cols) = super::apply::edited_part(&mut values, shape, edit)?;
    let rows = part.len() / cols.max(1);
    Ok((part.to_vec(), vec![rows, cols]))
}

/// Verify every tensor of `plan` in `edited`, comparing with `original` where given.
pub fn verify_with_original(
    edited: &ModelDir,
    plan: &SurgeryPlan,
    original: Option<&ModelDir>,
) -> Result<VerifyReport> {
    let rows =
        plan.edits.par_iter().map(|edit| verify_edit(edited, original, plan, edit)).collect::<Result<Vec<_>>>()?;
    Ok(VerifyReport { rows, strength: plan.options.strength, original: original.map(|o| o.root.display().to_string()) })
}

/// Verify every tensor of `plan` in `model`, with the original model at the path its edit
/// record holds (`scalpel_edit.json`: records written with `--record-paths`, and older ones)
/// when that folder opens and is the recorded model; λ ≠ 1 needs it.
pub fn verify(model: &ModelDir, plan: &SurgeryPlan) -> Result<VerifyReport> {
    let source = std::fs::read_to_string(model.root.join(EDIT_RECORD_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<SurgeryRecord>(&t).ok())
        .and_then(|r| recorded_original(&r));
    verify_with_original(model, plan, source.as_ref())
}

/// The original model at the path `record` holds, if it opens and (where the record has the
/// model's identity) is the recorded one; a folder that changed since is not used, with a warning.
pub fn recorded_original(record: &SurgeryRecord) -> Option<ModelDir> {
    let path = record.source_path()?;
    let model = ModelDir::open(&path).ok()?;
    match record.source.as_ref().map(|s| s.check_model(&path, "original model")) {
        Some(Err(e)) => {
            tracing::warn!("not using the recorded original: {e}");
            None
        }
        _ => Some(model),
    }
}
