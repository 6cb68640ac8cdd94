//! The probe's per-expert diagnostics for a mixture-of-experts model: where the recommended
//! direction is written (the experts' write shares, from the weights) and how the router's
//! choices differ between the two sets (from the captured prompts). A dense model has neither.

use super::routing::{compare_routing, RoutingLayer};
use super::run::ProbeOutcome;
use crate::analysis::{expert_heatmap, write_share_section};
use crate::checkpoint::ModelDir;
use crate::directions::entry_name;
use crate::surgery::{expert_write_shares, Basis, LayerWriteShares};
use crate::{Error, Result};
use std::fmt::Write;
use std::path::Path;

/// Experts named per layer and side in the routing table; every frequency is in metrics.json.
const EXPERTS_SHOWN: usize = 3;

/// Every sparse layer's write shares against the recommended direction (the one `ablate` uses
/// by default); none for a dense model.
pub fn recommended_write_shares(model: &ModelDir, outcome: &ProbeOutcome) -> Result<Vec<LayerWriteShares>> {
    if model.spec.moe.is_none() {
        return Ok(Vec::new());
    }
    let (stream, layer) = &outcome.analysis.recommended;
    let name = entry_name(stream, *layer);
    let direction = outcome
        .directions
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| Error::Invalid(format!("the probe wrote no direction `{name}`")))?;
    let basis = Basis::orthonormal(&direction.rows)?;
    let layers: Vec<usize> = (0..model.spec.num_layers).collect();
    expert_write_shares(model, &layers, |_| Ok((name.clone(), basis.clone())))
}

/// The routing of the two sets compared, per sparse layer.
pub fn routing(outcome: &ProbeOutcome) -> Vec<RoutingLayer> {
    compare_routing(&outcome.harmful.routing, &outcome.harmless.routing)
}

/// What metrics.json holds of the experts (None for a dense model).
pub fn experts_json(outcome: &ProbeOutcome) -> Option<serde_json::Value> {
    let routing = routing(outcome);
    if routing.is_empty() && outcome.write_shares.is_empty() {
        return None;
    }
    Some(serde_json::json!({
        "write_shares": outcome.write_shares,
        "routing": {
            "positions": "the captured positions (positions_from_end)",
            "harmful_counts": outcome.harmful.routing,
            "harmless_counts": outcome.harmless.routing,
            "layers": routing,
        },
    }))
}

/// The report's expert sections and their heatmaps (`write_share`, `routing_difference`).
pub fn expert_sections(
    dir: &Path,
    outcome: &ProbeOutcome,
    hidden: usize,
    md: &mut String,
    files: &mut Vec<String>,
) -> Result<()> {
    write_share_section(dir, &outcome.write_shares, hidden, md, files)?;
    let layers = routing(outcome);
    if layers.is_empty() {
        return Ok(());
    }
    let top_k = layers[0].harmful.iter().sum::<f64>().round();
    let tokens = |counts: &super::RoutingCounts| counts.tokens.values().next().copied().unwrap_or(0);
    let _ = writeln!(md, "## Which experts the router chooses\n");
    let _ = writeln!(
        md,
        "At the captured positions of every prompt ({} harmful and {} harmless tokens per sparse layer, top {top_k} each): the share of tokens whose top {top_k} holds each expert (the shares of a layer sum to {top_k}), and harmful − harmless. The distance is the total variation between the two sets' routing (0: alike, 1: no expert in common). Every frequency is in `metrics.json` (`experts.routing`).\n",
        tokens(&outcome.harmful.routing),
        tokens(&outcome.harmless.routing)
    );
    let _ = writeln!(
        md,
        "| layer | distance | chosen more for harmful (expert: Δ) | chosen more for harmless (expert: Δ) |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for l in &layers {
        let mut order: Vec<usize> = (0..l.difference.len()).collect();
        order.sort_by(|&a, &b| l.difference[b].total_cmp(&l.difference[a]).then(a.cmp(&b)));
        let side = |experts: &mut dyn Iterator<Item = &usize>, sign: f64| -> String {
            let named: Vec<String> = experts
                .filter(|&&e| l.difference[e] * sign > 0.0)
                .take(EXPERTS_SHOWN)
                .map(|&e| format!("{e}: {:+.3}", l.difference[e]))
                .collect();
            if named.is_empty() {
                "—".into()
            } else {
                named.join(", ")
            }
        };
        let more = side(&mut order.iter(), 1.0);
        let less = side(&mut order.iter().rev(), -1.0);
        let _ = writeln!(md, "| {} | {:.3} | {more} | {less} |", l.layer, l.distance);
    }
    let values: Vec<Vec<f64>> = layers.iter().map(|l| l.difference.clone()).collect();
    let span = values.iter().flatten().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
    let rows: Vec<usize> = layers.iter().map(|l| l.layer).collect();
    let title = "Routing frequency, harmful − harmless";
    expert_heatmap(dir, "routing_difference", title, &rows, values, (-span, span), md, files)
}
