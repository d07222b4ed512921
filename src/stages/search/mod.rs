//! The search stage, in two kinds: the DARTS family with weight sharing ([`darts`]) and
//! multi-trial search ([`trials`]), where a [`strategy`] proposes architectures and an
//! [`evaluator`] scores them; [`latency`] measures and predicts ONNX Runtime latency for
//! both; [`study`] repeats a tabular multi-trial search over many seeds.

pub mod darts;
pub mod evaluator;
pub mod latency;
pub mod strategy;
pub mod study;
pub mod trials;
