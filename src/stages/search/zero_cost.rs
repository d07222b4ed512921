//! The zero-cost prior of a multi-trial search (`zero_cost: ZeroCost(...)`): training-free
//! proxies of a candidate network at initialisation, computed with Candle, and the warm
//! start they give the strategy.
//!
//! - **synflow** (Tanaka et al., "Pruning neural networks without any data by iteratively
//!   conserving synaptic flow", NeurIPS 2020): Σ |θ ⊙ ∂R/∂θ| over every parameter, with
//!   every parameter replaced by its absolute value first and R the sum of the logits of
//!   one all-ones image; in f64, BN on its running statistics, which at initialisation
//!   (mean 0, variance 1, γ = 1, β = 0) is the identity up to ε: what the zero-cost-proxies
//!   reference computes on its BN-free copy of the network. It reads no data.
//! - **NASWOT** (Mellor et al., "Neural Architecture Search without Training", ICML 2021):
//!   log |det K| of a mini-batch's Hamming kernel K = C Cᵀ + (1 − C)(1 − C)ᵀ, C [N, D] the
//!   binary codes (x > 0) of every ReLU output the network's walk records
//!   ([`Mode::Probe`]); BN on batch statistics. A singular K (two images with one code)
//!   scores `f64::MIN`, the lowest.
//! - **grad_norm** (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR
//!   2021): the L2 norm of the cross-entropy loss's gradient over every parameter, for one
//!   mini-batch; BN on batch statistics.
//!
//! NASWOT and grad_norm are means over the first `batches` mini-batches of `batch_size`
//! images of the evaluator's training images (the pipeline's seeded order, no
//! augmentation). The network is the evaluator's (the search space's width and depth) with
//! the parameters the pipeline's seed draws: the initialisation a training evaluator
//! starts from. Everything runs in a fixed order from fixed seeds, so on the CPU a score
//! is a function of the spec and the candidate.
//!
//! The warm start ([`pool`]): `pool` distinct random architectures drawn from the
//! pipeline's seed (a stream no strategy uses) are scored by the prior's proxy, and the
//! best `keep` (the earlier drawn among equals) become the strategy's first proposals
//! ([`crate::stages::search::strategy::build`]).

use std::collections::HashSet;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::nets::model::{Mode, Model};
use crate::nets::train::cross_entropy;
use crate::run::Resolved;
use crate::run::trials::{Pooled, Prior, Proxies};
use crate::space::Space;
use crate::space::discrete::Net;
use crate::spec::pipeline::{Evaluator, Proxy, Search, ZeroCost};
use crate::stages::search::evaluator::{Candidate, Split, ctx};
use crate::stages::search::strategy::{self, Arch, Decisions};

/// The random stream the pool is drawn from (strategies use 1 to 5).
const POOL_STREAM: u64 = 6;
/// Draws tried per pool member before a smaller pool of distinct architectures is accepted
/// (a space with fewer architectures than the pool).
const DRAWS_PER_MEMBER: usize = 20;

/// Scores candidates' proxies on the evaluator's network and training images.
pub struct Scorer {
    space: Space,
    device: Device,
    seed: u64,
    /// The mini-batches (normalised images [S, C, H, W], labels [S]) NASWOT and grad_norm
    /// read, in order.
    batches: Vec<(Tensor, Tensor)>,
    settings: ZeroCost,
}

impl Scorer {
    /// The scorer of pipeline `p`'s zero-cost prior (`None` without one); loads the
    /// evaluator's training images.
    pub fn new(p: &Resolved, device: &Device) -> Result<Option<Scorer>> {
        let Some(Search::Trials {
            evaluator,
            zero_cost: Some(z),
            ..
        }) = p.spec.search.as_deref()
        else {
            return Ok(None);
        };
        let (images, portion) = match &evaluator.value {
            Evaluator::Train {
                images,
                train_portion,
                ..
            }
            | Evaluator::WeightSharing {
                images,
                train_portion,
                ..
            } => (images.as_ref(), train_portion.value),
            // `check` refuses a prior with a table: there is no network to score.
            Evaluator::Tabular { .. } => {
                return Err(Error::Input(
                    "a zero-cost prior needs an evaluator that trains (`Train` or \
                     `WeightSharing`)"
                        .into(),
                ));
            }
        };
        let size = z.batch_size.value as usize;
        let split = Split::load(p, images, portion, size, Default::default())?;
        let want = z.batches.value as usize;
        if split.train.len() < want * size {
            return Err(Error::Input(format!(
                "the zero-cost prior reads {want} mini-batches of {size} images and the \
                 evaluator trains on {} images; lower `batches` or `batch_size` in \
                 `zero_cost`",
                split.train.len()
            )));
        }
        let epoch = split.train.epoch(0, device);
        let batches = (0..want)
            .map(|b| epoch.batch(b).map(|b| (b.images, b.labels)))
            .collect::<candle_core::Result<_>>()
            .map_err(ctx("making a batch"))?;
        Ok(Some(Scorer {
            space: p.search_space.clone(),
            device: device.clone(),
            seed: p.spec.seed,
            batches,
            settings: z.value.clone(),
        }))
    }

