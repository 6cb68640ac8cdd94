//! Strength profiles: how strongly each layer's writers are edited, as a smooth function of the
//! layer, per writer kind. `scalpel search` tunes them; `ablate --trial` writes them.

use crate::arch::WriterKind;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A tent over layers (one writer kind's strength by layer): `max_weight` at layer `peak` (a real number), falling linearly to
/// `min_weight` at `width` layers from the peak, and 0 beyond:
///
/// `w(l) = max_weight + (min_weight − max_weight) · |l − peak| / width` for `|l − peak| ≤ width`,
/// else `0`.
///
/// A constant strength λ at every layer is `max_weight = min_weight = λ` with a width that
/// reaches every layer ([`TentProfile::constant`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TentProfile {
    /// Weight at the peak.
    pub max_weight: f64,
    /// Layer of the peak (may lie between layers).
    pub peak: f64,
    /// Weight at `width` layers from the peak.
    pub min_weight: f64,
    /// Distance in layers over which the weight falls from max to min (> 0).
    pub width: f64,
}

impl TentProfile {
    /// The same weight `w` at every one of `num_layers` layers.
    pub fn constant(w: f64, num_layers: usize) -> TentProfile {
        TentProfile { max_weight: w, peak: 0.0, min_weight: w, width: num_layers.max(1) as f64 }
    }

    /// The weight of `layer`.
    pub fn weight(&self, layer: usize) -> f64 {
        let distance = (layer as f64 - self.peak).abs();
        if distance > self.width {
            0.0
        } else {
            self.max_weight + (self.min_weight - self.max_weight) * distance / self.width
        }
    }

    fn check(&self, what: &str) -> Result<()> {
        let finite = [self.max_weight, self.peak, self.min_weight, self.width].iter().all(|x| x.is_finite());
        if !finite || self.width <= 0.0 {
            return Err(Error::Invalid(format!(
                "{what} strength profile needs finite numbers and a positive width (got {self:?})"
            )));
        }
        Ok(())
    }
}

/// Per-kind strength profiles: attention and MLP writers by layer, the embedding by one number.
/// A per-layer input projection (Gemma 4's E models) follows its layer's MLP weight: both write
/// the second half of the layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StrengthProfile {
    /// Attention output writers.
    pub attn: TentProfile,
    /// MLP output writers.
    pub mlp: TentProfile,
    /// The embedding (and a tied head with it).
    pub embed: f64,
}

impl StrengthProfile {
    /// The weight of a writer (`layer` is None for the embedding).
    pub fn weight(&self, kind: WriterKind, layer: Option<usize>) -> f64 {
        match (kind, layer) {
            (WriterKind::Embed, _) | (_, None) => self.embed,
            (WriterKind::Attn, Some(l)) => self.attn.weight(l),
            (WriterKind::Mlp | WriterKind::PerLayer, Some(l)) => self.mlp.weight(l),
        }
    }

    /// Reject non-finite numbers and empty widths.
    pub fn check(&self) -> Result<()> {
        self.attn.check("attention")?;
        self.mlp.check("MLP")?;
        if !self.embed.is_finite() {
            return Err(Error::Invalid("embedding strength must be finite".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tent_peaks_falls_linearly_and_stops_at_its_width() {
        let k = TentProfile { max_weight: 1.2, peak: 10.5, min_weight: 0.2, width: 4.0 };
        assert!((k.weight(10) - (1.2 - 1.0 * 0.5 / 4.0)).abs() < 1e-12);
        assert!((k.weight(11) - k.weight(10)).abs() < 1e-12, "symmetric around a peak between layers");
        assert!((k.weight(14) - (1.2 - 1.0 * 3.5 / 4.0)).abs() < 1e-12);
        assert_eq!(k.weight(15), 0.0, "4.5 layers away is beyond the width");
        assert_eq!(k.weight(0), 0.0);
    }

    #[test]
    fn constant_kernel_reaches_every_layer() {
        let k = TentProfile::constant(0.7, 24);
        assert!((0..24).all(|l| (k.weight(l) - 0.7).abs() < 1e-12));
    }

    #[test]
    fn profile_picks_the_kernel_by_kind_and_rejects_bad_numbers() {
        let p = StrengthProfile {
            attn: TentProfile::constant(0.5, 4),
            mlp: TentProfile { max_weight: 1.0, peak: 2.0, min_weight: 0.0, width: 2.0 },
            embed: 0.0,
        };
        assert_eq!(p.weight(WriterKind::Attn, Some(3)), 0.5);
        assert_eq!(p.weight(WriterKind::Mlp, Some(3)), 0.5);
        assert_eq!(p.weight(WriterKind::Embed, None), 0.0);
        assert!(p.check().is_ok());
        let bad = StrengthProfile { mlp: TentProfile { width: 0.0, ..p.mlp }, ..p };
        assert!(bad.check().is_err());
        let nan = StrengthProfile { embed: f64::NAN, ..p };
        assert!(nan.check().is_err());
    }
}
