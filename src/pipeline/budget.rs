//! The wall-clock budget (`budget: Budget(total: "1h")` in a pipeline, `--budget` on
//! `nas-pipe run`): measures this machine's throughput on the pipeline's own networks,
//! plans the search's images and epochs and retraining's epochs and images to fit, says
//! the plan before anything runs and keeps it in the run folder (`plan.json`,
//! [`crate::run::budget`]) so that a killed and resumed run keeps the plan it started with.
//!
//! Before the architecture is known, retraining's rate is the search's scaled by the
//! networks' multiply-adds ([`crate::pipeline::eta::retrain_speedup`]); when retraining
//! starts, its part is made final once: measured on the derived network and fitted to the
//! time actually left. The planning itself ([`plan_search`], [`plan_retrain`], [`split`])
//! is pure arithmetic on measured rates.

use std::path::Path;

use crate::error::{Error, Result};
use crate::pipeline::eta::{self, EVAL_SPEEDUP};
use crate::run::Resolved;
use crate::run::budget::{self as file, Found, PLAN_VERSION, Plan, RetrainPlan, SearchPlan};
use crate::spec::Spanned;
use crate::spec::pipeline::Search;

/// Timed steps of each network (after one untimed), whose images over their whole time
/// are its rate.
pub const CALIBRATION_STEPS: usize = 6;
/// The most search epochs a budget plans (DARTS's own schedule); time a larger budget
/// leaves goes to retraining.
pub const MAX_SEARCH_EPOCHS: u32 = 50;

/// What the search's plan works with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchShape {
    /// The spec's epochs: kept while the images can shrink to fit, raised (up to
    /// [`MAX_SEARCH_EPOCHS`]) once every training image is searched on.
    pub epochs: u32,
    /// The training part's images.
    pub available: u64,
    pub batch: u32,
    /// The share of the images that train the weights (the rest the architecture).
    pub portion: f64,
}

impl SearchShape {
    /// Images one epoch over `n` images processes: as many batches of each part as the
    /// smaller part has.
    pub fn epoch_images(&self, n: u64) -> u64 {
        let first = (n as f64 * self.portion).floor() as u64;
        let b = u64::from(self.batch.max(1));
        let steps = first.div_ceil(b).min((n - first.min(n)).div_ceil(b));
        2 * steps * b
    }

    /// The fewest images a search can run on: one batch in each part.
    pub fn min_images(&self) -> u64 {
        let small = self.portion.min(1.0 - self.portion).max(1e-9);
        ((f64::from(self.batch) / small).ceil() as u64).min(self.available)
    }
}

/// The search that fits `seconds` at `rate` images/s: the spec's epochs over as many
/// images as fit (all of them at most, then more epochs); fewer epochs when even the
/// fewest images do not fit them. `None` when not one epoch fits.
pub fn plan_search(seconds: f64, rate: f64, shape: &SearchShape) -> Option<SearchPlan> {
    let passes = (seconds * rate).max(0.0);
    let n_min = shape.min_images();
    let per_min = shape.epoch_images(n_min).max(1) as f64;
    let epochs = shape.epochs.min((passes / per_min).floor() as u32);
    if epochs == 0 || n_min == 0 {
        return None;
    }
    // Whole steps of both parts per epoch, then the images that make them.
    let b = f64::from(shape.batch.max(1));
    let steps = (passes / (f64::from(epochs) * 2.0 * b)).floor();
    let small = shape.portion.min(1.0 - shape.portion).max(1e-9);
    let mut images = ((steps * b / small).floor() as u64).clamp(n_min, shape.available);
    while images > n_min && u64::from(epochs) * shape.epoch_images(images) > passes as u64 {
        images -= 1;
    }
    let epochs = if images == shape.available {
        let more = (passes / shape.epoch_images(images).max(1) as f64).floor() as u32;
        more.clamp(epochs, MAX_SEARCH_EPOCHS.max(epochs))
    } else {
        epochs
    };
    Some(SearchPlan {
        epochs,
        images: images.min(u64::from(u32::MAX)) as u32,
        images_per_s: rate,
        seconds: f64::from(epochs) * shape.epoch_images(images) as f64 / rate,
    })
}

