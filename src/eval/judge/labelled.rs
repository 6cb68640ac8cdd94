//! The labelled set that measures the judges: (request, answer, verdict) triples read from a
//! JSON Lines file, one object per line:
//!
//! ```json
//! {"id": "q05-orig-017", "model": "...", "set": "harmful", "request": "...", "answer": "...",
//!  "verdict": "evasion", "split": "test", "note": "..."}
//! ```
//!
//! `set` is `harmful` or `harmless`, `split` is `tune` (the rules may be tuned on it) or `test`
//! (held back: the numbers a judge is quoted with), `note` is optional. Blank lines are skipped.

use crate::eval::verdict::{Exchange, Judge, Verdict};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One labelled answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labelled {
    /// A unique id.
    pub id: String,
    /// The model that wrote the answer.
    #[serde(default)]
    pub model: String,
    /// `harmful` or `harmless`.
    pub set: String,
    /// The request.
    pub request: String,
    /// The answer.
    pub answer: String,
    /// The label.
    pub verdict: Verdict,
    /// `tune` or `test`.
    pub split: String,
    /// Why the label, for borderline cases.
    #[serde(default)]
    pub note: String,
}

/// Which part of a labelled set to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The part judges may be tuned on.
    Tune,
    /// The held-back part.
    Test,
    /// Both.
    All,
}

impl Split {
    /// Parse `tune`, `test` or `all`.
    pub fn parse(text: &str) -> Result<Split> {
        match text {
            "tune" => Ok(Split::Tune),
            "test" => Ok(Split::Test),
            "all" => Ok(Split::All),
            other => Err(Error::Invalid(format!("unknown split `{other}` (choose tune, test or all)"))),
        }
    }

    /// Whether `entry` belongs to it.
    pub fn holds(self, entry: &Labelled) -> bool {
        match self {
            Split::All => true,
            Split::Tune => entry.split == "tune",
            Split::Test => entry.split == "test",
        }
    }
}

/// Read a labelled set; a malformed line, an unknown `set` or `split`, or a repeated id is an
/// error that names the line.
pub fn load_labelled(path: &Path) -> Result<Vec<Labelled>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_labelled(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Parse the JSON Lines text of a labelled set (see [`load_labelled`]).
pub fn parse_labelled(text: &str) -> Result<Vec<Labelled>> {
    let mut out: Vec<Labelled> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = n + 1;
        let entry: Labelled = serde_json::from_str(line).map_err(|e| Error::Invalid(format!("line {line_no}: {e}")))?;
        if !["harmful", "harmless"].contains(&entry.set.as_str()) {
            return Err(Error::Invalid(format!("line {line_no}: set `{}` (harmful or harmless)", entry.set)));
        }
        if !["tune", "test"].contains(&entry.split.as_str()) {
            return Err(Error::Invalid(format!("line {line_no}: split `{}` (tune or test)", entry.split)));
        }
        if !ids.insert(entry.id.clone()) {
            return Err(Error::Invalid(format!("line {line_no}: id `{}` appears twice", entry.id)));
        }
        out.push(entry);
    }
    Ok(out)
}

/// A 3×3 confusion matrix: `counts[label][verdict]`, rows and columns in [`Verdict::ALL`] order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Answers by (label, the judge's verdict).
    pub counts: [[usize; 3]; 3],
}

fn index(v: Verdict) -> usize {
    Verdict::ALL.iter().position(|&x| x == v).expect("every verdict is in ALL")
}

impl Confusion {
    /// Count one answer.
    pub fn add(&mut self, label: Verdict, verdict: Verdict) {
        self.counts[index(label)][index(verdict)] += 1;
    }

    /// Answers labelled `label` that the judge called `verdict`.
    pub fn get(&self, label: Verdict, verdict: Verdict) -> usize {
        self.counts[index(label)][index(verdict)]
    }

    /// Answers counted.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// Answers the judge agreed with the label on.
    pub fn agreed(&self) -> usize {
        (0..3).map(|i| self.counts[i][i]).sum()
    }

    /// Answers labelled refusal or evasion.
    pub fn not_compliant(&self) -> usize {
        self.counts[0].iter().chain(&self.counts[1]).sum()
    }

    /// Refusals and evasions the judge called compliance: the error that makes an edit look
    /// better than it is.
    pub fn missed(&self) -> usize {
        self.get(Verdict::Refusal, Verdict::Compliance) + self.get(Verdict::Evasion, Verdict::Compliance)
    }

    /// Answers labelled compliance.
    pub fn compliant(&self) -> usize {
        self.counts[2].iter().sum()
    }

    /// Compliances the judge called refusal: the error that makes an edit look worse than it is.
    pub fn false_refusals(&self) -> usize {
        self.get(Verdict::Compliance, Verdict::Refusal)
    }

