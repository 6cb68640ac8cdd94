//! From two sets' statistics to metrics, rankings, a recommendation and directions.

use super::capture::SetStats;
use super::extract::{mean_difference, projected, unit};
use super::metrics::{layer_metrics, norm, LayerMetrics};
use super::ranking::{rank, RankRule, Ranking};
use crate::directions::{entry_name, Direction};
use crate::model::HookPoint;
use crate::{Error, Result};
use serde::Serialize;

/// A difference of means shorter than this fraction of the activations' mean length is noise
/// (f32 activations round at about 6e-8 relative; real refusal directions are 1e-2 and more).
pub const NOISE_FLOOR: f64 = 1e-5;

/// Everything probe concludes from one capture of both sets.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeAnalysis {
    /// Metrics per stream and layer.
    pub metrics: Vec<LayerMetrics>,
    /// Rankings per stream, every rule (over the usable candidates only).
    pub rankings: Vec<(String, Ranking)>,
    /// The recommended stream and layer: the preferred stream's best usable candidate.
    pub recommended: (String, usize),
    /// The rule used for the recommendation.
    pub rule: RankRule,
    /// Candidate layers the ranking considered.
    pub candidates: Vec<usize>,
    /// Layers whose direction cannot be used, with the reason; never recommended.
    pub skipped: Vec<SkippedLayer>,
}

/// A layer whose difference of means is degenerate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedLayer {
    /// Stream name.
    pub stream: String,
    /// Layer.
    pub layer: usize,
    /// Why it cannot be used.
    pub reason: String,
}

/// Default candidate layers: the middle of the network (20 % to 80 % of its depth), where
/// refusal directions are usually found; the first and last layers rarely carry one.
pub fn default_candidates(num_layers: usize) -> Vec<usize> {
    let lo = (num_layers as f64 * 0.2).floor() as usize;
    let hi = ((num_layers as f64 * 0.8).ceil() as usize).max(lo + 1).min(num_layers);
    (lo..hi).collect()
}

/// Why a difference of means cannot serve as a direction, or None when it can: non-finite,
/// exactly zero (e.g. every prompt ends in the same template token, so the layer-0 input is the
/// same vector for all), or below [`NOISE_FLOOR`] relative to the activations' length.
pub fn degenerate(diff: &[f64], activation_norm: f64) -> Option<String> {
    let n = norm(diff);
    if !n.is_finite() {
        Some("the difference of means is not finite".into())
    } else if n == 0.0 {
        Some("the difference of means is zero (both sets give the same activation here)".into())
    } else if n <= NOISE_FLOOR * activation_norm {
        Some(format!(
            "the difference of means ({n:.2e}) is below the noise floor ({NOISE_FLOOR:.0e} × mean length {activation_norm:.2e})"
        ))
    } else {
        None
    }
}

