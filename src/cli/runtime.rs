//! Options shared by the commands that run a model: device and dtype, prompt format, and
//! runtime interventions from a directions file.

use anyhow::Context;
use clap::Args as ClapArgs;
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::layers::parse_layers;
use scalpel::model::{
    basis_tensor, parse_device, parse_dtype, Decoder, HookPoint, Intervention, Interventions, KernelConfig,
    LoadOptions, WeightStorage,
};
use scalpel::prompts::{PromptEncoder, PromptFormat};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How to run the model and format prompts.
#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    /// Device: auto (CUDA or Metal when built in and present, else the CPU), cpu, cuda, cuda:N,
    /// metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute dtype: f32 (default on CPU), bf16, f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Where the compute dtype is f32 on the CPU, keep a bf16/f16 checkpoint's matrices in its
    /// 16-bit dtype (`checkpoint`: half the memory, the same results, capture ~25 % slower),
    /// widen them at load (`compute`; on a CPU with AMX a bf16 checkpoint's are kept bf16 and
    /// tile-packed instead, for f32-accurate AMX products, the same memory), or choose
    /// `compute` when its weights and half again fit the available memory, else `checkpoint`
    /// (`auto`). Default: $SCALPEL_WEIGHTS_DTYPE, else `auto`. SCALPEL_AMX=0 turns AMX off;
    /// SCALPEL_PANELS=0 keeps f32 matrices in rows instead of AVX-512 panels.
    #[arg(long, value_name = "auto|checkpoint|compute")]
    pub weights_dtype: Option<String>,
    /// System prompt for the chat template.
    #[arg(long)]
    pub system: Option<String>,
    /// Feed prompts as plain text, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// With --raw, do not end the prompt with a newline.
    #[arg(long, requires = "raw")]
    pub no_newline: bool,
    /// Run the model with this PEFT LoRA adapter merged in (e.g. one `scalpel export --adapter` wrote).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

impl RunArgs {
    /// The prompt format these flags describe.
    pub fn format(&self) -> PromptFormat {
        if self.raw {
            PromptFormat::Raw { trailing_newline: !self.no_newline }
        } else {
            PromptFormat::Chat { system: self.system.clone() }
        }
    }

    /// How the weights are kept in memory: --weights-dtype, else the environment's default.
    pub fn storage(&self) -> anyhow::Result<WeightStorage> {
        Ok(match &self.weights_dtype {
            Some(text) => WeightStorage::parse(text)?,
            None => WeightStorage::from_env()?,
        })
    }

    /// Load the decoder and the prompt encoder of `model`.
    pub fn load(&self, model: &ModelDir) -> anyhow::Result<(Decoder, PromptEncoder)> {
        let dtype = parse_dtype(&self.dtype)?;
        let device = parse_device(&self.device)?;
        let merged = self
            .adapter
            .as_ref()
            .map(|a| scalpel::export::merge_adapter(model, a, &scalpel::progress::Silent))
            .transpose()?;
        let options = LoadOptions { storage: self.storage()?, kernels: kernels_from_env() };
        let decoder = Decoder::load_with_options(merged.as_ref().map_or(model, |m| &m.model), &device, dtype, options)
            .context("loading the model")?;
        let encoder = PromptEncoder::from_model_dir(&model.root, self.format())?;
        Ok((decoder, encoder))
    }
}

/// Environment variable that turns the AMX products off (`0`, `off`, `false`, `no`).
const AMX_ENV: &str = "SCALPEL_AMX";
/// Environment variable that keeps f32 matrices in rows instead of AVX-512 panels (`0`, ...).
const PANELS_ENV: &str = "SCALPEL_PANELS";

/// The packed kernels the environment allows: each unless its variable turns it off.
pub fn kernels_from_env() -> KernelConfig {
    let off = |var: &str| {
        std::env::var(var).is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no"))
    };
    KernelConfig { amx: !off(AMX_ENV), panels: !off(PANELS_ENV) }
}