    /// A scorer over given batches (tests).
    pub fn with_batches(
        space: Space,
        device: &Device,
        seed: u64,
        batches: Vec<(Tensor, Tensor)>,
        settings: ZeroCost,
    ) -> Scorer {
        Scorer {
            space,
            device: device.clone(),
            seed,
            batches,
            settings,
        }
    }

    /// The three proxies of candidate `c`.
    pub fn proxies(&self, c: &Candidate) -> Result<Proxies> {
        Ok(Proxies {
            naswot: self.one(c, Proxy::Naswot)?,
            synflow: self.one(c, Proxy::Synflow)?,
            grad_norm: self.one(c, Proxy::GradNorm)?,
        })
    }

    /// Proxy `proxy` of candidate `c`, clamped to finite values (NaN the lowest).
    pub fn one(&self, c: &Candidate, proxy: Proxy) -> Result<f64> {
        let net = self.space.build(&c.resolved);
        let v = match proxy {
            Proxy::Synflow => synflow(&net, &self.device, self.seed),
            Proxy::Naswot => self.mean(&net, |m, x, _| naswot(m, x)),
            Proxy::GradNorm => self.mean(&net, grad_norm),
        }
        .map_err(|e| {
            Error::Input(format!(
                "scoring candidate {} at initialisation: {}",
                c.key,
                crate::error::candle_message(&e)
            ))
        })?;
        Ok(finite(v))
    }

    /// The mean of `f` over the mini-batches, on one network initialised from the seed.
    fn mean(
        &self,
        net: &Net,
        f: impl Fn(&Model, &Tensor, &Tensor) -> candle_core::Result<f64>,
    ) -> candle_core::Result<f64> {
        let model = Model::new(net, &self.device, self.seed, false)?;
        let mut sum = 0.0;
        for (x, y) in &self.batches {
            sum += f(&model, x, y)?;
        }
        Ok(sum / self.batches.len().max(1) as f64)
    }
}

/// `v` clamped into the finite numbers (NaN to the lowest), so records stay JSON.
fn finite(v: f64) -> f64 {
    if v.is_nan() {
        f64::MIN
    } else {
        v.clamp(f64::MIN, f64::MAX)
    }
}

/// synflow of `net` initialised from `seed` (see the module header).
pub fn synflow(net: &Net, device: &Device, seed: u64) -> candle_core::Result<f64> {
    let model = Model::with_dtype(net, device, DType::F64, seed, false)?;
    synflow_of(&model)
}

/// synflow of `model` (its parameters are replaced by their absolute values).
pub fn synflow_of(model: &Model) -> candle_core::Result<f64> {
    let params = model.store.params();
    for (_, v) in &params {
        v.set(&v.as_tensor().abs()?)?;
    }
    let i = model.net.input;
    let dtype = params
        .first()
        .map_or(DType::F64, |(_, v)| v.as_tensor().dtype());
    let x = Tensor::ones(
        (1, i.channels as usize, i.size as usize, i.size as usize),
        dtype,
        model.store.device(),
    )?;
    // BN on running statistics has no backward on the CPU kernels: the compositions do.
    let out = crate::kernels::with_compositions(|| {
        model.forward(
            &x,
            Mode::Probe {
                batch_stats: false,
                relus: None,
            },
        )
    })?;
    let grads = out.logits.sum_all()?.backward()?;
    let mut total = 0.0;
    for (_, v) in &params {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += scalar(&(v.as_tensor() * g)?.abs()?.sum_all()?)?;
        }
    }
    Ok(total)
}

