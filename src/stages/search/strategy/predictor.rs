//! Predictor-guided search in the style of BANANAS (White, Neiswanger and Savani,
//! "BANANAS: Bayesian Optimization with Neural Architectures for Neural Architecture
//! Search", AAAI 2021, arXiv 1910.11858) and NPENAS:
//!
//! 1. `init` uniformly random architectures are evaluated;
//! 2. then, every `batch` proposals, an ensemble of `ensemble` small MLPs is trained on every
//!    evaluated architecture (one-hot encoding of its decisions → standardised reward), a
//!    candidate pool is built from the unasked one-edit neighbours of the best evaluated
//!    architectures plus many random ones, one independent Thompson sample is drawn per
//!    candidate (from N(ensemble mean, ensemble standard deviation)), and `batch` candidates
//!    are queued and asked in order: first the unasked one-edit neighbour of the best
//!    evaluated architecture with the highest sample (while it has one), then the rest of
//!    the pool by sample. The first pick keeps the incumbent's neighbourhood being
//!    evaluated however many random candidates draw high samples, so a search ends on a
//!    local optimum of the evaluations, as local search does.
//!
//! Everything random (weight init, Thompson draws, pool) comes from the strategy's seeded
//! RNG and the training is full-batch on the CPU, so the proposals are a function of the
//! seed and the rewards told; a search resumes by replay on the same build and machine.

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Arch, Decisions, Strategy};

/// Width of the MLPs' two hidden layers.
const HIDDEN: usize = 32;
/// Full-batch AdamW steps per training.
const STEPS: usize = 150;
const LR: f64 = 0.01;
const WEIGHT_DECAY: f64 = 1e-4;
/// The best evaluated architectures whose neighbours form the candidate pool.
const PARENTS: usize = 5;
/// Random architectures added to the pool.
const RANDOM_CANDIDATES: usize = 1000;
/// Picks per batch reserved for the unasked neighbours of the best evaluated architecture.
const INCUMBENT_PICKS: usize = 1;

pub struct Predictor {
    decisions: Decisions,
    rng: ChaCha8Rng,
    init: usize,
    ensemble: usize,
    batch: usize,
    /// Evaluated architectures with their rewards, in order.
    evaluated: Vec<(Arch, f64)>,
    seen: HashSet<Arch>,
    /// Queued proposals, the next last.
    queue: Vec<Arch>,
    pending: std::collections::VecDeque<Arch>,
}

impl Predictor {
    pub fn new(
        decisions: Decisions,
        seed: u64,
        init: usize,
        ensemble: usize,
        batch: usize,
    ) -> Predictor {
        Predictor {
            decisions,
            rng: super::rng(seed, 5),
            init: init.max(2),
            ensemble: ensemble.max(1),
            batch: batch.max(1),
            evaluated: Vec::new(),
            seen: HashSet::new(),
            queue: Vec::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// A random architecture not asked before, if one turns up in 1000 draws.
    fn fresh(&mut self) -> Arch {
        let mut a = self.decisions.random(&mut self.rng);
        for _ in 1..1000 {
            if !self.seen.contains(&a) {
                break;
            }
            a = self.decisions.random(&mut self.rng);
        }
        a
    }

    /// Unasked neighbours of the best evaluated architectures, then random unasked ones;
    /// no duplicates.
    fn pool(&mut self) -> Vec<Arch> {
        let mut by_reward: Vec<&(Arch, f64)> = self.evaluated.iter().collect();
        by_reward.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut pool = Vec::new();
        let mut inside = HashSet::new();
        for (parent, _) in by_reward.into_iter().take(PARENTS) {
            for n in self.decisions.neighbours(parent) {
                if !self.seen.contains(&n) && inside.insert(n.clone()) {
                    pool.push(n);
                }
            }
        }
        for _ in 0..RANDOM_CANDIDATES {
            let a = self.fresh();
            if !self.seen.contains(&a) && inside.insert(a.clone()) {
                pool.push(a);
            }
        }
        pool
    }

    /// Trains the ensemble and queues the `batch` pool members with the highest
    /// independent Thompson samples.
    fn refill(&mut self) {
        let pool = self.pool();
        if pool.is_empty() {
            return;
        }
        let (xs, ys): (Vec<&Arch>, Vec<f64>) = self.evaluated.iter().map(|(a, r)| (a, *r)).unzip();
        let d = &self.decisions;
        let ensemble = Ensemble::init(d, self.ensemble, &mut self.rng);
        // A candle error on the CPU would be a shape bug; the pick then falls back to the
        // pool's order (neighbours of the best first).
        let stats = ensemble
            .and_then(|mut e| {
                e.fit(d, &xs, &ys)?;
                e.predict(d, &pool)
            })
            .unwrap_or_else(|_| vec![(0.0, 0.0); pool.len()]);
        let draws: Vec<f64> = stats
            .iter()
            .map(|&(m, s)| {
                let z: f64 = StandardNormal.sample(&mut self.rng);
                m + s * z
            })
            .collect();
        let picks = self.pick(&pool, &draws);
        self.queue = picks.iter().rev().map(|&i| pool[i].clone()).collect();
    }

    /// Indices into `pool` of the next batch, in asking order: up to [`INCUMBENT_PICKS`]
    /// neighbours of the best evaluated architecture by highest draw, then the rest of the
    /// pool by highest draw (ties to the earlier candidate).
    fn pick(&self, pool: &[Arch], draws: &[f64]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.sort_by(|&a, &b| draws[b].total_cmp(&draws[a]).then(a.cmp(&b)));
        let batch = self.batch.min(pool.len());
        let mut picks: Vec<usize> = match self.incumbent() {
            Some(best) => {
                let near: HashSet<Arch> = self.decisions.neighbours(best).into_iter().collect();
                order
                    .iter()
                    .copied()
                    .filter(|&i| near.contains(&pool[i]))
                    .take(INCUMBENT_PICKS.min(batch))
                    .collect()
            }
            None => Vec::new(),
        };
        for &i in &order {
            if picks.len() >= batch {
                break;
            }
            if !picks.contains(&i) {
                picks.push(i);
            }
        }
        picks
    }

    /// The best evaluated architecture (the latest of equals).
    fn incumbent(&self) -> Option<&Arch> {
        self.evaluated
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(a, _)| a)
    }
}

impl Strategy for Predictor {
    fn ask(&mut self) -> Arch {
        if self.evaluated.len() >= self.init && self.queue.is_empty() {
            self.refill();
        }
        let arch = loop {
            match self.queue.pop() {
                Some(a) if self.seen.contains(&a) => continue,
                Some(a) => break a,
                None => break self.fresh(),
            }
        };
        self.seen.insert(arch.clone());
        self.pending.push_back(arch.clone());
        arch
    }