/// What retraining's plan works with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrainShape {
    /// The training part's images.
    pub available: u64,
    /// Validation images, evaluated every `eval_every` epochs and after the last.
    pub val: u64,
    /// Test images, evaluated once at the end.
    pub test: u64,
    pub batch: u32,
    pub eval_every: u32,
}

impl RetrainShape {
    /// `p`'s retraining over data parts of `counts` (training, validation, test images);
    /// `None` without a `retrain` section.
    pub fn of(p: &Resolved, counts: (u64, u64, u64)) -> Option<RetrainShape> {
        let r = p.spec.retrain.as_ref()?;
        Some(RetrainShape {
            available: counts.0,
            val: counts.1,
            test: counts.2,
            batch: r.batch_size.value,
            eval_every: r.eval_every.value,
        })
    }

    /// Training images' worth of the evaluations of `epochs` epochs (validation every
    /// `eval_every` epochs and after the last, the test set once), at [`EVAL_SPEEDUP`].
    fn eval_images(&self, epochs: u32) -> f64 {
        let evals = epochs.div_ceil(self.eval_every.max(1)) as f64;
        (evals * self.val as f64 + self.test as f64) / EVAL_SPEEDUP
    }

    /// Seconds of `epochs` epochs of `images` at `rate` training images/s, evaluations
    /// included.
    pub fn seconds(&self, epochs: u32, images: u64, rate: f64) -> f64 {
        (f64::from(epochs) * images as f64 + self.eval_images(epochs)) / rate
    }
}

/// The data parts' sizes (training, validation, test images).
fn counts(parts: &crate::data::Splits) -> (u64, u64, u64) {
    (
        parts.train.len() as u64,
        parts.val.len() as u64,
        parts.test.len() as u64,
    )
}

/// The retraining that fits `seconds` at `rate` images/s: the fewest epochs whose images
/// per epoch fit the training part, each as large as the time allows. `None` when not
/// one epoch of one batch fits.
pub fn plan_retrain(
    seconds: f64,
    rate: f64,
    shape: &RetrainShape,
    measured: bool,
) -> Option<RetrainPlan> {
    let budget = seconds * rate;
    let per_epoch = |epochs: u32| (budget - shape.eval_images(epochs)) / f64::from(epochs);
    let floor = u64::from(shape.batch).min(shape.available) as f64;
    if shape.available == 0 || per_epoch(1) < floor {
        return None;
    }
    let mut epochs = 1u32;
    while per_epoch(epochs) > shape.available as f64 && epochs < 100_000 {
        epochs += 1;
    }
    let images = (per_epoch(epochs).floor() as u64).clamp(floor as u64, shape.available);
    Some(RetrainPlan {
        epochs,
        images: images.min(u64::from(u32::MAX)) as u32,
        images_per_s: rate,
        seconds: shape.seconds(epochs, images, rate),
        measured,
    })
}

/// A budget that cannot hold the pipeline's smallest run; says the smallest that can.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TooSmall {
    pub min_total_s: f64,
}

/// The measured rates and the shapes a plan is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub search: Option<(f64, SearchShape)>,
    /// The rate, its shape, and whether the rate was measured on the retrained network.
    pub retrain: Option<(f64, RetrainShape, bool)>,
}