/// NASWOT of `model` on the batch `images` [N, C, H, W] (see the module header).
pub fn naswot(model: &Model, images: &Tensor) -> candle_core::Result<f64> {
    let mut relus = Vec::new();
    model.forward(
        images,
        Mode::Probe {
            batch_stats: true,
            relus: Some(&mut relus),
        },
    )?;
    let codes = relus
        .iter()
        .map(|r| r.flatten_from(1)?.gt(0.0)?.to_dtype(DType::F32))
        .collect::<candle_core::Result<Vec<_>>>()?;
    if codes.is_empty() {
        // No ReLU: every image has the one empty code.
        return Ok(f64::MIN);
    }
    let c = Tensor::cat(&codes, 1)?;
    Ok(log_abs_det(&hamming_kernel(&c)?))
}

/// K = C Cᵀ + (1 − C)(1 − C)ᵀ of binary codes `c` [N, D]: K[i][j] is the number of units
/// on which images i and j agree (D minus their Hamming distance). Exact in f32 below 2²⁴
/// units.
pub fn hamming_kernel(c: &Tensor) -> candle_core::Result<Vec<Vec<f64>>> {
    let off = c.affine(-1.0, 1.0)?;
    let k = (c.matmul(&c.t()?)? + off.matmul(&off.t()?)?)?;
    k.to_dtype(DType::F64)?.to_vec2::<f64>()
}

/// log |det k| of a square matrix (nalgebra's LU decomposition: the sum of the logarithms
/// of |U|'s diagonal); `f64::MIN` when it is singular.
pub fn log_abs_det(k: &[Vec<f64>]) -> f64 {
    let n = k.len();
    let m = nalgebra::DMatrix::from_fn(n, n, |i, j| k[i][j]);
    let lu = m.lu();
    if !lu.is_invertible() {
        return f64::MIN;
    }
    lu.u().diagonal().iter().map(|d| d.abs().ln()).sum()
}

/// grad_norm of `model` on one batch (see the module header).
pub fn grad_norm(model: &Model, images: &Tensor, labels: &Tensor) -> candle_core::Result<f64> {
    let out = model.forward(
        images,
        Mode::Probe {
            batch_stats: true,
            relus: None,
        },
    )?;
    let grads = cross_entropy(&out.logits, labels, 0.0)?.backward()?;
    let mut sq = 0.0;
    for (_, v) in model.store.params() {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += scalar(&g.sqr()?.sum_all()?)?;
        }
    }
    Ok(sq.sqrt())
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Draws the pool of scorer `s`'s prior from `seed`, scores it and keeps the best: the
/// record of the warm start (`search/trials.json`'s `prior`).
pub fn pool(s: &Scorer, space: &Space, decisions: &Decisions, seed: u64) -> Result<Prior> {
    let t0 = Instant::now();
    let (size, keep) = (
        s.settings.pool.value as usize,
        s.settings.keep.value as usize,
    );
    let proxy = s.settings.prior.value;
    let mut rng = strategy::rng(seed, POOL_STREAM);
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    for _ in 0..size * DRAWS_PER_MEMBER {
        if members.len() == size {
            break;
        }
        let c = Candidate::new(space, decisions, decisions.random(&mut rng))?;
        if seen.insert(c.key.clone()) {
            let score = s.one(&c, proxy)?;
            members.push(Pooled {
                arch: c.arch,
                key: c.key,
                score,
            });
        }
    }
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        members[b]
            .score
            .total_cmp(&members[a].score)
            .then(a.cmp(&b))
    });
    order.truncate(keep);
    Ok(Prior {
        proxy: proxy_name(proxy).into(),
        pool: members,
        kept: order,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The architectures a recorded prior hands the strategy, best first.
pub fn kept(prior: &Prior) -> Vec<Arch> {
    prior
        .kept
        .iter()
        .filter_map(|&i| prior.pool.get(i).map(|m| m.arch.clone()))
        .collect()
}

/// A proxy's name in records.
pub fn proxy_name(p: Proxy) -> &'static str {
    match p {
        Proxy::Naswot => "naswot",
        Proxy::Synflow => "synflow",
        Proxy::GradNorm => "grad_norm",
    }
}
