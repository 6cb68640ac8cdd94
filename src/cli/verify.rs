//! `scalpel verify`: read an edited checkpoint back and check it no longer writes along the direction.

use super::common::open_model;
use super::selection::{describe, SelectionArgs};
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::directions::DirectionsFile;
use scalpel::surgery::{plan, verify, SurgeryRecord, VerifyReport, EDIT_RECORD_FILE};
use std::path::PathBuf;

/// Check an edited model: for every edited tensor W', print ‖rᵀW'‖/‖W'‖ read back from disk and
/// fail if any exceeds the stored dtype's rounding level.
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
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `verify`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.edited)?;
    let directions = DirectionsFile::load(&args.directions)?;
    let record_path = model.root.join(EDIT_RECORD_FILE);
    let options = if !args.selection.any_given() && record_path.is_file() {
        let text = std::fs::read_to_string(&record_path)?;
        let record: SurgeryRecord =
            serde_json::from_str(&text).with_context(|| format!("reading {}", record_path.display()))?;
        let plan = plan(&model, &directions, &record.options)?;
        for (done, now) in record.edits.iter().zip(&plan.edits) {
            anyhow::ensure!(
                done.tensor != now.tensor || done.direction_hash == now.direction_hash,
                "{} differs from the directions used for the edit (`{}` had hash {}, now {})",
                args.directions.display(),
                done.direction,
                done.direction_hash,
                now.direction_hash
            );
        }
        record.options
    } else {
        args.selection.options(&model.spec, &directions)?
    };
    if !args.json {
        eprintln!("verify {}\n{}", model.root.display(), describe(&options, model.spec.num_layers));
    }
    let plan = plan(&model, &directions, &options)?;
    let report = verify(&model, &plan)?;
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
        "{:<52} {:>5} {:>9} {:>6} {:>11} {:>10}  ok",
        "tensor", "layer", "kind", "dtype", "‖rᵀW'‖/‖W'‖", "threshold"
    );
    for row in &report.rows {
        println!(
            "{:<52} {:>5} {:>9} {:>6} {:>11.3e} {:>10.1e}  {}",
            row.tensor,
            row.layer.map_or("-".to_string(), |l| l.to_string()),
            row.kind,
            row.dtype,
            row.ratio,
            row.threshold,
            if row.pass { "yes" } else { "NO" }
        );
    }
    let failed = report.rows.iter().filter(|r| !r.pass).count();
    println!(
        "{} tensors, worst ratio {:.3e}, {} above threshold{}",
        report.rows.len(),
        report.worst(),
        failed,
        if (report.strength - 1.0).abs() > 1e-12 {
            " (λ ≠ 1: orthogonality not expected, ratios shown for reference)"
        } else {
            ""
        }
    );
    Ok(())
}
