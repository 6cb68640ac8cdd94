//! `scalpel compare`: answers of two models side by side.

use super::common::{on_demand, open_model};
use super::judge::JudgeArgs;
use super::progress::Bar;
use super::runtime::{InterventionArgs, RunArgs};
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::eval::{compare, side_by_side, Exchange, VerdictCounts};
use scalpel::progress::{Progress, Unit};
use scalpel::prompts::PromptSet;
use std::path::PathBuf;

/// Generate (greedy) with two models and show the answers side by side. With one model and an
/// intervention (--ablate FILE, --add, --rotate), the right side is the same model with the
/// intervention: a preview of an edit before it is written.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The original model.
    pub original: String,
    /// The edited model (omit it to compare against ORIGINAL with an intervention).
    pub edited: Option<String>,
    /// Prompts: a file, builtin:NAME, or hf://...
    #[arg(long, default_value = "builtin:harmful_test")]
    pub prompts: String,
    /// Use at most N prompts.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 8)]
    pub limit: usize,
    /// Tokens per answer.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 128)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Also write the comparison as markdown.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub intervene: InterventionArgs,
}

/// Run `compare`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let prompts = PromptSet::load(&args.prompts, None)?.shuffled_limited(None, Some(args.limit)).prompts;
    anyhow::ensure!(
        args.edited.is_some() || args.intervene.any(),
        "give an EDITED model, or an intervention (--ablate FILE, --add FILE, --rotate FILE) for the right side"
    );
    // One model at a time: the left one answers and is dropped before the right one is loaded
    // (without EDITED, the original is loaded again with the intervention).
    let mut left = on_demand(&args.original, open_model(&args.original)?, &args.run, None);
    let right_name = args.edited.clone().unwrap_or_else(|| format!("{} + intervention", args.original));
    let right_model = open_model(args.edited.as_deref().unwrap_or(&args.original))?;
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
    print!("{}", compare::columns(&rows, &args.original, &right_name, 58));
    let mut summary = format!("Verdicts by the `{}` judge, refusal / evasion / compliance:\n", judge.name());
    for (name, v) in [(&args.original, &left_v), (&right_name, &right_v)] {
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
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{}\n{summary}", compare::markdown(&rows, &args.original, &right_name)))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
