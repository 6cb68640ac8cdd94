//! `scalpel svd`: which directions do the layers' writers share?

use super::common::{deprecated, open_model, writer_kinds, Target};
use super::progress::Bar;
use clap::Args as ClapArgs;
use scalpel::analysis::{analyse_writers, write_svd_outputs, SvdSettings};
use scalpel::checkpoint::StagedOutput;
use scalpel::directions::DirectionsFile;
use scalpel::layers::parse_layers;
use scalpel::progress::{Progress, Unit};
use std::path::PathBuf;

/// SVD of every output-side writer (attention and MLP outputs, the embedding): the top-k
/// directions each layer writes, how much layers share them (principal angles, heatmaps), the
/// directions most shared across layers, and how well each layer can write along given
/// directions. Reads weights through memory maps; no model run is needed.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id.
    pub model: String,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Singular vectors kept per writer.
    #[arg(value_parser = super::common::at_least_one, long, default_value_t = 32)]
    pub top_k: usize,
    /// Layers (default: all).
    #[arg(long, value_name = "LAYERS", allow_hyphen_values = true)]
    pub layers: Option<String>,
    /// Writers to analyse, comma separated: embed, attn, mlp, ple.
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',', default_values_t = [Target::Attn, Target::Mlp])]
    pub targets: Vec<Target>,
    /// Old spelling of --targets.
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',', hide = true, conflicts_with = "targets")]
    pub writers: Option<Vec<Target>>,
    /// Directions file (from probe): report each direction's alignment with every writer.
    #[arg(long, value_name = "FILE")]
    pub directions: Option<PathBuf>,
    /// Exact thin SVD instead of the randomized one.
    #[arg(long)]
    pub exact: bool,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Run `svd`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let targets = match &args.writers {
        Some(old) => {
            deprecated("--writers", "--targets");
            old
        }
        None => &args.targets,
    };
    let model = open_model(&args.model)?;
    let staged = StagedOutput::new(&args.out, &[&model.root], args.force)?;
    let settings = SvdSettings {
        top_k: args.top_k.max(1),
        layers: parse_layers(args.layers.as_deref().unwrap_or("all"), model.spec.num_layers)?,
        writers: writer_kinds(targets)?,
        exact: args.exact,
        consensus: 3,
    };
    let directions = args.directions.as_deref().map(DirectionsFile::load).transpose()?;
    let started = std::time::Instant::now();
    let bar = Bar::new("svd", Unit::Items);
    let analysis = analyse_writers(&model, &settings, directions.as_ref(), &bar)?;
    bar.finish();
    let files = write_svd_outputs(staged.path(), &analysis, &scalpel::checkpoint::display_name(&model.root))?;
    let out = staged.commit()?;
    eprintln!(
        "analysed {} writers in {:.1}s; wrote {}",
        analysis.writers.len(),
        started.elapsed().as_secs_f64(),
        files.join(", ")
    );
    println!("{}", out.join("report.md").display());
    Ok(())
}
