//! Checks of the output sections: `export`, `validate` and `profile`.

use super::{Checker, MAX_BATCH, MAX_RUNS, MAX_THREADS};
use crate::error::Result;
use crate::spec::pipeline::{Export, Pipeline};

impl Checker<'_> {
    /// The ONNX opset.
    pub(super) fn export(&self, p: &Pipeline) -> Result<()> {
        if let Some(e) = &p.export {
            let Export::Onnx { opset, .. } = &e.value;
            if !(17..=21).contains(&opset.value) {
                return Err(self.err(
                    opset.span,
                    format!("opset must be between 17 and 21, got {}", opset.value),
                ));
            }
        }
        Ok(())
    }

    /// Sample count and tolerances.
    pub(super) fn validate(&self, p: &Pipeline) -> Result<()> {
        if let Some(v) = &p.validate {
            self.positive(&v.samples, "validate samples")?;
            self.nonneg(&v.max_abs_diff, "max_abs_diff")?;
            self.unit(&v.min_top1_agreement, "min_top1_agreement", false, false)?;
        }
        Ok(())
    }

    /// Batch sizes, thread counts and runs.
    pub(super) fn profile(&self, p: &Pipeline) -> Result<()> {
        if let Some(pr) = &p.profile {
            for (list, what) in [(&pr.batch_sizes, "batch_sizes"), (&pr.threads, "threads")] {
                if list.is_empty() || list.contains(&0) {
                    return Err(self.err(
                        list.span,
                        format!("profile {what} must be a non-empty list of numbers ≥ 1"),
                    ));
                }
            }
            self.at_most(&pr.batch_sizes, MAX_BATCH, "batch_sizes")?;
            self.at_most(&pr.threads, MAX_THREADS, "threads")?;
            if pr.runs.value > MAX_RUNS || pr.warmup > MAX_RUNS {
                return Err(self.err(
                    pr.runs.span,
                    format!("profile runs and warmup must each be at most {MAX_RUNS}"),
                ));
            }
            self.positive(&pr.runs, "profile runs")?;
        }
        Ok(())
    }
}
