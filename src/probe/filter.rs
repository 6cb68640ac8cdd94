//! Keep the prompts the model's own answers confirm: the harmful prompts it refuses and the
//! harmless prompts it answers (as the refusal-direction paper does before taking the
//! difference of means).
//!
//! A harmful prompt the model answers anyway does not put the model in the state the direction
//! should describe; averaged in, it pulls the harmful mean towards the harmless one and mixes
//! whatever else separates the two lists (topic, wording) into the direction. Measured on
//! Qwen2.5-Coder-0.5B-Instruct (it refuses 76 of the 128 training prompts): the same single-layer
//! edit (layer 15, every writer, λ = 1) refused 5/80 validation prompts either way, at a mean
//! first-token KL of 0.139 with the unfiltered direction and 0.090 with the filtered one.
//!
//! The verdict is [`crate::eval::refusal_marker`] on a short greedy answer
//! ([`crate::eval::short_answers`]). A set is left whole when fewer than
//! [`BehaviourFilter::min_kept`] of its prompts would remain (a model that barely refuses):
//! a direction from a handful of prompts is noisier than one from a mixed list.

use crate::eval::{refusal_marker, short_answers};
use crate::model::Decoder;
use crate::prompts::{PromptEncoder, PromptSet};
use crate::Result;

/// How prompts are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BehaviourFilter {
    /// New tokens per answer at most (a row stops at its first refusal marker).
    pub max_tokens: usize,
    /// Prompts per generation batch.
    pub batch: usize,
    /// A set is filtered only when at least this many of its prompts remain.
    pub min_kept: usize,
}

impl Default for BehaviourFilter {
    fn default() -> Self {
        BehaviourFilter { max_tokens: 16, batch: 32, min_kept: 16 }
    }
}

/// The two sets after filtering, and what was done to each.
#[derive(Debug, Clone)]
pub struct FilteredSets {
    /// The harmful prompts the model refuses (or all of them; see [`FilteredSets::notes`]).
    pub harmful: PromptSet,
    /// The harmless prompts the model answers (or all of them).
    pub harmless: PromptSet,
    /// One line per set saying what was kept and why.
    pub notes: [String; 2],
}

/// Keep the harmful prompts `decoder` refuses and the harmless prompts it answers.
pub fn filter_by_answers(
    decoder: &Decoder,
    encoder: &PromptEncoder,
    harmful: &PromptSet,
    harmless: &PromptSet,
    filter: &BehaviourFilter,
) -> Result<FilteredSets> {
    let all: Vec<&String> = harmful.prompts.iter().chain(&harmless.prompts).collect();
    let encoded = all.iter().map(|p| encoder.encode(p)).collect::<Result<Vec<_>>>()?;
    let (answers, _) = short_answers(decoder, encoder, &encoded, filter.max_tokens, filter.batch)?;
    let refused: Vec<bool> = answers.iter().map(|a| refusal_marker(a).is_some()).collect();
    let (refused_harmful, refused_harmless) = refused.split_at(harmful.prompts.len());
    let (harmful, harmful_note) = keep(harmful, refused_harmful, true, filter.min_kept, "refuses");
    let (harmless, harmless_note) = keep(harmless, refused_harmless, false, filter.min_kept, "answers");
    Ok(FilteredSets { harmful, harmless, notes: [harmful_note, harmless_note] })
}

/// [`filter_by_answers`] with the default settings, each set's note passed to `say`: the
/// probe step of `scalpel probe` and of `scalpel run`.
pub fn confirmed_prompts(
    decoder: &Decoder,
    encoder: &PromptEncoder,
    harmful: &PromptSet,
    harmless: &PromptSet,
    say: &dyn Fn(&str),
) -> Result<(PromptSet, PromptSet)> {
    let filtered = filter_by_answers(decoder, encoder, harmful, harmless, &BehaviourFilter::default())?;
    for note in &filtered.notes {
        say(note);
    }
    Ok((filtered.harmful, filtered.harmless))
}

/// The prompts of `set` whose verdict is `wanted`, unless fewer than `min_kept` remain.
fn keep(set: &PromptSet, refused: &[bool], wanted: bool, min_kept: usize, verb: &str) -> (PromptSet, String) {
    let kept: Vec<String> =
        set.prompts.iter().zip(refused).filter(|(_, &r)| r == wanted).map(|(p, _)| p.clone()).collect();
    let (n, k) = (set.prompts.len(), kept.len());
    if k == n {
        return (set.clone(), format!("{}: the model {verb} all {n} prompts", set.name));
    }
    if k < min_kept.min(n) {
        let note =
            format!("{}: the model {verb} only {k} of {n} prompts; kept all {n} (fewer than {min_kept})", set.name);
        return (set.clone(), note);
    }
    let note = format!("{}: kept the {k} of {n} prompts the model {verb}", set.name);
    (set.derived(format!("the {k} of {n} the model {verb}"), kept), note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> PromptSet {
        PromptSet::from_prompts("s", (0..n).map(|i| format!("p{i}")).collect())
    }

    #[test]
    fn keeps_the_prompts_with_the_wanted_verdict_in_order() {
        let refused = [true, false, true, true, false];
        let (kept, note) = keep(&set(5), &refused, true, 2, "refuses");
        assert_eq!(kept.prompts, ["p0", "p2", "p3"]);
        assert!(kept.described().contains("3 of 5") && note.contains("kept the 3 of 5"), "{note}");
        let (answered, _) = keep(&set(5), &refused, false, 2, "answers");
        assert_eq!(answered.prompts, ["p1", "p4"]);
    }

    #[test]
    fn a_set_that_would_keep_too_few_stays_whole() {
        let refused = [false, false, true, false];
        let (kept, note) = keep(&set(4), &refused, true, 2, "refuses");
        assert_eq!(kept.prompts.len(), 4);
        assert!(note.contains("only 1 of 4"), "{note}");
        // A set smaller than the minimum is judged against its own size.
        let (all, note) = keep(&set(2), &[true, true], true, 16, "refuses");
        assert_eq!((all.prompts.len(), all.derivation.len()), (2, 0));
        assert!(note.contains("all 2"), "{note}");
    }
}
