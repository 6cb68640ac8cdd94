//! `scalpel run`: a whole experiment from a recipe.

use clap::Args as ClapArgs;
use scalpel::pipeline::run_recipe;
use scalpel::recipe::Recipe;
use std::path::PathBuf;

/// Run a recipe end to end: probe → choose the layer → ablate → verify → eval (before/after)
/// → report.md with plots, tables and side-by-side samples. Steps whose outputs exist and whose
/// recipe settings did not change are skipped, so a run can be resumed or refined cheaply.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The recipe (TOML), e.g. recipes/smollm2-135m-instruct.toml.
    pub recipe: PathBuf,
    /// Override recipe values: --set probe.batch=8 --set direction.layer=12 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output folder (default: the recipe's output.dir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Record the absolute paths of the model and directions file in the edited model (as
    /// `output.record_paths = true`); by default only their names, sizes and hashes.
    #[arg(long)]
    pub record_paths: bool,
}

/// Run `run`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut recipe = Recipe::load(&args.recipe, &args.set)?;
    if let Some(out) = args.out {
        anyhow::ensure!(!out.as_os_str().is_empty(), "--out is empty: name the folder the run writes into");
        recipe.output.dir = out;
    }
    recipe.output.record_paths |= args.record_paths;
    eprintln!("run {} → {}", args.recipe.display(), recipe.output.dir.display());
    let outside = scalpel::recipe::recipe_base(&args.recipe)
        .is_some_and(|base| recipe.output.dir.is_absolute() && !recipe.output.dir.starts_with(&base));
    if outside {
        eprintln!(
            "note: the output folder {} lies outside the recipe's repository",
            std::path::absolute(&recipe.output.dir).unwrap_or_else(|_| recipe.output.dir.clone()).display()
        );
    }
    let summary = run_recipe(&recipe, &scalpel::checkpoint::Hub::from_env(), &super::progress::Terminal)?;
    eprintln!(
        "done: direction `{}`; steps run: {}",
        summary.direction,
        if summary.ran.is_empty() { "none (up to date)".to_string() } else { summary.ran.join(", ") }
    );
    println!("{}", summary.report.display());
    Ok(())
}
