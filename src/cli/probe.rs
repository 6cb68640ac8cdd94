//! `scalpel probe`: find the layers and directions that separate two prompt sets.

use super::common::open_model;
use super::progress::Bar;
use super::runtime::{kernels_from_env, RunArgs};
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::model::memory::{
    choose_capture_path, format_bytes, memory_budget, model_memory_bytes, storage_for, CapturePath,
};
use scalpel::model::{parse_device, parse_dtype, Decoder, LayerMajor, LoadOptions, WeightStorage};
use scalpel::pipeline::{parse_streams, ProbeRequest};
use scalpel::probe::{
    confirmed_prompts, probe_to_folder, rule_name, CaptureModel, ExtraDirections, ProbeFolder, RankRule,
};
use scalpel::progress::Unit;
use scalpel::prompts::{PromptEncoder, PromptSet};
use std::path::PathBuf;

/// Run two contrasting prompt sets (default: the built-in harmful / harmless training sets)
/// through the model, capture the residual stream at every layer, and write the layer metrics,
/// plots, a report, and directions (difference of means) for `scalpel ablate`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id.
    pub model: String,
    /// Prompts the model refuses: a .txt/.jsonl/.json/.csv/.parquet file, builtin:NAME, or hf://owner/name[:split][#column].
    #[arg(long, default_value = "builtin:harmful_train")]
    pub harmful: String,
    /// Everyday prompts, same formats.
    #[arg(long, default_value = "builtin:harmless_train")]
    pub harmless: String,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// JSON field / CSV column holding the prompt.
    #[arg(long)]
    pub field: Option<String>,
    /// Use at most N prompts of each set (after a seeded shuffle).
    #[arg(value_parser = super::common::at_least_one, long)]
    pub limit: Option<usize>,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Streams to capture, comma separated: pre, mid, post (resid_*), attn_out, mlp_out. The
    /// recommendation is taken from the first.
    #[arg(long, default_value = "pre,mid,post")]
    pub streams: String,
    /// Token positions from the end of the prompt: -1 (last), -3..-1, -5,-1 (averaged per prompt).
    #[arg(long, default_value = "-1", allow_hyphen_values = true)]
    pub positions: String,
    /// Prompts per forward pass.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 16)]
    pub batch: usize,
    /// Rule for the recommended layer.
    #[arg(long, value_parser = super::common::named::<RankRule>(), default_value = "low-variance")]
    pub rule: RankRule,
    /// Layers the recommendation may pick from (default: 20 %–80 % of the depth).
    #[arg(long, value_name = "LAYERS")]
    pub candidates: Option<String>,
    /// Use this layer instead of the ranking's choice.
    #[arg(long)]
    pub layer: Option<usize>,
    /// Extract K directions at the recommended layer by iterating (extract, ablate, re-extract).
    #[arg(value_parser = super::common::at_least_one, long, value_name = "K", conflicts_with = "pca")]
    pub num_directions: Option<usize>,
    /// Extract the top K principal components of the differences between every harmful and
    /// every harmless prompt's activation instead (covariance d dᵀ + Σ_harmful + Σ_harmless).
    #[arg(value_parser = super::common::at_least_one, long, value_name = "K")]
    pub pca: Option<usize>,
    /// Also save directions orthogonal to the harmless mean (`{stream}_projected.{layer}`).
    #[arg(long)]
    pub projected: bool,
    /// Also save every prompt's activations (activations.safetensors; large for big models).
    #[arg(long)]
    pub save_activations: bool,
    /// Probe every prompt as given. By default the model first answers each prompt briefly
    /// (greedy, up to 16 tokens) and only the harmful prompts it refuses and the harmless ones it
    /// answers are probed (a set stays whole when fewer than 16 would remain); a harmful prompt
    /// the model answers anyway blurs the direction.
    #[arg(long)]
    pub no_filter: bool,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// Load one layer at a time (for models larger than memory): embed every prompt, then run
    /// every batch through each layer in turn. Default: chosen when the model's weights in the
    /// compute dtype (+10 %) exceed the available memory (MemAvailable, the cgroup limit,
    /// `ulimit -d`, or SCALPEL_MEMORY_BUDGET).
    #[arg(long, conflicts_with = "no_layer_major")]
    pub layer_major: bool,
    /// Load the whole model even when it looks too large for the available memory.
    #[arg(long)]
    pub no_layer_major: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Run `probe`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.model)?;
    let load = |spec: &str| -> anyhow::Result<PromptSet> {
        Ok(PromptSet::load(spec, args.field.as_deref())?.shuffled_limited(args.limit.map(|_| args.seed), args.limit))
    };
    let harmful = load(&args.harmful).context("loading --harmful")?;
    let harmless = load(&args.harmless).context("loading --harmless")?;
    let dtype = parse_dtype(&args.run.dtype)?;
    let device = parse_device(&args.run.device)?;
    let force = match (args.layer_major, args.no_layer_major) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let budget = memory_budget()?;
    // `auto` weights resolved first: a model whose f32 weights would not fit may fit in 16 bits.
    let compute_bytes = model_memory_bytes(&model, dtype, WeightStorage::Compute, &device)?;
    let requested = args.run.storage()?;
    let storage = storage_for(requested, compute_bytes, budget.as_ref());
    if storage == WeightStorage::Checkpoint && requested == WeightStorage::Auto {
        eprintln!(
            "weights: 16-bit matrices kept 16-bit (in f32 the weights need {}, which with half again exceeds the budget)",
            format_bytes(compute_bytes)
        );
    }
    let choice = choose_capture_path(model_memory_bytes(&model, dtype, storage, &device)?, budget.as_ref(), force);
    let encoder = PromptEncoder::from_model_dir(&model.root, args.run.format())?;
    let (whole, layer_major) = match choice.path {
        CapturePath::WholeModel => {
            eprintln!("capture path: whole model in memory ({})", choice.reason);
            {
                let options = LoadOptions { storage, kernels: kernels_from_env() };
                (Some(Decoder::load_with_options(&model, &device, dtype, options).context("loading the model")?), None)
            }
        }
        CapturePath::LayerMajor => {
            eprintln!("capture path: layer-major, one layer in memory at a time ({})", choice.reason);
            (None, Some(LayerMajor::new(&model, &device, dtype)?.with_kernels(kernels_from_env())))
        }
    };
    let decoder: &dyn CaptureModel = match (&whole, &layer_major) {
        (Some(d), _) => d,
        (_, Some(l)) => l,
        _ => unreachable!("one path was chosen"),
    };
    let (harmful, harmless) = match &whole {
        Some(decoder) if !args.no_filter => {
            eprintln!("filter: answering every prompt briefly to keep those the model's behaviour confirms");
            confirmed_prompts(decoder, &encoder, &harmful, &harmless, &|note| eprintln!("filter: {note}"))?
        }
        None if !args.no_filter => {
            eprintln!("filter: skipped (answering needs the whole model in memory; probing every prompt)");
            (harmful, harmless)
        }
        _ => (harmful, harmless),
    };
    let streams: Vec<&str> = args.streams.split(',').collect();
    let request = ProbeRequest {
        streams: parse_streams(&streams, None)?,
        positions: args.positions.clone(),
        batch: args.batch,
        rule: args.rule,
        candidates: args.candidates.clone(),
        layer: args.layer,
        extra: match (args.num_directions, args.pca) {
            (Some(k), _) if k > 1 => ExtraDirections::Iterative(k),
            (_, Some(k)) if k > 0 => ExtraDirections::Pca(k),
            _ => ExtraDirections::None,
        },
        projected: args.projected,
        keep: args.save_activations,
    };
    let settings = request.settings(decoder.spec().num_layers)?;
    eprintln!(
        "probe {}: {} harmful × {} harmless prompts ({} / {}), streams {} (recommendation from {}), positions {}, batch {}, {} layers, rule {}, format {}",
        model.root.display(),
        harmful.prompts.len(),
        harmless.prompts.len(),
        harmful.described(),
        harmless.described(),
        args.streams,
        request.streams[0].name(),
        args.positions,
        args.batch,
        decoder.spec().num_layers,
        rule_name(args.rule),
        encoder.format()
    );
    let progress = Bar::with_length("capturing", Unit::Items, (harmful.prompts.len() + harmless.prompts.len()) as u64);
    let name = scalpel::checkpoint::display_name(&model.root);
    let inputs =
        ProbeFolder { model_dir: &model, name: &name, encoder: &encoder, harmful: &harmful, harmless: &harmless };
    let (outcome, files, out) = probe_to_folder(decoder, &inputs, &settings, &args.out, args.force, &progress)?;
    let (stream, layer) = &outcome.analysis.recommended;
    for skip in &outcome.analysis.skipped {
        eprintln!("skipped {}.{}: {}", skip.stream, skip.layer, skip.reason);
    }
    eprintln!(
        "{:.1} prompts/s; recommended layer {layer} ({stream}); wrote {} files: {}",
        outcome.prompts_per_second,
        files.len(),
        files.iter().filter(|f| !f.ends_with(".svg")).cloned().collect::<Vec<_>>().join(", ")
    );
    if let Some(l) = &layer_major {
        eprintln!("layer-major: read {} of weights from the checkpoint", format_bytes(l.bytes_read()));
    }
    println!("{}", out.join("report.md").display());
    Ok(())
}
