//! Evaluation: refusal scoring, KL divergence, comparisons and the model card.

pub mod card;
pub mod kl;
pub mod refusal;

pub use card::model_card;
pub use kl::kl_divergence;
pub use refusal::{is_refusal, refusal_marker, REFUSAL_MARKERS};
