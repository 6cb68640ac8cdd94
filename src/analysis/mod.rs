//! Weight-direction analysis: which directions do the layers' writers share? SVD of every
//! output-side writer, cross-layer subspace overlaps, consensus directions, and how well each
//! layer can write along given directions.

mod experts;
mod report;
mod subspace;

pub use experts::{expert_heatmap, write_share_section};
pub use report::write_svd_outputs;
pub use subspace::{alignment, overlap, writer_subspace, WriterSubspace};

use crate::arch::WriterKind;
use crate::checkpoint::ModelDir;
use crate::directions::DirectionsFile;
use crate::linalg::thin_svd;
use crate::progress::Progress;
use crate::surgery::{expert_write_shares, Basis, LayerWriteShares};
use crate::Result;
use rayon::prelude::*;
use serde::Serialize;

/// Settings of an analysis.
#[derive(Debug, Clone)]
pub struct SvdSettings {
    /// Singular vectors kept per writer.
    pub top_k: usize,
    /// Layers.
    pub layers: Vec<usize>,
    /// Writer kinds.
    pub writers: Vec<WriterKind>,
    /// Exact thin SVD instead of the randomized one.
    pub exact: bool,
    /// Consensus directions to report.
    pub consensus: usize,
}

/// A direction shared across layers: a top left singular vector of the stacked bases.
#[derive(Debug, Clone, Serialize)]
pub struct Consensus {
    /// Its singular value in the stacked matrix (√(number of writers) = in every one of them).
    pub strength: f64,
    /// `‖U_lᵀ v‖` per writer, in the order of `SvdAnalysis::writers`.
    pub usage: Vec<f64>,
}

/// A direction's alignment with every writer.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionAlignment {
    /// The directions entry.
    pub direction: String,
    /// `‖U_lᵀ r‖` per writer, in the order of `SvdAnalysis::writers`.
    pub per_writer: Vec<f64>,
}

/// The whole analysis.
#[derive(Debug, Clone, Serialize)]
pub struct SvdAnalysis {
    /// Residual width.
    pub hidden: usize,
    /// k.
    pub top_k: usize,
    /// Every writer's subspace.
    pub writers: Vec<WriterSubspace>,
    /// Overlap matrix (mean squared cosine) between every pair of writers.
    pub overlap: Vec<Vec<f64>>,
    /// The random baseline k/hidden.
    pub random_baseline: f64,
    /// Consensus directions.
    pub consensus: Vec<Consensus>,
    /// Alignment of given directions.
    pub alignments: Vec<DirectionAlignment>,
    /// The directions file's recommended entry, when it was aligned (first in `alignments`).
    pub recommended: Option<String>,
    /// Each sparse layer's experts' writes along the directions file's recommended (or only)
    /// direction; empty for a dense model or without directions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expert_write_shares: Vec<LayerWriteShares>,
}

/// Run the analysis (writers in parallel; each matrix is read from the memory map and dropped
/// once its subspace is computed).
pub fn analyse_writers(
    model: &ModelDir,
    settings: &SvdSettings,
    directions: Option<&DirectionsFile>,
    progress: &dyn Progress,
) -> Result<SvdAnalysis> {
    let spec = &model.spec;
    let writers = spec.writers(&settings.layers, &settings.writers);
    progress.set_length(writers.len() as u64);
    let subspaces = writers
        .par_iter()
        .map(|w| {
            let s = writer_subspace(model, w, settings.top_k, settings.exact);
            progress.inc(1);
            s
        })
        .collect::<Result<Vec<_>>>()?;
    let n = subspaces.len();
    let overlap: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| (0..n).map(|j| subspace::overlap(&subspaces[i].basis, &subspaces[j].basis)).collect())
        .collect();
    let hidden = spec.hidden_size;
    let k_total: usize = subspaces.iter().map(|s| s.basis.len()).sum();
    let stacked: Vec<f64> =
        (0..hidden).flat_map(|h| subspaces.iter().flat_map(move |s| s.basis.iter().map(move |u| u[h]))).collect();
    let consensus = if k_total > 0 {
        let svd = thin_svd(hidden, k_total, &stacked)?;
        (0..settings.consensus.min(svd.s.len()))
            .map(|i| {
                let v = svd.u_col(i);
                Consensus { strength: svd.s[i], usage: subspaces.iter().map(|s| alignment(&s.basis, &v)).collect() }
            })
            .collect()
    } else {
        Vec::new()
    };
    let alignments = match directions {
        None => Vec::new(),
        Some(file) => file
            .entries
            .values()
            .filter(|d| d.hidden() == hidden)
            .map(|d| {
                let r: Vec<f64> = d.rows[0].iter().map(|&x| f64::from(x)).collect();
                let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
                let r: Vec<f64> = r.iter().map(|x| x / norm).collect();
                DirectionAlignment {
                    direction: d.name.clone(),
                    per_writer: subspaces.iter().map(|s| alignment(&s.basis, &r)).collect(),
                }
            })
            .collect(),
    };
    let mut alignments = alignments;
    let recommended = directions
        .and_then(|f| f.recommended())
        .map(|(s, l)| crate::directions::entry_name(&s, l))
        .filter(|name| alignments.iter().any(|d| &d.direction == name));
    if let Some(name) = &recommended {
        // The recommended direction first: the report and plot lead with it.
        alignments.sort_by_key(|d| &d.direction != name);
    }
    let expert_write_shares = match directions.map(|f| f.select(None, None)) {
        Some(Ok(d)) if spec.moe.is_some() && d.hidden() == hidden => {
            let basis = Basis::orthonormal(&d.rows)?;
            expert_write_shares(model, &settings.layers, |_| Ok((d.name.clone(), basis.clone())))?
        }
        _ => Vec::new(),
    };
    Ok(SvdAnalysis {
        expert_write_shares,
        hidden,
        top_k: settings.top_k,
        random_baseline: settings.top_k as f64 / hidden as f64,
        writers: subspaces,
        overlap,
        consensus,
        alignments,
        recommended,
    })
}
