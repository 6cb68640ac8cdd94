//! The search space: what one trial's edit is made of, and how it maps to a surgery.

use crate::arch::WriterKind;
use crate::directions::{entry_name, Direction, DirectionsFile};
use crate::surgery::{DirectionChoice, ExpertChoice, StrengthProfile, SurgeryOptions, TentProfile};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One trial's edit. Every field is searched:
///
/// - `direction_layer`: which layer's difference-of-means direction, as a real number: between
///   two layers the direction is the normalized blend `(1 − f)·r_⌊x⌋ + f·r_⌈x⌉`, `f = x − ⌊x⌋`;
/// - `stream`: the residual stream the direction was measured at (`resid_pre/mid/post`);
/// - `projected`: the raw direction, or its variant made orthogonal to the harmless mean;
/// - `attn`, `mlp`: per writer kind a strength profile over layers (peak weight, peak
///   position, minimum weight, width: [`TentProfile`]), so the edit can fade out instead of
///   hitting every layer at strength 1;
/// - `embed`: whether the embedding (and a tied head with it) is edited, at strength 1;
/// - `norm_preserve`: whether each edited written vector keeps its length;
/// - `experts`: which experts of sparse layers the MLP profile applies to, among the choices
///   the search was given ([`SearchSpace::experts`]; every expert unless told otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialParams {
    /// Direction layer (real).
    pub direction_layer: f64,
    /// Stream of the direction.
    pub stream: String,
    /// Orthogonal to the harmless mean.
    pub projected: bool,
    /// Attention output profile.
    pub attn: TentProfile,
    /// MLP output profile.
    pub mlp: TentProfile,
    /// Edit the embedding.
    pub embed: bool,
    /// Norm-preserving edit.
    pub norm_preserve: bool,
    /// The experts of sparse layers edited (trials recorded before the choice: every one).
    #[serde(default, skip_serializing_if = "is_all")]
    pub experts: ExpertChoice,
}

fn is_all(choice: &ExpertChoice) -> bool {
    *choice == ExpertChoice::All
}

fn every_expert() -> Vec<ExpertChoice> {
    vec![ExpertChoice::All]
}

/// One dimension of the sampler's unit representation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dim {
    /// A real number in `[lo, hi]`.
    Float {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// One of `n` choices (encoded as 0..n).
    Choice {
        /// How many.
        n: usize,
    },
}

/// The ranges searched, derived from the model and the probe's directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    /// Layers of the model.
    pub num_layers: usize,
    /// Range of `direction_layer`.
    pub direction_layers: (f64, f64),
    /// Streams with a direction at every layer of the range.
    pub streams: Vec<String>,
    /// Whether projected variants exist for them.
    pub projected: bool,
    /// Range of a profile's peak weight.
    pub max_weight: (f64, f64),
    /// The choices of experts searched, the first one in the starting trials (a dense model:
    /// every expert, which is the only choice there).
    #[serde(default = "every_expert")]
    pub experts: Vec<ExpertChoice>,
}

/// The weight range searched for a profile's peak.
pub const MAX_WEIGHT_RANGE: (f64, f64) = (0.6, 1.6);

impl SearchSpace {
    /// The space for `directions` (a probe's output) of a model with `num_layers` layers; the
    /// direction layer ranges over `candidates` (the probe's candidate layers).
    pub fn new(directions: &DirectionsFile, num_layers: usize, candidates: &[usize]) -> Result<SearchSpace> {
        let (lo, hi) = match (candidates.iter().min(), candidates.iter().max()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => return Err(Error::Invalid("the search needs at least one candidate layer".into())),
        };
        let has_all = |stream: &str| (lo..=hi).all(|l| directions.entries.contains_key(&entry_name(stream, l)));
        let streams: Vec<String> = directions.streams().into_iter().filter(|s| !s.ends_with("_projected")).collect();
        let streams: Vec<String> = streams.into_iter().filter(|s| has_all(s)).collect();
        if streams.is_empty() {
            return Err(Error::BadDirections {
                path: directions.path.clone(),
                message: format!(
                    "has no stream with a direction at every layer {lo}..={hi} (run `scalpel probe` first)"
                ),
            });
        }
        let projected = streams.iter().all(|s| has_all(&format!("{s}_projected")));
        Ok(SearchSpace {
            num_layers,
            direction_layers: (lo as f64, hi as f64),
            streams,
            projected,
            max_weight: MAX_WEIGHT_RANGE,
            experts: every_expert(),
        })
    }

