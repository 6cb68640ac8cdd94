//! `scalpel fixture`: write a tiny random model of a supported family.

use clap::Args as ClapArgs;
use scalpel::fixture::{write_fixture_into, FixtureDtype, FixtureOptions, FAMILIES};
use std::path::PathBuf;

/// Write a tiny random model (hidden 64, vocab ≈ 300) of a supported family: config.json,
/// seeded safetensors weights, a byte-level tokenizer and a chat template in the family's style.
/// Handy to try every subcommand in seconds; the test suite is built on these.
#[derive(Debug, ClapArgs)]
pub struct Args {
    // The help lists `FAMILIES` itself, so that it names every family the binary can make.
    #[arg(value_parser = family_name, help = family_help())]
    pub family: String,
    /// Output folder (must not exist, unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of decoder layers.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 2)]
    pub layers: usize,
    /// Dtype the weights are written in: f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    pub store_dtype: String,
    /// Old spelling of --store-dtype.
    #[arg(long, hide = true, value_parser = ["f32", "f16", "bf16"], conflicts_with = "store_dtype")]
    pub dtype: Option<String>,
    /// Split the weights into this many shards (with model.safetensors.index.json).
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 1)]
    pub shards: usize,
    /// Tie the output head to the embedding (default: the family's usual choice).
    #[arg(long, conflicts_with = "untied")]
    pub tied: bool,
    /// Give the model its own output head.
    #[arg(long)]
    pub untied: bool,
    /// Make every layer of qwen2_moe sparse (its fixture's first layer is dense otherwise)
    #[arg(long)]
    pub all_sparse: bool,
    /// Add output biases to the attention and MLP writers (llama, qwen3, qwen; olmo2: the
    /// attention's only).
    #[arg(long)]
    pub biases: bool,
    /// Give gemma4_text the E models' per-layer input embeddings and shared keys and values
    /// (with a double-wide MLP in the layers that share them).
    #[arg(long)]
    pub per_layer_inputs: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

fn family_help() -> String {
    format!("Family, by config.json model_type: {} (gemma3: gemma3_text)", FAMILIES.join(", "))
}

fn family_name(s: &str) -> Result<String, String> {
    if FAMILIES.contains(&s) || matches!(s, "gemma3" | "gemma4") {
        Ok(s.to_string())
    } else {
        Err(format!("unknown family; choose one of: {}", FAMILIES.join(", ")))
    }
}

/// Run `fixture`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let store_dtype = match &args.dtype {
        Some(old) => {
            super::common::deprecated(
                "--dtype",
                "--store-dtype (the dtype written; --dtype is the compute dtype elsewhere)",
            );
            old.clone()
        }
        None => args.store_dtype.clone(),
    };
    let options = FixtureOptions {
        seed: args.seed,
        dtype: match store_dtype.as_str() {
            "f16" => FixtureDtype::F16,
            "bf16" => FixtureDtype::BF16,
            _ => FixtureDtype::F32,
        },
        num_layers: args.layers,
        tie_embeddings: if args.tied {
            Some(true)
        } else if args.untied {
            Some(false)
        } else {
            None
        },
        shards: args.shards,
        output_biases: args.biases,
        all_sparse: args.all_sparse,
        per_layer_inputs: args.per_layer_inputs,
        ..FixtureOptions::default()
    };
    anyhow::ensure!(args.layers > 0 && args.shards > 0, "--layers and --shards must be at least 1");
    write_fixture_into(&args.family, &args.out, &options, args.force)?;
    println!("{}", args.out.display());
    Ok(())
}
