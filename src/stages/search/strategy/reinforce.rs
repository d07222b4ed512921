//! REINFORCE (Williams 1992) as NAS-Bench-201's `reinforce.py` runs it: the policy is one
//! softmax distribution per decision (logits start at 1e-3 · N(0, 1)); each evaluation's
//! reward r updates an exponential moving average baseline b first, then one Adam step
//! (β = (0.9, 0.999), ε = 1e-8) on the loss −(r − b) · log p(architecture).
//!
//! The inputs of a node are drawn one after another without replacement: an input's
//! distribution is the softmax over the edges not yet taken, and its gradient is taken
//! through that masked softmax.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Arch, Decisions, Strategy};

pub struct Reinforce {
    decisions: Decisions,
    rng: ChaCha8Rng,
    lr: f64,
    /// Per decision: logits, Adam's first and second moments.
    logits: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    steps: i32,
    baseline: Ema,
    /// The architectures asked and not yet told, oldest first, with the mask each decision
    /// was drawn under.
    pending: std::collections::VecDeque<(Arch, Vec<Vec<bool>>)>,
}

/// NAS-Bench-201's `ExponentialMovingAverage`: a bias-corrected EMA.
struct Ema {
    momentum: f64,
    numerator: f64,
    denominator: f64,
}

impl Ema {
    fn update(&mut self, x: f64) {
        self.numerator = self.momentum * self.numerator + (1.0 - self.momentum) * x;
        self.denominator = self.momentum * self.denominator + (1.0 - self.momentum);
    }
    fn value(&self) -> f64 {
        if self.denominator == 0.0 {
            0.0
        } else {
            self.numerator / self.denominator
        }
    }
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Softmax of `logits` over the entries `allowed` marks (the others get 0).
fn masked_softmax(logits: &[f64], allowed: &[bool]) -> Vec<f64> {
    let max = logits
        .iter()
        .zip(allowed)
        .filter(|(_, a)| **a)
        .map(|(l, _)| *l)
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits
        .iter()
        .zip(allowed)
        .map(|(l, a)| if *a { (l - max).exp() } else { 0.0 })
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

impl Reinforce {
    pub fn new(decisions: Decisions, seed: u64, lr: f64, baseline_momentum: f64) -> Reinforce {
        let mut rng = super::rng(seed, 3);
        let logits: Vec<Vec<f64>> = decisions
            .list
            .iter()
            .map(|(_, n)| {
                (0..*n)
                    .map(|_| {
                        1e-3 * <StandardNormal as Distribution<f64>>::sample(
                            &StandardNormal,
                            &mut rng,
                        )
                    })
                    .collect()
            })
            .collect();
        let zeros: Vec<Vec<f64>> = logits.iter().map(|l| vec![0.0; l.len()]).collect();
        Reinforce {
            decisions,
            rng,
            lr,
            m: zeros.clone(),
            v: zeros,
            logits,
            steps: 0,
            baseline: Ema {
                momentum: baseline_momentum,
                numerator: 0.0,
                denominator: 0.0,
            },
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The policy's probabilities per decision (inputs unmasked).
    pub fn probabilities(&self) -> Vec<Vec<f64>> {
        self.logits
            .iter()
            .map(|l| masked_softmax(l, &vec![true; l.len()]))
            .collect()
    }
}

impl Strategy for Reinforce {
    fn ask(&mut self) -> Arch {
        let n = self.decisions.len();
        // A warm-start architecture is proposed as if sampled, under the masks its own
        // earlier inputs make.
        let given = self.decisions.take_initial();
        let mut arch: Arch = given.clone().unwrap_or_else(|| vec![0; n]);
        let mut masks: Vec<Vec<bool>> = self.logits.iter().map(|l| vec![true; l.len()]).collect();
        for d in 0..n {
            if let Some(g) = self.decisions.distinct.iter().find(|g| g.contains(&d)) {
                for &o in g.iter().take_while(|&&o| o != d) {
                    masks[d][arch[o] as usize] = false;
                }
            }
            if given.is_some() {
                continue;
            }
            let p = masked_softmax(&self.logits[d], &masks[d]);
            let u: f64 = self.rng.random();
            let mut acc = 0.0;
            let mut pick = p.iter().rposition(|&x| x > 0.0).unwrap_or(0);
            for (k, &pk) in p.iter().enumerate() {
                acc += pk;
                if u < acc && pk > 0.0 {
                    pick = k;
                    break;
                }
            }
            arch[d] = pick as u32;
        }
        self.pending.push_back((arch.clone(), masks));
        arch
    }

    fn tell(&mut self, reward: Option<f64>) {
        let (Some((arch, masks)), Some(r)) = (self.pending.pop_front(), reward) else {
            return;
        };
        self.baseline.update(r);
        let advantage = r - self.baseline.value();
        self.steps += 1;
        let (c1, c2) = (1.0 - BETA1.powi(self.steps), 1.0 - BETA2.powi(self.steps));
        for d in 0..self.logits.len() {
            let p = masked_softmax(&self.logits[d], &masks[d]);
            for (k, &pk) in p.iter().enumerate() {
                let onehot = if k == arch[d] as usize { 1.0 } else { 0.0 };
                // d/dlogit of −advantage · log p(a).
                let g = -advantage * (onehot - pk);
                self.m[d][k] = BETA1 * self.m[d][k] + (1.0 - BETA1) * g;
                self.v[d][k] = BETA2 * self.v[d][k] + (1.0 - BETA2) * g * g;
                let step = self.lr * (self.m[d][k] / c1) / ((self.v[d][k] / c2).sqrt() + EPS);
                self.logits[d][k] -= step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_learns_a_rewarded_op() {
        let s = crate::stages::search::strategy::tests::space("schemas/nas-bench-201.ron");
        let d = Decisions::of(&s);
        let mut r = Reinforce::new(d, 3, 0.05, 0.9);
        for _ in 0..300 {
            let a = r.ask();
            let reward = a.iter().filter(|&&v| v == 3).count() as f64 / 6.0;
            r.tell(Some(reward));
        }
        for p in r.probabilities() {
            assert!(p[3] > 0.5, "{p:?}");
        }
    }

    #[test]
    fn distinct_inputs_are_never_drawn_twice() {
        let s = crate::stages::search::strategy::tests::space("schemas/darts.ron");
        let d = Decisions::of(&s);
        let mut r = Reinforce::new(d.clone(), 1, 0.01, 0.9);
        for i in 0..100 {
            let a = r.ask();
            assert!(d.valid(&a), "{a:?}");
            r.tell(Some(i as f64 / 100.0));
        }
    }

    #[test]
    fn masked_softmax_ignores_masked_entries() {
        let p = masked_softmax(&[1.0, 5.0, 1.0], &[true, false, true]);
        assert_eq!(p, vec![0.5, 0.0, 0.5]);
    }
}