    fn tell(&mut self, reward: Option<f64>) {
        if let (Some(a), Some(r)) = (self.pending.pop_front(), reward) {
            self.evaluated.push((a, r));
        }
    }
}

/// One-hot encoding of architectures: one block per decision, one column per value.
fn encode(d: &Decisions, archs: &[&Arch]) -> candle_core::Result<Tensor> {
    let width: usize = d.list.iter().map(|(_, n)| n).sum();
    let mut x = vec![0f32; archs.len() * width];
    for (row, a) in archs.iter().enumerate() {
        let mut off = row * width;
        for (&v, (_, n)) in a.iter().zip(&d.list) {
            x[off + v as usize] = 1.0;
            off += n;
        }
    }
    Tensor::from_vec(x, (archs.len(), width), &Device::Cpu)
}

/// `members` MLPs (input → HIDDEN → HIDDEN → 1, ReLU) trained side by side as batched
/// matrix products: weights `[members, fan_in, fan_out]`, biases `[members, 1, fan_out]`.
struct Ensemble {
    layers: Vec<(Var, Var)>,
    members: usize,
}

impl Ensemble {
    /// PyTorch's `Linear` init, uniform in ±1/√fan_in, drawn from `rng`.
    fn init(d: &Decisions, members: usize, rng: &mut ChaCha8Rng) -> candle_core::Result<Ensemble> {
        let input: usize = d.list.iter().map(|(_, n)| n).sum();
        let dims = [input, HIDDEN, HIDDEN, 1];
        let mut layers = Vec::new();
        for w in dims.windows(2) {
            let (i, o) = (w[0], w[1]);
            let bound = 1.0 / (i as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let wt = Tensor::from_vec(draw(members * i * o), (members, i, o), &Device::Cpu)?;
            let b = Tensor::from_vec(draw(members * o), (members, 1, o), &Device::Cpu)?;
            layers.push((Var::from_tensor(&wt)?, Var::from_tensor(&b)?));
        }
        Ok(Ensemble { layers, members })
    }

    /// Every member's prediction for `x` (`[n, input]`): `[members, n, 1]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, input) = x.dims2()?;
        let mut h = x.unsqueeze(0)?.broadcast_as((self.members, n, input))?;
        let last = self.layers.len() - 1;
        for (k, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            if k < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Full-batch AdamW on the mean squared error to the standardised rewards.
    fn fit(&mut self, d: &Decisions, archs: &[&Arch], rewards: &[f64]) -> candle_core::Result<()> {
        let (mean, std) = standardise(rewards);
        let y: Vec<f32> = rewards.iter().map(|r| ((r - mean) / std) as f32).collect();
        let y = Tensor::from_vec(y, (1, rewards.len(), 1), &Device::Cpu)?;
        let x = encode(d, archs)?;
        let vars = self
            .layers
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect();
        let mut opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: LR,
                weight_decay: WEIGHT_DECAY,
                ..ParamsAdamW::default()
            },
        )?;
        for _ in 0..STEPS {
            let loss = self.forward(&x)?.broadcast_sub(&y)?.sqr()?.mean_all()?;
            opt.backward_step(&loss)?;
        }
        Ok(())
    }