    /// This space with the expert choices `experts` searched (on a model with experts; a dense
    /// model keeps the one choice it has). An empty list, or one with a measured share choice,
    /// is refused.
    pub fn with_experts(mut self, experts: &[ExpertChoice], sparse: bool) -> Result<SearchSpace> {
        if experts.is_empty() {
            return Err(Error::Invalid("the search needs at least one expert choice".into()));
        }
        if let Some(measured) = experts.iter().find(|e| !e.needs_measuring() && matches!(e, ExpertChoice::Share { .. }))
        {
            return Err(Error::Invalid(format!(
                "the expert choice `{measured}` is already measured for one direction"
            )));
        }
        if sparse {
            self.experts = experts.to_vec();
        }
        Ok(self)
    }

    /// The sampler's dimensions, in [`SearchSpace::encode`] order.
    pub fn dims(&self) -> Vec<Dim> {
        let n = self.num_layers as f64;
        let (wlo, whi) = self.max_weight;
        let profile = [
            Dim::Float { lo: wlo, hi: whi },
            Dim::Float { lo: 0.0, hi: (n - 1.0).max(0.0) },
            Dim::Float { lo: 0.0, hi: 1.0 },
            Dim::Float { lo: 1.0, hi: n.max(1.0) },
        ];
        let mut dims = vec![
            Dim::Float { lo: self.direction_layers.0, hi: self.direction_layers.1 },
            Dim::Choice { n: self.streams.len() },
            Dim::Choice { n: if self.projected { 2 } else { 1 } },
        ];
        dims.extend(profile);
        dims.extend(profile);
        dims.extend([Dim::Choice { n: 2 }, Dim::Choice { n: 2 }, Dim::Choice { n: self.experts.len() }]);
        dims
    }

    /// `params` as a point of [`SearchSpace::dims`] (a profile's minimum as a fraction of its peak).
    pub fn encode(&self, params: &TrialParams) -> Result<Vec<f64>> {
        let stream = self
            .streams
            .iter()
            .position(|s| *s == params.stream)
            .ok_or_else(|| Error::Invalid(format!("stream `{}` is not in the search space", params.stream)))?;
        let kernel = |k: &TentProfile| {
            let fraction = if k.max_weight != 0.0 { (k.min_weight / k.max_weight).clamp(0.0, 1.0) } else { 0.0 };
            [k.max_weight, k.peak, fraction, k.width]
        };
        let mut x = vec![params.direction_layer, stream as f64, f64::from(u8::from(params.projected))];
        x.extend(kernel(&params.attn));
        x.extend(kernel(&params.mlp));
        let experts =
            self.experts.iter().position(|e| *e == params.experts).ok_or_else(|| {
                Error::Invalid(format!("expert choice `{}` is not in the search space", params.experts))
            })?;
        x.extend([f64::from(u8::from(params.embed)), f64::from(u8::from(params.norm_preserve)), experts as f64]);
        Ok(x)
    }

