//! Local search (hill climbing with random restarts) as White, Zela and Hutter run it on
//! NAS-Bench-201 ("Local Search is State of the Art for Neural Architecture Search
//! Benchmarks", 2020, arXiv 2005.02960; NASLib's `LocalSearch`):
//!
//! 1. `init` uniformly random architectures are evaluated; the best becomes the current one;
//! 2. the current architecture's one-edit neighbours ([`Decisions::neighbours`]) not asked
//!    before are evaluated in a seeded random order; the first that beats the current
//!    reward becomes the current one, and its neighbourhood is searched next;
//! 3. when a neighbourhood is exhausted without an improvement (a local optimum), the search
//!    restarts from one random architecture not asked before.
//!
//! No architecture is asked twice while an unasked one can be found. A candidate a
//! constraint rejects is not an improvement.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{Arch, Decisions, Strategy};

/// Random draws tried for an architecture not asked before, before one that was is
/// accepted (a nearly exhausted space).
const FRESH_TRIES: usize = 1000;

/// Where an asked architecture came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// One of the `init` random architectures.
    Init,
    /// A random restart after a local optimum.
    Restart,
    /// A neighbour of the current architecture.
    Neighbour,
}

pub struct Local {
    decisions: Decisions,
    rng: ChaCha8Rng,
    init: usize,
    /// Initial architectures evaluated so far, and the best of them.
    initial: usize,
    best_initial: Option<(Arch, f64)>,
    /// The architecture being climbed from, with its reward; `None` before the initial
    /// draws end and after a local optimum until a restart is evaluated.
    current: Option<(Arch, f64)>,
    /// Neighbours of `current` still to ask, the next last.
    queue: Vec<Arch>,
    seen: HashSet<Arch>,
    pending: std::collections::VecDeque<(Arch, Phase)>,
}

impl Local {
    pub fn new(decisions: Decisions, seed: u64, init: usize) -> Local {
        Local {
            decisions,
            rng: super::rng(seed, 4),
            init: init.max(1),
            initial: 0,
            best_initial: None,
            current: None,
            queue: Vec::new(),
            seen: HashSet::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// A random architecture not asked before, if one is found in [`FRESH_TRIES`] draws.
    fn fresh(&mut self) -> Arch {
        let mut a = self.decisions.random(&mut self.rng);
        for _ in 1..FRESH_TRIES {
            if !self.seen.contains(&a) {
                break;
            }
            a = self.decisions.random(&mut self.rng);
        }
        a
    }

    /// Makes `(arch, reward)` the current architecture and queues its neighbours.
    fn climb_from(&mut self, arch: Arch, reward: f64) {
        let mut n = self.decisions.neighbours(&arch);
        n.shuffle(&mut self.rng);
        self.queue = n;
        self.current = Some((arch, reward));
    }

    /// The next neighbour of the current architecture not asked before.
    fn next_neighbour(&mut self) -> Option<Arch> {
        while let Some(a) = self.queue.pop() {
            if !self.seen.contains(&a) {
                return Some(a);
            }
        }
        None
    }
}

impl Strategy for Local {
    fn ask(&mut self) -> Arch {
        let (arch, phase) = if self.initial < self.init {
            (self.fresh(), Phase::Init)
        } else {
            match self.next_neighbour() {
                Some(a) if self.current.is_some() => (a, Phase::Neighbour),
                _ => {
                    // A local optimum (or no current architecture): start again.
                    self.current = None;
                    self.queue.clear();
                    (self.fresh(), Phase::Restart)
                }
            }
        };
        self.seen.insert(arch.clone());
        self.pending.push_back((arch.clone(), phase));
        arch
    }

    fn tell(&mut self, reward: Option<f64>) {
        let (Some((arch, phase)), Some(r)) = (self.pending.pop_front(), reward) else {
            return;
        };
        match phase {
            Phase::Init => {
                self.initial += 1;
                if self.best_initial.as_ref().is_none_or(|(_, b)| r > *b) {
                    self.best_initial = Some((arch, r));
                }
                if self.initial == self.init
                    && let Some((a, b)) = self.best_initial.take()
                {
                    self.climb_from(a, b);
                }
            }
            Phase::Restart => self.climb_from(arch, r),
            Phase::Neighbour => {
                if self.current.as_ref().is_some_and(|(_, c)| r > *c) {
                    self.climb_from(arch, r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::search::strategy::tests::space;

    /// A synthetic objective on NB201 cells with one global optimum: the number of edges
    /// that take the target op, plus a small per-edge bonus that breaks ties.
    fn objective(a: &Arch) -> f64 {
        const TARGET: [u32; 6] = [3, 1, 4, 3, 0, 2];
        a.iter()
            .zip(TARGET)
            .enumerate()
            .map(|(i, (&v, t))| {
                if v == t {
                    1.0
                } else {
                    0.01 * ((v + i as u32) % 5) as f64
                }
            })
            .sum()
    }

    #[test]
    fn finds_the_optimum_of_a_synthetic_objective_and_never_repeats() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        for seed in 0..5 {
            let mut l = Local::new(d.clone(), seed, 5);
            let asked = crate::stages::search::strategy::drive(&mut l, 150, |a| Some(objective(a)));
            assert!(
                asked.iter().any(|a| *a == vec![3, 1, 4, 3, 0, 2]),
                "seed {seed} missed the optimum"
            );
            let distinct: HashSet<&Arch> = asked.iter().collect();
            assert_eq!(
                distinct.len(),
                asked.len(),
                "seed {seed} asked a cell twice"
            );
        }
    }

    #[test]
    fn climbs_by_one_edit_from_the_best_initial_cell() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        let mut l = Local::new(d, 3, 4);
        let asked = crate::stages::search::strategy::drive(&mut l, 4, |a| Some(objective(a)));
        let best = asked
            .iter()
            .max_by(|a, b| objective(a).total_cmp(&objective(b)))
            .unwrap()
            .clone();
        let next = l.ask();
        assert_eq!(next.iter().zip(&best).filter(|(x, y)| x != y).count(), 1);
    }

    #[test]
    fn same_seed_same_proposals_and_rejections_do_not_move() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        // Rejects every cell with a `none` edge (value 0).
        let f = |a: &Arch| (!a.contains(&0)).then(|| objective(a));
        let a = crate::stages::search::strategy::drive(&mut Local::new(d.clone(), 9, 5), 80, f);
        let b = crate::stages::search::strategy::drive(&mut Local::new(d.clone(), 9, 5), 80, f);
        assert_eq!(a, b);
        assert_ne!(
            a,
            crate::stages::search::strategy::drive(&mut Local::new(d, 10, 5), 80, f)
        );
    }

    #[test]
    fn searches_a_darts_space_with_distinct_inputs() {
        let d = Decisions::of(&space("schemas/darts.ron"));
        let mut l = Local::new(d.clone(), 1, 3);
        let asked = crate::stages::search::strategy::drive(&mut l, 60, |a| {
            Some(a.iter().map(|&v| v as f64).sum())
        });
        assert!(asked.iter().all(|a| d.valid(a)));
        let sums: Vec<u32> = asked.iter().map(|a| a.iter().sum()).collect();
        let first = sums[..3].iter().copied().max().unwrap();
        assert!(sums.iter().copied().max().unwrap() >= first + 5, "{sums:?}");
    }
}
