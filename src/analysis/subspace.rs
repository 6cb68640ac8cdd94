//! What a writer can write: the top-k left singular vectors of its `[hidden, in]` matrix.

use crate::arch::{Writer, WriterKind};
use crate::checkpoint::ModelDir;
use crate::linalg::{randomized_svd, thin_svd};
use crate::Result;
use serde::Serialize;

/// The writing subspace of one writer.
#[derive(Debug, Clone, Serialize)]
pub struct WriterSubspace {
    /// attn, mlp or embed.
    pub kind: WriterKind,
    /// Layer (None for the embedding).
    pub layer: Option<usize>,
    /// Tensor name.
    pub tensor: String,
    /// Top singular values, descending.
    pub singular_values: Vec<f64>,
    /// Share of the squared Frobenius norm the top k carry.
    pub energy: f64,
    /// Orthonormal basis `U` as `k` vectors of length hidden (not serialized).
    #[serde(skip)]
    pub basis: Vec<Vec<f64>>,
}

/// Top-`k` left singular vectors of the writer (`exact`: full thin SVD; else randomized).
pub fn writer_subspace(model: &ModelDir, writer: &Writer, k: usize, exact: bool) -> Result<WriterSubspace> {
    let (values, shape) = model.checkpoint.read_f32(&writer.weight)?;
    // A slice of a stacked experts tensor `[experts, hidden, in]` is that expert's matrix.
    let (values, shape) = match (writer.slice, shape.as_slice()) {
        (None, [rows, cols]) => (values, [*rows, *cols]),
        (Some(e), [experts, rows, cols]) if e < *experts => {
            (values[e * rows * cols..(e + 1) * rows * cols].to_vec(), [*rows, *cols])
        }
        (_, other) => {
            return Err(crate::Error::bad_tensor(&writer.weight, format!("shape {other:?} is not a writer's matrix")))
        }
    };
    let data: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    let total: f64 = data.iter().map(|v| v * v).sum();
    let (rows, cols) = (shape[0], shape[1]);
    // The embedding [vocab, hidden] writes its rows: its writing space is its right singular space.
    let (svd, in_rows) = match (exact, writer.kind == WriterKind::Embed) {
        (true, _) => (thin_svd(rows, cols, &data)?, writer.kind != WriterKind::Embed),
        (false, embed) => (randomized_svd(rows, cols, &data, k.min(rows.min(cols)), 2, 0)?, !embed),
    };
    let k = k.min(svd.s.len());
    let basis: Vec<Vec<f64>> = if in_rows { (0..k).map(|i| svd.u_col(i)).collect() } else { svd.v[..k].to_vec() };
    let energy = svd.s[..k].iter().map(|s| s * s).sum::<f64>() / total.max(f64::MIN_POSITIVE);
    Ok(WriterSubspace {
        kind: writer.kind,
        layer: writer.layer,
        tensor: match writer.slice {
            Some(e) => format!("{}[{e}]", writer.weight),
            None => writer.weight.clone(),
        },
        singular_values: svd.s[..k].to_vec(),
        energy,
        basis,
    })
}

/// `‖U_aᵀ U_b‖_F² / k`: the mean squared cosine of the principal angles between two subspaces
/// (1 = the same subspace; about k/hidden for random ones).
pub fn overlap(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let k = a.len().min(b.len()).max(1);
    let mut sum = 0.0;
    for x in a {
        for y in b {
            let d: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            sum += d * d;
        }
    }
    sum / k as f64
}

/// `‖Uᵀ r‖` for a unit `r`: how much of `r` the writer can write (1 = fully; random ≈ sqrt(k/hidden)).
pub fn alignment(basis: &[Vec<f64>], r: &[f64]) -> f64 {
    basis.iter().map(|u| u.iter().zip(r).map(|(a, b)| a * b).sum::<f64>().powi(2)).sum::<f64>().sqrt()
}
