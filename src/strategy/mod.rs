//! Search strategies. Each owns its seeded, resumable state; evaluators are separate.

pub mod darts;
