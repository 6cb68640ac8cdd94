//! `scalpel eval`: refusal / evasion / compliance, over-refusal and KL divergence on held-out
//! prompts, and optionally the cross-entropy of a text set.

use super::common::{answer_tokens, deprecated, open_model, ReportsOut};
use super::judge::JudgeArgs;
use super::progress::Bar;
use super::runtime::{InterventionArgs, RunArgs};
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::checkpoint::ModelDir;
use scalpel::eval::thinking::{without_thinking, ThinkingMode};
use scalpel::eval::{Loaded, OnDemand, SubjectSource, Verdict, REFUSAL_MARKERS};
use scalpel::model::Interventions;
use scalpel::pipeline::{eval_step, EvalSets};
use scalpel::progress::{Progress, Unit};
use scalpel::prompts::PromptSet;
use std::path::PathBuf;

/// Measure a model on held-out prompts: how its answers to harmful requests divide into
/// refusals, evasions and compliances, how often it fails harmless ones (over-refusal counts
/// refusals and evasions), and with --original how far its next-token distribution moved on
/// harmless prompts (KL(original ‖ model) of the first generated token). Answers are greedy;
/// the judge (--judge) gives the verdicts: `rules` reads the text (markers by where they stand,
/// lectures, loops, language switches; `scalpel eval --markers` lists the markers), and
/// `model:PATH` asks a chat model. Defaults use the built-in test splits, never the prompts
/// that probe trained on.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The model to measure (the edited one): a folder, or a Hugging Face id.
    #[arg(required_unless_present = "markers")]
    pub model: Option<String>,
    /// The original (unedited) model, for before/after numbers and KL divergence.
    #[arg(long, value_name = "MODEL")]
    pub original: Option<String>,
    /// Old spelling of --original.
    #[arg(long, value_name = "MODEL", hide = true, conflicts_with = "original")]
    pub baseline: Option<String>,
    /// Held-out prompts the original refuses.
    #[arg(long, default_value = "builtin:harmful_test")]
    pub harmful: String,
    /// Held-out everyday prompts.
    #[arg(long, default_value = "builtin:harmless_test")]
    pub harmless: String,
    /// Also measure the cross-entropy (nats/token, and perplexity) of these texts (any prompt-set
    /// file: one text per line of a .txt, a .jsonl field, ...) under the model and the original.
    #[arg(long, value_name = "FILE")]
    pub text: Option<String>,
    /// JSON field / CSV column holding the prompt.
    #[arg(long)]
    pub field: Option<String>,
    /// Use at most N prompts of each set.
    #[arg(value_parser = super::common::at_least_one, long)]
    pub limit: Option<usize>,
    /// Tokens generated per answer (it stops earlier at the end of its turn).
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = answer_tokens::JUDGED)]
    pub max_tokens: usize,
    /// A thinking model (`<think>…</think>`): `strip` judges the answer after the block (with
    /// room for the block first), `off` renders prompts with `enable_thinking = false`.
    #[arg(long, default_value = "strip")]
    pub thinking: String,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Prompts per generation batch.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 16)]
    pub batch: usize,
    /// Print the whole report (every answer) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report into this folder: eval.md (markdown with every answer) and
    /// eval.json (what --json prints).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the --out folder if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
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
        println!("The rules judge reads these markers (case-insensitively; a decline in the opening is a refusal):");
        for m in REFUSAL_MARKERS {
            println!("  {m}");
        }
        return Ok(());
    }
    let model_name = args.model.clone().context("give the MODEL to measure")?;
    let original_name = match (&args.original, &args.baseline) {
        (None, Some(old)) => {
            deprecated("--baseline", "--original");
            Some(old.clone())
        }
        (given, _) => given.clone(),
    };
    let thinking = ThinkingMode::parse(&args.thinking)?;
    let judge_name = scalpel::eval::JudgeSpec::parse(&args.judge.judge)?.to_string();
    let load = |spec: &str| -> anyhow::Result<Vec<String>> {
        Ok(PromptSet::load(spec, args.field.as_deref())?.shuffled_limited(None, args.limit).prompts)
    };
    let sets = EvalSets {
        harmful: load(&args.harmful)?,
        harmless: load(&args.harmless)?,
        texts: args.text.as_deref().map(load).transpose()?,
        samples: Vec::new(),
    };
    let generations = (sets.harmful.len() + sets.harmless.len()) * if original_name.is_some() { 2 } else { 1 };
    let progress = Bar::with_length("evaluating", Unit::Items, generations as u64);
    eprintln!(
        "eval {}: {} harmful × {} harmless held-out prompts, greedy, {} tokens, judge {}{}",
        model_name,
        sets.harmful.len(),
        sets.harmless.len(),
        args.max_tokens,
        judge_name,
        original_name.as_deref().map(|b| format!(", original {b}")).unwrap_or_default()
    );
    // Each model is loaded when its turn comes and dropped after: one model in memory at a time.
    let model = open_model(&model_name)?;
    let original = original_name.as_deref().map(open_model).transpose()?;
    let inputs: Vec<&std::path::Path> = std::iter::once(&model).chain(&original).map(|m| m.root.as_path()).collect();
    let reports = args.out.as_deref().map(|out| ReportsOut::prepare(out, "eval", &inputs, args.force)).transpose()?;
    let mut subject = source(&model_name, model, &args.run, Some(&args.intervene), thinking);
    let mut baseline = match (original_name.as_deref(), original) {
        (Some(name), Some(dir)) => Some(source(name, dir, &args.run, None, thinking)),
        _ => None,
    };
    let (mut report, _) = eval_step(
        &mut subject,
        baseline.as_mut().map(|b| b as &mut dyn SubjectSource),
        &sets,
        args.max_tokens,
        args.batch,
        &progress,
    )?;
    progress.finish();
    // The models are dropped by now: a judge model has the memory to itself.
    if judge_name != "rules" {
        eprintln!("judging {} answers with {judge_name}", generations);
        let judge = args.judge.judge(&args.run)?;
        report.rejudge(judge.as_ref())?;
    }
    let table = report.markdown(&model_name, original_name.as_deref());
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
    if let Some(reports) = reports {
        let mut md = format!("# Evaluation of {model_name}\n\n{table}\n## Answers to held-out harmful prompts\n\n");
        for a in &report.refusals.answers {
            md += &format!(
                "- **{}** {}\n  > {}\n",
                a.prompt,
                match a.verdict() {
                    Verdict::Refusal => "(refusal)",
                    Verdict::Evasion => "(evasion)",
                    Verdict::Compliance => "(compliance)",
                },
                a.answer.replace('\n', " ")
            );
        }
        let path = reports.write("eval", &md, &serde_json::to_value(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `model` as a source that loads its decoder when measured and drops it after; with thinking
/// `off` its prompts are rendered with `enable_thinking = false` (where the template has it).
fn source<'a>(
    name: &str,
    model: ModelDir,
    run: &'a RunArgs,
    intervene: Option<&'a InterventionArgs>,
    thinking: ThinkingMode,
) -> OnDemand<'a> {
    let error = |e: anyhow::Error| scalpel::Error::Other(format!("{e:#}"));
    OnDemand {
        name: name.to_string(),
        load: Box::new(move || {
            let (decoder, mut encoder) = run.load(&model).map_err(error)?;
            if thinking == ThinkingMode::Off && scalpel::eval::thinking::detect(&encoder)?.is_some() {
                encoder = without_thinking(&encoder)?;
            }
            let interventions = match intervene {
                Some(i) => i.build(&decoder).map_err(error)?,
                None => Interventions::none(),
            };
            Ok(Loaded { decoder, encoder, interventions })
        }),
    }
}
