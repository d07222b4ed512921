//! Checks of the `budget` section (and of `--budget`, which replaces its total): a
//! duration the planner can work with, a search share, and work it can plan (a
//! DARTS-family search and/or retraining).

use super::Checker;
use crate::error::Result;
use crate::spec::pipeline::{Pipeline, Search};

/// The smallest budget: measuring alone times a few steps of each network.
pub const MIN_BUDGET_S: f64 = 10.0;
/// The largest budget, 30 days.
pub const MAX_BUDGET_S: f64 = 30.0 * 86_400.0;

/// The seconds of a budget's `total`, or what is wrong with it.
pub fn total_seconds(text: &str) -> std::result::Result<f64, String> {
    let Ok(d) = humantime::parse_duration(text.trim()) else {
        return Err(format!(
            "budget {text:?} is not a duration; write it like \"1h\", \"90min\" or \"1h 30m\""
        ));
    };
    let s = d.as_secs_f64();
    if !(MIN_BUDGET_S..=MAX_BUDGET_S).contains(&s) {
        return Err(format!(
            "budget {text:?} must be between 10 seconds (measuring alone times a few steps of each network) and 30 days"
        ));
    }
    Ok(s)
}

/// Why pipeline `p` has nothing a budget can plan, if so.
pub fn nothing_to_plan(p: &Pipeline) -> Option<&'static str> {
    if let Some(s) = &p.search
        && matches!(s.value, Search::Trials { .. })
    {
        return Some(
            "a budget plans a DARTS-family search and retraining; a multi-trial search's work is its `evaluations`: remove the budget, or search with `Darts`",
        );
    }
    if p.retrain.is_none() && p.search.is_none() {
        return Some(
            "a budget plans the search and retraining, and this pipeline has neither: remove the budget",
        );
    }
    None
}

impl Checker<'_> {
    pub(super) fn budget(&self, p: &Pipeline) -> Result<()> {
        let Some(b) = &p.budget else {
            return Ok(());
        };
        total_seconds(&b.total.value).map_err(|m| self.err(b.total.span, m))?;
        self.unit(&b.search, "budget search share", true, true)?;
        match nothing_to_plan(p) {
            Some(why) => Err(self.err(b.span, why)),
            None => Ok(()),
        }
    }
}
