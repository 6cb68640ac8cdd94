//! `scalpel chat`: an interactive conversation in the terminal.

use super::common::{open_model, StreamPrinter};
use super::generate::SamplingArgs;
use super::runtime::{InterventionArgs, RunArgs};
use clap::Args as ClapArgs;
use scalpel::model::generate;
use scalpel::prompts::Message;
use std::io::{BufRead, Write};

/// Chat with a model in the terminal (multi-turn, with the chat template). Commands:
/// /reset clears the history, /quit (or end of input) leaves. Runtime interventions work here too,
/// so an edit can be tried before it is written.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id.
    pub model: String,
    /// New tokens at most per answer.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = super::common::answer_tokens::OPEN)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub intervene: InterventionArgs,
}

/// Run `chat`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.model)?;
    let (decoder, encoder) = args.run.load(&model)?;
    let interventions = args.intervene.build(&decoder)?;
    let options = args.sampling.options(args.max_tokens, &encoder);
    let mut history: Vec<Message> = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("chatting with {} — /reset clears the history, /quit leaves", model.root.display());
    loop {
        write!(stdout, "\n> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.clear();
                eprintln!("(history cleared)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line));
        let ids = encoder.tokenize(&encoder.render_conversation(&history)?)?;
        let mut printer = StreamPrinter::new(&encoder, &args.sampling.stops);
        generate(&decoder, &[ids], encoder.pad_id(), &options, &interventions, &mut |_, token| {
            printer.on_token(token)
        })?;
        let answer = printer.finish();
        writeln!(stdout)?;
        history.push(Message::new("assistant", answer.trim()));
    }
    Ok(())
}
