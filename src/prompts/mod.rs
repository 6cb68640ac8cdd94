//! prompts (in progress).