/// The search and retraining of a `total_s` budget: after calibration and the closing
/// stages, the search gets `share` of the rest (all of it without retraining) and
/// retraining what the planned search leaves.
pub fn split(
    total_s: f64,
    calibration_s: f64,
    after_s: f64,
    share: f64,
    rates: &Rates,
) -> std::result::Result<(Option<SearchPlan>, Option<RetrainPlan>), TooSmall> {
    let free = total_s - calibration_s - after_s;
    let search_s = if rates.retrain.is_some() {
        free * share
    } else {
        free
    };
    let search = rates
        .search
        .as_ref()
        .map(|(rate, shape)| plan_search(search_s, *rate, shape));
    let spent = search.flatten().map_or(0.0, |s| s.seconds);
    let retrain = rates
        .retrain
        .map(|(rate, shape, measured)| plan_retrain(free - spent, rate, &shape, measured));
    if search.is_some_and(|s| s.is_none()) || retrain.is_some_and(|r| r.is_none()) {
        return Err(TooSmall {
            min_total_s: smallest(calibration_s, after_s, share, rates),
        });
    }
    Ok((search.flatten(), retrain.flatten()))
}

/// The smallest budget that holds one search epoch over the fewest images and one
/// retraining epoch of one batch, at this share.
fn smallest(calibration_s: f64, after_s: f64, share: f64, rates: &Rates) -> f64 {
    let search = rates.search.map_or(0.0, |(rate, s)| {
        s.epoch_images(s.min_images()) as f64 / rate
    });
    let retrain = rates.retrain.map_or(0.0, |(rate, s, _)| {
        s.seconds(1, u64::from(s.batch).min(s.available), rate)
    });
    let free = match (rates.search.is_some(), rates.retrain.is_some()) {
        (true, true) => (search / share).max(search + retrain / (1.0 - share).max(1e-9)),
        _ => search + retrain,
    };
    calibration_s + after_s + free
}

/// The hash of what a plan is made for: the resolved spec as written (its budget
/// included), the device and nas-pipe's version.
pub fn basis(p: &Resolved, device: &candle_core::Device) -> String {
    crate::run::hash::hash_parts(&[
        p.spec.to_ron().as_bytes(),
        crate::device::name(device).as_bytes(),
        env!("CARGO_PKG_VERSION").as_bytes(),
    ])
}

/// `p` with the plan's epochs and images in its search and retrain sections (the stage
/// keys follow them).
pub fn apply(p: &Resolved, plan: &Plan) -> Resolved {
    let mut q = p.clone();
    if let (Some(s), Some(sp)) = (q.spec.search.as_mut(), plan.search)
        && let Search::Darts { epochs, images, .. } = &mut s.value
    {
        epochs.value = sp.epochs;
        *images = Some(Spanned::unspanned(sp.images));
    }
    if let (Some(r), Some(rp)) = (q.spec.retrain.as_mut(), plan.retrain) {
        r.value.epochs.value = rp.epochs;
        r.value.images = Some(Spanned::unspanned(rp.images));
    }
    q
}

/// The plan of budgeted pipeline `p` in `run_dir`: the one there when it was made for
/// this basis (or set aside for it in `stale/`), else a new one (measured now; an older
/// or damaged one set aside). `replan` makes a new one whatever is there.
pub fn prepare(
    p: &Resolved,
    run_dir: &Path,
    device: &candle_core::Device,
    replan: bool,
) -> Result<Plan> {
    let basis = basis(p, device);
    match file::read(run_dir)? {
        Found::Plan(plan) if plan.basis == basis && !replan => return Ok(*plan),
        Found::Plan(plan) => {
            let to = file::set_aside(run_dir, &file::stale_dir(run_dir, &plan.basis))?;
            crate::progress::note(&format!(
                "budget: the previous plan is kept in {}",
                to.display()
            ));
        }
        Found::Unusable(why) => {
            let plan = crate::run::RunDir::new(run_dir).plan();
            let to = crate::run::sealed::keep_damaged(run_dir, &plan)?;
            crate::progress::note(&format!(
                "budget: {} {why}; kept in {} and planned anew",
                crate::run::dir::PLAN,
                to.display()
            ));
        }
        Found::None => {}
    }
    if !replan
        && file::restore(run_dir, &basis)?
        && let Found::Plan(plan) = file::read(run_dir)?
    {
        return Ok(*plan);
    }
    let plan = make(p, &basis, device)?;
    plan.write(run_dir)?;
    Ok(plan)
}

