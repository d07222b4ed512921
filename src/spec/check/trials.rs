//! Checks of the `search` section's multi-trial form: budget, strategy, reward,
//! constraints, latency timing and front export. The evaluator is in `evaluator`.

use super::Checker;
use crate::error::Result;
use crate::spec::Spanned;
use crate::spec::pipeline::{Constraint, Evaluator, Reward, Search, Strategy, ZeroCost};

/// The largest zero-cost pool.
pub const MAX_POOL: u32 = 10_000;
/// The most mini-batches a zero-cost proxy averages over.
pub const MAX_PROXY_BATCHES: u32 = 64;
/// The largest zero-cost mini-batch (NASWOT's kernel is batch × batch).
pub const MAX_PROXY_BATCH_SIZE: u32 = 1_024;

impl Checker<'_> {
    /// A multi-trial search, in the order its parts are checked.
    pub(super) fn trials(&self, s: &Search) -> Result<()> {
        let Search::Trials {
            strategy,
            evaluator,
            evaluations,
            seconds,
            reward,
            constraints,
            latency,
            export_front,
            generation,
            zero_cost,
            ..
        } = s
        else {
            return Ok(());
        };
        self.positive(evaluations, "evaluations")?;
        if let Some(t) = seconds {
            self.positive_f(t, "seconds")?;
        }
        if let Some(g) = generation {
            self.positive(g, "generation")?;
        }
        self.strategy(strategy, evaluations)?;
        self.evaluator(evaluator)?;
        self.reward(reward)?;
        self.constraints(constraints)?;
        self.timing(&latency.timing)?;
        if let Some(z) = zero_cost {
            self.zero_cost(z, evaluator, strategy, evaluations)?;
        }
        if *export_front && !matches!(evaluator.value, Evaluator::Train { .. }) {
            return Err(self.err(
                evaluator.span,
                "`export_front: true` exports the weights each candidate trained: it needs \
                 a `Train(...)` evaluator",
            ));
        }
        Ok(())
    }

    /// The strategy's settings; evolution's population fits in the budget.
    fn strategy(&self, strategy: &Spanned<Strategy>, evaluations: &Spanned<u32>) -> Result<()> {
        match &strategy.value {
            Strategy::Random => Ok(()),
            Strategy::Evolution { population, sample } => {
                self.positive(population, "population")?;
                self.positive(sample, "sample")?;
                if sample.value > population.value {
                    return Err(self.err(
                        sample.span,
                        format!(
                            "sample {} is larger than the population {}",
                            sample.value, population.value
                        ),
                    ));
                }
                if population.value > evaluations.value {
                    return Err(self.err(
                        population.span,
                        format!(
                            "a population of {} needs at least as many evaluations, and the budget is {}",
                            population.value, evaluations.value
                        ),
                    ));
                }
                Ok(())
            }
            Strategy::Reinforce {
                lr,
                baseline_momentum,
            } => {
                self.positive_f(lr, "lr")?;
                self.unit(baseline_momentum, "baseline_momentum", false, true)
            }
            Strategy::Local { init } => self.initial(init, evaluations),
            Strategy::Predictor {
                init,
                ensemble,
                batch,
            } => {
                self.initial(init, evaluations)?;
                if init.value < 2 {
                    return Err(self.err(
                        init.span,
                        "the predictor needs at least 2 initial evaluations to train on",
                    ));
                }
                self.positive(ensemble, "ensemble")?;
                self.positive(batch, "batch")
            }
        }
    }

    /// A strategy's random initial architectures: at least one, within the budget.
    fn initial(&self, init: &Spanned<u32>, evaluations: &Spanned<u32>) -> Result<()> {
        self.positive(init, "init")?;
        if init.value > evaluations.value {
            return Err(self.err(
                init.span,
                format!(
                    "{} initial random architectures need at least as many evaluations, and \
                     the budget is {}",
                    init.value, evaluations.value
                ),
            ));
        }
        Ok(())
    }

    /// MnasNet's latency target and exponent.
    fn reward(&self, reward: &Spanned<Reward>) -> Result<()> {
        if let Reward::MnasNet { target_ms, w } = &reward.value {
            self.positive_f(target_ms, "target_ms")?;
            if !w.value.is_finite() {
                return Err(self.err(w.span, format!("w must be finite, got {}", w.value)));
            }
        }
        Ok(())
    }

    /// Every constraint's limit is > 0.
    fn constraints(&self, constraints: &[Spanned<Constraint>]) -> Result<()> {
        for c in constraints {
            let ok = match c.value {
                Constraint::MaxLatencyMs(ms) => ms.is_finite() && ms > 0.0,
                Constraint::MaxParams(n) | Constraint::MaxMacs(n) => n > 0,
            };
            if !ok {
                return Err(self.err(c.span, "a constraint's limit must be > 0"));
            }
        }
        Ok(())
    }

    /// The zero-cost prior: an evaluator with a network, a pool and mini-batches in range,
    /// and no more kept architectures than the strategy starts from.
    fn zero_cost(
        &self,
        z: &Spanned<ZeroCost>,
        evaluator: &Spanned<Evaluator>,
        strategy: &Spanned<Strategy>,
        evaluations: &Spanned<u32>,
    ) -> Result<()> {
        if matches!(evaluator.value, Evaluator::Tabular { .. }) {
            return Err(self.err(
                z.span,
                "a zero-cost prior scores networks at initialisation and a table has none: \
                 use a `Train(...)` or `WeightSharing(...)` evaluator, or remove `zero_cost`",
            ));
        }
        self.range(&z.pool, "pool", 1, MAX_POOL)?;
        self.range(&z.batches, "batches", 1, MAX_PROXY_BATCHES)?;
        self.range(&z.batch_size, "batch_size", 2, MAX_PROXY_BATCH_SIZE)?;
        self.positive(&z.keep, "keep")?;
        if z.keep.value > z.pool.value {
            return Err(self.err(
                z.keep.span,
                format!(
                    "keep {} is more than the pool of {}: keep at most the architectures scored",
                    z.keep.value, z.pool.value
                ),
            ));
        }
        let (first, what) = match &strategy.value {
            Strategy::Evolution { population, .. } => (population.value, "population"),
            Strategy::Local { init } | Strategy::Predictor { init, .. } => (init.value, "init"),
            Strategy::Random | Strategy::Reinforce { .. } => (evaluations.value, "evaluations"),
        };
        if z.keep.value > first {
            return Err(self.err(
                z.keep.span,
                format!(
                    "keep {} is more than the strategy's first {first} architectures \
                     ({what}); lower keep or raise {what}",
                    z.keep.value
                ),
            ));
        }
        Ok(())
    }

    /// A count in `lo..=hi`.
    fn range(&self, v: &Spanned<u32>, what: &str, lo: u32, hi: u32) -> Result<()> {
        if (lo..=hi).contains(&v.value) {
            return Ok(());
        }
        Err(self.err(
            v.span,
            format!("{what} must be between {lo} and {hi}, got {}", v.value),
        ))
    }
}
