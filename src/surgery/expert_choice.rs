//! Which writers of a sparse layer an edit touches: every expert (the default), none of them
//! (the layer's attention writer only), or the routed experts that write the direction most
//! ([`super::write_share`]).

use crate::arch::MlpPart;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The experts of sparse layers that an edit touches. Dense layers' MLPs follow the targets
/// whatever the choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertChoice {
    /// Every routed expert and the shared expert: the edit that equals runtime ablation.
    #[default]
    All,
    /// No expert: in sparse layers only the attention writer is edited.
    None,
    /// The routed experts whose write share is above `threshold`, and the shared expert (it
    /// runs on every token, as a dense MLP does, and is not part of the share).
    Share {
        /// The share an expert must exceed (`1/E` is every expert's share when all write alike).
        threshold: f64,
        /// Sparse layer → the experts chosen, measured on the unedited model when the plan was
        /// made. A plan rebuilt from a record (verify, adapters) uses these instead of measuring
        /// the edited model, whose experts no longer write the direction.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen: Option<BTreeMap<usize, Vec<usize>>>,
    },
}

impl ExpertChoice {
    /// The choice of experts above `threshold`, not yet measured.
    pub fn share(threshold: f64) -> Result<ExpertChoice> {
        if !(0.0..1.0).contains(&threshold) {
            return Err(Error::Invalid(format!("an expert share threshold must be in [0, 1), not {threshold}")));
        }
        Ok(ExpertChoice::Share { threshold, chosen: None })
    }

    /// Whether the writer `part` of sparse layer `layer` is edited. A share choice that has
    /// not been measured keeps every expert (plans measure it first).
    pub fn keeps(&self, layer: usize, part: MlpPart) -> bool {
        match (self, part) {
            (_, MlpPart::Dense) | (ExpertChoice::All, _) => true,
            (ExpertChoice::None, _) => false,
            (ExpertChoice::Share { .. }, MlpPart::SharedExpert) => true,
            (ExpertChoice::Share { chosen: None, .. }, MlpPart::Expert(_)) => true,
            (ExpertChoice::Share { chosen: Some(map), .. }, MlpPart::Expert(e)) => {
                map.get(&layer).is_some_and(|experts| experts.contains(&e))
            }
        }
    }

    /// Whether this choice still needs the write shares measured.
    pub fn needs_measuring(&self) -> bool {
        matches!(self, ExpertChoice::Share { chosen: None, .. })
    }
}

impl std::fmt::Display for ExpertChoice {
    /// As the command line and recipes spell it: `all`, `none`, `share:T`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpertChoice::All => write!(f, "all"),
            ExpertChoice::None => write!(f, "none"),
            ExpertChoice::Share { threshold, .. } => write!(f, "share:{threshold}"),
        }
    }
}

impl std::str::FromStr for ExpertChoice {
    type Err = Error;
    fn from_str(text: &str) -> Result<ExpertChoice> {
        match text.trim() {
            "all" => Ok(ExpertChoice::All),
            "none" => Ok(ExpertChoice::None),
            other => match other.strip_prefix("share:").map(str::parse::<f64>) {
                Some(Ok(t)) => ExpertChoice::share(t),
                _ => Err(Error::Invalid(format!(
                    "unknown expert choice `{other}` (choose from all, none, share:T with T in [0, 1))"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_print_and_keep_the_parts_they_name() {
        for text in ["all", "none", "share:0.3"] {
            assert_eq!(text.parse::<ExpertChoice>().unwrap().to_string(), text);
        }
        assert!("share:1.5".parse::<ExpertChoice>().is_err() && "some".parse::<ExpertChoice>().is_err());
        let chosen = ExpertChoice::Share { threshold: 0.3, chosen: Some(BTreeMap::from([(1, vec![2])])) };
        assert!(chosen.keeps(1, MlpPart::Expert(2)) && !chosen.keeps(1, MlpPart::Expert(0)));
        assert!(!chosen.keeps(0, MlpPart::Expert(2)) && chosen.keeps(1, MlpPart::SharedExpert));
        assert!(!ExpertChoice::None.keeps(1, MlpPart::SharedExpert) && ExpertChoice::None.keeps(1, MlpPart::Dense));
    }
}