/// Runtime interventions (no weights are changed).
#[derive(Debug, Clone, ClapArgs)]
pub struct InterventionArgs {
    /// Ablate a direction from this directions file at every residual hook point of the
    /// selected layers (preview of `scalpel ablate` without writing weights).
    #[arg(long, value_name = "FILE")]
    pub ablate: Option<PathBuf>,
    /// Add α·r to the residual stream at --layer (activation addition), r from this file.
    #[arg(long, value_name = "FILE")]
    pub add: Option<PathBuf>,
    /// α for --add (negative values steer away).
    #[arg(value_parser = super::common::finite, long, default_value_t = 4.0, allow_hyphen_values = true)]
    pub alpha: f64,
    /// Layer for --add.
    #[arg(long)]
    pub layer: Option<usize>,
    /// Rotate activations by --angle in the plane of r and a second direction (angular steering).
    #[arg(long, value_name = "FILE")]
    pub rotate: Option<PathBuf>,
    /// Rotation angle in degrees for --rotate.
    #[arg(value_parser = super::common::finite, long, default_value_t = 180.0, allow_hyphen_values = true)]
    pub angle: f64,
    /// With --rotate, only rotate activations that point along r (h·r > 0).
    #[arg(long)]
    pub adaptive: bool,
    /// Layers for --ablate and --rotate (default: all).
    #[arg(long = "intervene-layers", value_name = "LAYERS")]
    pub layers: Option<String>,
    /// Which direction of the file (default: the recommended one).
    #[arg(long = "intervene-direction-layer", value_name = "L")]
    pub direction_layer: Option<usize>,
}

impl InterventionArgs {
    /// Whether any intervention is asked for (what [`InterventionArgs::build`] turns into items).
    pub fn any(&self) -> bool {
        self.ablate.is_some() || self.add.is_some() || self.rotate.is_some()
    }

    /// Build the interventions for a model with `num_layers` layers and width `hidden`.
    pub fn build(&self, decoder: &Decoder) -> anyhow::Result<Interventions> {
        let spec = decoder.spec();
        let device = decoder.device();
        let layers = parse_layers(self.layers.as_deref().unwrap_or("all"), spec.num_layers)?;
        let load = |path: &PathBuf| -> anyhow::Result<Vec<Vec<f32>>> {
            let file = DirectionsFile::load(path)?;
            anyhow::ensure!(
                file.hidden() == spec.hidden_size,
                "{}: directions have length {}, the model's hidden size is {}",
                path.display(),
                file.hidden(),
                spec.hidden_size
            );
            let chosen = file.select(None, self.direction_layer)?;
            eprintln!("intervention direction: `{}` from {}", chosen.name, path.display());
            Ok(chosen.rows.clone())
        };
        let mut items = Vec::new();
        if let Some(path) = &self.ablate {
            let basis = basis_tensor(&load(path)?, device)?;
            let bases: BTreeMap<usize, _> = layers.iter().map(|&l| (l, basis.clone())).collect();
            items.push(Intervention::Ablate { points: HookPoint::STREAMS.to_vec(), bases });
        }
        if let Some(path) = &self.add {
            let layer = self.layer.context("--add needs --layer")?;
            anyhow::ensure!(layer < spec.num_layers, "--layer {layer} is outside 0..{}", spec.num_layers);
            let rows = load(path)?;
            let r = basis_tensor(&rows[..1], device)?.squeeze(0)?;
            items.push(Intervention::Add {
                point: HookPoint::ResidPre,
                layers: vec![layer],
                vector: r,
                alpha: self.alpha,
            });
        }
        if let Some(path) = &self.rotate {
            let rows = load(path)?;
            let plane = match rows.len() {
                1 => anyhow::bail!(
                    "{}: rotation needs a plane; store two directions in the entry ([2, hidden], e.g. probe --directions 2)",
                    path.display()
                ),
                _ => basis_tensor(&rows[..2], device)?,
            };
            items.push(Intervention::Rotate {
                point: HookPoint::ResidPre,
                layers: layers.clone(),
                b1: plane.get(0)?,
                b2: plane.get(1)?,
                angle: self.angle.to_radians(),
                adaptive: self.adaptive,
            });
        }
        Ok(Interventions { items })
    }
}

#[cfg(test)]
mod tests {
    use super::RunArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunArgs,
    }

    /// The words of a recorded prompt format (`--system` followed by its JSON-quoted text).
    fn words(spelling: &str) -> Vec<String> {
        match spelling.strip_prefix("--system ") {
            Some(quoted) => vec!["--system".into(), serde_json::from_str(quoted).expect("a JSON string")],
            None if spelling == "chat" => Vec::new(),
            None => spelling.split(' ').map(String::from).collect(),
        }
    }

    #[test]
    fn a_recorded_prompt_format_parses_back_to_the_same_format() {
        let cases: [&[&str]; 4] = [&[], &["--system", "Be \"brief\", please."], &["--raw"], &["--raw", "--no-newline"]];
        for flags in cases {
            let format = Flags::parse_from(std::iter::once("scalpel").chain(flags.iter().copied())).run.format();
            let spelling = format.to_string();
            let again = Flags::parse_from(std::iter::once("scalpel".to_string()).chain(words(&spelling))).run.format();
            assert_eq!(again, format, "{flags:?} is recorded as {spelling:?}");
            assert!(!spelling.contains('{') && !spelling.contains("Chat"), "not Debug output: {spelling}");
        }
    }
}