/// Metrics and rankings for every stream; the recommendation is the best usable candidate under
/// `rule` of the first stream of `order` that has one. Degenerate layers are never candidates
/// (they are listed in `skipped` with the reason); if no candidate layer of a stream is usable,
/// its best usable layer is taken; a stream with none gives way to the next; none at all is an error.
pub fn analyse(
    harmful: &SetStats,
    harmless: &SetStats,
    candidates: &[usize],
    rule: RankRule,
    order: &[HookPoint],
) -> Result<ProbeAnalysis> {
    let mut metrics = Vec::new();
    let mut rankings = Vec::new();
    let mut skipped = Vec::new();
    let mut best: Vec<(HookPoint, usize)> = Vec::new();
    if let Some(s) = order.iter().find(|s| !harmful.streams.contains_key(s)) {
        return Err(Error::Invalid(format!("stream `{}` was not captured", s.name())));
    }
    for (stream, layers) in &harmful.streams {
        let ls: Vec<usize> = layers.keys().copied().collect();
        let h: Vec<_> = ls.iter().map(|&l| harmful.get(*stream, l).clone()).collect();
        let b: Vec<_> = ls.iter().map(|&l| harmless.get(*stream, l).clone()).collect();
        let m = layer_metrics(stream.name(), &ls, &h, &b);
        let dirs: Vec<Vec<f64>> = h.iter().zip(&b).map(|(h, b)| mean_difference(h, b)).collect();
        let mut usable = Vec::new();
        for (i, &layer) in ls.iter().enumerate() {
            let length = 0.5 * (h[i].mean_norm() + b[i].mean_norm());
            match degenerate(&dirs[i], length) {
                Some(reason) => skipped.push(SkippedLayer { stream: stream.name().into(), layer, reason }),
                None => usable.push(layer),
            }
        }
        let mut pool: Vec<usize> = candidates.iter().copied().filter(|l| usable.contains(l)).collect();
        if pool.is_empty() {
            pool = usable.clone();
        }
        for r in [RankRule::LowVariance, RankRule::MaxNorm, RankRule::MeanSimilarity] {
            let ranking = rank(&m, &dirs, &pool, r);
            if let Some(l) = ranking.best().filter(|_| r == rule) {
                best.push((*stream, l));
            }
            rankings.push((stream.name().to_string(), ranking));
        }
        metrics.extend(m);
    }
    let recommended = order
        .iter()
        .find_map(|s| best.iter().find(|(b, _)| b == s))
        .map(|(s, l)| (s.name().to_string(), *l))
        .ok_or_else(|| {
            let reasons: Vec<String> =
                skipped.iter().map(|s| format!("{}.{}: {}", s.stream, s.layer, s.reason)).collect();
            Error::Invalid(format!("no captured layer has a usable direction: {}", reasons.join("; ")))
        })?;
    Ok(ProbeAnalysis { metrics, rankings, recommended, rule, candidates: candidates.to_vec(), skipped })
}

/// One unit direction per stream and layer (`{stream}.{layer}`), and with `projected` the
/// variants orthogonal to the harmless mean (`{stream}_projected.{layer}`).
pub fn directions(harmful: &SetStats, harmless: &SetStats, with_projected: bool) -> Vec<Direction> {
    let mut out = Vec::new();
    for (stream, layers) in &harmful.streams {
        for &layer in layers.keys() {
            let (h, b) = (harmful.get(*stream, layer), harmless.get(*stream, layer));
            let diff = mean_difference(h, b);
            if let Some(r) = unit(&diff) {
                out.push(Direction { name: entry_name(stream.name(), layer), rows: vec![r] });
            }
            if with_projected {
                if let Some(p) = projected(&diff, b.mean()) {
                    out.push(Direction {
                        name: entry_name(&format!("{}_projected", stream.name()), layer),
                        rows: vec![p],
                    });
                }
            }
        }
    }
    out
}

/// Parse `-1`, `-3..-1`, `-5,-1` into positions counted from the end (1 = last).
pub fn parse_positions(text: &str) -> crate::Result<Vec<usize>> {
    let bad = || {
        crate::Error::Invalid(format!("--positions `{text}`: expected -1, -3..-1 or -5,-1 (negative, from the end)"))
    };
    let one = |s: &str| -> crate::Result<usize> {
        let v: i64 = s.trim().parse().map_err(|_| bad())?;
        if v >= 0 {
            return Err(bad());
        }
        Ok((-v) as usize)
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        match part.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (one(a)?, one(b.trim_start_matches('='))?);
                if a < b {
                    return Err(bad());
                }
                out.extend((b..=a).rev());
            }
            None => out.push(one(part)?),
        }
    }
    out.dedup();
    Ok(out)
}

/// The stream for a name (`pre`, `resid_mid`, ...).
pub fn parse_stream(name: &str) -> crate::Result<HookPoint> {
    HookPoint::parse(name).ok_or_else(|| {
        crate::Error::Invalid(format!("unknown stream `{name}` (resid_pre, resid_mid, resid_post, attn_out, mlp_out)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_candidates() {
        assert_eq!(parse_positions("-1").unwrap(), vec![1]);
        assert_eq!(parse_positions("-3..-1").unwrap(), vec![3, 2, 1]);
        assert_eq!(parse_positions("-5,-1").unwrap(), vec![5, 1]);
        assert!(parse_positions("1").is_err() && parse_positions("-1..-3").is_err());
        assert_eq!(default_candidates(10), (2..8).collect::<Vec<_>>());
        assert_eq!(default_candidates(2), vec![0, 1]);
    }
}