    /// The matrix and both errors as text.
    pub fn text(&self) -> String {
        let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
        let mut s = format!("{:<22}{:>10}{:>10}{:>12}\n", "label \\ judge", "refusal", "evasion", "compliance");
        for label in Verdict::ALL {
            s += &format!(
                "{:<22}{:>10}{:>10}{:>12}\n",
                label.name(),
                self.get(label, Verdict::Refusal),
                self.get(label, Verdict::Evasion),
                self.get(label, Verdict::Compliance)
            );
        }
        s += &format!(
            "agreement: {}/{} ({:.1}%)\nrefusal or evasion counted as compliance: {}/{} ({:.1}%)\n\
             compliance counted as refusal: {}/{} ({:.1}%)\n",
            self.agreed(),
            self.total(),
            pct(self.agreed(), self.total()),
            self.missed(),
            self.not_compliant(),
            pct(self.missed(), self.not_compliant()),
            self.false_refusals(),
            self.compliant(),
            pct(self.false_refusals(), self.compliant())
        );
        s
    }
}

/// One judge's agreement with a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeCheck {
    /// The judge's name.
    pub judge: String,
    /// Answers counted.
    pub answers: usize,
    /// The confusion matrix over every answer.
    pub confusion: Confusion,
    /// Over the harmful set's answers.
    pub harmful: Confusion,
    /// Over the harmless set's answers.
    pub harmless: Confusion,
    /// Every answer's id with (label, verdict, reason), in the set's order.
    pub judgements: Vec<(String, Verdict, Verdict, String)>,
}

impl JudgeCheck {
    /// The answers the judge disagreed with the label on.
    pub fn disagreements(&self) -> impl Iterator<Item = &(String, Verdict, Verdict, String)> {
        self.judgements.iter().filter(|(_, label, verdict, _)| label != verdict)
    }
}

/// Judge every entry of `set` in `split` with `judge` and count agreement with the labels.
pub fn check_judge(judge: &dyn Judge, set: &[Labelled], split: Split) -> Result<JudgeCheck> {
    let chosen: Vec<&Labelled> = set.iter().filter(|e| split.holds(e)).collect();
    let exchanges: Vec<Exchange<'_>> =
        chosen.iter().map(|e| Exchange { request: &e.request, answer: &e.answer }).collect();
    let judgements = judge.judge(&exchanges)?;
    if judgements.len() != chosen.len() {
        return Err(Error::Other(format!(
            "judge {} gave {} verdicts for {} answers",
            judge.name(),
            judgements.len(),
            chosen.len()
        )));
    }
    let (mut all, mut harmful, mut harmless) = (Confusion::default(), Confusion::default(), Confusion::default());
    let mut verdicts = Vec::new();
    for (e, j) in chosen.iter().zip(judgements) {
        all.add(e.verdict, j.verdict);
        if e.set == "harmful" { &mut harmful } else { &mut harmless }.add(e.verdict, j.verdict);
        verdicts.push((e.id.clone(), e.verdict, j.verdict, j.reason));
    }
    Ok(JudgeCheck {
        judge: judge.name(),
        answers: chosen.len(),
        confusion: all,
        harmful,
        harmless,
        judgements: verdicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_sets_are_rejected_with_the_line() {
        let good =
            r#"{"id":"a","model":"m","set":"harmful","request":"r","answer":"x","verdict":"evasion","split":"test"}"#;
        assert_eq!(parse_labelled(&format!("{good}\n\n")).unwrap().len(), 1);
        let twice = parse_labelled(&format!("{good}\n{good}")).unwrap_err().to_string();
        assert!(twice.contains("line 2") && twice.contains("twice"), "{twice}");
        let bad_split = good.replace("\"test\"", "\"train\"");
        assert!(parse_labelled(&bad_split).unwrap_err().to_string().contains("split"));
        let bad_verdict = good.replace("evasion", "maybe");
        assert!(parse_labelled(&bad_verdict).unwrap_err().to_string().contains("line 1"));
        assert!(Split::parse("dev").is_err());
    }

    #[test]
    fn the_confusion_matrix_counts_both_errors() {
        let mut c = Confusion::default();
        c.add(Verdict::Refusal, Verdict::Refusal);
        c.add(Verdict::Evasion, Verdict::Compliance);
        c.add(Verdict::Compliance, Verdict::Refusal);
        c.add(Verdict::Compliance, Verdict::Compliance);
        assert_eq!((c.total(), c.agreed(), c.missed(), c.not_compliant()), (4, 2, 1, 2));
        assert_eq!((c.false_refusals(), c.compliant()), (1, 2));
        let text = c.text();
        assert!(text.contains("counted as compliance: 1/2 (50.0%)"), "{text}");
    }
}
