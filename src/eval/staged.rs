//! Models measured one after the other: a [`SubjectSource`] hands its model to a measurement
//! and, when it loaded the model for it, drops it after, so that an evaluation or a comparison
//! of two models holds one model's weights at a time.

use super::run::Subject;
use crate::model::{Decoder, Interventions};
use crate::prompts::PromptEncoder;
use crate::Result;

/// A model to measure, loaded when its turn comes or already in memory.
pub trait SubjectSource {
    /// Run `f` on the model; a source that loads the model for `f` drops it when `f` returns.
    fn with_subject(&mut self, f: &mut dyn FnMut(&Subject<'_>) -> Result<()>) -> Result<()>;
}

impl SubjectSource for Subject<'_> {
    fn with_subject(&mut self, f: &mut dyn FnMut(&Subject<'_>) -> Result<()>) -> Result<()> {
        f(self)
    }
}

/// A loaded model with what runs it.
pub struct Loaded {
    /// The decoder.
    pub decoder: Decoder,
    /// The prompt encoder.
    pub encoder: PromptEncoder,
    /// Interventions applied while it runs.
    pub interventions: Interventions,
}

/// A model loaded by `load` each time it is measured, and dropped after.
pub struct OnDemand<'a> {
    /// Display name.
    pub name: String,
    /// Loads the model.
    pub load: Box<dyn FnMut() -> Result<Loaded> + 'a>,
}

impl SubjectSource for OnDemand<'_> {
    fn with_subject(&mut self, f: &mut dyn FnMut(&Subject<'_>) -> Result<()>) -> Result<()> {
        let loaded = (self.load)()?;
        let subject = Subject {
            name: self.name.clone(),
            decoder: &loaded.decoder,
            encoder: &loaded.encoder,
            interventions: &loaded.interventions,
        };
        f(&subject)
    }
}
