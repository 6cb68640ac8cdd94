//! SVD analysis outputs: svd.json, heatmaps, alignment and consensus plots, report.md.

use super::SvdAnalysis;
use crate::arch::WriterKind;
use crate::plot::{file_names, save_heatmap, save_line_chart, Heatmap, LineChart, Series};
use crate::{Error, Result};
use std::fmt::Write;
use std::path::Path;

fn indices(a: &SvdAnalysis, kind: WriterKind) -> Vec<usize> {
    (0..a.writers.len()).filter(|&i| a.writers[i].kind == kind).collect()
}

fn mean_off_diagonal(a: &SvdAnalysis, rows: &[usize], cols: &[usize]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for &i in rows {
        for &j in cols {
            if i != j {
                sum += a.overlap[i][j];
                n += 1;
            }
        }
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Directions named in the report besides the recommended one; the rest are in svd.json and
/// the `alignment_all` heatmap.
pub const DIRECTIONS_SHOWN: usize = 3;

fn top_writers(a: &SvdAnalysis, per_writer: &[f64]) -> String {
    let mut order: Vec<usize> = (0..a.writers.len()).collect();
    order.sort_by(|&x, &y| per_writer[y].total_cmp(&per_writer[x]));
    let top: Vec<String> = order
        .iter()
        .take(5)
        .map(|&i| {
            let w = &a.writers[i];
            format!("{} {} ({:.2})", w.kind.name(), w.layer.map_or("-".into(), |l| l.to_string()), per_writer[i])
        })
        .collect();
    top.join(", ")
}

/// The recommended direction, then the few most writable others, then a count of the rest.
fn alignment_summary(md: &mut String, a: &SvdAnalysis) {
    let random = a.random_baseline.sqrt();
    let mut rest: Vec<&super::DirectionAlignment> = a.alignments.iter().collect();
    if let Some(rec) = a.recommended.as_ref().and_then(|n| a.alignments.iter().find(|d| &d.direction == n)) {
        let _ = writeln!(
            md,
            "- The recommended direction `{}` is most writable by: {} (random ≈ {random:.2}).",
            rec.direction,
            top_writers(a, &rec.per_writer)
        );
        rest.retain(|d| d.direction != rec.direction);
    }
    let peak = |d: &super::DirectionAlignment| d.per_writer.iter().copied().fold(0.0, f64::max);
    rest.sort_by(|x, y| peak(y).total_cmp(&peak(x)));
    for d in rest.iter().take(DIRECTIONS_SHOWN) {
        let _ = writeln!(md, "- `{}` (among the most writable): {}.", d.direction, top_writers(a, &d.per_writer));
    }
    if rest.len() > DIRECTIONS_SHOWN {
        let _ = writeln!(
            md,
            "- {} more directions: every writer's alignment with each is in `svd.json` (`alignments`) and `alignment_all.png`.",
            rest.len() - DIRECTIONS_SHOWN
        );
    }
}

/// Write every output into `dir`; returns the file names.
pub fn write_svd_outputs(dir: &Path, a: &SvdAnalysis, model: &str) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let path = dir.join("svd.json");
    std::fs::write(&path, serde_json::to_string_pretty(a).map_err(|e| Error::Other(e.to_string()))?)
        .map_err(|e| Error::io(&path, e))?;
    files.push("svd.json".to_string());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Weight-direction analysis\n\nModel: `{model}`; hidden {}, top-k {} per writer, {} writers.\n",
        a.hidden,
        a.top_k,
        a.writers.len()
    );
    let _ = writeln!(md, "The overlap of two writers is the mean squared cosine of the principal angles between their top-{} writing subspaces: 1 means they write into the same subspace; two random subspaces score about k/hidden = **{:.3}**.\n", a.top_k, a.random_baseline);
    summary(&mut md, a);
    let _ = writeln!(md);
    heatmaps(dir, a, &mut md, &mut files)?;
    charts(dir, a, &mut md, &mut files)?;
    super::write_share_section(dir, &a.expert_write_shares, a.hidden, &mut md, &mut files)?;
    let _ = writeln!(md, "## Writers\n\n| tensor | top singular values | energy in top {} |\n|---|---|---|", a.top_k);
    for w in &a.writers {
        let sv: Vec<String> = w.singular_values.iter().take(4).map(|s| format!("{s:.2}")).collect();
        let _ = writeln!(md, "| {} | {} … | {:.1}% |", w.tensor, sv.join(", "), 100.0 * w.energy);
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))?;
    files.push("report.md".into());
    Ok(files)
}

