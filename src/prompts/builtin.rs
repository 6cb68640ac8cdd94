//! The project's default prompt sets (recipes/prompts/), compiled into the binary so that
//! `probe` and `eval` work from any folder. Refer to them as `builtin:harmful_train` etc.

/// Requests a safety-tuned model refuses, training split.
pub const HARMFUL_TRAIN: &str = include_str!("../../recipes/prompts/harmful_train.txt");
/// Requests a safety-tuned model refuses, held out.
pub const HARMFUL_TEST: &str = include_str!("../../recipes/prompts/harmful_test.txt");
/// Requests a safety-tuned model refuses, validation split (for `search`; disjoint from both).
pub const HARMFUL_VAL: &str = include_str!("../../recipes/prompts/harmful_val.txt");
/// Everyday instructions, training split.
pub const HARMLESS_TRAIN: &str = include_str!("../../recipes/prompts/harmless_train.txt");
/// Everyday instructions, held out.
pub const HARMLESS_TEST: &str = include_str!("../../recipes/prompts/harmless_test.txt");

/// Everyday instructions, validation split (for `search`; disjoint from both).
pub const HARMLESS_VAL: &str = include_str!("../../recipes/prompts/harmless_val.txt");

/// The text of a `builtin:NAME` set.
pub fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "harmful_train" => HARMFUL_TRAIN,
        "harmful_test" => HARMFUL_TEST,
        "harmful_val" => HARMFUL_VAL,
        "harmless_train" => HARMLESS_TRAIN,
        "harmless_test" => HARMLESS_TEST,
        "harmless_val" => HARMLESS_VAL,
        _ => return None,
    })
}
