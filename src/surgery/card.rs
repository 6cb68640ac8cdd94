//! The model card (`README.md`) written into every edited model folder.

use crate::surgery::{DirectionChoice, SurgeryRecord, VerifyReport};
use std::fmt::Write;

/// Render the model card: what was edited and how, the read-back verification, any extra
/// sections (evaluation tables), how to reproduce it, and the original model card below.
pub fn model_card(
    record: &SurgeryRecord,
    verification: Option<&VerifyReport>,
    extra_sections: &[(String, String)],
    original_card: Option<&str>,
) -> String {
    let mut s = String::new();
    // Names, never paths: a card is published (the record keeps paths where asked for).
    let name_of = |recorded: Option<&crate::checkpoint::InputRecord>, text: &str| {
        recorded.map(|r| r.name.clone()).unwrap_or_else(|| {
            std::path::Path::new(text)
                .file_name()
                .map_or_else(|| text.to_string(), |n| n.to_string_lossy().into_owned())
        })
    };
    let source_name = name_of(record.source.as_ref(), &record.source_model);
    let directions_name = name_of(record.directions.as_ref(), &record.directions_file);
    let _ = writeln!(s, "---\ntags:\n- scalpel\n- refusal-direction\n- weight-orthogonalization\n---\n");
    let _ = writeln!(s, "# {source_name}, edited with scalpel\n");
    let o = &record.options;
    let direction = match &o.direction {
        DirectionChoice::Fixed { name } => format!("the direction `{name}`"),
        DirectionChoice::PerLayer { stream } => format!("each layer's own `{stream}` direction"),
    };
    let targets: Vec<&str> = o.targets.iter().map(|t| t.name()).collect();
    let _ = writeln!(
        s,
        "This model is `{}` with {direction} (from `{}`) projected out of the matrices that write into \
         the residual stream ({}), so that the edited layers can no longer write along it. \
         Nothing else was changed: every other tensor is byte-identical to the original.\n",
        source_name,
        directions_name,
        targets.join(", ")
    );
    let _ = writeln!(s, "## Edit\n\n| setting | value |\n|---|---|");
    let layers = if o.layers.len() > 12 {
        format!("{} layers: {}…{}", o.layers.len(), o.layers[0], o.layers[o.layers.len() - 1])
    } else {
        o.layers.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",")
    };
    for (k, v) in [
        ("layers", layers),
        ("targets", targets.join(", ")),
        ("strength λ", o.strength.to_string()),
        ("norm preservation", o.norm_preserve.to_string()),
        ("output biases edited", o.biases.to_string()),
        ("tied head edited with the embedding", record.edits_tied_head.to_string()),
        ("head untied", (o.untie && record.edits_tied_head).to_string()),
        ("tensors edited", record.edits.len().to_string()),
        ("scalpel version", record.scalpel_version.clone()),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    if o.experts != super::ExpertChoice::All {
        let _ = writeln!(s, "| experts of sparse layers edited | {} |", o.experts);
    }
    for (k, input) in [("source model", &record.source), ("directions file", &record.directions)] {
        if let Some(i) = input {
            let _ = writeln!(s, "| {k} | `{}`, {} bytes, hash `{}` |", i.name, i.bytes, i.hash);
        }
    }
    if let Some(profile) = &o.profile {
        let kernel = |k: &crate::surgery::TentProfile| {
            format!(
                "peak {:.2} at layer {:.1}, {:.2} at ±{:.1} layers, 0 beyond",
                k.max_weight, k.peak, k.min_weight, k.width
            )
        };
        let _ = writeln!(s, "| attention strength profile | {} |", kernel(&profile.attn));
        let _ = writeln!(s, "| MLP strength profile | {} |", kernel(&profile.mlp));
        let _ = writeln!(s, "| embedding strength | {} |", profile.embed);
    }
    if let Some(trial) = &record.search_trial {
        let scores = &trial["scores"];
        let _ = writeln!(
            s,
            "
Chosen by `scalpel search` (trial {}): on the validation prompts it refused {}/{} harmful and {}/{} harmless prompts, mean first-token KL {:.4} against the original.",
            trial["number"], scores["refusals"], scores["harmful"], scores["over_refusals"], scores["harmless"],
            scores["kl_mean"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let hashes: std::collections::BTreeSet<String> =
        record.edits.iter().map(|e| format!("`{}` ({})", e.direction, e.direction_hash)).collect();
    let _ = writeln!(s, "\nDirections used: {}.", hashes.into_iter().collect::<Vec<_>>().join(", "));
    if record.edits.iter().any(|e| e.through_norm.is_some()) {
        let _ = writeln!(
            s,
            "\nThe attention and MLP outputs of this family pass through RMSNorms before the residual add, \
             so those writers were edited against `γ ⊙ r / ‖γ ⊙ r‖` (γ the norm's scale), which makes the \
             norm's output exactly orthogonal to `r`."
        );
    }
    if let Some(v) = verification {
        let failed = v.rows.iter().filter(|r| !r.pass).count();
        let _ = writeln!(
            s,
            "\n## Verification\n\nRead back from the saved files: for every edited tensor `W'`, `‖Qᵀ W'‖ / ‖W'‖` \
             (what it still writes along the direction). Worst: **{:.2e}** over {} tensors; {} above the dtype's \
             rounding level ({:.1e}).",
            v.worst(),
            v.rows.len(),
            failed,
            v.rows.first().map_or(0.0, |r| r.threshold)
        );
    }
    for (title, body) in extra_sections {
        let _ = writeln!(s, "\n## {title}\n\n{body}");
    }
    if !record.command.is_empty() {
        let _ = writeln!(s, "\n## Reproduce\n\n```sh\n{}\n```", record.command);
    }
    if let Some(card) = original_card.filter(|c| !c.trim().is_empty()) {
        let _ = writeln!(s, "\n## Original model card\n\n{}", strip_front_matter(card));
    }
    s
}

fn strip_front_matter(card: &str) -> &str {
    card.strip_prefix("---\n").and_then(|rest| rest.split_once("\n---\n")).map_or(card, |(_, body)| body)
}
