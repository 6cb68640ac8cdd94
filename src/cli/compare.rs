//! `scalpel compare`: answers of two models side by side.

use super::common::{on_demand, open_model};
use super::progress::Bar;
use super::runtime::{InterventionArgs, RunArgs};
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::eval::{compare, side_by_side};
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
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 64)]
    pub max_tokens: usize,
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
    print!("{}", compare::columns(&rows, &args.original, &right_name, 58));
    if let Some(path) = &args.out {
        std::fs::write(path, compare::markdown(&rows, &args.original, &right_name))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
