//! Probe outputs: metrics.json / metrics.csv, directions.safetensors, plots, report.md.

use super::analysis::ProbeAnalysis;
use super::metrics::LayerMetrics;
use super::run::ProbeOutcome;
use crate::directions::DirectionsFile;
use crate::names::Named;
use crate::plot::{file_names, save_line_chart, LineChart, Series};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Provenance written with the results.
#[derive(Debug, Clone, Default)]
pub struct ProbeProvenance {
    /// The model folder or id.
    pub model: String,
    /// (source, count, hash) of the harmful set.
    pub harmful: (String, usize, String),
    /// (source, count, hash) of the harmless set.
    pub harmless: (String, usize, String),
    /// Positions from the end.
    pub positions: Vec<usize>,
    /// Prompt format description.
    pub format: String,
}

fn series(metrics: &[LayerMetrics], name: &str, f: impl Fn(&LayerMetrics) -> Option<f64>) -> Vec<Series> {
    let mut streams: Vec<&str> = metrics.iter().map(|m| m.stream.as_str()).collect();
    streams.dedup();
    streams
        .into_iter()
        .map(|s| Series {
            name: if name.is_empty() { s.to_string() } else { format!("{name} {s}") },
            points: metrics
                .iter()
                .filter(|m| m.stream == s)
                .filter_map(|m| f(m).map(|v| (m.layer as f64, v)))
                .collect(),
            points_only: false,
        })
        .collect()
}

fn chart(title: &str, y: &str, log_y: bool, series: Vec<Series>, marker: usize) -> LineChart {
    LineChart {
        title: title.into(),
        x_label: "layer".into(),
        y_label: y.into(),
        log_y,
        series,
        marker: Some((marker as f64, format!("recommended layer {marker}"))),
    }
}

/// Write every output of `outcome` into `dir`; returns the files written.
pub fn write_probe_outputs(dir: &Path, outcome: &ProbeOutcome, prov: &ProbeProvenance) -> Result<Vec<String>> {
    let a = &outcome.analysis;
    let mut files = Vec::new();
    save_directions(dir, outcome, prov, &mut files)?;
    save_metrics_json(dir, outcome, prov, &mut files)?;
    save_metrics_csv(dir, &a.metrics, &mut files)?;
    save_plots(dir, &a.metrics, a.recommended.1, &mut files)?;
    if !outcome.harmful.kept.is_empty() {
        files.push(save_activations(dir, outcome)?);
    }
    let mut md = report_markdown(a, prov, outcome);
    let hidden = outcome.directions.first().map_or(0, |d| d.hidden());
    super::experts::expert_sections(dir, outcome, hidden, &mut md, &mut files)?;
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))?;
    files.push("report.md".into());
    Ok(files)
}

fn save_activations(dir: &Path, outcome: &ProbeOutcome) -> Result<String> {
    let mut entries = Vec::new();
    for (set, stats) in [("harmful", &outcome.harmful), ("harmless", &outcome.harmless)] {
        for ((point, layer), rows) in &stats.kept {
            entries.push(crate::directions::Direction {
                name: format!("{set}.{}.{layer}", point.name()),
                rows: rows.clone(),
            });
        }
    }
    let meta = BTreeMap::from([(
        "content".to_string(),
        "per-prompt activations: {set}.{stream}.{layer} = [prompts, hidden]".to_string(),
    )]);
    DirectionsFile::save(&dir.join("activations.safetensors"), &entries, &meta)?;
    Ok("activations.safetensors".into())
}

