//! `scalpel search`: choose the edit by its measured outcome (refusals, over-refusals and KL on
//! validation prompts), trial by trial, without writing a checkpoint per trial.

use super::common::open_model;
use super::progress::Bar;
use super::runtime::RunArgs;
use clap::Args as ClapArgs;
use scalpel::progress::{Progress, Unit};
use scalpel::prompts::PromptSet;
use scalpel::search::{search_step, trial_row, AnswerSettings, SearchSettings, Validation, TRIAL_HEADER};
use std::path::PathBuf;

/// Search the edit (direction layer and stream, raw or projected direction, per-kind strength
/// profiles over layers, embedding, norm preservation) that removes refusals at the smallest
/// KL divergence, measured on validation prompts disjoint from probe's and eval's. Each trial
/// edits the weights in memory exactly as `ablate` would write them. Trials go to
/// DIR/trials.jsonl as they finish (a stopped search resumes); DIR/report.md shows the Pareto
/// front. Write the chosen trial with `scalpel ablate MODEL --trial DIR`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id.
    pub model: String,
    /// The probe's directions file (its metrics.json beside it adds the rankings' picks as
    /// starting trials). Give the probe `--projected` to search projected directions too.
    #[arg(long, value_name = "FILE")]
    pub directions: PathBuf,
    /// Output folder (resumed when it holds a search with the same settings).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Harmful validation prompts (not probe's training prompts, not eval's test prompts).
    #[arg(long, default_value = "builtin:harmful_val")]
    pub harmful: String,
    /// Harmless validation prompts.
    #[arg(long, default_value = "builtin:harmless_val")]
    pub harmless: String,
    /// JSON field / CSV column holding the prompt.
    #[arg(long)]
    pub field: Option<String>,
    /// Use at most N prompts of each validation set.
    #[arg(value_parser = super::common::at_least_one, long)]
    pub limit: Option<usize>,
    /// Stage-1 trials in all (short answers, refusal markers).
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = SearchSettings::default().trials)]
    pub trials: usize,
    /// Stage-2 trials: the best stage-1 trials answered again at full length and judged; the
    /// choice follows their verdicts (0: stage 1 chooses).
    #[arg(long, default_value_t = SearchSettings::default().finalists)]
    pub finalists: usize,
    /// New tokens per stage-2 answer at most (an answer stops at the end of its turn).
    #[arg(long, default_value_t = super::common::answer_tokens::JUDGED)]
    pub final_max_tokens: usize,
    /// Harmful prompts per stage-1 chunk; pruning is decided after each.
    #[arg(long, default_value_t = SearchSettings::default().chunk)]
    pub chunk: usize,
    /// Measure every trial in full (no pruning).
    #[arg(long)]
    pub no_prune: bool,
    /// The judge of stage 2's full-length answers.
    #[command(flatten)]
    pub judge: super::judge::JudgeArgs,
    /// Trials before the TPE sampler takes over (starting trials, then random ones).
    #[arg(long, default_value_t = SearchSettings::default().startup)]
    pub startup: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Refusal rate the chosen trial must reach (its KL is the smallest among those that do).
    #[arg(value_parser = super::common::rate, long, default_value_t = SearchSettings::default().target_refusal_rate)]
    pub target: f64,
    /// The largest mean first-token KL on the harmless validation prompts a chosen trial may
    /// have (`none`: no cap); trials above it are chosen only when no trial keeps it.
    #[arg(value_parser = super::common::kl_cap, long, default_value_t = super::common::KlCap(SearchSettings::default().max_kl))]
    pub max_kl: super::common::KlCap,
    /// New tokens per validation answer (a row stops early once a refusal marker appears).
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = super::common::answer_tokens::SHORT)]
    pub max_tokens: usize,
    /// Prompts per generation batch.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = SearchSettings::default().answers.batch)]
    pub batch: usize,
    /// Harmless prompts answered (the first ones; over-refusals and loops are counted on
    /// them); the KL divergence uses every harmless prompt.
    #[arg(long, default_value_t = SearchSettings::default().answers.answered_harmless)]
    pub answered_harmless: usize,
    /// The choices of experts searched on a mixture-of-experts model, comma separated: `all`
    /// (every expert), `none` (attention only in sparse layers), `share:T` (experts whose share
    /// of the layer's write along the trial's direction exceeds T). The first is the starting
    /// trials'.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "all")]
    pub experts: Vec<scalpel::surgery::ExpertChoice>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl Args {
    /// The search settings these flags describe.
    pub fn settings(&self) -> SearchSettings {
        SearchSettings {
            trials: self.trials,
            startup: self.startup,
            seed: self.seed,
            target_refusal_rate: self.target,
            max_kl: self.max_kl.0,
            answers: AnswerSettings {
                max_tokens: self.max_tokens,
                batch: self.batch,
                answered_harmless: self.answered_harmless,
            },
            finalists: self.finalists,
            final_max_tokens: self.final_max_tokens,
            chunk: self.chunk,
            prune: !self.no_prune,
            experts: self.experts.clone(),
            ..SearchSettings::default()
        }
    }
}

/// Run `search`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let load = |spec: &str| -> anyhow::Result<Vec<String>> {
        Ok(PromptSet::load(spec, args.field.as_deref())?.shuffled_limited(None, args.limit).prompts)
    };
    let validation = Validation { harmful: load(&args.harmful)?, harmless: load(&args.harmless)? };
    let model = open_model(&args.model)?;
    let (decoder, encoder) = args.run.load(&model)?;
    let bar = Bar::new("search", Unit::Items);
    let settings = args.settings();
    let judge = args.judge.judge(&args.run)?;
    let outcome = search_step(
        &decoder,
        &model,
        &encoder,
        &args.directions,
        &validation,
        &settings,
        judge.as_ref(),
        &args.out,
        &bar,
    )?;
    bar.finish();
    let b = &outcome.baseline;
    eprintln!(
        "original: {}/{} refusals, {}/{} over-refusals on the validation prompts",
        b.refusals, b.harmful, b.over_refusals, b.harmless
    );
    println!("{TRIAL_HEADER}\n{}", trial_row(&outcome.trials[outcome.chosen]));
    if let Some(s2) = &outcome.stage2 {
        eprintln!(
            "stage 2: {} finalists judged by {}; stage 1 alone would have chosen trial {}",
            s2.finals.len(),
            s2.original.judge,
            outcome.stage1_chosen
        );
    }
    eprintln!(
        "chosen trial {} of {}; report: {}; write it with: scalpel ablate {} --trial {}",
        outcome.chosen,
        outcome.trials.len(),
        args.out.join("report.md").display(),
        args.model,
        args.out.display()
    );
    Ok(())
}
