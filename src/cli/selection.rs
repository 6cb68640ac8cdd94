//! The edit selection shared by `ablate` and `verify`.

use super::common::{writer_kinds, Target};
use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::arch::{ModelSpec, WriterKind};
use scalpel::directions::DirectionsFile;
use scalpel::pipeline::SurgerySettings;
use scalpel::surgery::{DirectionChoice, ExpertChoice, SurgeryOptions};

/// `--targets` by default: every writer.
const ALL_TARGETS: [Target; 4] = [Target::Embed, Target::Attn, Target::Mlp, Target::Ple];

/// Which tensors to edit, with which direction, how strongly.
#[derive(Debug, Clone, ClapArgs)]
pub struct SelectionArgs {
    /// Layers whose writers are edited: `all`, `8..20` (20 excluded), `8..=20`, `8..:2` (every
    /// second layer from 8), `8,10,12`, negatives count from the end. Default: all.
    #[arg(long, value_name = "LAYERS", allow_hyphen_values = true)]
    pub layers: Option<String>,
    /// Use the direction extracted at this layer for every edit (default: the layer probe recommended).
    #[arg(long, value_name = "L", conflicts_with = "per_layer")]
    pub direction_layer: Option<usize>,
    /// Stream of the direction (resid_pre, resid_mid, resid_post). Default: the recommended one.
    #[arg(long, value_name = "STREAM")]
    pub stream: Option<String>,
    /// Edit each layer with its own layer's direction instead of one shared direction.
    #[arg(long)]
    pub per_layer: bool,
    /// Writers to edit, comma separated: embed, attn, mlp, ple (Gemma 4's per-layer input
    /// projections).
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',', default_values_t = ALL_TARGETS)]
    pub targets: Vec<Target>,
    /// λ in W' = W − λ r rᵀ W: 1 removes the direction, 2 reflects it, 0.5 halves it.
    #[arg(value_parser = super::common::finite, long, value_name = "λ", default_value_t = 1.0)]
    pub strength: f64,
    /// Rescale each written column back to its original norm (keeps rᵀW' = 0 exactly).
    #[arg(long)]
    pub norm_preserve: bool,
    /// With a tied head, write the original embedding as lm_head.weight and set
    /// tie_word_embeddings: false, so the output head stays as it was.
    #[arg(long)]
    pub untie: bool,
    /// Leave output biases (o_proj.bias, down_proj.bias) unedited.
    #[arg(long)]
    pub no_biases: bool,
    /// Experts of mixture-of-experts layers to edit: `all` (every routed expert and the shared
    /// one), `none` (only the attention writer there), `share:T` (the routed experts whose share
    /// of the layer's write along the direction exceeds T, plus the shared expert).
    #[arg(long, value_name = "CHOICE", default_value = "all")]
    pub experts: ExpertChoice,
}

impl SelectionArgs {
    /// The flags as the library's surgery settings (the one definition shared with recipes).
    pub fn settings(&self) -> anyhow::Result<SurgerySettings> {
        Ok(SurgerySettings {
            layers: self.layers.clone().unwrap_or_else(|| "all".into()),
            direction_layer: self.direction_layer,
            stream: self.stream.clone(),
            per_layer: self.per_layer,
            targets: writer_kinds(&self.targets)?,
            strength: self.strength,
            norm_preserve: self.norm_preserve,
            untie: self.untie,
            biases: !self.no_biases,
            experts: self.experts.clone(),
        })
    }

    /// Turn the flags into surgery options for this model and directions file.
    pub fn options(&self, spec: &ModelSpec, directions: &DirectionsFile) -> anyhow::Result<SurgeryOptions> {
        self.settings()?.options(spec.num_layers, directions).context("choosing the direction")
    }

    /// Whether the user gave any selection flag (as opposed to relying on defaults).
    pub fn any_given(&self) -> bool {
        self.layers.is_some()
            || self.direction_layer.is_some()
            || self.stream.is_some()
            || self.per_layer
            || writer_kinds(&self.targets).ok().as_deref() != Some(&WriterKind::ALL[..])
            || self.strength != 1.0
            || self.norm_preserve
            || self.untie
            || self.no_biases
            || self.experts != ExpertChoice::All
    }
}

/// One line per setting, so a user sees every default before work starts.
pub fn describe(options: &SurgeryOptions, num_layers: usize) -> String {
    let layers =
        if options.layers.len() == num_layers { format!("all {num_layers}") } else { format!("{:?}", options.layers) };
    let direction = match &options.direction {
        DirectionChoice::Fixed { name } => format!("`{name}` for every edit"),
        DirectionChoice::PerLayer { stream } => format!("each layer's own `{stream}.L`"),
    };
    let targets: Vec<&str> = options.targets.iter().map(|t| t.name()).collect();
    format!(
        "  layers        {layers}\n  direction     {direction}\n  targets       {}\n  strength λ    {}\n  norm preserve {}\n  output biases {}\n  untie head    {}\n  experts       {}",
        targets.join(", "),
        options.strength,
        if options.norm_preserve { "yes" } else { "no" },
        if options.biases { "edited" } else { "left as they are" },
        if options.untie { "yes" } else { "no" },
        options.experts,
    )
}
