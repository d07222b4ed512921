//! Random search: every architecture drawn uniformly, independently of the rewards; the
//! honest baseline of NAS-Bench-201.

use rand_chacha::ChaCha8Rng;

use super::{Arch, Decisions, Strategy};

pub struct Random {
    decisions: Decisions,
    rng: ChaCha8Rng,
}

impl Random {
    pub fn new(decisions: Decisions, seed: u64) -> Random {
        Random {
            decisions,
            rng: super::rng(seed, 1),
        }
    }
}

impl Strategy for Random {
    fn ask(&mut self) -> Arch {
        self.decisions.random(&mut self.rng)
    }

    fn tell(&mut self, _reward: Option<f64>) {}
}
