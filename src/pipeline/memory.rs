//! The memory a pipeline's steps need, estimated from the networks' counts before anything
//! is allocated: `check` prints it, and `check` and `run` refuse a pipeline whose steps
//! cannot fit the machine (unless told to go ahead).
//!
//! A training step keeps the activations of its forward pass for the backward pass, which
//! grow with the batch ([`Cost::acts`] per image), and holds the parameters with their
//! gradients and optimizer state. [`BYTES_PER_ACT`] is calibrated against the peaks
//! `scripts/bench.sh` measures (docs/speed.md: the 8-layer search step and the DARTS_V2
//! retraining step) and errs high.

use crate::error::{Error, Result};
use crate::ops::Cost;
use crate::run::Resolved;
use crate::space::Space;
use crate::spec::pipeline::{Evaluator, Order, Search};
use crate::spec::{Sources, Span, Spanned};

/// Bytes per activation element of a training step: the f32 value, the gradient the
/// backward pass makes of it, and allocator slack.
pub const BYTES_PER_ACT: u64 = 6;

/// f32 copies of each parameter a training step holds: weights, gradients, momentum or
/// Adam's two moments.
const PARAM_COPIES: u64 = 4;

/// The estimated peak of one step: a range when the network is not known yet (the smallest
/// and the largest architecture of the space).
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// What the step is, e.g. "search step".
    pub what: String,
    pub batch: u64,
    /// The least it needs.
    pub bytes: u64,
    /// The most it may need.
    pub most: u64,
    /// The batch size in the pipeline file.
    pub span: Span,
}

/// Bytes of a training step of a network costing `cost`, at `batch` images.
pub fn training_step(cost: Cost, batch: u64) -> u64 {
    cost.acts
        .saturating_mul(batch)
        .saturating_mul(BYTES_PER_ACT)
        .saturating_add(cost.params.saturating_mul(4 * PARAM_COPIES))
}

/// Bytes of an inference batch: the input, the activations alive at once (at most a third
/// of a training step's: values are let go after their last use), the weights.
pub fn inference(cost: Cost, input_elems: u64, batch: u64) -> u64 {
    input_elems
        .saturating_add(cost.acts / 3)
        .saturating_mul(batch)
        .saturating_mul(4)
        .saturating_add(cost.params.saturating_mul(4))
}

/// The smallest and largest discrete networks of `space` (each count on its own).
fn discrete(space: &Space) -> [Cost; 2] {
    let r = space.cost_range();
    [r.min, r.max]
}

/// The training and inference steps of `p` with their estimates.
pub fn estimates(p: &Resolved) -> Vec<Estimate> {
    let mut out = Vec::new();
    let mut push = |what: &str, [least, most]: [Cost; 2], batch: &Spanned<u32>| {
        let b = batch.value as u64;
        out.push(Estimate {
            what: what.into(),
            batch: b,
            bytes: training_step(least, b),
            most: training_step(most, b),
            span: batch.span,
        });
    };
    match p.spec.search.as_deref() {
        Some(Search::Darts {
            batch_size, order, ..
        }) => {
            // The unrolled (second-order) step runs its extra passes one after another, each
            // graph let go before the next: the peak is one pass's, plus copies of the
            // weights.
            let mut cost = p.search_space.supernet_cost();
            if *order == Order::Second {
                cost.params = cost.params.saturating_mul(2);
            }
            push("search step", [cost, cost], batch_size);
        }
        Some(Search::Trials { evaluator, .. }) => match &evaluator.value {
            Evaluator::Train { recipe, .. } => push(
                "trial training step",
                discrete(&p.search_space),
                &recipe.batch_size,
            ),
            Evaluator::WeightSharing { batch_size, .. } => {
                push("weight-sharing step", discrete(&p.search_space), batch_size)
            }
            Evaluator::Tabular { .. } => {}
        },
        None => {}
    }
    let retrained = match &p.genotype {
        Some((_, arch)) => [p.retrain_space.discrete_cost(arch); 2],
        None => discrete(&p.retrain_space),
    };
    if let Some(r) = &p.spec.retrain {
        push("retraining step", retrained, &r.batch_size);
    }
    if let Some(pr) = &p.spec.profile {
        let input = p.input;
        let elems = (input.channels as u64).saturating_mul((input.size as u64).pow(2));
        for &b in pr.batch_sizes.iter() {
            out.push(Estimate {
                what: "profile batch".into(),
                batch: b as u64,
                bytes: inference(retrained[0], elems, b as u64),
                most: inference(retrained[1], elems, b as u64),
                span: pr.batch_sizes.span,
            });
        }
    }
    out
}

