//! The DARTS-family search's artifacts: `search/state.json` with its per-epoch figures and
//! the architecture weights after each epoch.

use serde::{Deserialize, Serialize};

use crate::run::checkpoint::{Kept, StateFile};
use crate::run::metrics::CurvePoint;

/// Version of `state.json`.
pub const STATE_VERSION: u32 = 1;

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Training and validation loss and accuracy within the epoch.
    #[serde(default)]
    pub curve: Vec<CurvePoint>,
    #[serde(default)]
    pub val_curve: Vec<CurvePoint>,
    /// With a latency term: the expected latency (ms) under the weights after the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_latency_ms: Option<f64>,
}

/// The architecture weights after an epoch, as the genotype is derived from them: per cell
/// type, [edges][candidates] (softmax of α; under PC-DARTS's edge normalisation times the
/// edge's weight); per searchable layer, [candidates].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlphaSnapshot {
    pub epoch: usize,
    pub cells: Vec<(String, Vec<Vec<f32>>)>,
    pub layers: Vec<Vec<f32>>,
    /// PC-DARTS's edge normalisation: per cell type, each edge's softmax of β over its
    /// node's incoming edges, [edges]. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<(String, Vec<f32>)>,
}

/// `search/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub spec_hash: String,
    /// Epochs finished.
    pub epochs_done: usize,
    pub checkpoint: String,
    pub metrics: Vec<EpochMetrics>,
    pub history: Vec<AlphaSnapshot>,
    /// The checkpoints kept, oldest first, with their hashes.
    #[serde(default)]
    pub kept: Vec<Kept>,
}

impl StateFile for State {
    const VERSION: u32 = STATE_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
    fn spec_hash(&self) -> &str {
        &self.spec_hash
    }
    fn epochs(&self) -> (usize, usize) {
        (self.epochs_done, self.metrics.len())
    }
    fn checkpoint(&self) -> &str {
        &self.checkpoint
    }
    fn kept(&self) -> &[Kept] {
        &self.kept
    }
    fn kept_mut(&mut self) -> &mut Vec<Kept> {
        &mut self.kept
    }
    fn set_epochs(&mut self, epochs_done: usize, checkpoint: String) {
        self.epochs_done = epochs_done;
        self.checkpoint = checkpoint;
        self.metrics.truncate(epochs_done);
        self.history.truncate(epochs_done);
    }
}