fn report_markdown(a: &ProbeAnalysis, prov: &ProbeProvenance, outcome: &ProbeOutcome) -> String {
    let (stream, layer) = &a.recommended;
    let mut s = String::new();
    let _ = writeln!(s, "# Probe report\n");
    let _ = writeln!(s, "Model: `{}`  \nHarmful prompts: {} ({}), harmless: {} ({})  \nPositions: {}; prompt format: {}  \nThroughput: {:.1} prompts/s\n",
        prov.model, prov.harmful.1, prov.harmful.0, prov.harmless.1, prov.harmless.0,
        prov.positions.iter().map(|p| format!("-{p}")).collect::<Vec<_>>().join(", "), prov.format, outcome.prompts_per_second);
    let _ = writeln!(s, "**Recommended: layer {layer}, stream `{stream}`** (rule: {}, candidates {}–{}). \
        Its direction is `{stream}.{layer}` in `directions.safetensors`; `scalpel ablate MODEL --directions directions.safetensors --out DIR` uses it by default.\n",
        a.rule.name(), a.candidates.first().unwrap_or(&0), a.candidates.last().unwrap_or(&0));
    if !a.skipped.is_empty() {
        let _ = writeln!(s, "Never candidates (their direction is degenerate):\n");
        for k in &a.skipped {
            let _ = writeln!(s, "- `{}.{}`: {}", k.stream, k.layer, k.reason);
        }
        let _ = writeln!(s);
    }
    if let Some(d) = outcome.directions.iter().find(|d| d.name == format!("{stream}.{layer}")) {
        if d.rows.len() > 1 {
            let _ = writeln!(s, "That entry holds {} orthonormal directions.\n", d.rows.len());
        }
    }
    let _ = writeln!(s, "## The research note's three graphs\n");
    let _ = writeln!(s, "A good extraction layer has, in order of importance: low mean variance, low max variance, and a low cosine between the two sets' means (they separate).\n");
    for (stem, what) in [
        ("cosine", "Cosine similarity of the harmful and harmless means per layer."),
        ("mean_variance", "Mean per-feature variance of each set (log scale)."),
        ("max_variance", "Max per-feature variance of each set (log scale)."),
    ] {
        let _ = writeln!(s, "{what}\n\n![{stem}]({stem}.png)\n");
    }
    let _ = writeln!(s, "## More\n");
    for (stem, what) in [
        ("signal_to_noise", "Separation of the means relative to their size."),
        ("residual_norm", "Growth of the residual stream norm across layers."),
        ("direction_consecutive_cosine", "How similar each layer's direction is to the previous layer's: long runs near 1 mean one direction serves many layers."),
    ] {
        let _ = writeln!(s, "{what}\n\n![{stem}]({stem}.png)\n");
    }
    let _ = writeln!(
        s,
        "## Rankings (top 5 per rule and stream)\n\n| stream | rule | layers (best first) |\n|---|---|---|"
    );
    for (st, r) in &a.rankings {
        let top: Vec<String> = r.order.iter().take(5).map(|(l, v)| format!("{l} ({v:.3})")).collect();
        let _ = writeln!(s, "| {st} | {} | {} |", r.rule.name(), top.join(", "));
    }
    let _ = writeln!(s, "\n## Metrics at the recommended layer\n");
    if let Some(x) = a.metrics.iter().find(|m| &m.stream == stream && m.layer == *layer) {
        let _ = writeln!(s, "| metric | value |\n|---|---|");
        for (k, v) in [
            ("cos(μ_H, μ_B)", x.cos_means),
            ("mean σ² harmful", x.mean_var_harmful),
            ("mean σ² harmless", x.mean_var_harmless),
            ("max σ² harmful", x.max_var_harmful),
            ("max σ² harmless", x.max_var_harmless),
            ("‖μ_H − μ_B‖", x.diff_norm),
            ("signal to noise", x.signal_to_noise),
        ] {
            let _ = writeln!(s, "| {k} | {v:.4} |");
        }
    }
    let _ = writeln!(s, "\nAll numbers: `metrics.json`, `metrics.csv`.\n");
    s
}

fn save_directions(dir: &Path, outcome: &ProbeOutcome, prov: &ProbeProvenance, files: &mut Vec<String>) -> Result<()> {
    let a = &outcome.analysis;
    let rec = a.recommended.1;
    let meta = BTreeMap::from([
        ("model".to_string(), prov.model.clone()),
        ("recommended_layer".to_string(), rec.to_string()),
        ("recommended_stream".to_string(), a.recommended.0.clone()),
        ("rule".to_string(), a.rule.name().to_string()),
        (
            "harmful_prompts".to_string(),
            format!("{} ({} prompts, sha256 {})", prov.harmful.0, prov.harmful.1, prov.harmful.2),
        ),
        (
            "harmless_prompts".to_string(),
            format!("{} ({} prompts, sha256 {})", prov.harmless.0, prov.harmless.1, prov.harmless.2),
        ),
        ("positions".to_string(), prov.positions.iter().map(|p| format!("-{p}")).collect::<Vec<_>>().join(",")),
        ("prompt_format".to_string(), prov.format.clone()),
    ]);
    DirectionsFile::save(&dir.join("directions.safetensors"), &outcome.directions, &meta)?;
    files.push("directions.safetensors".to_string());
    Ok(())
}

