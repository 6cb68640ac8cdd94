//! surgery (in progress).
