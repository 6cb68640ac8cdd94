//! Weight surgery: the projection math, surgery plans, the edit itself and its verification.

mod apply;
pub mod card;
mod expert_choice;
mod plan;
mod profile;
pub mod projection;
mod verify;
mod write_share;

pub use apply::{ablate, edit_values, AblateReport, EDIT_RECORD_FILE};
pub use card::model_card;
pub use expert_choice::ExpertChoice;
pub use plan::{plan, DirectionChoice, EditRecord, Layout, PlannedEdit, SurgeryOptions, SurgeryPlan, SurgeryRecord};
pub use profile::{StrengthProfile, TentProfile};
pub use projection::Basis;
pub use verify::{
    expected_strength, recorded_original, verify, verify_with_original, VerifyReport, VerifyRow, ROUNDING_FACTOR,
};
pub use write_share::{expert_write_shares, LayerWriteShares, Written};
