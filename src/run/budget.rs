//! A budgeted run's plan, `plan.json` in the run folder: what the budget planner
//! (`crate::pipeline::budget`) decided from the throughput it measured, kept so that a
//! resumed run keeps the plan it started with, and read by the report beside the stages'
//! actual times.
//!
//! The file is sealed ([`crate::run::sealed`]): a damaged or edited plan is never used.
//! A plan made for another spec, budget, device or nas-pipe version is set aside in
//! `stale/plan-<basis>/` and moved back when that basis comes back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run::RunDir;
use crate::run::sealed::{self, Unsealed};

/// The format version of `plan.json`.
pub const PLAN_VERSION: u32 = 1;

/// A budgeted run's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    /// What the plan was made for: a hash of the resolved spec as written (budget
    /// included), the device and nas-pipe's version.
    pub basis: String,
    /// The budget, seconds.
    pub total_s: f64,
    /// The search's share of the time after calibration and the closing stages.
    pub search_share: f64,
    /// Seconds spent measuring throughput before the plan was made.
    pub calibration_s: f64,
    pub search: Option<SearchPlan>,
    pub retrain: Option<RetrainPlan>,
    /// Seconds allowed for export, validation, profiling and the report.
    pub after_s: f64,
    /// When the plan was made (RFC 3339).
    pub made: String,
}

/// The search's planned work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchPlan {
    pub epochs: u32,
    /// Images searched on (split between the weights and the architecture).
    pub images: u32,
    /// Images/s of the search step, measured.
    pub images_per_s: f64,
    pub seconds: f64,
}

/// Retraining's planned work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrainPlan {
    pub epochs: u32,
    /// Training images per epoch.
    pub images: u32,
    /// Images/s of the training step.
    pub images_per_s: f64,
    pub seconds: f64,
    /// Whether the rate was measured on the network retrained (`true`), or is a
    /// provisional one scaled from the search's before the architecture is known; a
    /// provisional plan is made final, once, when retraining starts.
    pub measured: bool,
}

impl Plan {
    /// The planned seconds of the whole run.
    pub fn planned_s(&self) -> f64 {
        self.calibration_s
            + self.search.map_or(0.0, |s| s.seconds)
            + self.retrain.map_or(0.0, |r| r.seconds)
            + self.after_s
    }

    /// Writes the plan to `run_dir` (sealed, atomically).
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        crate::fsutil::write_atomic(&RunDir::new(run_dir).plan(), &sealed::seal(self)?)
    }
}

/// What `plan.json` in `run_dir` holds.
#[derive(Debug)]
pub enum Found {
    None,
    Plan(Box<Plan>),
    /// Damaged, edited or of another format version: why.
    Unusable(String),
}

/// Reads `run_dir`'s plan.
pub fn read(run_dir: &Path) -> Result<Found> {
    let path = RunDir::new(run_dir).plan();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    Ok(match sealed::unseal::<Plan>(&bytes, PLAN_VERSION) {
        Ok(p) => Found::Plan(Box::new(p)),
        Err(Unsealed::Damaged(why)) => Found::Unusable(why),
        Err(Unsealed::Version(v)) => Found::Unusable(format!("is of format version {v}")),
    })
}

/// The folder a plan of `basis` is set aside in.
pub fn stale_dir(run_dir: &Path, basis: &str) -> PathBuf {
    RunDir::new(run_dir)
        .stale()
        .join(format!("plan-{}", crate::run::outputs::short(basis)))
}

/// Moves `plan.json` into `dir` (replacing what `dir` held); returns where it went.
pub fn set_aside(run_dir: &Path, dir: &Path) -> Result<PathBuf> {
    let io = |p: &Path, source| Error::Io {
        path: p.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let to = dir.join(crate::run::dir::PLAN);
    let from = RunDir::new(run_dir).plan();
    std::fs::rename(&from, &to).map_err(|e| io(&from, e))?;
    Ok(to)
}

/// Moves the plan set aside for `basis` back into `run_dir`; whether there was one.
pub fn restore(run_dir: &Path, basis: &str) -> Result<bool> {
    let from = stale_dir(run_dir, basis).join(crate::run::dir::PLAN);
    if !from.is_file() {
        return Ok(false);
    }
    let to = RunDir::new(run_dir).plan();
    std::fs::rename(&from, &to).map_err(|source| Error::Io { path: from, source })?;
    let _ = std::fs::remove_dir(stale_dir(run_dir, basis));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> crate::fsutil::TempDir {
        crate::fsutil::TempDir::new(&format!("plan-{name}"))
    }

    fn plan() -> Plan {
        Plan {
            version: PLAN_VERSION,
            basis: "ab".repeat(32),
            total_s: 3600.0,
            search_share: 0.2,
            calibration_s: 12.5,
            search: Some(SearchPlan {
                epochs: 3,
                images: 4000,
                images_per_s: 80.0,
                seconds: 700.0,
            }),
            retrain: Some(RetrainPlan {
                epochs: 6,
                images: 41_000,
                images_per_s: 100.0,
                seconds: 2800.0,
                measured: false,
            }),
            after_s: 20.0,
            made: "2026-12-06T17:00:00Z".into(),
        }
    }

    #[test]
    fn a_plan_reads_back_and_a_damaged_one_is_unusable() {
        let dir = tempdir("read");
        assert!(matches!(read(&dir.0).unwrap(), Found::None));
        plan().write(&dir.0).unwrap();
        match read(&dir.0).unwrap() {
            Found::Plan(p) => assert_eq!(*p, plan()),
            other => panic!("{other:?}"),
        }
        let path = RunDir::new(&dir.0).plan();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"epochs\": 6", "\"epochs\": 60")).unwrap();
        assert!(matches!(read(&dir.0).unwrap(), Found::Unusable(_)));
    }

    #[test]
    fn a_plan_set_aside_comes_back_for_its_basis() {
        let dir = tempdir("aside");
        let p = plan();
        p.write(&dir.0).unwrap();
        let kept = set_aside(&dir.0, &stale_dir(&dir.0, &p.basis)).unwrap();
        assert!(kept.is_file() && !RunDir::new(&dir.0).plan().exists());
        assert!(!restore(&dir.0, &"cd".repeat(32)).unwrap());
        assert!(restore(&dir.0, &p.basis).unwrap());
        assert!(matches!(read(&dir.0).unwrap(), Found::Plan(_)));
        assert!(!stale_dir(&dir.0, &p.basis).exists());
    }

    #[test]
    fn the_planned_total_adds_every_part() {
        assert_eq!(plan().planned_s(), 12.5 + 700.0 + 2800.0 + 20.0);
    }
}
