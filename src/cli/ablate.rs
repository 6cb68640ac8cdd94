//! `scalpel ablate`: write an edited copy of a model with directions projected out of its writers.

use super::common::{human_bytes, open_model, recorded_command};
use super::progress::Bar;
use super::selection::{describe, SelectionArgs};
use super::verify::print_report;
use clap::Args as ClapArgs;
use scalpel::directions::DirectionsFile;
use scalpel::pipeline::{ablate_step, AblateRequest};
use scalpel::progress::{Progress, Unit};
use scalpel::search::{parse_trial_ref, trial_edit};
use scalpel::surgery::{SurgeryOptions, SurgeryPlan};
use std::path::PathBuf;

/// Orthogonalize the embedding, attention-output and MLP-output matrices (and output biases)
/// against a direction and write a new checkpoint (same dtype, shards, config and tokenizer).
///
/// With nothing but --directions and --out, the direction probe recommended is removed from
/// every layer and every writer. The input folder is never modified; the output is written to a
/// temporary folder, read back and verified, and only then renamed into place, with a model card.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Model folder, or a Hugging Face id (owner/name).
    pub model: String,
    /// Directions file (safetensors), as written by `scalpel probe`.
    #[arg(long, value_name = "FILE", required_unless_present = "trial")]
    pub directions: Option<PathBuf>,
    /// Write a trial of `scalpel search` exactly: DIR (the chosen trial) or DIR:N (trial N).
    /// Its direction, strength profiles, embedding and norm-preservation settings replace the
    /// selection flags (only --untie and --no-biases still apply).
    #[arg(long, value_name = "DIR[:N]", conflicts_with = "directions")]
    pub trial: Option<String>,
    /// Output folder for the edited model.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// Skip reading the written files back to verify them before they are moved into place.
    #[arg(long)]
    pub no_verify: bool,
    /// Record the absolute paths of the model, the directions file and the command line in the
    /// edit record, card and metadata (by default: names, sizes and content hashes only).
    #[arg(long)]
    pub record_paths: bool,
    /// Also export the edited model as GGUF and/or the edit as a LoRA adapter (see `scalpel export`).
    #[command(flatten)]
    pub export: super::export::ExportArgs,
}

/// Run `ablate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = open_model(&args.model)?;
    let (directions_path, options, search_trial) = match (&args.trial, &args.directions) {
        (Some(reference), _) => {
            let (dir, number) = parse_trial_ref(reference);
            let edit = trial_edit(&dir, number, model.spec.num_layers)?;
            let summary = edit.summary(&dir);
            let options =
                SurgeryOptions { untie: args.selection.untie, biases: !args.selection.no_biases, ..edit.options };
            (edit.directions.path, options, Some(summary))
        }
        (None, Some(path)) => {
            let directions = DirectionsFile::load(path)?;
            (path.clone(), args.selection.options(&model.spec, &directions)?, None)
        }
        (None, None) => anyhow::bail!("give --directions FILE or --trial DIR"),
    };
    let command = recorded_command(&std::env::args().collect::<Vec<String>>(), args.record_paths);
    let request = AblateRequest {
        model: &model,
        directions: &directions_path,
        options: &options,
        out: &args.out,
        force: args.force,
        verify: !args.no_verify,
        command: &command,
        search_trial,
        record_paths: args.record_paths,
    };
    let announce = |plan: &SurgeryPlan| {
        eprintln!("ablate {} → {}", model.root.display(), args.out.display());
        eprintln!("{}", describe(&options, model.spec.num_layers));
        eprintln!("  tensors       {} to edit, everything else copied byte for byte", plan.edits.len());
        if plan.edits.iter().any(|e| e.through_norm.is_some()) {
            eprintln!("  post-norms    attention/MLP outputs pass through norms: edited against γ ⊙ r (exact)");
        }
        if plan.edits_tied_head && !options.untie {
            eprintln!(
                "  note          the output head is tied to the embedding, so editing the embedding also edits the head; pass --untie to keep the original head"
            );
        }
    };
    let progress = Bar::new("writing", Unit::Bytes);
    let (_, report) = ablate_step(&request, &announce, &progress)?;
    progress.finish();
    let w = &report.write;
    eprintln!(
        "wrote {} in {:.1}s ({}/s): {} tensors edited, {} copied; files: {}",
        human_bytes(w.bytes_written),
        w.seconds,
        human_bytes((w.bytes_written as f64 / w.seconds.max(1e-9)) as u64),
        w.edited.len(),
        w.copied,
        w.files_copied.join(", ")
    );
    if !w.files_skipped.is_empty() {
        eprintln!("not copied (other weight formats or folders): {}", w.files_skipped.join(", "));
    }
    if report.untied {
        eprintln!("untied: lm_head.weight holds the original embedding; config.json has tie_word_embeddings: false");
    }
    if let Some(verification) = &report.verification {
        print_report(verification, false)?;
    }
    println!("{}", w.out.display());
    if args.export.any() {
        let edited = scalpel::checkpoint::ModelDir::open(&w.out)?;
        super::export::export(&edited, &args.export, Some(&model.root), Some(&directions_path))?;
    }
    Ok(())
}
