//! The stages of a pipeline. Each reads its inputs from the run folder ([`crate::run`]) and
//! writes its outputs there; stages never import each other.

pub mod derive;
pub mod export;
pub mod predict;
pub mod profile;
pub mod report;
pub mod retrain;
pub mod search;
pub mod validate;
