//! Checks of a multi-trial search's evaluator: a table's columns, or a training
//! evaluator's sizes and recipe.

use super::Checker;
use crate::error::Result;
use crate::spec::Spanned;
use crate::spec::pipeline::{Evaluator, Optimizer, Retrain};

impl Checker<'_> {
    /// The evaluator, whichever kind it is.
    pub(super) fn evaluator(&self, evaluator: &Spanned<Evaluator>) -> Result<()> {
        match &evaluator.value {
            Evaluator::Tabular {
                table,
                select,
                report,
            } => {
                for (v, what) in [(table, "table"), (select, "select"), (report, "report")] {
                    if v.trim().is_empty() {
                        return Err(self.err(v.span, format!("{what} must not be empty")));
                    }
                }
                Ok(())
            }
            Evaluator::Train {
                images,
                train_portion,
                recipe,
            } => self.train_evaluator(images, train_portion, recipe),
            Evaluator::WeightSharing { .. } => self.weight_sharing(&evaluator.value),
        }
    }

    /// Training each candidate from scratch: sizes and a recipe without auxiliary head.
    fn train_evaluator(
        &self,
        images: &Option<Spanned<u32>>,
        train_portion: &Spanned<f64>,
        r: &Spanned<Retrain>,
    ) -> Result<()> {
        if let Some(n) = images {
            self.positive(n, "evaluator images")?;
        }
        self.unit(train_portion, "train_portion", true, true)?;
        self.recipe(r, "evaluator")?;
        if let Some(n) = &r.images {
            return Err(self.err(
                n.span,
                "a recipe's `images` (per epoch) is for retraining; the evaluator's own `images` sets how many a candidate trains on",
            ));
        }
        if r.auxiliary_weight.value > 0.0 {
            return Err(self.err(
                r.auxiliary_weight.span,
                "the evaluator trains without an auxiliary head: set `auxiliary_weight: 0.0`",
            ));
        }
        Ok(())
    }

    /// One weight-sharing network: sizes, budget, and an Sgd optimizer.
    fn weight_sharing(&self, evaluator: &Evaluator) -> Result<()> {
        let Evaluator::WeightSharing {
            images,
            train_portion,
            epochs,
            batch_size,
            channels,
            layers,
            weights,
            eval_images,
            ..
        } = evaluator
        else {
            return Ok(());
        };
        for v in [images, eval_images, channels, layers]
            .into_iter()
            .flatten()
        {
            self.positive(v, "evaluator sizes")?;
        }
        self.unit(train_portion, "train_portion", true, true)?;
        self.positive(epochs, "evaluator epochs")?;
        self.positive(batch_size, "evaluator batch_size")?;
        self.optimizer(weights, "evaluator weights")?;
        if !matches!(weights.value, Optimizer::Sgd { .. }) {
            return Err(self.err(weights.span, "the weight-sharing evaluator trains with Sgd"));
        }
        Ok(())
    }
}
