//! Batched greedy generation throughput with the KV cache (what `eval` does): the first
//! PROMPTS instructions of the held-out harmless set through the chat template, up to
//! NEW_TOKENS new tokens each (stopping at the model's end-of-turn ids), BATCH prompts at a time.
//!
//! The first batch runs once untimed, for 4 new tokens, before the clock starts (kernel loading on
//! a GPU), and the time it took is printed apart.
//!
//! `cargo run --release --example bench_generate -- [MODEL_DIR] [PROMPTS] [NEW_TOKENS] [BATCH] [--dtype D] [--device D]`

use scalpel::checkpoint::ModelDir;
use scalpel::model::{generate, parse_device, parse_dtype, Decoder, GenerateOptions, Interventions, Sampling};
use scalpel::prompts::{PromptEncoder, PromptFormat, PromptSet};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let (mut dtype, mut device) = ("f32".to_string(), "cpu".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dtype" => dtype = args.next().unwrap_or_default(),
            "--device" => device = args.next().unwrap_or_default(),
            _ => positional.push(a),
        }
    }
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(positional.get(i).map(|v| v.parse()).transpose()?.unwrap_or(default))
    };
    let dir = positional.first().cloned().unwrap_or_else(|| "models/smollm2-135m-instruct".into());
    let (n, new_tokens, batch) = (arg(1, 40)?, arg(2, 40)?, arg(3, 20)?);
    let model = ModelDir::open(std::path::Path::new(&dir))?;
    let decoder = Decoder::load(&model, &parse_device(&device)?, parse_dtype(&dtype)?)?;
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None })?;
    let set = PromptSet::load("builtin:harmless_train", None)?.prompts;
    let prompts: Vec<Vec<u32>> =
        set.iter().cycle().take(n).map(|p| encoder.encode(p)).collect::<scalpel::Result<Vec<_>>>()?;
    let options =
        GenerateOptions { max_tokens: new_tokens, sampling: Sampling::default(), stop_ids: encoder.eos_ids().to_vec() };
    let iv = Interventions::none();
    let warming = Instant::now();
    let warm = GenerateOptions { max_tokens: 4, ..options.clone() };
    if let Some(first) = prompts.chunks(batch.max(1)).next() {
        generate(&decoder, first, encoder.pad_id(), &warm, &iv, &mut |_, _| false)?;
    }
    let warm_secs = warming.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut generated = 0usize;
    for chunk in prompts.chunks(batch.max(1)) {
        let out = generate(&decoder, chunk, encoder.pad_id(), &options, &iv, &mut |_, _| false)?;
        generated += out.iter().map(|g| g.ids.len()).sum::<usize>();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "scalpel generate ({dtype}, {device}): {n} prompts x {new_tokens} new tokens, batch {batch}: {:.2} prompts/s, \
         {:.1} new tokens/s ({generated} tokens), {secs:.2} s (first batch, 4 tokens, {warm_secs:.2} s)",
        n as f64 / secs,
        generated as f64 / secs
    );
    Ok(())
}
