//! `scalpel generate`: one answer, streamed to the terminal.

use super::common::{open_model, StreamPrinter};
use super::runtime::{InterventionArgs, RunArgs};
use clap::Args as ClapArgs;
use scalpel::model::{generate, GenerateOptions, Sampling};

/// Generate an answer to one prompt, with the model's chat template, optionally with a runtime
/// intervention (ablation, activation addition, rotation) from a directions file.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id.
    pub model: String,
    /// The user message.
    #[arg(long, short)]
    pub prompt: String,
    /// New tokens at most.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = super::common::answer_tokens::OPEN)]
    pub max_tokens: usize,
    /// Print one JSON object instead of the streamed text: the prompt's token ids, the answer's
    /// ids and text, whether a stop token ended it, and the first step's logits (for comparing
    /// runtimes token for token).
    #[arg(long, conflicts_with = "stops")]
    pub json: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub intervene: InterventionArgs,
}

/// Sampling flags (greedy unless --temperature > 0).
#[derive(Debug, Clone, ClapArgs)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(value_parser = super::common::non_negative, long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(value_parser = super::common::fraction, long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Penalise tokens already present (1: off).
    #[arg(value_parser = super::common::positive_f32, long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop the answer where this text appears (not printed); repeat for several.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stops: Vec<String>,
}

impl SamplingArgs {
    /// The library's sampling settings.
    fn settings(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
        }
    }

    /// Generation options: these settings, up to `max_tokens`, stopping at the model's end tokens.
    pub fn options(&self, max_tokens: usize, encoder: &scalpel::prompts::PromptEncoder) -> GenerateOptions {
        GenerateOptions { max_tokens, sampling: self.settings(), stop_ids: encoder.eos_ids().to_vec() }
    }
}

/// Run `generate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.model)?;
    let (decoder, encoder) = args.run.load(&model)?;
    let interventions = args.intervene.build(&decoder)?;
    let ids = encoder.encode(&args.prompt)?;
    let options = args.sampling.options(args.max_tokens, &encoder);
    if args.json {
        let prompts = [ids];
        let mut out = generate(&decoder, &prompts, encoder.pad_id(), &options, &interventions, &mut |_, _| false)
            .map_err(|e| e.for_prompt(&[&args.prompt]))?;
        let answer = out.pop().expect("one answer per prompt");
        let json = serde_json::json!({
            "prompt_ids": prompts[0],
            "ids": answer.ids,
            "text": encoder.decode(&answer.ids)?,
            "stopped": answer.stopped,
            "first_logits": answer.first_logits,
        });
        println!("{json}");
        return Ok(());
    }
    let mut printer = StreamPrinter::new(&encoder, &args.sampling.stops);
    generate(&decoder, &[ids], encoder.pad_id(), &options, &interventions, &mut |_, token| printer.on_token(token))
        .map_err(|e| e.for_prompt(&[&args.prompt]))?;
    printer.finish();
    println!();
    Ok(())
}
