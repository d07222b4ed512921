//! Search strategies. Each owns its seeded, resumable state; evaluators are separate.

pub mod darts;
pub mod gdas;
pub mod pc_darts;
