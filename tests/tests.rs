//! The integration tests: one binary. Golden files live under `tests/golden/`; run with
//! `NAS_PIPE_BLESS=1` to rewrite them after a deliberate change, then review the diff.
//!
//! One file per area; shared helpers in `common/`.

mod common;

mod data;
mod export;
mod hostile;
mod integrity;
mod layers;
mod predict;
mod report;
mod retrain;
mod run;
mod scale;
mod search;
mod spec;
