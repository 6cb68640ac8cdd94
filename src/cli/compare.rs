//! `scalpel compare`: answers of two models side by side.

use super::common::open_model;
use super::runtime::{InterventionArgs, RunArgs};
use clap::Args as ClapArgs;
use indicatif::ProgressBar;
use scalpel::eval::{compare, side_by_side, Subject};
use scalpel::model::Interventions;
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
    #[arg(long, default_value_t = 8)]
    pub limit: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 64)]
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
    let left_model = open_model(&args.original)?;
    let (left_decoder, left_encoder) = args.run.load(&left_model)?;
    let none = Interventions::none();
    let left =
        Subject { name: args.original.clone(), decoder: &left_decoder, encoder: &left_encoder, interventions: &none };
    let right_loaded = match &args.edited {
        Some(e) => Some(args.run.load(&open_model(e)?)?),
        None => None,
    };
    let (right_decoder, right_encoder) = match &right_loaded {
        Some((d, e)) => (d, e),
        None => (&left_decoder, &left_encoder),
    };
    let interventions = args.intervene.build(right_decoder)?;
    anyhow::ensure!(
        args.edited.is_some() || !interventions.is_empty(),
        "give an EDITED model, or an intervention (--ablate FILE, --add FILE, --rotate FILE) for the right side"
    );
    let right_name = args.edited.clone().unwrap_or_else(|| format!("{} + intervention", args.original));
    let right = Subject {
        name: right_name.clone(),
        decoder: right_decoder,
        encoder: right_encoder,
        interventions: &interventions,
    };
    let progress = ProgressBar::new(2 * prompts.len() as u64);
    let rows = side_by_side(&left, &right, &prompts, args.max_tokens, 8, &progress)?;
    progress.finish_and_clear();
    print!("{}", compare::columns(&rows, &left.name, &right.name, 58));
    if let Some(path) = &args.out {
        std::fs::write(path, compare::markdown(&rows, &left.name, &right.name))?;
    }
    Ok(())
}
