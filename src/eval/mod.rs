//! Evaluation: refusal scoring, KL divergence, cross-entropy of text, comparisons and the model card.

pub use crate::surgery::card;
pub mod compare;
pub mod cross_entropy;
pub mod fluency;
pub mod judge;
pub mod kl;
pub mod refusal;
pub mod run;
pub mod short;
pub mod staged;
pub mod thinking;
pub mod verdict;

pub use card::model_card;
pub use compare::{side_by_side, SideBySide};
pub use cross_entropy::{cross_entropy, CrossEntropy};
pub use fluency::loops;
pub use judge::{judge_answer, JudgeSpec, ModelJudge, RulesJudge};
pub use kl::kl_divergence;
pub use refusal::{is_refusal, refusal_marker, REFUSAL_MARKERS};
pub use run::{
    first_token_kl, greedy_answers, kl_of_logits, next_token_logits, refusals, Answer, EvalReport, KlScore,
    RefusalScore, Subject,
};
pub use short::short_answers;
pub use staged::{Loaded, OnDemand, SubjectSource};
pub use verdict::{Exchange, Judge, Judgement, Verdict, VerdictCounts};