/// The findings in words: overlaps, the most shared pair and direction, the alignments.
fn summary(md: &mut String, a: &SvdAnalysis) {
    let attn = indices(a, WriterKind::Attn);
    let mlp = indices(a, WriterKind::Mlp);
    let _ = writeln!(md, "## What the numbers say\n");
    for (name, rows, cols) in
        [("attention writers", &attn, &attn), ("MLP writers", &mlp, &mlp), ("attention vs MLP writers", &attn, &mlp)]
    {
        let m = mean_off_diagonal(a, rows, cols);
        if m.is_finite() {
            let _ =
                writeln!(md, "- {name}: mean overlap **{m:.3}**, {:.1}× the random baseline.", m / a.random_baseline);
        }
    }
    // The most similar pair of distinct writers.
    let mut best = (0, 0, -1.0);
    for i in 0..a.writers.len() {
        for j in i + 1..a.writers.len() {
            if a.overlap[i][j] > best.2 {
                best = (i, j, a.overlap[i][j]);
            }
        }
    }
    if best.2 >= 0.0 {
        let _ = writeln!(
            md,
            "- Most shared pair: `{}` and `{}` ({:.3}).",
            a.writers[best.0].tensor, a.writers[best.1].tensor, best.2
        );
    }
    if let Some(c) = a.consensus.first() {
        let strong = c.usage.iter().filter(|u| **u > 0.5).count();
        let users = if strong == 0 {
            "none".to_string()
        } else {
            format!("{strong} of {}; the strongest: {}", a.writers.len(), top_writers(a, &c.usage))
        };
        let _ = writeln!(md, "- The most shared direction has strength {:.2} (√{} = {:.2} would mean every writer contains it); writers that can write it strongly (‖Uᵀv‖ > 0.5): {users}.",
            c.strength, a.writers.len(), (a.writers.len() as f64).sqrt());
    }
    alignment_summary(md, a);
}

fn heatmaps(dir: &Path, a: &SvdAnalysis, md: &mut String, files: &mut Vec<String>) -> Result<()> {
    let attn = indices(a, WriterKind::Attn);
    let mlp = indices(a, WriterKind::Mlp);
    for (stem, title, rows, cols, label) in [
        ("overlap_attn", "Overlap of attention writers", &attn, &attn, ("attn layer", "attn layer")),
        ("overlap_mlp", "Overlap of MLP writers", &mlp, &mlp, ("mlp layer", "mlp layer")),
        ("overlap_attn_mlp", "Overlap: attention (rows) vs MLP (columns)", &attn, &mlp, ("attn layer", "mlp layer")),
    ] {
        if rows.is_empty() || cols.is_empty() {
            continue;
        }
        let values: Vec<Vec<f64>> = rows.iter().map(|&i| cols.iter().map(|&j| a.overlap[i][j]).collect()).collect();
        let hi = values.iter().flatten().copied().filter(|v| *v < 0.999).fold(a.random_baseline * 2.0, f64::max);
        let written = save_heatmap(
            &dir.join(stem),
            &Heatmap {
                title: title.into(),
                values,
                row_label: label.0.into(),
                col_label: label.1.into(),
                range: (0.0, hi.min(1.0)),
            },
        )?;
        files.extend(file_names(written));
        let _ = writeln!(md, "![{stem}]({stem}.png)\n");
    }
    Ok(())
}

fn charts(dir: &Path, a: &SvdAnalysis, md: &mut String, files: &mut Vec<String>) -> Result<()> {
    let by_kind = |values: &[f64], prefix: &str| -> Vec<Series> {
        [WriterKind::Attn, WriterKind::Mlp]
            .iter()
            .map(|&k| Series {
                name: format!("{prefix}{}", k.name()),
                points: a
                    .writers
                    .iter()
                    .zip(values)
                    .filter(|(w, _)| w.kind == k)
                    .map(|(w, v)| (w.layer.unwrap_or(0) as f64, *v))
                    .collect(),
                points_only: false,
            })
            .collect()
    };
    if !a.alignments.is_empty() {
        let series: Vec<Series> =
            a.alignments.iter().take(4).flat_map(|d| by_kind(&d.per_writer, &format!("{} ", d.direction))).collect();
        let written = save_line_chart(
            &dir.join("alignment"),
            &LineChart {
                title: "How strongly each writer can write along the direction".into(),
                x_label: "layer".into(),
                y_label: "‖Uᵀ r‖".into(),
                log_y: false,
                series,
                marker: None,
            },
        )?;
        files.extend(file_names(written));
        let _ = writeln!(md, "![alignment](alignment.png)\n");
    }
    if a.alignments.len() > DIRECTIONS_SHOWN + 1 {
        let values: Vec<Vec<f64>> = a.alignments.iter().map(|d| d.per_writer.clone()).collect();
        let written = save_heatmap(
            &dir.join("alignment_all"),
            &Heatmap {
                title: "‖Uᵀ r‖ of every direction (rows, file order) and writer (columns)".into(),
                values,
                row_label: "direction".into(),
                col_label: "writer".into(),
                range: (0.0, 1.0),
            },
        )?;
        files.extend(file_names(written));
    }
    if let Some(c) = a.consensus.first() {
        let written = save_line_chart(
            &dir.join("consensus"),
            &LineChart {
                title: "Use of the most shared direction per writer".into(),
                x_label: "layer".into(),
                y_label: "‖Uᵀ v‖".into(),
                log_y: false,
                series: by_kind(&c.usage, ""),
                marker: None,
            },
        )?;
        files.extend(file_names(written));
        let _ = writeln!(md, "![consensus](consensus.png)\n");
    }
    Ok(())
}
