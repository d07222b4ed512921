//! Regularized (aging) evolution (Real et al., "Regularized Evolution for Image Classifier
//! Architecture Search", AAAI 2019), as NAS-Bench-201's `R_EA.py` runs it:
//!
//! 1. `population` uniformly random architectures are evaluated and queued, oldest first;
//! 2. each cycle draws `sample` members uniformly with replacement, mutates the one with the
//!    highest reward (the first drawn among equals) by changing one decision
//!    ([`Decisions::mutate`]: one edge's op or one input), evaluates the child, appends it
//!    and removes the oldest member.
//!
//! A candidate a constraint rejects joins nothing and ages nobody.

use std::collections::VecDeque;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Arch, Decisions, Strategy};

pub struct Evolution {
    decisions: Decisions,
    rng: ChaCha8Rng,
    population: usize,
    sample: usize,
    /// Members, oldest first, with their rewards.
    members: VecDeque<(Arch, f64)>,
    /// The architectures asked and not yet told, oldest first.
    pending: std::collections::VecDeque<Arch>,
}

impl Evolution {
    pub fn new(decisions: Decisions, seed: u64, population: usize, sample: usize) -> Evolution {
        Evolution {
            decisions,
            rng: super::rng(seed, 2),
            population: population.max(1),
            sample: sample.max(1),
            members: VecDeque::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The current population, oldest first.
    pub fn members(&self) -> impl Iterator<Item = &(Arch, f64)> {
        self.members.iter()
    }
}

impl Strategy for Evolution {
    fn ask(&mut self) -> Arch {
        let arch = if self.members.len() < self.population {
            self.decisions.random(&mut self.rng)
        } else {
            let mut best: Option<usize> = None;
            for _ in 0..self.sample {
                let i = self.rng.random_range(0..self.members.len());
                if best.is_none_or(|b| self.members[i].1 > self.members[b].1) {
                    best = Some(i);
                }
            }
            let parent = &self.members[best.unwrap_or(0)].0;
            self.decisions.mutate(parent, &mut self.rng)
        };
        self.pending.push_back(arch.clone());
        arch
    }

    fn tell(&mut self, reward: Option<f64>) {
        let (Some(arch), Some(r)) = (self.pending.pop_front(), reward) else {
            return;
        };
        let full = self.members.len() >= self.population;
        self.members.push_back((arch, r));
        if full {
            self.members.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_ages_and_children_differ_from_a_parent_by_one_decision() {
        let s = crate::stages::search::strategy::tests::space("schemas/nas-bench-201.ron");
        let d = Decisions::of(&s);
        let mut e = Evolution::new(d.clone(), 7, 4, 2);
        let mut seen: Vec<Arch> = Vec::new();
        for i in 0..20 {
            let a = e.ask();
            if i >= 4 {
                let parents: Vec<&Arch> = e.members().map(|(m, _)| m).collect();
                assert!(
                    parents
                        .iter()
                        .any(|p| p.iter().zip(&a).filter(|(x, y)| x != y).count() == 1),
                    "child {a:?} is not one mutation from a member"
                );
            }
            // Rewards favour more nor_conv_3x3 (value 3).
            let r = a.iter().filter(|&&v| v == 3).count() as f64;
            e.tell(Some(r));
            seen.push(a);
            assert_eq!(e.members().count(), (i + 1).min(4));
        }
        // The oldest members left: the population is the last 4 evaluated.
        let last: Vec<&Arch> = seen[16..].iter().collect();
        let now: Vec<&Arch> = e.members().map(|(m, _)| m).collect();
        assert_eq!(now, last);
        // A rejected candidate changes nothing.
        e.ask();
        e.tell(None);
        assert_eq!(e.members().map(|(m, _)| m).collect::<Vec<_>>(), last);
    }
}
