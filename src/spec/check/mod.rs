//! Value checks of a pipeline spec that need no other file, one function per section.
//!
//! [`check`] runs the sections in a fixed order and stops at the first error, so the order
//! of the calls (and of the checks inside each section) decides which error a spec with
//! several faults reports. Each error points at the offending value.

pub mod budget;
mod data;
mod evaluator;
mod output;
mod retrain;
mod search;
mod trials;

pub use data::MAX_IMAGE_SIZE;

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
    c.profile(p)?;
    c.split(p)?;
    c.budget(p)
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
        let chars = p.name.chars().count();
        if chars > MAX_NAME_CHARS || p.name.chars().any(char::is_control) {
            return Err(self.err(
                p.name.span,
                format!(
                    "the name must be at most {MAX_NAME_CHARS} characters without control characters (it names the run folder), got {chars}"
                ),
            ));
        }
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
            return Err(self.err(
                t.span,
                "latency timing: batch_size, threads and runs must be at least 1",
            ));
        }
        for (v, max, what) in [
            (t.batch_size, MAX_BATCH, "batch_size"),
            (t.threads, MAX_THREADS, "threads"),
            (t.runs, MAX_RUNS, "runs"),
            (t.warmup, MAX_RUNS, "warmup"),
        ] {
            if v > max {
                return Err(self.err(
                    t.span,
                    format!("latency timing: {what} {}", too_large(v, max, what)),
                ));
            }
        }
        Ok(())
    }

    /// Each value of `list` at most `max`.
    fn at_most(&self, list: &Spanned<Vec<u32>>, max: u32, what: &str) -> Result<()> {
        match list.iter().find(|&&v| v > max) {
            Some(&v) => Err(self.err(list.span, format!("{what}: {}", too_large(v, max, what)))),
            None => Ok(()),
        }
    }
}

/// The longest pipeline name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The most threads a measurement may use: far above any machine's cores.
pub const MAX_THREADS: u32 = 1024;
/// The largest batch a measurement may time (memory is checked separately).
pub const MAX_BATCH: u32 = 65_536;
/// The most warm-up or timed runs of one measurement.
pub const MAX_RUNS: u32 = 1_000_000;

/// "V is more than the allowed N (why)" for a value above its bound.
fn too_large(v: u32, max: u32, what: &str) -> String {
    let why = match what {
        "threads" => "a thread count beyond any machine's cores only adds contention",
        "batch_size" | "batch_sizes" => "larger batches are not latency measurements",
        _ => "a latency needs tens to thousands of runs",
    };
    format!("{v} is more than the allowed {max} ({why})")
}
