//! `scalpel export`: a model folder as a GGUF file, or an edited folder as a PEFT LoRA adapter.

use super::common::{human_bytes, open_model};
use super::progress::Bar;
use clap::Args as ClapArgs;
use scalpel::checkpoint::ModelDir;
use scalpel::export::{export_adapter_from_record, export_gguf, GgufOptions, GgufType};
use scalpel::progress::{Progress, Unit};
use std::path::{Path, PathBuf};

/// Write a model folder (edited or not) as one GGUF file for llama.cpp, Ollama and LM Studio
/// (with an Ollama Modelfile beside it), and/or an edited folder as a PEFT LoRA adapter
/// against its base model (adapter_config.json + adapter_model.safetensors).
#[derive(Debug, ClapArgs)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["gguf", "adapter"])))]
pub struct Args {
    /// Model folder, or a Hugging Face id (owner/name).
    pub model: String,
    /// With --adapter: the directions file of the edit (default: the path the edit record
    /// holds, present only when the edit was written with --record-paths).
    #[arg(long, value_name = "FILE")]
    pub directions: Option<PathBuf>,
    #[command(flatten)]
    pub out: ExportArgs,
}

/// The export flags, shared with `ablate`.
#[derive(Debug, Clone, ClapArgs)]
pub struct ExportArgs {
    /// Write a GGUF file here.
    #[arg(long, value_name = "OUT.gguf")]
    pub gguf: Option<PathBuf>,
    /// GGUF tensor type: same (each tensor keeps its type; with --source-gguf untouched tensors
    /// are byte-copied from it and edited ones requantized to their type there, or to q8_0 where
    /// that type has under 8 bits), f32, f16, bf16, q8_0, q6_k, q5_k_m, q4_k_m. Vectors (norms,
    /// biases) stay f32; matrices whose rows do not split into 256-value blocks fall back as
    /// llama.cpp's do (q4_k → q5_0, q5_k → q5_1, q6_k → q8_0), then to f16.
    #[arg(long = "type", value_name = "TYPE", default_value = "f16")]
    pub ty: String,
    /// With --type same: the GGUF the model folder was imported from.
    #[arg(long, value_name = "FILE")]
    pub source_gguf: Option<PathBuf>,
    /// Do not write an Ollama Modelfile beside the GGUF.
    #[arg(long)]
    pub no_modelfile: bool,
    /// Write a PEFT LoRA adapter folder here (the model must be a folder scalpel edited).
    #[arg(long, value_name = "OUT_DIR")]
    pub adapter: Option<PathBuf>,
    /// The adapter's base model (default: the path the edit record holds, present only when the
    /// edit was written with --record-paths); it must be the model the record names.
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// Replace existing outputs.
    #[arg(long = "export-force", id = "export_force")]
    pub force: bool,
}

impl ExportArgs {
    /// Whether anything is to be exported.
    pub fn any(&self) -> bool {
        self.gguf.is_some() || self.adapter.is_some()
    }
}

/// Export `model` as `args` ask (`base`, `directions`: the adapter's base and the edit's
/// directions file when the caller knows them).
pub fn export(
    model: &ModelDir,
    args: &ExportArgs,
    base: Option<&Path>,
    directions: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(out) = &args.gguf {
        let options = GgufOptions {
            ty: GgufType::parse(&args.ty)?,
            source_gguf: args.source_gguf.clone(),
            force: args.force,
            modelfile: !args.no_modelfile,
        };
        let bar = Bar::new("gguf", Unit::Items);
        let started = std::time::Instant::now();
        let report = export_gguf(model, out, &options, &bar)?;
        bar.finish();
        let types: Vec<String> = report.types.iter().map(|(t, n)| format!("{t} × {n}")).collect();
        eprintln!(
            "wrote {} ({}, {} tensors: {}; {} byte-copied from the source GGUF) in {:.1}s, {}",
            report.out.display(),
            report.architecture,
            report.tensors,
            types.join(", "),
            report.copied,
            started.elapsed().as_secs_f64(),
            human_bytes(report.bytes)
        );
        if report.padded_tokens > 0 {
            eprintln!("  token list padded with {} [PAD] tokens to the embedding's rows", report.padded_tokens);
        }
        if !report.skipped.is_empty() {
            eprintln!("  not written (no llama.cpp name): {}", report.skipped.join(", "));
        }
        if let Some(m) = &report.modelfile {
            eprintln!("  Ollama: ollama create NAME -f {}", m.display());
        }
        println!("{}", report.out.display());
    }
    if let Some(out) = &args.adapter {
        let base = args.base.as_deref().or(base);
        let bar = Bar::new("adapter", Unit::Items);
        let report = export_adapter_from_record(model, base, directions, out, args.force, &bar)?;
        bar.finish();
        eprintln!(
            "wrote {}: {} LoRA modules of rank {}, {}{}",
            report.out.display(),
            report.modules,
            report.rank,
            human_bytes(report.bytes),
            report
                .max_relative_error
                .map(|e| format!("; base + adapter = the edit to {e:.1e} (relative)"))
                .unwrap_or_default()
        );
        println!("{}", report.out.display());
    }
    Ok(())
}

/// Run `export`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.model)?;
    export(&model, &args.out, None, args.directions.as_deref())
}
