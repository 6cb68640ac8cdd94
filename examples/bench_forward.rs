//! Activation-capture throughput: batches of 16 prompts of ~64 tokens through the whole model,
//! capturing resid_pre/mid/post at the last position of every layer (what `probe` does).
//!
//! `cargo run --release --example bench_forward -- [MODEL_DIR] [BATCHES]`

use candle_core::{DType, Device};
use scalpel::checkpoint::ModelDir;
use scalpel::model::{CaptureSpec, Decoder, ForwardRequest, HookPoint, Interventions, LogitsMode};
use scalpel::prompts::{PromptEncoder, PromptFormat, PromptSet};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "models/smollm2-135m-instruct".into());
    let batches: usize = args.next().map(|b| b.parse()).transpose()?.unwrap_or(8);
    let model = ModelDir::open(std::path::Path::new(&dir))?;
    let decoder = Decoder::load(&model, &Device::Cpu, DType::F32)?;
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None })?;
    // ~64-token prompts: two held-out instructions joined, through the chat template.
    let set = PromptSet::load("builtin:harmless_train", None)?.prompts;
    let prompts: Vec<String> = set.chunks(2).map(|c| c.join(" And also: ")).collect();
    let spec = CaptureSpec {
        points: HookPoint::STREAMS.to_vec(),
        layers: (0..model.spec.num_layers).collect(),
        from_end: vec![1],
    };
    let iv = Interventions::none();
    let req = ForwardRequest { capture: Some(&spec), interventions: &iv, logits: LogitsMode::None };
    let mut tokens = 0usize;
    let mut real = 0usize;
    let started = Instant::now();
    for chunk in prompts.chunks(16).cycle().take(batches) {
        let batch = encoder.batch(chunk)?;
        tokens += batch.ids.len() * batch.ids[0].len();
        real += batch.mask.iter().flatten().filter(|m| **m == 1).count();
        decoder.forward(&batch.ids, &batch.mask, None, &req)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{batches} batches of 16 ({:.0} tokens/prompt avg): {:.1} tokens/s ({:.1} real, non-pad tokens/s), {:.2} s",
        real as f64 / (16 * batches) as f64,
        tokens as f64 / secs,
        real as f64 / secs,
        secs
    );
    Ok(())
}
