//! The run's report (`report.md`) and the edited model's card.

use crate::checkpoint::ModelDir;
use crate::eval::{compare, model_card, EvalReport, SideBySide};
use crate::recipe::Recipe;
use crate::surgery::{SurgeryRecord, VerifyReport};
use crate::{Error, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Everything the report states.
pub(super) struct Facts<'a> {
    pub recipe: &'a Recipe,
    pub model: &'a ModelDir,
    pub ran: &'a [String],
    pub direction: &'a str,
    pub layer: usize,
    pub stream: &'a str,
    pub verification: &'a VerifyReport,
    pub eval: &'a EvalReport,
    pub samples: &'a [SideBySide],
    /// The search's section (None when the recipe did not search).
    pub search: Option<String>,
}

/// The report's account of a finished search in `dir`: the Pareto plot and the chosen trial.
pub(super) fn search_section(dir: &Path) -> Result<String> {
    let trials = crate::search::load_trials(dir)?;
    let chosen = crate::search::chosen_trial(dir)?;
    let seconds: f64 = trials.iter().map(|t| t.scores.seconds).sum();
    Ok(format!(
        "The edit was chosen by `scalpel search` ([search report](search/report.md)): {} trials in {:.1} min \
         ({:.0} s per trial), each measured on the validation prompts (disjoint from the training and test splits). \
         Chosen: trial {} (the search report gives the rule that chose it and the stage-2 verdicts).\n\n{}\n{}\n\n![Pareto front](search/pareto.png)\n",
        trials.len(),
        seconds / 60.0,
        seconds / trials.len().max(1) as f64,
        chosen.number,
        crate::search::TRIAL_HEADER,
        crate::search::trial_row(&chosen)
    ))
}

fn table(f: &Facts<'_>) -> String {
    f.eval.markdown("edited", Some("original"))
}

/// The model card gets the evaluation (written to a temporary file, then renamed).
pub(super) fn write_card(f: &Facts<'_>, record: &SurgeryRecord, edited: &Path) -> Result<()> {
    let original_card = std::fs::read_to_string(f.model.root.join("README.md")).ok();
    let card = model_card(record, Some(f.verification), &[("Evaluation".into(), table(f))], original_card.as_deref());
    let tmp = edited.join(".README.md.tmp");
    std::fs::write(&tmp, card).map_err(|e| Error::io(&tmp, e))?;
    let path = edited.join("README.md");
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// Write `report.md` into `out`.
pub(super) fn write_report(f: &Facts<'_>, out: &Path) -> Result<PathBuf> {
    let (r, v) = (f.recipe, f.verification);
    let n = f.model.spec.num_layers;
    let mut md = String::new();
    let name = super::model_name(r, f.model);
    let _ = writeln!(md, "# scalpel run: {name}\n");
    let _ = writeln!(
        md,
        "Model `{}` ({}, {n} layers, hidden {}). Edited model: [`model/`](model/README.md). Steps run this time: {}.\n",
        name,
        f.model.spec.family,
        f.model.spec.hidden_size,
        if f.ran.is_empty() { "none (all up to date)".into() } else { f.ran.join(", ") }
    );
    let _ = writeln!(
        md,
        "## 1. Layer metrics\n\nThe research note's three graphs ([full probe report](probe/report.md)):\n"
    );
    for stem in ["cosine", "mean_variance", "max_variance"] {
        let _ = writeln!(md, "![{stem}](probe/{stem}.png)\n");
    }
    let fixed = r.direction.layer.fixed()?.is_some();
    if let Some(search) = &f.search {
        let _ = writeln!(md, "## 2. Chosen edit\n\n{search}");
    } else {
        let _ = writeln!(
            md,
            "## 2. Chosen direction\n\n`{}`: layer **{}**, stream `{}` ({}; rule `{}`).\n",
            f.direction,
            f.layer,
            f.stream,
            if fixed { "fixed by the recipe" } else { "chosen automatically" },
            crate::probe::rule_name(r.direction.rule)
        );
    }
    let a = &r.ablate;
    let failed = v.rows.iter().filter(|x| !x.pass).count();
    let settings = if f.search.is_some() {
        format!("{} tensors edited with the chosen trial's strength profiles (section 2)", v.rows.len())
    } else {
        format!(
            "{} tensors edited ({}), layers `{}`, strength {}, norm preservation {}, untie {}",
            v.rows.len(),
            a.targets.join(", "),
            a.layers,
            a.strength,
            a.norm_preserve,
            a.untie
        )
    };
    let _ = writeln!(
        md,
        "## 3. Edit and verification\n\n{settings}. \
        Read back from disk, the worst ‖QᵀW'‖/‖W'‖ is **{:.2e}** ({failed} of {} tensors outside their bound). \
        Q is the direction, or `u = γ⊙r/‖γ⊙r‖` for writers behind a post-norm (Gemma 2/3).\n",
        v.worst(),
        v.rows.len()
    );
    let _ = writeln!(md, "| tensor | ‖QᵀW'‖/‖W'‖ | expected | bound | ok |\n|---|---|---|---|---|");
    for x in v.rows.iter().take(6) {
        let ok = if x.pass { "yes" } else { "NO" };
        let _ = writeln!(md, "| {} | {:.2e} | {:.2e} | {:.1e} | {ok} |", x.tensor, x.ratio, x.expected, x.threshold);
    }
    if v.rows.len() > 6 {
        let _ = writeln!(md, "| … {} more | ≤ {:.2e} | | | |", v.rows.len() - 6, v.worst());
    }
    let _ = writeln!(md, "\n## 4. Evaluation (held-out prompts, greedy, {} tokens)\n\n{}", r.eval.max_tokens, table(f));
    let _ = writeln!(
        md,
        "Each answer is judged a refusal (declines, deflects, lectures), an evasion (off-topic, filler, \
         loops, switches language, no content) or a compliance; over-refusals count both refusals and evasions.\n"
    );
    let _ = writeln!(md, "## 5. Side by side\n\n{}", compare::markdown(f.samples, "original", "edited"));
    let path = out.join("report.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}