pub use crate::runtime::measure::human_bytes as human;

/// Lines for `check`: each step's estimate and the machine's memory.
pub fn summary(estimates: &[Estimate], machine: Option<u64>) -> String {
    let mut o = String::from("estimated peak memory\n");
    for e in estimates {
        let range = if human(e.most) != human(e.bytes) {
            format!("{} to {} (by architecture)", human(e.bytes), human(e.most))
        } else {
            human(e.bytes)
        };
        o += &format!("  {} (batch {}): {range}\n", e.what, e.batch);
    }
    match machine {
        Some(m) => o += &format!("  this machine: {}\n", human(m)),
        None => o += "  this machine: unknown\n",
    }
    o
}

/// The first step whose least estimate exceeds `machine` bytes, as an error at its batch
/// size. (A step that only some architectures cannot afford goes ahead.)
pub fn refuse_oversized(
    sources: &Sources,
    estimates: &[Estimate],
    machine: Option<u64>,
) -> Result<()> {
    let Some(limit) = machine else {
        return Ok(());
    };
    match estimates.iter().find(|e| e.bytes > limit) {
        None => Ok(()),
        Some(e) => Err(Error::from(
            sources
                .diag(
                    e.span,
                    format!(
                        "the {} at batch {} needs about {}, more than this machine's {}",
                        e.what,
                        e.batch,
                        human(e.bytes),
                        human(limit)
                    ),
                )
                .with_help(
                    "lower the batch size, the network's channels or layers, or the input size; \
                     `--ignore-memory` goes ahead anyway",
                ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::space::genotype::Genotype;
    use crate::space::{self, Overrides};
    use crate::spec::space::Input;

    fn darts(layers: u32) -> Space {
        let mut sources = Sources::default();
        let ov = Overrides {
            input: Some(Input {
                channels: 3,
                size: 32,
                classes: 10,
            }),
            channels: Some((16, Span::default())),
            layers: Some((layers, Span::default())),
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        space::load(&mut sources, &root.join("schemas/darts.ron"), None, &ov).unwrap()
    }

    const MIB: f64 = (1u64 << 20) as f64;

    /// The estimates cover the activation peaks docs/speed.md measured (growth of the
    /// resident set once the network and its optimizer exist) without overshooting by more
    /// than 2x: search step, 8-layer search network, batch 16: 2157 MiB; DARTS_V2 C=16,
    /// 8 layers, batch 64: 1421 MiB.
    #[test]
    fn estimates_cover_measured_peaks() {
        let search = darts(8).supernet_cost();
        let est = (search.acts * 16 * BYTES_PER_ACT) as f64 / MIB;
        eprintln!("search step: estimate / measured {:.2}", est / 2157.0);
        assert!(
            (2157.0..2.0 * 2157.0).contains(&est),
            "search: {est:.0} MiB"
        );
        let s = darts(8);
        let (src, g) = Genotype::from_arg("DARTS_V2", &s).unwrap();
        let v2 = s.discrete_cost(&g.resolve(&src, &s).unwrap());
        let est = (v2.acts * 64 * BYTES_PER_ACT) as f64 / MIB;
        eprintln!("retraining step: estimate / measured {:.2}", est / 1421.0);
        assert!(
            (1421.0..2.0 * 1421.0).contains(&est),
            "retrain: {est:.0} MiB"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(340 << 20), "340 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }
}
