//! Checks of the `search` section's multi-trial form: budget, strategy, reward,
//! constraints, latency timing and front export. The evaluator is in `evaluator`.

use super::Checker;
use crate::error::Result;
use crate::spec::Spanned;
use crate::spec::pipeline::{Constraint, Evaluator, Reward, Search, Strategy};

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
}
