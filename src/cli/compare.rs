//! `scalpel compare`: answers of two models side by side.

use super::common::{answer_tokens, deprecated, on_demand, open_model, ReportsOut};
use super::judge::JudgeArgs;
use super::progress::Bar;
use super::runtime::{InterventionArgs, RunArgs};
use clap::Args as ClapArgs;
use scalpel::eval::{compare, side_by_side, Exchange, VerdictCounts};
use scalpel::progress::{Progress, Unit};
use scalpel::prompts::PromptSet;
use std::path::PathBuf;

/// Generate (greedy) with two models and show the answers side by side: the original on the
/// left (--original), MODEL on the right. Without --original and with an intervention (--ablate
/// FILE, --add, --rotate), the left side is MODEL as it is and the right side MODEL with the
/// intervention: a preview of an edit before it is written.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The model to examine (the edited one): a folder, or a Hugging Face id.
    pub model: String,
    /// Old spelling `compare ORIGINAL EDITED`: the edited model second.
    #[arg(hide = true, conflicts_with = "original")]
    pub edited: Option<String>,
    /// The original (unedited) model, shown on the left.
    #[arg(long, value_name = "MODEL")]
    pub original: Option<String>,
    /// Prompts: a file, builtin:NAME, or hf://...
    #[arg(long, default_value = "builtin:harmful_test")]
    pub prompts: String,
    /// Use at most N prompts.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 8)]
    pub limit: usize,
    /// Tokens per answer.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = answer_tokens::JUDGED)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Also write the comparison into this folder: compare.md (the answers and verdicts) and
    /// compare.json (each prompt's answers and verdicts).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the --out folder if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub intervene: InterventionArgs,
}

/// Run `compare`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (original, examined) = match &args.edited {
        Some(edited) => {
            deprecated("`compare ORIGINAL EDITED`", "`compare EDITED --original ORIGINAL`");
            (Some(args.model.clone()), edited.clone())
        }
        None => (args.original.clone(), args.model.clone()),
    };
    anyhow::ensure!(
        original.is_some() || args.intervene.any(),
        "give --original MODEL, or an intervention (--ablate FILE, --add FILE, --rotate FILE) for the right side"
    );
    let prompts = PromptSet::load(&args.prompts, None)?.shuffled_limited(None, Some(args.limit)).prompts;
    // One model at a time: the left one answers and is dropped before the right one is loaded
    // (without --original, MODEL is loaded again with the intervention).
    let left_name = original.clone().unwrap_or_else(|| examined.clone());
    let right_name = if original.is_some() { examined.clone() } else { format!("{examined} + intervention") };
    let (left_model, right_model) = (open_model(&left_name)?, open_model(&examined)?);
    let inputs = [left_model.root.as_path(), right_model.root.as_path()];
    let reports =
        args.out.as_deref().map(|out| ReportsOut::prepare(out, "compare", &inputs, args.force)).transpose()?;
    let mut left = on_demand(&left_name, left_model, &args.run, None);
    let mut right = on_demand(&right_name, right_model, &args.run, Some(&args.intervene));
    let progress = Bar::with_length("answering", Unit::Items, 2 * prompts.len() as u64);
    let rows = side_by_side(&mut left, &mut right, &prompts, args.max_tokens, 8, &progress)?;
    progress.finish();
    // Both models are dropped by now: a judge model has the memory to itself.
    let judge = args.judge.judge(&args.run)?;
    let verdicts = |side: &dyn Fn(&compare::SideBySide) -> &str| -> anyhow::Result<Vec<scalpel::eval::Verdict>> {
        let exchanges: Vec<Exchange<'_>> =
            rows.iter().map(|r| Exchange { request: &r.prompt, answer: side(r) }).collect();
        Ok(judge.judge(&exchanges)?.into_iter().map(|j| j.verdict).collect())
    };
    let (left_v, right_v) = (verdicts(&|r| &r.left)?, verdicts(&|r| &r.right)?);
    print!("{}", compare::columns(&rows, &left_name, &right_name, 58));
    let mut summary = format!("Verdicts by the `{}` judge, refusal / evasion / compliance:\n", judge.name());
    for (name, v) in [(&left_name, &left_v), (&right_name, &right_v)] {
        let c = VerdictCounts::of(v.iter().copied());
        summary += &format!(
            "- {name}: {} / {} / {} (not compliant {}/{})\n",
            c.refusal,
            c.evasion,
            c.compliance,
            c.not_compliant(),
            c.total()
        );
    }
    for (row, (l, r)) in rows.iter().zip(left_v.iter().zip(&right_v)) {
        summary += &format!("  {l} → {r}: {}\n", row.prompt);
    }
    print!("\n{summary}");
    if let Some(reports) = reports {
        let markdown = format!("{}\n{summary}", compare::markdown(&rows, &left_name, &right_name));
        let json = serde_json::json!({
            "left": left_name,
            "right": right_name,
            "judge": judge.name(),
            "rows": rows.iter().zip(left_v.iter().zip(&right_v)).map(|(row, (l, r))| serde_json::json!({
                "prompt": row.prompt,
                "left": row.left,
                "right": row.right,
                "left_verdict": l,
                "right_verdict": r,
            })).collect::<Vec<_>>(),
        });
        let path = reports.write("compare", &markdown, &json)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
