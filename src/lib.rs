//! nas-pipe: neural architecture search from a declared space to a checked, profiled ONNX
//! model.
//!
//! The modules form layers; a module imports only from layers below its own (checked by
//! `scripts/check-layers.sh`), and stages meet only through the run folder. From the top:
//!
//! - [`cli`]: one file per command; parses, calls the pipeline or a stage, prints.
//! - [`pipeline`]: resolves a spec into stage inputs, runs stages with their cache keys,
//!   reports status.
//! - [`stages`]: search, derive, retrain, export, validate, profile, report.
//! - [`run`]: the run folder: typed artifact paths, the lock file, the writer lock,
//!   checkpoints, the artifacts more than one stage reads.
//! - [`nets`]: the final network, the supernet, fixed blocks, optimizers, training steps.
//! - [`space`], [`ops`]: search spaces as petgraph DAGs, architectures in them; op families.
//! - [`data`], [`nn`], [`onnx`], [`runtime`], [`kernels`], [`device`]: engine leaves.
//! - [`spec`]: raw serde types of the RON files and their checks.
//! - [`error`], [`fsutil`], [`progress`]: used everywhere.
//!
//! `docs/architecture.md` draws the layers and says where new code goes.

pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod kernels;
pub mod nets;
pub mod nn;
pub mod onnx;
pub mod ops;
pub mod pipeline;
pub mod progress;
pub mod run;
pub mod runtime;
pub mod space;
pub mod spec;
pub mod stages;

pub use error::{Error, Result};
