//! The run folder (`exports/<name>/`): where stages meet. Every artifact path, the lock
//! file, the writer lock, checkpoints and the files more than one stage reads.

pub mod busy;
pub mod checkpoint;
pub mod dir;
pub mod hash;
pub mod lock;
pub mod metrics;
pub mod outputs;
pub mod profile;
pub mod resolved;
pub mod retrain;
pub mod search;
pub mod stage;
pub mod trials;
pub mod validation;

pub use dir::{ModelDir, RunDir};
pub use resolved::Resolved;
pub use stage::{SPEC_FILE, STALE_DIR, Stage};
