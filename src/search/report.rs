//! The search's report: the Pareto front of refusals against KL as a table and a plot, the
//! chosen trial and how to write it.

use super::objective::Scores;
use super::pareto::front;
use super::run::{point, SearchOutcome};
use super::store::TrialRecord;
use crate::plot::{save_line_chart, LineChart, Series};
use crate::{Error, Result};
use std::fmt::Write;
use std::path::Path;

/// The chosen trial's file in a search folder.
pub const CHOSEN_FILE: &str = "chosen.json";

/// Write `report.md`, `pareto.png`/`.svg` and `chosen.json` into `out`.
pub fn write_search_report(out: &Path, outcome: &SearchOutcome, target_rate: f64) -> Result<()> {
    let points: Vec<_> = outcome.trials.iter().map(|t| point(&t.scores, &outcome.baseline)).collect();
    let on_front = front(&points);
    let chart = LineChart {
        title: "search: refusals vs KL (each dot a trial)".into(),
        x_label: "mean first-token KL(original ‖ edited), harmless validation prompts".into(),
        y_label: "refusals on harmful validation prompts".into(),
        log_y: false,
        series: vec![
            scatter("trial", outcome.trials.iter().filter(|t| t.scores.kl_mean.is_finite())),
            Series {
                name: "Pareto front".into(),
                points: on_front.iter().map(|&i| xy(&outcome.trials[i].scores)).collect(),
                points_only: false,
            },
            scatter("chosen", std::iter::once(&outcome.trials[outcome.chosen])),
        ],
        marker: None,
    };
    save_line_chart(&out.join("pareto"), &chart)?;
    let chosen = &outcome.trials[outcome.chosen];
    let json = serde_json::to_string_pretty(chosen).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(out.join(CHOSEN_FILE), json).map_err(|e| Error::io(out.join(CHOSEN_FILE), e))?;
    let text = markdown(outcome, &on_front, target_rate);
    std::fs::write(out.join("report.md"), text).map_err(|e| Error::io(out.join("report.md"), e))
}

fn xy(s: &Scores) -> (f64, f64) {
    (s.kl_mean, s.refusals as f64)
}

fn scatter<'a>(name: &str, trials: impl Iterator<Item = &'a TrialRecord>) -> Series {
    Series { name: name.into(), points: trials.map(|t| xy(&t.scores)).collect(), points_only: true }
}

/// One table row of a trial.
pub fn trial_row(t: &TrialRecord) -> String {
    let s = &t.scores;
    let p = &t.params;
    let kernel = |k: &crate::surgery::WeightKernel| {
        format!("{:.2}@{:.1}→{:.2}±{:.1}", k.max_weight, k.peak, k.min_weight, k.width)
    };
    format!(
        "| {} | {}/{} | {}/{} | {} | {:.4} | {:.4} | {} {:.2}{} | {} | {} | {} | {} | {:.0} |",
        t.number,
        s.refusals,
        s.harmful,
        s.over_refusals,
        s.harmless,
        s.loops,
        s.kl_mean,
        s.kl_max,
        p.stream,
        p.direction_layer,
        if p.projected { " (projected)" } else { "" },
        kernel(&p.attn),
        kernel(&p.mlp),
        if p.embed { "yes" } else { "no" },
        if p.norm_preserve { "yes" } else { "no" },
        s.seconds
    )
}

/// The table header matching [`trial_row`].
pub const TRIAL_HEADER: &str = "| trial | refusals | over-refusals | loops | KL mean | KL max | direction | attn profile | mlp profile | embed | norm-preserve | s |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

fn markdown(outcome: &SearchOutcome, on_front: &[usize], target_rate: f64) -> String {
    let b = &outcome.baseline;
    let chosen = &outcome.trials[outcome.chosen];
    let seconds: f64 = outcome.trials.iter().map(|t| t.scores.seconds).sum();
    let mut md = String::from("# Search\n\n");
    let _ = writeln!(
        md,
        "{} trials in {:.1} min ({:.1} s per trial). The original model refuses {}/{} harmful and {}/{} harmless validation prompts.\n",
        outcome.trials.len(),
        seconds / 60.0,
        seconds / outcome.trials.len().max(1) as f64,
        b.refusals,
        b.harmful,
        b.over_refusals,
        b.harmless
    );
    let _ = writeln!(
        md,
        "**Chosen: trial {}** (rule: smallest KL among trials whose refusal rate is at most {:.0}% with 80 % confidence — the Wilson upper bound over the validation prompts, a margin for the luck of the trial picked — and no more over-refusals than the original; failing that, at most that rate as measured). Write it with `scalpel ablate MODEL --trial DIR:{}`.\n",
        chosen.number,
        100.0 * target_rate,
        chosen.number
    );
    md += "Profiles read `peak weight@peak layer→weight at the edge±width in layers`; a refusal is a marker, an empty answer or a looping one.\n\n";
    md += "![Pareto front](pareto.png)\n\n## Pareto front\n\n";
    md += TRIAL_HEADER;
    md.push('\n');
    for &i in on_front {
        md += &trial_row(&outcome.trials[i]);
        md.push('\n');
    }
    md += "\n## Chosen trial's answers (validation prompts)\n\n";
    for a in chosen.answers.iter().take(12) {
        let _ = writeln!(
            md,
            "- **{}** {} → {}",
            if a.refused { "refused" } else { "answered" },
            a.prompt,
            a.answer.replace('\n', " ")
        );
    }
    md += "\n## Every trial\n\n";
    md += TRIAL_HEADER;
    md.push('\n');
    for t in &outcome.trials {
        md += &trial_row(t);
        let _ = write!(md, " {}", t.origin);
        md.push('\n');
    }
    md
}
