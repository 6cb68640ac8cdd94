//! From two sets' statistics to metrics, rankings, a recommendation and directions.

use super::capture::SetStats;
use super::extract::{mean_difference, projected, unit};
use super::metrics::{layer_metrics, LayerMetrics};
use super::ranking::{rank, RankRule, Ranking};
use crate::directions::{entry_name, Direction};
use crate::model::HookPoint;
use serde::Serialize;

/// Everything probe concludes from one capture of both sets.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeAnalysis {
    /// Metrics per stream and layer.
    pub metrics: Vec<LayerMetrics>,
    /// Rankings per stream, every rule.
    pub rankings: Vec<(String, Ranking)>,
    /// The recommended stream and layer (the first stream's ranking under the chosen rule).
    pub recommended: (String, usize),
    /// The rule used for the recommendation.
    pub rule: RankRule,
    /// Candidate layers the ranking considered.
    pub candidates: Vec<usize>,
}

/// Default candidate layers: the middle of the network (20 % to 80 % of its depth), where
/// refusal directions are usually found; the first and last layers rarely carry one.
pub fn default_candidates(num_layers: usize) -> Vec<usize> {
    let lo = (num_layers as f64 * 0.2).floor() as usize;
    let hi = ((num_layers as f64 * 0.8).ceil() as usize).max(lo + 1).min(num_layers);
    (lo..hi).collect()
}

/// Metrics and rankings for every stream; the recommendation is the best candidate of the
/// first stream under `rule`.
pub fn analyse(harmful: &SetStats, harmless: &SetStats, candidates: &[usize], rule: RankRule) -> ProbeAnalysis {
    let mut metrics = Vec::new();
    let mut rankings = Vec::new();
    let mut recommended = None;
    for (stream, layers) in &harmful.streams {
        let ls: Vec<usize> = layers.keys().copied().collect();
        let h: Vec<_> = ls.iter().map(|&l| harmful.get(*stream, l).clone()).collect();
        let b: Vec<_> = ls.iter().map(|&l| harmless.get(*stream, l).clone()).collect();
        let m = layer_metrics(stream.name(), &ls, &h, &b);
        let dirs: Vec<Vec<f64>> = h.iter().zip(&b).map(|(h, b)| mean_difference(h, b)).collect();
        for r in [RankRule::ResearchNote, RankRule::MaxNorm, RankRule::MeanSimilarity] {
            let ranking = rank(&m, &dirs, candidates, r);
            if r == rule && recommended.is_none() {
                recommended = ranking.best().map(|l| (stream.name().to_string(), l));
            }
            rankings.push((stream.name().to_string(), ranking));
        }
        metrics.extend(m);
    }
    let recommended = recommended.unwrap_or_else(|| ("resid_pre".into(), candidates.first().copied().unwrap_or(0)));
    ProbeAnalysis { metrics, rankings, recommended, rule, candidates: candidates.to_vec() }
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
