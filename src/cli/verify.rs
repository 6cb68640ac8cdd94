//! `scalpel verify`: read an edited checkpoint back and check it no longer writes along the direction.

use super::common::open_model;
use super::selection::{describe, SelectionArgs};
use clap::Args as ClapArgs;
use scalpel::directions::DirectionsFile;
use scalpel::pipeline::{edit_record, original_model, verify_step};
use scalpel::surgery::VerifyReport;
use std::path::PathBuf;

/// Check an edited model: for every edited tensor W', print ‖QᵀW'‖/‖W'‖ read back from disk (Q:
/// the direction, or u = γ⊙r/‖γ⊙r‖ for writers behind a Gemma 2/3 post-norm) and fail if it is
/// further from what the edit promises (0 for λ = 1, |1 − λ|·‖QᵀW‖/‖W'‖ otherwise) than rounding
/// to the stored dtype explains.
///
/// By default the selection (layers, targets, direction, strength) is read from the
/// scalpel_edit.json that `ablate` wrote; selection flags override it.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The edited model folder.
    pub edited: String,
    /// The directions file used for the edit.
    #[arg(long, value_name = "FILE")]
    pub directions: PathBuf,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// The unedited model, for the expected ratios; needed when λ ≠ 1. It must be the model the
    /// edit record names (weight bytes and content hash). Default: the path the record holds,
    /// present only when the edit was written with --record-paths (and in older records).
    #[arg(long, value_name = "MODEL")]
    pub original: Option<String>,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `verify`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.edited)?;
    let directions = DirectionsFile::load(&args.directions)?;
    let record = edit_record(&model)?;
    let options = if args.selection.any_given() || record.is_none() {
        Some(args.selection.options(&model.spec, &directions)?)
    } else {
        None
    };
    let given = args.original.as_deref().map(open_model).transpose().map_err(|e| e.context("opening --original"))?;
    let original = original_model(record.as_ref(), given)?;
    let (options, report) = verify_step(&model, &args.directions, options.as_ref(), original.as_ref())?;
    if !args.json {
        eprintln!("verify {}\n{}", model.root.display(), describe(&options, model.spec.num_layers));
        match &report.original {
            Some(o) => eprintln!("  original      {o} (expected ratios from its weights)"),
            None => eprintln!("  original      not available: λ = 1 checked against the rounding bound alone"),
        }
    }
    print_report(&report, args.json)?;
    anyhow::ensure!(report.all_pass(), "verification failed: some tensors still write along the direction");
    Ok(())
}

/// Print a verify report as a table (or JSON).
pub fn print_report(report: &VerifyReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "{:<52} {:>5} {:>9} {:>6} {:>11} {:>9} {:>9}  ok",
        "tensor", "layer", "kind", "dtype", "‖QᵀW'‖/‖W'‖", "expected", "bound"
    );
    for row in &report.rows {
        println!(
            "{:<52} {:>5} {:>9} {:>6} {:>11.3e} {:>9.2e} {:>9.1e}  {}",
            row.tensor,
            row.layer.map_or("-".to_string(), |l| l.to_string()),
            row.kind,
            row.dtype,
            row.ratio,
            row.expected,
            row.threshold,
            if row.pass { "yes" } else { "NO" }
        );
    }
    let failed = report.rows.iter().filter(|r| !r.pass).count();
    println!(
        "{} tensors, worst ratio {:.3e} (λ = {}), {} outside their bound",
        report.rows.len(),
        report.worst(),
        report.strength,
        failed
    );
    Ok(())
}
