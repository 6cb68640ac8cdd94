//! `scalpel search`: choose the edit by its measured outcome.
//!
//! Each trial is an edit ([`TrialParams`]: direction layer and stream, raw or projected,
//! per-kind strength profiles over layers, embedding, norm preservation). It is applied to the
//! running model's weights in memory with the same per-tensor code as the written checkpoint,
//! then measured on validation prompts disjoint from probe's and eval's: refusals on harmful
//! prompts, over-refusals on harmless ones, and the KL divergence of the first answer token
//! against the original ([`objective`]). Start-up trials (the probe's picks and a sweep of
//! layers at full strength, then random ones) are followed by a TPE sampler ([`tpe`]) aimed at
//! the goal (the fewest refusals above the target, then the smallest KL); the chosen trial is
//! the smallest KL within the target with 80 % confidence; the report shows the Pareto front of
//! refusals against KL ([`pareto`]).
//! Trials are appended to `trials.jsonl` as they finish, so a stopped search resumes.

pub mod finals;
mod in_memory;
pub mod objective;
pub mod pareto;
pub mod prune;
mod report;
mod run;
pub mod space;
mod step;
mod store;
pub mod tpe;

pub use finals::{
    choose_final, finalists, judge_trial, run_stage2, stage2_hopeless, FinalRecord, FullAnswers, JudgedAnswer, Stage2,
    Stage2Inputs,
};
pub use objective::{
    measure, refused, AnswerSettings, Measurement, Scores, ShortAnswer, Validation, DEFAULT_ANSWERED_HARMLESS,
};
pub use prune::{measure_trial, PruneBounds, PruneStage, Pruned, TrialMeasurement, TrialScorer};
pub use report::{trial_row, write_search_report, CHOSEN_FILE, TRIAL_HEADER};
pub use run::{
    choose, good_key, point, prune_bounds, refusal_rate_bound, run_search, seeded_order, trial_direction_name,
    trial_directions, trial_line, Goal, SearchInputs, SearchOutcome, SearchRecord, SearchSettings, CHOICE_CONFIDENCE_Z,
    DEFAULT_CHUNK, DEFAULT_FINALISTS, DEFAULT_FINAL_MAX_TOKENS, DEFAULT_MAX_KL, SETTINGS_FILE,
};
pub use space::{Dim, SearchSpace, TrialParams};
pub use step::{chosen_trial, parse_trial_ref, search_step, starting_trials, trial_edit, TrialEdit, LAYER_SWEEP};
pub use store::{append_final, append_trial, load_finals, load_trials, TrialRecord, TRIALS_FILE};
