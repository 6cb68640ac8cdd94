//! Where a sparse layer writes a direction: for every routed expert `e` with output matrix
//! `W_e` `[hidden, I]` (its columns are what it writes), `‖Q W_e‖_F` — for one direction `r`,
//! the Euclidean norm of the row `rᵀW_e` — its size relative to `‖W_e‖_F` (verify's ratio on
//! the unedited matrix; about `1/√hidden` for a random one), and its share of the layer's
//! `Σ_e ‖Q W_e‖_F` (`1/E` each when every expert writes the direction alike). The shared
//! expert is measured the same way and kept out of the sum: it runs on every token, so it is
//! not one of the alternatives the router picks among.

use super::plan::writer_basis;
use super::projection::{column_residual, Basis};
use crate::arch::{MlpPart, Writer, WriterKind};
use crate::checkpoint::ModelDir;
use crate::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What one output matrix writes along the basis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Written {
    /// `‖Q W‖_F` (`‖rᵀW‖₂` for one direction).
    pub along: f64,
    /// `‖W‖_F`.
    pub norm: f64,
    /// `along / norm` (0 for an all-zero matrix).
    pub relative: f64,
}

/// One sparse layer's experts measured against the direction its writers are edited with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerWriteShares {
    /// The layer.
    pub layer: usize,
    /// The directions entry measured against.
    pub direction: String,
    /// Per routed expert, in expert order.
    pub experts: Vec<Written>,
    /// Each routed expert's `along` over the layer's sum (all 0 when nothing is written).
    pub share: Vec<f64>,
    /// The shared expert, where the layer has one.
    pub shared: Option<Written>,
}

impl LayerWriteShares {
    /// The routed experts whose share is above `threshold`, in expert order.
    pub fn above(&self, threshold: f64) -> Vec<usize> {
        (0..self.share.len()).filter(|&e| self.share[e] > threshold).collect()
    }
}

/// What `writer`'s matrix (its slice of a stacked tensor) writes along `basis`, mapped
/// through the writer's post-norm where it has one, as its edit is.
fn measure(model: &ModelDir, writer: &Writer, basis: &Basis) -> Result<Written> {
    let basis = writer_basis(model, writer, basis)?;
    let (values, shape) = model.checkpoint.read_f32(&writer.weight)?;
    let (values, cols) = match (writer.slice, shape.as_slice()) {
        (None, [_, cols]) => (&values[..], *cols),
        (Some(e), [experts, rows, cols]) if e < *experts => (&values[e * rows * cols..(e + 1) * rows * cols], *cols),
        (_, other) => {
            return Err(Error::bad_tensor(&writer.weight, format!("shape {other:?} is not an expert's output matrix")))
        }
    };
    if values.len() != basis.hidden() * cols {
        return Err(Error::bad_tensor(
            &writer.weight,
            format!("shape {shape:?} does not write a {}-wide stream", basis.hidden()),
        ));
    }
    let (along, norm) = column_residual(values, cols, &basis);
    Ok(Written { along, norm, relative: if norm > 0.0 { along / norm } else { 0.0 } })
}

/// The write shares of every sparse layer among `layers`; `direction_of(layer)` names the
/// entry and basis that layer's writers are measured against. Dense layers are left out, so a
/// dense model gives none.
pub fn expert_write_shares(
    model: &ModelDir,
    layers: &[usize],
    direction_of: impl Fn(usize) -> Result<(String, Basis)> + Sync,
) -> Result<Vec<LayerWriteShares>> {
    let spec = &model.spec;
    let sparse: Vec<usize> = layers.iter().copied().filter(|&l| spec.is_sparse(l)).collect();
    sparse
        .par_iter()
        .map(|&layer| {
            let (direction, basis) = direction_of(layer)?;
            let writers = spec.writers(&[layer], &[WriterKind::Mlp]);
            let measured = writers
                .par_iter()
                .map(|w| Ok((w.part, measure(model, w, &basis)?)))
                .collect::<Result<Vec<(MlpPart, Written)>>>()?;
            let mut experts: Vec<(usize, Written)> = measured
                .iter()
                .filter_map(|&(part, w)| match part {
                    MlpPart::Expert(e) => Some((e, w)),
                    _ => None,
                })
                .collect();
            experts.sort_by_key(|&(e, _)| e);
            let experts: Vec<Written> = experts.into_iter().map(|(_, w)| w).collect();
            let shared = measured.iter().find(|(part, _)| *part == MlpPart::SharedExpert).map(|&(_, w)| w);
            let total: f64 = experts.iter().map(|w| w.along).sum();
            let share = experts.iter().map(|w| if total > 0.0 { w.along / total } else { 0.0 }).collect();
            Ok(LayerWriteShares { layer, direction, experts, share, shared })
        })
        .collect()
}