/// `p` with a budget of `total` (a `--budget` argument) in place of its own (keeping its
/// search share); errors say what is wrong with the argument.
pub fn with_total(p: &Resolved, total: &str) -> Result<Resolved> {
    let arg = |m: String| Error::Input(format!("--budget: {m}"));
    crate::spec::check::budget::total_seconds(total).map_err(arg)?;
    if let Some(why) = crate::spec::check::budget::nothing_to_plan(&p.spec) {
        return Err(arg(why.to_string()));
    }
    let mut q = p.clone();
    let search = q
        .spec
        .budget
        .as_ref()
        .map_or(crate::spec::pipeline::DEFAULT_SEARCH_SHARE, |b| {
            b.search.value
        });
    q.spec.budget = Some(Spanned::unspanned(crate::spec::pipeline::Budget {
        total: Spanned::unspanned(total.trim().to_string()),
        search: Spanned::unspanned(search),
    }));
    Ok(q)
}

/// `p` as its run folder's plan makes it, when `p` has a budget and the folder a plan
/// made for it; `p` as written otherwise. Changes nothing (`nas-pipe status`).
pub fn as_planned(p: &Resolved, run_dir: &Path, device: &candle_core::Device) -> Result<Resolved> {
    if p.spec.budget.is_none() {
        return Ok(p.clone());
    }
    Ok(match file::read(run_dir)? {
        Found::Plan(plan) if plan.basis == basis(p, device) => apply(p, &plan),
        _ => p.clone(),
    })
}

