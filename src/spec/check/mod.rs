//! Value checks of a pipeline spec that need no other file, one function per section.
//!
//! [`check`] runs the sections in a fixed order and stops at the first error, so the order
//! of the calls (and of the checks inside each section) decides which error a spec with
//! several faults reports. Each error points at the offending value.

mod data;
mod evaluator;
mod output;
mod retrain;
mod search;
mod trials;

use crate::error::{Error, Result};
use crate::spec::pipeline::{Pipeline, Timing};
use crate::spec::{Sources, Span, Spanned};

/// Value checks that need no other file. Each error points at the offending value.
pub fn check(sources: &Sources, p: &Pipeline) -> Result<()> {
    let c = Checker { sources };
    c.name(p)?;
    c.data(p)?;
    c.normalize(p)?;
    c.search(p)?;
    c.search_or_genotype(p)?;
    c.retrain(p)?;
    c.augment(p)?;
    c.export(p)?;
    c.validate(p)?;
    c.profile(p)
}

/// The spec files, for diagnostics, and the checks that several sections share.
struct Checker<'a> {
    sources: &'a Sources,
}

impl Checker<'_> {
    /// An error at `span`.
    fn err(&self, span: Span, m: impl Into<String>) -> Error {
        self.sources.diag(span, m).into()
    }

    /// The run folder's name.
    fn name(&self, p: &Pipeline) -> Result<()> {
        if p.name.trim().is_empty() || p.name.contains(['/', '\\']) || p.name.starts_with('.') {
            return Err(self.err(
                p.name.span,
                format!(
                    "the name {:?} must be a non-empty folder name (no slashes, not starting with '.')",
                    p.name.value
                ),
            ));
        }
        Ok(())
    }

    /// A count of at least 1.
    fn positive(&self, v: &Spanned<u32>, what: &str) -> Result<()> {
        if v.value == 0 {
            Err(self.err(v.span, format!("{what} must be at least 1")))
        } else {
            Ok(())
        }
    }

    /// A finite number > 0.
    fn positive_f(&self, v: &Spanned<f64>, what: &str) -> Result<()> {
        if v.value.is_finite() && v.value > 0.0 {
            Ok(())
        } else {
            Err(self.err(v.span, format!("{what} must be > 0, got {}", v.value)))
        }
    }

    /// A finite number ≥ 0.
    fn nonneg(&self, v: &Spanned<f64>, what: &str) -> Result<()> {
        if v.value.is_finite() && v.value >= 0.0 {
            Ok(())
        } else {
            Err(self.err(
                v.span,
                format!("{what} must be a finite number ≥ 0, got {}", v.value),
            ))
        }
    }

    /// A number in the unit interval, each end open or closed.
    fn unit(&self, v: &Spanned<f64>, what: &str, lo_open: bool, hi_open: bool) -> Result<()> {
        let x = v.value;
        let ok = x.is_finite()
            && (if lo_open { x > 0.0 } else { x >= 0.0 })
            && (if hi_open { x < 1.0 } else { x <= 1.0 });
        if ok {
            Ok(())
        } else {
            Err(self.err(
                v.span,
                format!(
                    "{what} must be in {}0, 1{}, got {x}",
                    if lo_open { "(" } else { "[" },
                    if hi_open { ")" } else { "]" }
                ),
            ))
        }
    }

    /// One latency measurement's settings.
    fn timing(&self, t: &Spanned<Timing>) -> Result<()> {
        if t.batch_size == 0 || t.threads == 0 || t.runs == 0 {
            Err(self.err(
                t.span,
                "latency timing: batch_size, threads and runs must be at least 1",
            ))
        } else {
            Ok(())
        }
    }
}
