//! Checks of training recipes: optimizers, the `retrain` section (and the evaluator's
//! recipe), and the augmentation of every training the spec describes.

use super::Checker;
use crate::error::Result;
use crate::spec::pipeline::{Augment, Evaluator, Optimizer, Pipeline, Retrain, Search};
use crate::spec::{Span, Spanned};

impl Checker<'_> {
    /// An optimizer; `what` names it in messages.
    pub(super) fn optimizer(&self, o: &Spanned<Optimizer>, what: &str) -> Result<()> {
        match &o.value {
            Optimizer::Sgd {
                lr,
                lr_min,
                momentum,
                weight_decay,
                grad_clip,
                ..
            } => {
                self.lr(lr, what)?;
                self.nonneg(lr_min, &format!("{what}: lr_min"))?;
                if lr_min.value > lr.value {
                    return Err(self.err(
                        lr_min.span,
                        format!("{what}: lr_min {} is above lr {}", lr_min.value, lr.value),
                    ));
                }
                self.unit(momentum, &format!("{what}: momentum"), false, true)?;
                self.nonneg(weight_decay, &format!("{what}: weight_decay"))?;
                if let Some(c) = grad_clip
                    && !(c.value.is_finite() && c.value > 0.0)
                {
                    return Err(self.err(
                        c.span,
                        format!("{what}: grad_clip must be > 0, got {}", c.value),
                    ));
                }
                Ok(())
            }
            Optimizer::Adam {
                lr,
                betas,
                weight_decay,
            } => {
                self.lr(lr, what)?;
                let (b1, b2) = betas.value;
                if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
                    return Err(self.err(
                        betas.span,
                        format!("{what}: betas must be in [0, 1), got ({b1}, {b2})"),
                    ));
                }
                self.nonneg(weight_decay, &format!("{what}: weight_decay"))
            }
        }
    }

    /// An optimizer's learning rate.
    fn lr(&self, lr: &Spanned<f64>, what: &str) -> Result<()> {
        if !(lr.value.is_finite() && lr.value > 0.0) {
            return Err(self.err(lr.span, format!("{what}: lr must be > 0, got {}", lr.value)));
        }
        Ok(())
    }

    /// A training recipe; `what` names it in messages.
    pub(super) fn recipe(&self, r: &Retrain, what: &str) -> Result<()> {
        self.positive(&r.epochs, &format!("{what} epochs"))?;
        self.positive(&r.batch_size, &format!("{what} batch_size"))?;
        self.positive(&r.eval_every, "eval_every")?;
        for v in [&r.channels, &r.layers].into_iter().flatten() {
            self.positive(v, &format!("{what} width and depth"))?;
        }
        self.optimizer(&r.optimizer, &format!("{what} optimizer"))?;
        self.nonneg(&r.auxiliary_weight, "auxiliary_weight")?;
        self.unit(&r.drop_path, "drop_path", false, true)?;
        self.unit(&r.label_smoothing, "label_smoothing", false, true)?;
        if let Some(ema) = &r.ema {
            self.unit(ema, "ema", true, true)?;
        }
        Ok(())
    }

    /// The `retrain` section's recipe.
    pub(super) fn retrain(&self, p: &Pipeline) -> Result<()> {
        if let Some(r) = &p.retrain {
            self.recipe(r, "retrain")?;
            if let Some(n) = &r.images {
                self.positive(n, "retrain images (per epoch)")?;
            }
        }
        Ok(())
    }

    /// Every training's cutout, smaller than the image: the search's (DARTS, or a
    /// training evaluator's), then the retrain's.
    pub(super) fn augment(&self, p: &Pipeline) -> Result<()> {
        let size = p.data.shape().1;
        for (aug, span) in p
            .search
            .iter()
            .filter_map(search_augment)
            .chain(p.retrain.iter().map(|r| (&r.augment, r.span)))
        {
            if aug.cutout >= size {
                return Err(self.err(
                    span,
                    format!(
                        "cutout {} must be smaller than the image size {size}",
                        aug.cutout
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The search's augmentation and the span an error about it points at; none for a table.
fn search_augment(s: &Spanned<Search>) -> Option<(&Augment, Span)> {
    match &s.value {
        Search::Darts { augment, .. } => Some((augment, s.span)),
        Search::Trials { evaluator, .. } => match &evaluator.value {
            Evaluator::Train { recipe, .. } => Some((&recipe.augment, recipe.span)),
            Evaluator::WeightSharing { augment, .. } => Some((augment, evaluator.span)),
            Evaluator::Tabular { .. } => None,
        },
    }
}