fn save_metrics_json(
    dir: &Path,
    outcome: &ProbeOutcome,
    prov: &ProbeProvenance,
    files: &mut Vec<String>,
) -> Result<()> {
    let a = &outcome.analysis;
    let (m, rec) = (&a.metrics, a.recommended.1);
    let mut json = serde_json::json!({
        "model": prov.model,
        "prompts": {
            "harmful": {"source": prov.harmful.0, "count": prov.harmful.1, "sha256": prov.harmful.2},
            "harmless": {"source": prov.harmless.0, "count": prov.harmless.1, "sha256": prov.harmless.2},
            "format": prov.format,
        },
        "positions_from_end": prov.positions,
        "recommended": {"stream": a.recommended.0, "layer": rec},
        "rule": a.rule,
        "candidates": a.candidates,
        "skipped": a.skipped,
        "prompts_per_second": outcome.prompts_per_second,
        "metrics": m,
        "rankings": a.rankings,
    });
    if let Some(experts) = super::experts::experts_json(outcome) {
        json["experts"] = experts;
    }
    let path = dir.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).map_err(|e| Error::Other(e.to_string()))?)
        .map_err(|e| Error::io(&path, e))?;
    files.push("metrics.json".into());
    Ok(())
}

fn save_metrics_csv(dir: &Path, m: &[LayerMetrics], files: &mut Vec<String>) -> Result<()> {
    let path = dir.join("metrics.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let io = |e: csv::Error| Error::Other(format!("{}: {e}", path.display()));
    w.write_record([
        "layer",
        "stream",
        "cos_means",
        "mean_var_harmful",
        "mean_var_harmless",
        "max_var_harmful",
        "max_var_harmless",
        "diff_norm",
        "signal_to_noise",
        "mean_norm_harmful",
        "mean_norm_harmless",
        "cos_previous_direction",
    ])
    .map_err(io)?;
    for x in m {
        w.write_record([
            x.layer.to_string(),
            x.stream.clone(),
            x.cos_means.to_string(),
            x.mean_var_harmful.to_string(),
            x.mean_var_harmless.to_string(),
            x.max_var_harmful.to_string(),
            x.max_var_harmless.to_string(),
            x.diff_norm.to_string(),
            x.signal_to_noise.to_string(),
            x.mean_norm_harmful.to_string(),
            x.mean_norm_harmless.to_string(),
            x.cos_previous_direction.map_or(String::new(), |c| c.to_string()),
        ])
        .map_err(io)?;
    }
    w.flush().map_err(|e| Error::io(&path, e))?;
    files.push("metrics.csv".into());
    Ok(())
}

fn save_plots(dir: &Path, m: &[LayerMetrics], rec: usize, files: &mut Vec<String>) -> Result<()> {
    let both = |f: fn(&LayerMetrics) -> f64, g: fn(&LayerMetrics) -> f64| {
        let mut s = series(m, "harmful", move |x| Some(f(x)));
        s.extend(series(m, "harmless", move |x| Some(g(x))));
        s
    };
    let charts = [
        (
            "cosine",
            chart(
                "Cosine similarity of the two sets' means",
                "cos(μ_harmful, μ_harmless)",
                false,
                series(m, "", |x| Some(x.cos_means)),
                rec,
            ),
        ),
        (
            "mean_variance",
            chart(
                "Mean of the per-feature variance",
                "mean σ²",
                true,
                both(|x| x.mean_var_harmful, |x| x.mean_var_harmless),
                rec,
            ),
        ),
        (
            "max_variance",
            chart(
                "Max of the per-feature variance",
                "max σ²",
                true,
                both(|x| x.max_var_harmful, |x| x.max_var_harmless),
                rec,
            ),
        ),
        (
            "signal_to_noise",
            chart(
                "‖μ_H − μ_B‖ / max(‖μ_H‖, ‖μ_B‖)",
                "signal to noise",
                false,
                series(m, "", |x| Some(x.signal_to_noise)),
                rec,
            ),
        ),
        (
            "residual_norm",
            chart(
                "Residual stream norm",
                "mean ‖h‖",
                true,
                both(|x| x.mean_norm_harmful, |x| x.mean_norm_harmless),
                rec,
            ),
        ),
        (
            "direction_consecutive_cosine",
            chart(
                "Cosine between consecutive layers' directions",
                "cos(r_l, r_{l−1})",
                false,
                series(m, "", |x| x.cos_previous_direction),
                rec,
            ),
        ),
    ];
    for (stem, c) in &charts {
        files.extend(file_names(save_line_chart(&dir.join(stem), c)?));
    }
    Ok(())
}
