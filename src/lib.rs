//! nas-pipe: neural architecture search from a declared space to a checked, profiled ONNX
//! model.
//!
//! Data flows one way: `spec` (RON files) → `space` (checked DAGs and counts) → `genotype`
//! (a discrete architecture) → later stages. See `README.md` and the design notes.

pub mod blocks;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod evaluator;
pub mod export;
pub mod fsutil;
pub mod genotype;
pub mod latency;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pipeline;
pub mod profile;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod search;
pub mod space;
pub mod spec;
pub mod strategy;
pub mod study;
pub mod supernet;
pub mod train;
pub mod trials;
pub mod validate;

pub use error::{Error, Result};
