//! How long-running library work reports its progress.
//!
//! The library only counts work done; what a person sees (a terminal bar, one line per step
//! in a log, nothing) is the caller's choice. The CLI implements [`Progress`] with `indicatif`;
//! [`Silent`] drops everything.

/// A counter of work done, with a short message about it.
pub trait Progress: Sync {
    /// Set the total amount of work.
    fn set_length(&self, length: u64);
    /// Add to the total amount of work.
    fn inc_length(&self, delta: u64);
    /// Set the work done so far.
    fn set_position(&self, position: u64);
    /// Add to the work done.
    fn inc(&self, delta: u64);
    /// Show a short message beside the counter (e.g. the best trial so far).
    fn set_message(&self, message: String);
    /// Report that a unit of work finished with a one-line summary (a finished trial, a
    /// written shard). A terminal bar may ignore it; a log writes it as a line.
    fn finished_item(&self, _summary: &str) {}
    /// The work is over: remove the counter.
    fn finish(&self);
}

/// Progress that nobody watches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn set_length(&self, _: u64) {}
    fn inc_length(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: String) {}
    fn finish(&self) {}
}

/// What a counter counts, so a display can format it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Prompts, trials, tensors: plain counts.
    Items,
    /// Bytes written or read.
    Bytes,
}

/// Where a multi-step run (`scalpel run`) reports: a line per step, a counter per long step.
pub trait Reporter: Sync {
    /// A one-line note about the run (a step starting, a choice made).
    fn note(&self, line: &str);
    /// A counter for the work of one step, labelled `label`.
    fn progress(&self, label: &str, unit: Unit) -> Box<dyn Progress + '_>;
}

/// A reporter that drops everything.
impl Reporter for Silent {
    fn note(&self, _: &str) {}
    fn progress(&self, _: &str, _: Unit) -> Box<dyn Progress + '_> {
        Box::new(Silent)
    }
}