    /// Per architecture, the members' mean and standard deviation in standardised units.
    fn predict(&self, d: &Decisions, archs: &[Arch]) -> candle_core::Result<Vec<(f64, f64)>> {
        let refs: Vec<&Arch> = archs.iter().collect();
        let p = self
            .forward(&encode(d, &refs)?)?
            .squeeze(2)?
            .to_dtype(DType::F64)?;
        let p: Vec<Vec<f64>> = p.to_vec2()?;
        Ok((0..archs.len())
            .map(|i| {
                let col: Vec<f64> = p.iter().map(|m| m[i]).collect();
                let (m, s) = standardise(&col);
                (m, if col.len() > 1 { s } else { 0.0 })
            })
            .collect())
    }
}

/// Mean and standard deviation (population; at least 1e-9).
fn standardise(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::search::strategy::tests::space;

    /// A synthetic objective on NB201 cells: a weighted count of edges that take the
    /// target op; its optimum is the target.
    fn objective(a: &Arch) -> f64 {
        const TARGET: [u32; 6] = [3, 1, 4, 3, 0, 2];
        a.iter()
            .zip(TARGET)
            .enumerate()
            .map(|(i, (&v, t))| if v == t { 1.0 + 0.1 * i as f64 } else { 0.0 })
            .sum()
    }

    #[test]
    fn finds_the_optimum_of_a_synthetic_objective_and_never_repeats() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        for seed in 0..3 {
            let mut p = Predictor::new(d.clone(), seed, 10, 3, 5);
            let asked = crate::stages::search::strategy::drive(&mut p, 60, |a| Some(objective(a)));
            assert!(
                asked.contains(&vec![3, 1, 4, 3, 0, 2]),
                "seed {seed} missed the optimum"
            );
            let distinct: HashSet<&Arch> = asked.iter().collect();
            assert_eq!(distinct.len(), asked.len());
        }
    }

    #[test]
    fn the_first_pick_is_the_best_drawn_neighbour_of_the_best_evaluated() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        let mut p = Predictor::new(d.clone(), 0, 2, 2, 3);
        let best: Arch = vec![3, 1, 4, 3, 0, 2];
        p.evaluated = vec![(vec![0; 6], 1.0), (best.clone(), 2.0)];
        let near = d.neighbours(&best);
        let pool = vec![
            vec![1; 6],
            near[0].clone(),
            vec![2; 6],
            near[1].clone(),
            vec![4; 6],
        ];
        // By draw alone the batch would be 0, 2, 4: no neighbour of the best.
        assert_eq!(p.pick(&pool, &[5.0, 1.0, 4.0, 2.0, 3.0]), vec![3, 0, 2]);
    }

    #[test]
    fn same_seed_same_proposals() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        let f = |a: &Arch| (!a.contains(&0)).then(|| objective(a));
        let a = crate::stages::search::strategy::drive(
            &mut Predictor::new(d.clone(), 4, 5, 3, 4),
            30,
            f,
        );
        let b = crate::stages::search::strategy::drive(
            &mut Predictor::new(d.clone(), 4, 5, 3, 4),
            30,
            f,
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            crate::stages::search::strategy::drive(&mut Predictor::new(d, 5, 5, 3, 4), 30, f)
        );
    }

    #[test]
    fn the_trained_ensemble_ranks_a_linear_objective() {
        let d = Decisions::of(&space("schemas/nas-bench-201.ron"));
        let mut rng = super::super::rng(0, 0);
        let train: Vec<Arch> = (0..80).map(|_| d.random(&mut rng)).collect();
        let test: Vec<Arch> = (0..40).map(|_| d.random(&mut rng)).collect();
        let mut e = Ensemble::init(&d, 3, &mut rng).unwrap();
        let refs: Vec<&Arch> = train.iter().collect();
        let ys: Vec<f64> = train.iter().map(objective).collect();
        e.fit(&d, &refs, &ys).unwrap();
        let pred = e.predict(&d, &test).unwrap();
        // Pairs ordered alike by the prediction and the objective (Kendall-style).
        let (mut agree, mut total) = (0, 0);
        for i in 0..test.len() {
            for j in 0..i {
                let (t, p) = (
                    objective(&test[i]) - objective(&test[j]),
                    pred[i].0 - pred[j].0,
                );
                if t != 0.0 {
                    total += 1;
                    agree += usize::from(t * p > 0.0);
                }
            }
        }
        assert!(agree as f64 > 0.8 * total as f64, "{agree}/{total}");
    }

    #[test]
    fn searches_a_darts_space_with_distinct_inputs() {
        let d = Decisions::of(&space("schemas/darts.ron"));
        let mut p = Predictor::new(d.clone(), 1, 5, 2, 5);
        let asked = crate::stages::search::strategy::drive(&mut p, 25, |a| {
            Some(a.iter().map(|&v| v as f64).sum())
        });
        assert!(asked.iter().all(|a| d.valid(a)));
        let sums: Vec<u32> = asked.iter().map(|a| a.iter().sum()).collect();
        let first = sums[..5].iter().copied().max().unwrap();
        assert!(sums.iter().copied().max().unwrap() > first, "{sums:?}");
    }
}
