//! `scalpel import`: turn a GGUF file into a Hugging Face model folder.

use clap::Args as ClapArgs;
use scalpel::checkpoint::EditableDtype;
use scalpel::import::{import_gguf, ImportOptions};
use std::path::PathBuf;

/// Dequantize a GGUF file (llama incl. SmolLM2, qwen2, gemma2, gemma3) into a Hugging Face
/// folder that scalpel, candle and transformers load: config.json, model.safetensors,
/// tokenizer.json and tokenizer_config.json (with the chat template), generation_config.json.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The .gguf file.
    pub gguf: PathBuf,
    /// Output folder (must not exist, unless --force).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Dtype the weights are written in. f32 keeps dequantized values exactly; bf16 and f16
    /// halve the size. Default: bf16 for a quantized GGUF, else the file's own float type.
    #[arg(long, value_parser = ["f32", "bf16", "f16"])]
    pub store_dtype: Option<String>,
    /// Old spelling of --store-dtype.
    #[arg(long, hide = true, value_parser = ["f32", "bf16", "f16"], conflicts_with = "store_dtype")]
    pub dtype: Option<String>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Run `import`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.dtype.is_some() {
        super::common::deprecated(
            "--dtype",
            "--store-dtype (the dtype written; --dtype is the compute dtype elsewhere)",
        );
    }
    let dtype = args.store_dtype.as_deref().or(args.dtype.as_deref()).map(|d| match d {
        "bf16" => EditableDtype::BF16,
        "f16" => EditableDtype::F16,
        _ => EditableDtype::F32,
    });
    let bar = super::progress::Bar::new("importing", scalpel::progress::Unit::Items);
    let started = std::time::Instant::now();
    let report = import_gguf(&args.gguf, &args.out, &ImportOptions { dtype, force: args.force }, &bar)?;
    scalpel::progress::Progress::finish(&bar);
    let types: Vec<String> = report.source_types.iter().map(|(t, n)| format!("{t} × {n}")).collect();
    eprintln!(
        "imported {} ({}, {} tensors from {}) in {:.1}s",
        args.gguf.display(),
        report.architecture,
        report.tensors,
        types.join(", "),
        started.elapsed().as_secs_f64()
    );
    if !report.skipped.is_empty() {
        eprintln!("not imported (no Hugging Face counterpart): {}", report.skipped.join(", "));
    }
    println!("{}", report.out.display());
    Ok(())
}
