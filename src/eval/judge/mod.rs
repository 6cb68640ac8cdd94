//! Judges: the [`crate::eval::Judge`]s that give verdicts, and the labelled set that measures them.
//!
//! - [`RulesJudge`] (`rules`, the default): rules on the answer's text ([`rules`]).
//! - [`ModelJudge`] (`model:PATH`): a chat model reads a fixed rubric with the request and the
//!   answer; the probabilities of the three label tokens give the verdict ([`model`]).
//! - [`CascadeJudge`] (`rules+model:PATH`): the rules, then the judge model on the answers the
//!   rules call compliances ([`cascade`]).
//!
//! [`JudgeSpec`] parses the `--judge` / recipe `[judge]` value.

pub mod cascade;
pub mod labelled;
pub mod model;
pub mod rules;

pub use cascade::CascadeJudge;
pub use labelled::{check_judge, load_labelled, parse_labelled, Confusion, JudgeCheck, Labelled, Split};
pub use model::{LabelScorer, ModelJudge, RUBRIC, RUBRIC_VERSION};
pub use rules::{judge_answer, RulesJudge, RULES_NAME};

use crate::{Error, Result};
use std::path::PathBuf;

/// Which judge to use, as written on the command line or in a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JudgeSpec {
    /// `rules`.
    Rules,
    /// `model:PATH`: a chat model folder.
    Model(PathBuf),
    /// `rules+model:PATH`: the rules, then the chat model in PATH on what they accept.
    Cascade(PathBuf),
}

impl JudgeSpec {
    /// Parse `rules`, `model:PATH` or `rules+model:PATH`.
    pub fn parse(text: &str) -> Result<JudgeSpec> {
        let t = text.trim();
        let model_path = |s: &str| s.strip_prefix("model:").filter(|p| !p.is_empty()).map(PathBuf::from);
        if t == "rules" {
            Ok(JudgeSpec::Rules)
        } else if let Some(path) = model_path(t) {
            Ok(JudgeSpec::Model(path))
        } else if let Some(path) = t.strip_prefix("rules+").and_then(model_path) {
            Ok(JudgeSpec::Cascade(path))
        } else {
            Err(Error::Invalid(format!("unknown judge `{t}` (use `rules`, `model:PATH` or `rules+model:PATH`)")))
        }
    }

    /// Whether the judge runs a model (and so needs a device, a cache and time).
    pub fn runs_a_model(&self) -> bool {
        !matches!(self, JudgeSpec::Rules)
    }
}

impl JudgeSpec {
    /// The judge this spec names; a model judge runs on `device` in `dtype`, caches its
    /// verdicts in `cache` (when given) and scores `batch` answers per forward pass.
    pub fn open(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
        cache: Option<&std::path::Path>,
        batch: usize,
    ) -> Result<Box<dyn super::Judge>> {
        Ok(match self {
            JudgeSpec::Rules => Box::new(RulesJudge),
            JudgeSpec::Model(path) => Box::new(ModelJudge::open(path, device, dtype, cache, batch)?),
            JudgeSpec::Cascade(path) => Box::new(CascadeJudge::new(
                ModelJudge::open(path, device, dtype, cache, batch)?,
                cascade::DEFAULT_THRESHOLD,
            )?),
        })
    }
}

impl std::fmt::Display for JudgeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JudgeSpec::Rules => f.write_str("rules"),
            JudgeSpec::Model(p) => write!(f, "model:{}", p.display()),
            JudgeSpec::Cascade(p) => write!(f, "rules+model:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_specs_parse_and_print_back() {
        assert_eq!(JudgeSpec::parse("rules").unwrap(), JudgeSpec::Rules);
        let m = JudgeSpec::parse("model:/m/qwen").unwrap();
        assert_eq!(m, JudgeSpec::Model("/m/qwen".into()));
        assert_eq!(m.to_string(), "model:/m/qwen");
        assert!(JudgeSpec::parse("model:").is_err() && JudgeSpec::parse("gpt").is_err());
        let c = JudgeSpec::parse("rules+model:/m/qwen").unwrap();
        assert_eq!(c, JudgeSpec::Cascade("/m/qwen".into()));
        assert_eq!(c.to_string(), "rules+model:/m/qwen");
        assert!(JudgeSpec::parse("rules+").is_err() && JudgeSpec::parse("rules+model:").is_err());
        assert!(c.runs_a_model() && !JudgeSpec::Rules.runs_a_model());
    }
}
