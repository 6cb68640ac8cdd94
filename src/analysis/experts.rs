//! The write-share section that the svd and probe reports share: per sparse layer, which routed
//! experts write the direction (a table and a heatmap of sparse layers × experts). A dense
//! model has no section.

use crate::plot::{file_names, save_heatmap, Heatmap};
use crate::surgery::LayerWriteShares;
use crate::Result;
use std::fmt::Write;
use std::path::Path;

/// Experts named per layer in the table; every share is in the JSON and the heatmap.
const EXPERTS_SHOWN: usize = 4;

/// Write `write_share.png`/`.svg` into `dir` and the section into `md`; nothing for no shares.
pub fn write_share_section(
    dir: &Path,
    shares: &[LayerWriteShares],
    hidden: usize,
    md: &mut String,
    files: &mut Vec<String>,
) -> Result<()> {
    let Some(first) = shares.first() else { return Ok(()) };
    let experts = first.share.len();
    let uniform = 1.0 / experts.max(1) as f64;
    let random = 1.0 / (hidden.max(1) as f64).sqrt();
    let _ = writeln!(md, "## Where the experts write the direction\n");
    let _ = writeln!(
        md,
        "Against `{}`: for each routed expert `e` of a sparse layer, `‖rᵀW_e‖ / ‖W_e‖_F` (`W_e` its output matrix `[hidden, I]`, `‖rᵀW_e‖` the Euclidean norm of what its columns write along `r`; about 1/√hidden = {random:.3} for a random matrix) and its **share** of the layer's `Σ_e ‖rᵀW_e‖` ({uniform:.3} each when every expert writes it alike). The shared expert runs on every token and is not part of the share. Every number is in the JSON (`expert_write_shares`).\n",
        first.direction
    );
    let shared = shares.iter().any(|s| s.shared.is_some());
    let _ = write!(md, "| layer | largest shares (expert: share) | largest / uniform | ‖rᵀW_e‖/‖W_e‖_F, min–max |");
    let _ = writeln!(md, "{}", if shared { " shared expert ‖rᵀW_s‖/‖W_s‖_F |" } else { "" });
    let _ = writeln!(md, "|---|---|---|---|{}", if shared { "---|" } else { "" });
    for s in shares {
        let mut order: Vec<usize> = (0..s.share.len()).collect();
        order.sort_by(|&a, &b| s.share[b].total_cmp(&s.share[a]).then(a.cmp(&b)));
        let top: Vec<String> = order.iter().take(EXPERTS_SHOWN).map(|&e| format!("{e}: {:.3}", s.share[e])).collect();
        let largest = order.first().map_or(0.0, |&e| s.share[e]);
        let relative = s.experts.iter().map(|w| w.relative);
        let (lo, hi) = relative.fold((f64::INFINITY, 0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
        let _ = write!(md, "| {} | {} | {:.2}× | {lo:.3}–{hi:.3} |", s.layer, top.join(", "), largest / uniform);
        match (shared, s.shared) {
            (true, Some(w)) => {
                let _ = writeln!(md, " {:.3} |", w.relative);
            }
            (true, None) => {
                let _ = writeln!(md, " — |");
            }
            (false, _) => {
                let _ = writeln!(md);
            }
        }
    }
    let values: Vec<Vec<f64>> = shares.iter().map(|s| s.share.clone()).collect();
    let hi = values.iter().flatten().copied().fold(uniform * 2.0, f64::max).min(1.0);
    let layers: Vec<usize> = shares.iter().map(|s| s.layer).collect();
    let title = "Share of each layer's write along r, per expert";
    expert_heatmap(dir, "write_share", title, &layers, values, (0.0, hi), md, files)
}

/// Save the heatmap `stem` of sparse `layers` (rows) × experts (columns) into `dir`, list its
/// files and show it in `md`.
#[allow(clippy::too_many_arguments)]
pub fn expert_heatmap(
    dir: &Path,
    stem: &str,
    title: &str,
    layers: &[usize],
    values: Vec<Vec<f64>>,
    range: (f64, f64),
    md: &mut String,
    files: &mut Vec<String>,
) -> Result<()> {
    let map = Heatmap {
        title: title.into(),
        values,
        row_label: sparse_rows_label(layers),
        col_label: "expert".into(),
        range,
    };
    files.extend(file_names(save_heatmap(&dir.join(stem), &map)?));
    let _ = writeln!(md, "\n![{stem}]({stem}.png)\n");
    Ok(())
}

/// The row label of a heatmap over sparse layers, which need not start at 0 or be contiguous.
fn sparse_rows_label(layers: &[usize]) -> String {
    match (layers.first(), layers.last()) {
        (Some(a), Some(b)) if b - a + 1 == layers.len() => format!("layer − {a} (sparse layers {a}–{b})"),
        _ => format!("sparse layer, in order ({} of them)", layers.len()),
    }
}
