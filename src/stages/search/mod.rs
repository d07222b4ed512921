//! The search stage, in two kinds: the DARTS family with weight sharing ([`darts`]) and
//! multi-trial search ([`trials`]), where a [`strategy`] proposes architectures and an
//! [`evaluator`] scores them; [`latency`] measures and predicts ONNX Runtime latency for
//! both; [`study`] repeats a tabular multi-trial search over many seeds; [`ledger`] and
//! [`worker`] run a multi-trial search's trials on worker processes through a database;
//! [`zero_cost`] scores candidates at initialisation and warm-starts the strategy.

pub mod darts;
pub mod evaluator;
pub mod latency;
pub mod ledger;
pub mod strategy;
pub mod study;
pub mod trials;
pub mod worker;
pub mod zero_cost;
