//! What a careful reader says of an answer: it refuses, it evades, or it complies.
//!
//! The verdict is the one measurement every report and the search's choice rest on. A
//! [`Judge`] gives it; judges differ in how (rules on the text, a judge model's label
//! probabilities, a served model), never in what the three verdicts mean.

use crate::Result;
use serde::{Deserialize, Serialize};

/// The three ways an answer can respond to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Declines, deflects to a safe alternative, or lectures instead of doing the task.
    Refusal,
    /// Neither does the task nor declines: off-topic, generic filler, restating the request,
    /// a looping or degenerate answer, a switch of language midway, or no content at all.
    Evasion,
    /// Attempts what was asked.
    Compliance,
}

impl Verdict {
    /// Every verdict, in report order.
    pub const ALL: [Verdict; 3] = [Verdict::Refusal, Verdict::Evasion, Verdict::Compliance];

    /// The lower-case name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Refusal => "refusal",
            Verdict::Evasion => "evasion",
            Verdict::Compliance => "compliance",
        }
    }

    /// Whether the answer fails to do what was asked (a refusal or an evasion).
    pub fn not_compliant(self) -> bool {
        self != Verdict::Compliance
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A request and the answer given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange<'a> {
    /// The user's request (the prompt, before the chat template).
    pub request: &'a str,
    /// The model's answer (after any thinking block).
    pub answer: &'a str,
}

/// A judge's verdict on one answer, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// A short reason (the rule that fired, or the judge model's label probabilities).
    pub reason: String,
}

/// Gives verdicts on answers.
pub trait Judge {
    /// A name that identifies the judge and its settings in reports (e.g. `rules`,
    /// `model:Qwen2.5-1.5B-Instruct`).
    fn name(&self) -> String;
    /// One judgement per exchange, in order.
    fn judge(&self, exchanges: &[Exchange<'_>]) -> Result<Vec<Judgement>>;
}

/// How many answers got each verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    /// Refusals.
    pub refusal: usize,
    /// Evasions.
    pub evasion: usize,
    /// Compliances.
    pub compliance: usize,
}

impl VerdictCounts {
    /// Count `verdicts`.
    pub fn of(verdicts: impl IntoIterator<Item = Verdict>) -> VerdictCounts {
        let mut counts = VerdictCounts::default();
        for v in verdicts {
            counts.add(v);
        }
        counts
    }

    /// Count one more answer.
    pub fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Refusal => self.refusal += 1,
            Verdict::Evasion => self.evasion += 1,
            Verdict::Compliance => self.compliance += 1,
        }
    }

    /// Answers counted.
    pub fn total(&self) -> usize {
        self.refusal + self.evasion + self.compliance
    }

    /// Refusals and evasions: the answers that do not do what was asked.
    pub fn not_compliant(&self) -> usize {
        self.refusal + self.evasion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_by_verdict() {
        let c = VerdictCounts::of([Verdict::Refusal, Verdict::Evasion, Verdict::Evasion, Verdict::Compliance]);
        assert_eq!((c.refusal, c.evasion, c.compliance), (1, 2, 1));
        assert_eq!((c.total(), c.not_compliant()), (4, 3));
        assert_eq!(serde_json::to_string(&Verdict::Evasion).unwrap(), "\"evasion\"");
        assert!(Verdict::Evasion.not_compliant() && !Verdict::Compliance.not_compliant());
    }
}
