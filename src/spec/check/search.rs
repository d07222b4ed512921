//! Checks of the `search` section's DARTS form (and its variants), and that a pipeline
//! gives a search or a genotype, not both. The multi-trial form is in `trials`.

use super::Checker;
use crate::error::Result;
use crate::spec::Spanned;
use crate::spec::pipeline::{Order, Pipeline, Search, Variant};

impl Checker<'_> {
    /// The search, whichever form it takes.
    pub(super) fn search(&self, p: &Pipeline) -> Result<()> {
        match p.search.as_deref() {
            Some(s @ Search::Darts { .. }) => self.darts(s),
            Some(s @ Search::Trials { .. }) => self.trials(s),
            None => Ok(()),
        }
    }

    /// A DARTS search: sizes, optimizers, latency term, then the variant.
    fn darts(&self, s: &Search) -> Result<()> {
        let Search::Darts {
            epochs,
            batch_size,
            train_portion,
            channels,
            layers,
            weights,
            arch,
            images,
            order,
            variant,
            latency,
            ..
        } = s
        else {
            return Ok(());
        };
        self.positive(epochs, "search epochs")?;
        if let Some(n) = images {
            self.positive(n, "search images")?;
        }
        self.positive(batch_size, "search batch_size")?;
        self.unit(train_portion, "train_portion", true, true)?;
        for v in [channels, layers].into_iter().flatten() {
            self.positive(v, "search width and depth")?;
        }
        self.optimizer(weights, "search weights")?;
        self.optimizer(arch, "search arch")?;
        if let Some(l) = latency {
            self.nonneg(&l.weight, "latency weight")?;
            self.timing(&l.timing)?;
        }
        match &variant.value {
            Variant::Standard => Ok(()),
            Variant::Gdas { tau_max, tau_min } => self.gdas(tau_max, tau_min, *order, variant),
            Variant::PcDarts { k, .. } => self.positive(k, "PC-DARTS k"),
        }
    }

    /// GDAS's temperatures, falling, and first-order updates.
    fn gdas(
        &self,
        tau_max: &Spanned<f64>,
        tau_min: &Spanned<f64>,
        order: Order,
        variant: &Spanned<Variant>,
    ) -> Result<()> {
        for (t, what) in [(tau_max, "tau_max"), (tau_min, "tau_min")] {
            if !(t.value.is_finite() && t.value > 0.0) {
                return Err(self.err(
                    t.span,
                    format!("GDAS: {what} must be a finite number > 0, got {}", t.value),
                ));
            }
        }
        if tau_min.value > tau_max.value {
            return Err(self.err(
                tau_min.span,
                format!(
                    "GDAS: tau_min {} is above tau_max {}",
                    tau_min.value, tau_max.value
                ),
            ));
        }
        if order != Order::First {
            return Err(self.err(
                variant.span,
                "GDAS updates the architecture with first-order gradients; set `order: First`",
            ));
        }
        Ok(())
    }

    /// A search and a fixed genotype exclude each other. A pipeline with neither is
    /// valid: `nas-pipe train --genotype` supplies the architecture (and says so when it is
    /// missing).
    pub(super) fn search_or_genotype(&self, p: &Pipeline) -> Result<()> {
        if let (Some(s), Some(g)) = (&p.search, &p.genotype) {
            let line = self.sources.diag(s.span, "").line;
            return Err(self.err(
                g.span,
                format!("give either `search` (at line {line}) or `genotype`, not both"),
            ));
        }
        Ok(())
    }
}
