//! `scalpel eval`: refusal rate, over-refusal and KL divergence on held-out prompts, and
//! optionally the cross-entropy of a text set.

use super::common::{on_demand, open_model};
use super::progress::Bar;
use super::runtime::{InterventionArgs, RunArgs};
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::eval::{SubjectSource, REFUSAL_MARKERS};
use scalpel::pipeline::{eval_step, EvalSets};
use scalpel::progress::{Progress, Unit};
use scalpel::prompts::PromptSet;
use std::path::PathBuf;

/// Measure a model on held-out prompts: how often it refuses harmful requests (refusal rate),
/// how often it refuses harmless ones (over-refusal), and with --baseline how far its next-token
/// distribution moved on harmless prompts (KL(baseline ‖ model) of the first generated token).
/// Answers are greedy; a refusal is an empty answer or one containing a documented marker
/// (`scalpel eval --markers` lists them). Defaults use the built-in test splits, never the
/// prompts that probe trained on.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id.
    #[arg(required_unless_present = "markers")]
    pub model: Option<String>,
    /// The original model, for before/after numbers and KL divergence.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Held-out prompts the original refuses.
    #[arg(long, default_value = "builtin:harmful_test")]
    pub harmful: String,
    /// Held-out everyday prompts.
    #[arg(long, default_value = "builtin:harmless_test")]
    pub harmless: String,
    /// Also measure the cross-entropy (nats/token, and perplexity) of these texts (any prompt-set
    /// file: one text per line of a .txt, a .jsonl field, ...) under the model and the baseline.
    #[arg(long, value_name = "FILE")]
    pub text: Option<String>,
    /// JSON field / CSV column holding the prompt.
    #[arg(long)]
    pub field: Option<String>,
    /// Use at most N prompts of each set.
    #[arg(value_parser = super::common::at_least_one, long)]
    pub limit: Option<usize>,
    /// Tokens generated per answer.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 100)]
    pub max_tokens: usize,
    /// Prompts per generation batch.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 16)]
    pub batch: usize,
    /// Print the whole report (every answer) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as markdown with every answer.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// List the refusal markers and exit.
    #[arg(long)]
    pub markers: bool,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub intervene: InterventionArgs,
}

/// Run `eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.markers {
        println!("An answer is a refusal when it is empty or contains (case-insensitively):");
        for m in REFUSAL_MARKERS {
            println!("  {m}");
        }
        return Ok(());
    }
    let model_name = args.model.clone().expect("required unless --markers");
    let load = |spec: &str| -> anyhow::Result<Vec<String>> {
        Ok(PromptSet::load(spec, args.field.as_deref())?.shuffled_limited(None, args.limit).prompts)
    };
    let sets = EvalSets {
        harmful: load(&args.harmful)?,
        harmless: load(&args.harmless)?,
        texts: args.text.as_deref().map(load).transpose()?,
        samples: Vec::new(),
    };
    let generations = (sets.harmful.len() + sets.harmless.len()) * if args.baseline.is_some() { 2 } else { 1 };
    let progress = Bar::with_length("evaluating", Unit::Items, generations as u64);
    eprintln!(
        "eval {}: {} harmful × {} harmless held-out prompts, greedy, {} tokens{}",
        model_name,
        sets.harmful.len(),
        sets.harmless.len(),
        args.max_tokens,
        args.baseline.as_deref().map(|b| format!(", baseline {b}")).unwrap_or_default()
    );
    // Each model is loaded when its turn comes and dropped after: one model in memory at a time.
    let mut subject = on_demand(&model_name, open_model(&model_name)?, &args.run, Some(&args.intervene));
    let mut baseline = match args.baseline.as_deref() {
        Some(name) => Some(on_demand(name, open_model(name)?, &args.run, None)),
        None => None,
    };
    let (report, _) = eval_step(
        &mut subject,
        baseline.as_mut().map(|b| b as &mut dyn SubjectSource),
        &sets,
        args.max_tokens,
        args.batch,
        &progress,
    )?;
    progress.finish();
    let table = report.markdown(&model_name, args.baseline.as_deref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{table}");
        let refused = report.refusals.refused_prompts();
        if !refused.is_empty() {
            println!("refused harmful prompts:");
            for p in refused {
                println!("  - {p}");
            }
        }
    }
    if let Some(path) = &args.out {
        let mut md = format!("# Evaluation of {model_name}\n\n{table}\n## Answers to held-out harmful prompts\n\n");
        for a in &report.refusals.answers {
            md += &format!(
                "- **{}** {}\n  > {}\n",
                a.prompt,
                if a.refusal.is_some() { "(refused)" } else { "" },
                a.answer.replace('\n', " ")
            );
        }
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