    /// The trial a point of [`SearchSpace::dims`] stands for.
    pub fn decode(&self, x: &[f64]) -> TrialParams {
        let choice = |v: f64, n: usize| (v.round().max(0.0) as usize).min(n.saturating_sub(1));
        let kernel = |k: &[f64]| TentProfile { max_weight: k[0], peak: k[1], min_weight: k[0] * k[2], width: k[3] };
        TrialParams {
            direction_layer: x[0],
            stream: self.streams[choice(x[1], self.streams.len())].clone(),
            projected: self.projected && choice(x[2], 2) == 1,
            attn: kernel(&x[3..7]),
            mlp: kernel(&x[7..11]),
            embed: choice(x[11], 2) == 1,
            norm_preserve: choice(x[12], 2) == 1,
            experts: self.experts[choice(x[13], self.experts.len())].clone(),
        }
    }

    /// The edit the research note's recipe makes with the direction of `layer`: every writer of
    /// every layer and the embedding at strength 1 (a good starting trial).
    pub fn full_strength(&self, stream: &str, layer: usize) -> TrialParams {
        let every = TentProfile::constant(1.0, self.num_layers);
        TrialParams {
            direction_layer: (layer as f64).clamp(self.direction_layers.0, self.direction_layers.1),
            stream: if self.streams.iter().any(|s| s == stream) { stream.to_string() } else { self.streams[0].clone() },
            projected: false,
            attn: TentProfile { peak: (self.num_layers as f64 - 1.0) / 2.0, ..every },
            mlp: TentProfile { peak: (self.num_layers as f64 - 1.0) / 2.0, ..every },
            embed: true,
            norm_preserve: false,
            experts: self.experts[0].clone(),
        }
    }
}

