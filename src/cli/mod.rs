//! clap subcommands. Each subcommand has its own file with an `Args` struct and a `run` function.

mod ablate;
mod chat;
mod common;
mod compare;
mod eval;
mod export;
mod fixture;
mod generate;
mod import;
mod inspect;
mod judge;
mod probe;
mod progress;
mod run;
mod runtime;
mod search;
mod selection;
mod signals;
mod svd;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// scalpel: find the direction a chat model uses to refuse, and cut it out of the weights.
///
/// Typical use: `scalpel probe` (find directions) → `scalpel ablate` (edit the weights)
/// → `scalpel verify` / `scalpel eval` (check the result). `scalpel run RECIPE` does it all.
#[derive(Debug, Parser)]
#[command(name = "scalpel", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress bars or progress lines on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole experiment from a recipe: probe, ablate, verify, eval, report.
    Run(run::Args),
    /// Find the layers and directions that separate harmful from harmless prompts.
    Probe(probe::Args),
    /// Choose the edit by its measured outcome: refusals, over-refusals and KL on validation prompts.
    Search(search::Args),
    /// Write an edited copy of a model with a direction projected out of its writers.
    Ablate(ablate::Args),
    /// Read an edited model back and check it no longer writes along the direction.
    Verify(verify::Args),
    /// Refusal rate, over-refusal and KL divergence on held-out prompts.
    Eval(eval::Args),
    /// Measure the judges (refusal / evasion / compliance) against a labelled set.
    JudgeCheck(judge::Args),
    /// Show two models' answers side by side (or one model with and without an intervention).
    Compare(compare::Args),
    /// Generate an answer to one prompt (optionally with a runtime intervention).
    Generate(generate::Args),
    /// Chat with a model in the terminal (optionally with a runtime intervention).
    Chat(chat::Args),
    /// Show a model's architecture, sizes, dtypes, and the tensors scalpel would edit.
    Inspect(inspect::Args),
    /// SVD of the writers: which directions do the layers share?
    Svd(svd::Args),
    /// Turn a GGUF file into a Hugging Face model folder.
    Import(import::Args),
    /// Write a model as a GGUF file, or an edit as a PEFT LoRA adapter.
    Export(export::Args),
    /// Write a tiny random model of a supported family (for trying scalpel and for tests).
    Fixture(fixture::Args),
}

/// Parse the command line, run the subcommand, and turn errors into a message and exit code 1.
pub fn main() -> ExitCode {
    signals::install();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    progress::set_quiet(cli.quiet);
    let result: anyhow::Result<()> = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Search(args) => search::run(args),
        Command::Ablate(args) => ablate::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Fixture(args) => fixture::run(args),
        Command::Import(args) => import::run(args),
        Command::Export(args) => export::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Eval(args) => eval::run(args),
        Command::JudgeCheck(args) => judge::run(args),
        Command::Svd(args) => svd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause once: library errors already include their source
/// in their own text, which anyhow's chain would print again.
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
