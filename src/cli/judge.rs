//! `scalpel judge-check`: each judge's agreement with a labelled set, and the judge options
//! shared by eval and compare.

use super::runtime::RunArgs;
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::eval::judge::{check_judge, load_labelled, JudgeSpec, Split};
use scalpel::eval::Judge;
use scalpel::model::{parse_device, parse_dtype};
use std::path::PathBuf;

/// Which judge gives the verdicts.
#[derive(Debug, Clone, ClapArgs)]
pub struct JudgeArgs {
    /// Who judges answers refusal, evasion or compliance: `rules` (text rules), `model:PATH`
    /// (a chat model folder reads a fixed rubric; its label-token probabilities decide) or
    /// `rules+model:PATH` (the rules' refusals and evasions stand; the model judges the rest).
    #[arg(long, default_value = "rules")]
    pub judge: String,
    #[command(flatten)]
    pub options: JudgeOptions,
}

/// How a model judge runs: where it caches its verdicts, how many it scores at once.
#[derive(Debug, Clone, ClapArgs)]
pub struct JudgeOptions {
    /// Where a model judge caches its verdicts (default: ~/.cache/scalpel/judge).
    #[arg(long, value_name = "DIR")]
    pub judge_cache: Option<PathBuf>,
    /// Answers a model judge scores per forward pass.
    #[arg(long, default_value_t = 4)]
    pub judge_batch: usize,
}

impl JudgeOptions {
    /// The judge named by `spec`, a model judge loaded with `run`'s device and dtype.
    pub fn build(&self, spec: &str, run: &RunArgs) -> anyhow::Result<Box<dyn Judge>> {
        let spec = JudgeSpec::parse(spec)?;
        let cache = self.judge_cache.clone().or_else(default_cache);
        spec.open(&parse_device(&run.device)?, parse_dtype(&run.dtype)?, cache.as_deref(), self.judge_batch)
            .with_context(|| format!("opening the judge `{spec}`"))
    }
}

impl JudgeArgs {
    /// The judge of `--judge`.
    pub fn judge(&self, run: &RunArgs) -> anyhow::Result<Box<dyn Judge>> {
        self.options.build(&self.judge, run)
    }
}

fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("scalpel").join("judge"))
}

/// Measure judges against a labelled set: for each judge the 3×3 confusion matrix (label ×
/// verdict) and the two errors that matter most — refusals or evasions counted as compliance
/// (an edit looks better than it is) and compliances counted as refusal (it looks worse).
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Judges to measure (repeat the flag): `rules`, `model:PATH`, `rules+model:PATH`.
    #[arg(long = "judge", default_value = "rules")]
    pub judges: Vec<String>,
    /// The labelled set (JSON Lines: id, model, set, request, answer, verdict, split, note).
    #[arg(long, default_value = "recipes/judge/labelled.jsonl")]
    pub set: PathBuf,
    /// Which part: `test` (held back from tuning), `tune`, or `all`.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// List every disagreement (id, label, verdict, reason).
    #[arg(long)]
    pub disagreements: bool,
    /// Print the results as JSON (with every answer's verdict and reason).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub options: JudgeOptions,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Run `judge-check`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let set = load_labelled(&args.set)?;
    let split = Split::parse(&args.split)?;
    let mut results = Vec::new();
    for spec in &args.judges {
        let judge = args.options.build(spec, &args.run)?;
        let check = check_judge(judge.as_ref(), &set, split)?;
        if !args.json {
            println!(
                "judge `{}` on {} answers ({} split of {}):",
                check.judge,
                check.answers,
                args.split,
                args.set.display()
            );
            print!("{}", check.confusion.text());
            for (name, c) in [("harmful", &check.harmful), ("harmless", &check.harmless)] {
                println!(
                    "  {name}: {}/{} agree, {} of {} not compliant counted as compliance, {} of {} compliant counted as refusal",
                    c.agreed(),
                    c.total(),
                    c.missed(),
                    c.not_compliant(),
                    c.false_refusals(),
                    c.compliant()
                );
            }
            if args.disagreements {
                for (id, label, verdict, reason) in check.disagreements() {
                    println!("  {id}: label {label}, judged {verdict} — {reason}");
                }
            }
            println!();
        }
        results.push(check);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}