impl TrialParams {
    /// The trial's direction (unit length), blended from the probe's per-layer directions.
    pub fn direction(&self, directions: &DirectionsFile, name: &str) -> Result<Direction> {
        let stream = if self.projected { format!("{}_projected", self.stream) } else { self.stream.clone() };
        let below = self.direction_layer.floor().max(0.0);
        let f = self.direction_layer - below;
        let lower = &directions.get(&stream, below as usize)?.rows[0];
        let blended: Vec<f64> = if f > 1e-9 {
            let upper = &directions.get(&stream, below as usize + 1)?.rows[0];
            lower.iter().zip(upper).map(|(&a, &b)| (1.0 - f) * f64::from(a) + f * f64::from(b)).collect()
        } else {
            lower.iter().map(|&a| f64::from(a)).collect()
        };
        let norm = blended.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::BadDirections {
                path: directions.path.clone(),
                message: format!("the blend at layer {:.2} of `{stream}` has no length", self.direction_layer),
            });
        }
        Ok(Direction { name: name.to_string(), rows: vec![blended.iter().map(|x| (x / norm) as f32).collect()] })
    }

    /// The surgery this trial stands for, with its direction stored as entry `direction_name`.
    pub fn surgery_options(&self, num_layers: usize, direction_name: &str) -> SurgeryOptions {
        // Every writer of each layer (a model without per-layer inputs has no `ple` writer).
        let mut targets = vec![WriterKind::Attn, WriterKind::Mlp, WriterKind::PerLayer];
        if self.embed {
            targets.insert(0, WriterKind::Embed);
        }
        SurgeryOptions {
            layers: (0..num_layers).collect(),
            targets,
            direction: DirectionChoice::Fixed { name: direction_name.to_string() },
            strength: 1.0,
            norm_preserve: self.norm_preserve,
            untie: false,
            biases: true,
            profile: Some(StrengthProfile {
                attn: self.attn,
                mlp: self.mlp,
                embed: if self.embed { 1.0 } else { 0.0 },
            }),
            experts: self.experts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn file(layers: usize, hidden: usize) -> DirectionsFile {
        let mut entries = BTreeMap::new();
        for stream in ["resid_pre", "resid_post", "resid_pre_projected", "resid_post_projected"] {
            for l in 0..layers {
                let mut v = vec![0f32; hidden];
                v[l % hidden] = 1.0;
                entries.insert(entry_name(stream, l), Direction { name: entry_name(stream, l), rows: vec![v] });
            }
        }
        DirectionsFile { path: PathBuf::from("d.safetensors"), entries, metadata: BTreeMap::new() }
    }

    #[test]
    fn encode_and_decode_are_inverse_and_cover_every_field() {
        let d = file(6, 8);
        let space = SearchSpace::new(&d, 6, &[1, 2, 3, 4]).unwrap();
        assert_eq!(space.streams, ["resid_post", "resid_pre"]);
        assert!(space.projected);
        let p = TrialParams {
            direction_layer: 2.25,
            stream: "resid_pre".into(),
            projected: true,
            attn: TentProfile { max_weight: 1.2, peak: 3.5, min_weight: 0.3, width: 2.0 },
            mlp: TentProfile { max_weight: 0.8, peak: 1.0, min_weight: 0.8, width: 6.0 },
            embed: false,
            norm_preserve: true,
            experts: ExpertChoice::All,
        };
        let x = space.encode(&p).unwrap();
        assert_eq!(x.len(), space.dims().len());
        let back = space.decode(&x);
        assert_eq!(back.stream, p.stream);
        assert_eq!((back.projected, back.embed, back.norm_preserve), (true, false, true));
        assert!((back.attn.min_weight - 0.3).abs() < 1e-12 && (back.mlp.width - 6.0).abs() < 1e-12);
        // Expert choices: searched on a model with experts, ignored on a dense one.
        let choices = [ExpertChoice::All, ExpertChoice::None, ExpertChoice::share(0.3).unwrap()];
        let dense = space.clone().with_experts(&choices, false).unwrap();
        assert_eq!(dense.experts, [ExpertChoice::All]);
        let sparse = space.with_experts(&choices, true).unwrap();
        let p = TrialParams { experts: choices[2].clone(), ..p };
        let back = sparse.decode(&sparse.encode(&p).unwrap());
        assert_eq!(back.experts, choices[2]);
        assert_eq!(back.surgery_options(6, "t").experts, choices[2]);
        assert!(sparse.encode(&TrialParams { experts: ExpertChoice::share(0.1).unwrap(), ..p }).is_err());
    }

    #[test]
    fn a_direction_between_layers_is_the_normalized_blend() {
        let d = file(6, 8);
        let space = SearchSpace::new(&d, 6, &[1, 2, 3, 4]).unwrap();
        let p = TrialParams { direction_layer: 2.25, ..space.full_strength("resid_pre", 2) };
        let r = &p.direction(&d, "t").unwrap().rows[0];
        let (a, b) = (0.75f64, 0.25f64);
        let n = (a * a + b * b).sqrt();
        assert!((f64::from(r[2]) - a / n).abs() < 1e-6 && (f64::from(r[3]) - b / n).abs() < 1e-6);
        let exact = TrialParams { direction_layer: 3.0, ..p.clone() };
        assert_eq!(exact.direction(&d, "t").unwrap().rows[0][3], 1.0);
        let projected = TrialParams { projected: true, ..exact };
        assert_eq!(projected.direction(&d, "t").unwrap().rows[0][3], 1.0);
    }

    #[test]
    fn the_full_strength_trial_edits_every_writer_at_one() {
        let d = file(6, 8);
        let space = SearchSpace::new(&d, 6, &[1, 2, 3, 4]).unwrap();
        let options = space.full_strength("resid_pre", 3).surgery_options(6, "t");
        for l in 0..6 {
            assert_eq!(options.strength_of(WriterKind::Attn, Some(l)), 1.0);
            assert_eq!(options.strength_of(WriterKind::Mlp, Some(l)), 1.0);
        }
        assert_eq!(options.strength_of(WriterKind::Embed, None), 1.0);
        assert!(SearchSpace::new(&d, 6, &[]).is_err());
        let missing = SearchSpace::new(&file(3, 8), 6, &[1, 2, 3, 4]).unwrap_err().to_string();
        assert!(missing.contains("1..=4"), "{missing}");
    }
}