/// A new plan: measures the networks' throughput and plans the budget.
fn make(p: &Resolved, basis: &str, device: &candle_core::Device) -> Result<Plan> {
    let Some(b) = &p.spec.budget else {
        return Err(Error::Input("planning a pipeline without a budget".into()));
    };
    let total_s = b.total_seconds().unwrap_or(0.0);
    crate::progress::note(&format!(
        "budget {}: measuring this machine's throughput on the pipeline's networks",
        b.total.value
    ));
    let t0 = std::time::Instant::now();
    let parts = p.load_data(p.spec.seed)?;
    let counts = counts(&parts);
    let search = match p.spec.search.as_deref() {
        Some(Search::Darts {
            epochs,
            batch_size,
            train_portion,
            ..
        }) => {
            let rate = crate::stages::search::darts::calibrate(p, device, CALIBRATION_STEPS)?;
            let shape = SearchShape {
                epochs: epochs.value,
                available: counts.0,
                batch: batch_size.value,
                portion: train_portion.value,
            };
            Some((rate, shape))
        }
        _ => None,
    };
    let retrain = match RetrainShape::of(p, counts) {
        Some(shape) => {
            let (rate, measured) = match (&p.genotype, search) {
                (Some((_, arch)), _) => (
                    crate::stages::retrain::calibrate(
                        p,
                        arch,
                        &parts.train,
                        device,
                        CALIBRATION_STEPS,
                    )?,
                    true,
                ),
                (None, Some((rate, _))) => (rate * eta::retrain_speedup(p), false),
                (None, None) => return Err(Error::Input("retraining with no architecture".into())),
            };
            Some((rate, shape, measured))
        }
        None => None,
    };
    let calibration_s = t0.elapsed().as_secs_f64();
    let after_s = eta::Work::of(p).after_s;
    let rates = Rates { search, retrain };
    let (search, retrain) = split(total_s, calibration_s, after_s, b.search.value, &rates)
        .map_err(|t| too_small(&b.total.value, t, calibration_s))?;
    Ok(Plan {
        version: PLAN_VERSION,
        basis: basis.to_string(),
        total_s,
        search_share: b.search.value,
        calibration_s,
        search,
        retrain,
        after_s,
        made: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

fn too_small(total: &str, t: TooSmall, calibration_s: f64) -> Error {
    let minutes = (t.min_total_s / 60.0).ceil().max(1.0) as u64;
    Error::Input(format!(
        "budget {total:?} is too small for this pipeline on this machine: measuring took {}, \
         and one search epoch over the fewest images and one retraining epoch of one batch \
         need about {} in all at the measured rates; give at least `--budget {minutes}min`, \
         or make the networks smaller",
        crate::progress::duration(calibration_s),
        crate::progress::duration(t.min_total_s)
    ))
}

/// Makes a provisional retraining plan final, once: measures the network `arch` and
/// fits retraining to the time left after `spent_s` seconds of the run so far and the
/// measuring. Writes the plan; returns whether it changed.
pub fn finalize_retrain(
    p: &Resolved,
    plan: &mut Plan,
    arch: &crate::space::genotype::Architecture,
    spent_s: f64,
    run_dir: &Path,
    device: &candle_core::Device,
) -> Result<bool> {
    let Some(old) = plan.retrain.filter(|r| !r.measured) else {
        return Ok(false);
    };
    let t0 = std::time::Instant::now();
    let parts = p.load_data(p.spec.seed)?;
    let rate = crate::stages::retrain::calibrate(p, arch, &parts.train, device, CALIBRATION_STEPS)?;
    let shape = RetrainShape::of(p, counts(&parts))
        .ok_or_else(|| Error::Input("no retrain section".into()))?;
    let left = plan.total_s - spent_s - t0.elapsed().as_secs_f64() - plan.after_s;
    let fitted = match plan_retrain(left, rate, &shape, true) {
        Some(r) => r,
        None => {
            let r = smallest_retrain(rate, &shape);
            crate::progress::note(&format!(
                "budget: {} left for retraining, less than its smallest run (one epoch of one batch, about {}); running that, past the budget",
                crate::progress::duration(left.max(0.0)),
                crate::progress::duration(r.seconds)
            ));
            r
        }
    };
    plan.retrain = Some(fitted);
    plan.write(run_dir)?;
    crate::progress::note(&format!(
        "budget: retraining measured on the derived network at {}: {} (planned before at {})",
        images_per_s(rate),
        describe_retrain(&fitted),
        images_per_s(old.images_per_s)
    ));
    Ok(true)
}

/// One epoch of one batch.
fn smallest_retrain(rate: f64, shape: &RetrainShape) -> RetrainPlan {
    let images = u64::from(shape.batch).min(shape.available).max(1);
    RetrainPlan {
        epochs: 1,
        images: images as u32,
        images_per_s: rate,
        seconds: shape.seconds(1, images, rate),
        measured: true,
    }
}

fn images_per_s(rate: f64) -> String {
    format!("{} images/s", crate::progress::rate_text(rate))
}

fn describe_retrain(r: &RetrainPlan) -> String {
    format!(
        "{} epoch{} of {} images, about {}",
        r.epochs,
        if r.epochs == 1 { "" } else { "s" },
        crate::space::show::thousands(u64::from(r.images)),
        crate::progress::duration(r.seconds)
    )
}

/// The plan in a few lines, for the terminal before anything runs.
pub fn describe(plan: &Plan) -> String {
    let mut lines = vec![format!(
        "budget {}: planned {} (measuring {}, closing stages {})",
        crate::progress::duration(plan.total_s),
        crate::progress::duration(plan.planned_s()),
        crate::progress::duration(plan.calibration_s),
        crate::progress::duration(plan.after_s)
    )];
    if let Some(s) = &plan.search {
        lines.push(format!(
            "  search     {} epoch{} over {} images at {}, about {}",
            s.epochs,
            if s.epochs == 1 { "" } else { "s" },
            crate::space::show::thousands(u64::from(s.images)),
            images_per_s(s.images_per_s),
            crate::progress::duration(s.seconds)
        ));
    }
    if let Some(r) = &plan.retrain {
        lines.push(format!(
            "  retrain    {} at {}{}",
            describe_retrain(r),
            images_per_s(r.images_per_s),
            if r.measured {
                ""
            } else {
                " (scaled from the search's rate; measured on the derived network when retraining starts)"
            }
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_shape() -> SearchShape {
        SearchShape {
            epochs: 3,
            available: 40_000,
            batch: 32,
            portion: 0.5,
        }
    }

    fn retrain_shape() -> RetrainShape {
        RetrainShape {
            available: 40_000,
            val: 5_000,
            test: 10_000,
            batch: 64,
            eval_every: 2,
        }
    }

    #[test]
    fn an_epoch_counts_both_parts_by_the_smaller() {
        let s = search_shape();
        assert_eq!(s.epoch_images(1600), 1600);
        // 700 weight images, 300 architecture images: 10 batches of each.
        let lopsided = SearchShape { portion: 0.7, ..s };
        assert_eq!(lopsided.epoch_images(1000), 2 * 10 * 32);
        assert_eq!(lopsided.min_images(), 107);
    }

    /// Within the training part the spec's epochs are kept and the images fill the time;
    /// with every image searched, epochs grow (up to the cap).
    #[test]
    fn the_search_keeps_its_epochs_until_every_image_is_used() {
        let s = search_shape();
        let p = plan_search(600.0, 10.0, &s).unwrap();
        assert_eq!((p.epochs, p.images), (3, 1984));
        assert!(
            p.seconds <= 600.0 && p.seconds > 600.0 - 3.0 * 64.0 / 10.0,
            "{p:?}"
        );
        let big = plan_search(100_000.0, 10.0, &s).unwrap();
        assert_eq!((big.epochs, big.images), (25, 40_000));
        let huge = plan_search(1e9, 10.0, &s).unwrap();
        assert_eq!(huge.epochs, MAX_SEARCH_EPOCHS);
        // Less than three epochs of the fewest images: fewer epochs.
        let tight = plan_search(10.0, 10.0, &s).unwrap();
        assert_eq!((tight.epochs, tight.images), (1, 64));
        assert_eq!(plan_search(5.0, 10.0, &s), None);
    }

    /// The fewest epochs whose images fit the training part, the time filled to within
    /// an image per epoch.
    #[test]
    fn retraining_takes_the_fewest_epochs_that_fit_the_images() {
        let s = retrain_shape();
        let p = plan_retrain(3000.0, 100.0, &s, true).unwrap();
        assert_eq!(p.epochs, 8);
        assert!(p.images <= 40_000 && p.images > 35_000, "{p:?}");
        assert!(
            p.seconds <= 3000.0 && p.seconds > 3000.0 - 8.0 / 100.0 - 1e-9,
            "{p:?}"
        );
        let one = plan_retrain(200.0, 100.0, &s, true).unwrap();
        assert_eq!(one.epochs, 1);
        assert!(one.seconds <= 200.0);
        // The test evaluation alone does not fit.
        assert_eq!(plan_retrain(30.0, 100.0, &s, true), None);
    }

    #[test]
    fn the_split_gives_the_search_its_share_and_retraining_the_rest() {
        let rates = Rates {
            search: Some((10.0, search_shape())),
            retrain: Some((100.0, retrain_shape(), false)),
        };
        let (s, r) = split(3600.0, 20.0, 20.0, 0.2, &rates).unwrap();
        let (s, r) = (s.unwrap(), r.unwrap());
        assert!((s.seconds - 712.0).abs() < 4.0, "{s:?}");
        let planned = 20.0 + s.seconds + r.seconds + 20.0;
        assert!(planned <= 3600.0 + 1e-6 && planned > 3590.0, "{planned}");
        assert!(!r.measured);
        let err = split(60.0, 20.0, 20.0, 0.2, &rates).unwrap_err();
        assert!(err.min_total_s > 60.0);
        // The smallest budget said is enough.
        let ok = split(err.min_total_s + 1.0, 20.0, 20.0, 0.2, &rates);
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn without_retraining_the_search_gets_it_all() {
        let rates = Rates {
            search: Some((10.0, search_shape())),
            retrain: None,
        };
        let (s, r) = split(1000.0, 10.0, 10.0, 0.2, &rates).unwrap();
        assert!(r.is_none());
        assert!(s.unwrap().seconds > 970.0);
    }
}
