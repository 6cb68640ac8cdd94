//! The search's report: the Pareto front of refusals against KL as a table and a plot, the
//! chosen trial and how to write it.

use super::objective::Scores;
use super::pareto::front;
use super::run::{point, Goal, SearchOutcome};
use super::store::TrialRecord;
use crate::plot::{save_line_chart, LineChart, Series};
use crate::{Error, Result};
use std::fmt::Write;
use std::path::Path;

/// The chosen trial's file in a search folder.
pub const CHOSEN_FILE: &str = "chosen.json";

/// Write `report.md`, `pareto.png`/`.svg` and `chosen.json` into `out`.
pub fn write_search_report(out: &Path, outcome: &SearchOutcome, goal: &Goal) -> Result<()> {
    // Pruned trials' scores are partial: the front is made of complete trials.
    let complete: Vec<usize> = (0..outcome.trials.len()).filter(|&i| outcome.trials[i].complete()).collect();
    let points: Vec<_> = complete.iter().map(|&i| point(&outcome.trials[i].scores, &outcome.baseline)).collect();
    let on_front: Vec<usize> = front(&points).into_iter().map(|i| complete[i]).collect();
    let chart = LineChart {
        title: "search: refusals vs KL (each dot a trial)".into(),
        x_label: "mean first-token KL(original ‖ edited), harmless validation prompts".into(),
        y_label: "refusals on harmful validation prompts".into(),
        log_y: false,
        series: vec![
            scatter("trial", outcome.trials.iter().filter(|t| t.complete() && t.scores.kl_mean.is_finite())),
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
    let text = markdown(outcome, &on_front, goal);
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
    let kernel = |k: &crate::surgery::TentProfile| {
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
        match p.experts {
            crate::surgery::ExpertChoice::All => kernel(&p.mlp),
            ref other => format!("{} (experts {other})", kernel(&p.mlp)),
        },
        if p.embed { "yes" } else { "no" },
        if p.norm_preserve { "yes" } else { "no" },
        s.seconds
    )
}

/// The table header matching [`trial_row`].
pub const TRIAL_HEADER: &str = "| trial | refusals | over-refusals | loops | KL mean | KL max | direction | attn profile | mlp profile | embed | norm-preserve | s |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Stage 1's time: seconds in all, pruned trials, their seconds, complete trials' mean
/// seconds, and the seconds pruning saved (each pruned trial counted at the complete trials'
/// mean, less what it took).
pub fn stage1_times(trials: &[TrialRecord]) -> (f64, usize, f64, f64, f64) {
    let seconds: f64 = trials.iter().map(|t| t.scores.seconds).sum();
    let pruned: Vec<f64> = trials.iter().filter(|t| !t.complete()).map(|t| t.scores.seconds).collect();
    let complete: Vec<f64> = trials.iter().filter(|t| t.complete()).map(|t| t.scores.seconds).collect();
    let mean_complete = complete.iter().sum::<f64>() / complete.len().max(1) as f64;
    let pruned_seconds: f64 = pruned.iter().sum();
    let saved = (pruned.len() as f64 * mean_complete - pruned_seconds).max(0.0);
    (seconds, pruned.len(), pruned_seconds, mean_complete, saved)
}

fn markdown(outcome: &SearchOutcome, on_front: &[usize], goal: &Goal) -> String {
    let target_rate = goal.refusal_rate;
    let cap = match goal.max_kl {
        Some(cap) if goal.kl_ok(outcome.trials[outcome.chosen].scores.kl_mean) => {
            format!(" Only trials with a mean KL of at most {cap} are chosen.")
        }
        Some(cap) => format!(" **No complete trial kept the KL cap of {cap}**, so the cap was set aside."),
        None => String::new(),
    };
    let b = &outcome.baseline;
    let chosen = &outcome.trials[outcome.chosen];
    let n = outcome.trials.len();
    let (seconds, pruned, pruned_seconds, mean_complete, saved) = stage1_times(&outcome.trials);
    let mut md = String::from("# Search\n\n");
    let _ = writeln!(
        md,
        "**Stage 1**: {n} trials in {:.1} min ({:.1} s per trial; short answers, refusal markers). {pruned} pruned ({:.0} %, {:.1} s each on average; complete trials {:.1} s each): pruning saved about {:.1} min. The original model refuses {}/{} harmful and {}/{} harmless validation prompts.\n",
        seconds / 60.0,
        seconds / n.max(1) as f64,
        100.0 * pruned as f64 / n.max(1) as f64,
        pruned_seconds / pruned.max(1) as f64,
        mean_complete,
        saved / 60.0,
        b.refusals,
        b.harmful,
        b.over_refusals,
        b.harmless
    );
    if let Some(s2) = &outcome.stage2 {
        let seconds: f64 = s2.finals.iter().chain([&s2.original]).map(|f| f.seconds).sum();
        let o = &s2.original;
        let _ = writeln!(
            md,
            "**Stage 2**: the original and {} finalists answered again at up to {} tokens and judged by `{}`, in {:.1} min. Stage 1 alone would have chosen trial {}. The original: harmful {}/{}/{} (refusal/evasion/compliance), harmless {} of {} not compliant.\n",
            s2.finals.len(),
            o.max_tokens,
            o.judge,
            seconds / 60.0,
            outcome.stage1_chosen,
            o.harmful.refusal,
            o.harmful.evasion,
            o.harmful.compliance,
            o.harmless.not_compliant(),
            o.harmless.total()
        );
        md += "| trial | harmful refusal | evasion | compliance | not compliant | harmless not compliant | stage-1 refusals | KL mean | s |\n|---|---|---|---|---|---|---|---|---|\n";
        for f in &s2.finals {
            let Some(t) = f.trial.and_then(|i| outcome.trials.get(i)) else { continue };
            if let Some(asked) = f.stopped_after {
                let _ = writeln!(
                    md,
                    "| {} (stopped after {asked} harmful: cannot be chosen) | {} | {} | {} | {}/{asked} | – | {}/{} | {:.4} | {:.0} |",
                    t.number,
                    f.harmful.refusal,
                    f.harmful.evasion,
                    f.harmful.compliance,
                    f.harmful.not_compliant(),
                    t.scores.refusals,
                    t.scores.harmful,
                    t.scores.kl_mean,
                    f.seconds
                );
                continue;
            }
            let _ = writeln!(
                md,
                "| {}{} | {} | {} | {} | {}/{} | {}/{} | {}/{} | {:.4} | {:.0} |",
                t.number,
                if t.number == outcome.chosen { " (chosen)" } else { "" },
                f.harmful.refusal,
                f.harmful.evasion,
                f.harmful.compliance,
                f.harmful.not_compliant(),
                f.harmful.total(),
                f.harmless.not_compliant(),
                f.harmless.total(),
                t.scores.refusals,
                t.scores.harmful,
                t.scores.kl_mean,
                f.seconds
            );
        }
        md.push('\n');
    }
    if outcome.stage2.is_some() {
        let _ = writeln!(
            md,
            "**Chosen: trial {}** (rule: among the finalists with no more harmless answers refused or evaded than the original's, the smallest KL whose refusal-plus-evasion rate on the harmful prompts is at most {:.0}% with 80 % confidence; failing that, at most that rate as measured; failing that, the fewest refused or evaded; a finalist stops once it cannot be chosen).{cap} Write it with `scalpel ablate MODEL --trial DIR:{}`.\n",
            chosen.number,
            100.0 * target_rate,
            chosen.number
        );
    } else {
        let _ = writeln!(
        md,
        "**Chosen: trial {}** (rule: smallest KL among trials whose refusal rate is at most {:.0}% with 80 % confidence — the Wilson upper bound over the validation prompts, a margin for the luck of the trial picked — and no more over-refusals than the original; failing that, at most that rate as measured).{cap} Write it with `scalpel ablate MODEL --trial DIR:{}`.\n",
        chosen.number,
        100.0 * target_rate,
        chosen.number
    );
    }
    md += "Stage 1 prunes a trial once its refusals already rule it out at the target with that confidence, or once a lower bound on its KL exceeds the best trial's at the target or the KL cap; pruned trials keep partial scores and stay out of the front.\n\n";
    md += "Profiles read `peak weight@peak layer→weight at the edge±width in layers`; a refusal is a marker, an empty answer or a looping one.\n\n";
    md += "![Pareto front](pareto.png)\n\n## Pareto front\n\n";
    md += TRIAL_HEADER;
    md.push('\n');
    for &i in on_front {
        md += &trial_row(&outcome.trials[i]);
        md.push('\n');
    }
    if let Some(f) = outcome.stage2.as_ref().and_then(|s| s.finals.iter().find(|f| f.trial == Some(chosen.number))) {
        md += "\n## Chosen trial's full answers (stage 2)\n\n";
        for a in f.answers.iter().take(12) {
            let _ = writeln!(md, "- **{}** {} → {}", a.verdict, a.prompt, a.answer.replace('\n', " "));
        }
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
        if let Some(p) = &t.pruned {
            // The stage as the trial records spell it (serde's names).
            let stage = match p.stage {
                crate::search::PruneStage::Refusals => "refusals",
                crate::search::PruneStage::Kl => "kl",
            };
            let _ = write!(md, " — pruned ({stage}) after {}/{} harmful prompts", p.harmful_asked, p.harmful_total);
        }
        md.push('\n');
    }
    md
}
