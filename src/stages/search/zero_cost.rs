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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Overrides;
    use crate::spec::pipeline::Proxy;
    use crate::spec::{Source, Sources, Spanned};

    /// BN's ε (`nn::BatchNorm`).
    const EPS: f64 = 1e-5;

    /// A network small enough to compute by hand: conv 1×1 (2 → 2 channels) and BN, then
    /// BN and ReLU (the one ReLU NASWOT taps), a skip layer, global pool and linear to 3
    /// classes, on 2×2 images of 2 channels.
    fn tiny() -> (Space, Candidate) {
        let text = r#"SearchSpace(
            name: "tiny",
            input: (channels: 2, size: 2, classes: 3),
            ops: [("skip", Identity)],
            network: Sequence(blocks: [
                ConvBn(kernel: 1, channels: 2),
                BnRelu,
                Choice(channels: 2, candidates: ["skip"]),
                GlobalPoolLinear,
            ]),
            derive: ArgmaxPerEdge,
        )"#;
        let mut sources = Sources::default();
        let id = sources.add(Source::from_text(
            std::path::Path::new("tiny.ron"),
            text.into(),
        ));
        let raw = sources.parse(id).unwrap();
        let space = crate::space::compile(&sources, &raw, &Overrides::default()).unwrap();
        let d = Decisions::of(&space);
        let c = Candidate::new(&space, &d, vec![0; d.len()]).unwrap();
        (space, c)
    }

    /// The tiny network in f64, parameters from `seed`.
    fn model(seed: u64) -> Model {
        let (space, c) = tiny();
        Model::with_dtype(
            &space.build(&c.resolved),
            &Device::Cpu,
            DType::F64,
            seed,
            false,
        )
        .unwrap()
    }

    /// Parameter `name` of `m` as a flat vector.
    fn param(m: &Model, name: &str) -> Vec<f64> {
        let (_, v) = m
            .store
            .params()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap();
        v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn set(m: &Model, name: &str, values: &[f64]) {
        let (_, v) = m
            .store
            .params()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap();
        let shape = v.as_tensor().shape().clone();
        v.set(&Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap())
            .unwrap();
    }

    /// Uniform values in [-1, 1) from a fixed xorshift stream.
    fn uniform(n: usize, state: &mut u64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// The tiny model with non-trivial BN affine parameters (signs included).
    fn model_with_bn(seed: u64) -> Model {
        let m = model(seed);
        set(&m, "layers.0.bn.weight", &[0.5, -2.0]);
        set(&m, "layers.0.bn.bias", &[0.3, -0.1]);
        set(&m, "layers.1.bn.weight", &[1.5, 0.7]);
        set(&m, "layers.1.bn.bias", &[-0.2, 0.4]);
        m
    }

    fn images(n: usize, state: &mut u64) -> Tensor {
        Tensor::from_vec(uniform(n * 8, state), (n, 2, 2, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn hamming_kernel_counts_agreeing_units() {
        let c = Tensor::from_vec(
            vec![1f32, 0., 1., 1., 0., 0., 1., 1., 1., 1., 0., 0.],
            (3, 4),
            &Device::Cpu,
        )
        .unwrap();
        // Rows 0 and 1 differ in unit 0, rows 0 and 2 in units 1-3, rows 1 and 2 in all.
        assert_eq!(
            hamming_kernel(&c).unwrap(),
            vec![
                vec![4.0, 3.0, 1.0],
                vec![3.0, 4.0, 0.0],
                vec![1.0, 0.0, 4.0]
            ]
        );
    }

    #[test]
    fn log_abs_det_of_written_out_matrices() {
        // det = 4·(16 − 0) − 3·(12 − 0) + 1·(0 − 4) = 24.
        let k = vec![
            vec![4.0, 3.0, 1.0],
            vec![3.0, 4.0, 0.0],
            vec![1.0, 0.0, 4.0],
        ];
        assert!((log_abs_det(&k) - 24f64.ln()).abs() < 1e-12);
        // det = −6: the absolute value.
        let k = vec![vec![0.0, 2.0], vec![3.0, 0.0]];
        assert!((log_abs_det(&k) - 6f64.ln()).abs() < 1e-12);
        // Two equal codes make K singular: the lowest score.
        let k = vec![
            vec![4.0, 4.0, 1.0],
            vec![4.0, 4.0, 1.0],
            vec![1.0, 1.0, 4.0],
        ];
        assert_eq!(log_abs_det(&k), f64::MIN);
    }

    /// The determinant of a 3×3 matrix by the rule of Sarrus.
    fn det3(k: &[Vec<f64>]) -> f64 {
        k[0][0] * k[1][1] * k[2][2] + k[0][1] * k[1][2] * k[2][0] + k[0][2] * k[1][0] * k[2][1]
            - k[0][2] * k[1][1] * k[2][0]
            - k[0][0] * k[1][2] * k[2][1]
            - k[0][1] * k[1][0] * k[2][2]
    }

    /// Batch-statistics BN of `z` [n][c][p] per channel: (z − mean) / √(var + ε) · γ + β.
    fn batch_norm(z: &[Vec<Vec<f64>>], gamma: &[f64], beta: &[f64]) -> Vec<Vec<Vec<f64>>> {
        let count = (z.len() * z[0][0].len()) as f64;
        let mut out = z.to_vec();
        for c in 0..gamma.len() {
            let all = || z.iter().flat_map(|img| img[c].iter());
            let mean = all().sum::<f64>() / count;
            let var = all().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
            for (o, img) in out.iter_mut().zip(z) {
                for (o, v) in o[c].iter_mut().zip(&img[c]) {
                    *o = (v - mean) / (var + EPS).sqrt() * gamma[c] + beta[c];
                }
            }
        }
        out
    }

    /// NASWOT of three images on the tiny network equals the score written out: the
    /// network's forward by hand, the codes of its ReLU, K by counting agreements, and
    /// log |det K| by the rule of Sarrus.
    #[test]
    fn naswot_of_three_images_matches_the_written_out_score() {
        let m = model_with_bn(3);
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let x = images(3, &mut state);
        let xs: Vec<Vec<Vec<f64>>> = x.flatten_from(2).unwrap().to_vec3().unwrap();
        let w = param(&m, "layers.0.conv.weight");
        // Conv 1×1: z[n][c][p] = Σ_i w[c][i] · x[n][i][p].
        let z: Vec<Vec<Vec<f64>>> = xs
            .iter()
            .map(|img| {
                (0..2)
                    .map(|c| {
                        (0..4)
                            .map(|p| w[2 * c] * img[0][p] + w[2 * c + 1] * img[1][p])
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let y = batch_norm(
            &z,
            &param(&m, "layers.0.bn.weight"),
            &param(&m, "layers.0.bn.bias"),
        );
        let y = batch_norm(
            &y,
            &param(&m, "layers.1.bn.weight"),
            &param(&m, "layers.1.bn.bias"),
        );
        let codes: Vec<Vec<bool>> = y
            .iter()
            .map(|img| img.iter().flatten().map(|v| *v > 0.0).collect())
            .collect();
        let k: Vec<Vec<f64>> = codes
            .iter()
            .map(|a| {
                codes
                    .iter()
                    .map(|b| a.iter().zip(b).filter(|(p, q)| p == q).count() as f64)
                    .collect()
            })
            .collect();
        let det = det3(&k);
        assert!(det.abs() > 0.5, "a degenerate case: {k:?}");
        let score = naswot(&m, &x).unwrap();
        assert!(
            (score - det.abs().ln()).abs() < 1e-9,
            "{score} vs ln |{det}|"
        );
    }

    #[test]
    fn dead_relus_score_the_lowest_naswot() {
        let m = model_with_bn(3);
        let x = images(6, &mut 7);
        let live = naswot(&m, &x).unwrap();
        assert!(live > f64::MIN, "{live}");
        // A large negative shift before the ReLU: every unit is off for every image.
        set(&m, "layers.1.bn.bias", &[-100.0, -100.0]);
        assert_eq!(naswot(&m, &x).unwrap(), f64::MIN);
    }

    /// synflow of the tiny network written out. With every parameter made positive and an
    /// all-ones image every activation is positive (the ReLU passes everything), and per
    /// channel c, with s = √(1 + ε) (BN on its running statistics, mean 0, variance 1):
    /// a = Σᵢ w[c][i], u = γ₁a/s + β₁, h = γ₂u/s + β₂, v = Σₖ V[k][c], and R = Σₖ bₖ + Σ_c v·h.
    /// synflow is Σ θ·∂R/∂θ over every parameter θ.
    #[test]
    fn synflow_matches_the_written_out_sum() {
        let m = model_with_bn(5);
        let abs = |name: &str| -> Vec<f64> { param(&m, name).iter().map(|v| v.abs()).collect() };
        let (w, g1, b1) = (
            abs("layers.0.conv.weight"),
            abs("layers.0.bn.weight"),
            abs("layers.0.bn.bias"),
        );
        let (g2, b2) = (abs("layers.1.bn.weight"), abs("layers.1.bn.bias"));
        let (lw, lb) = (abs("layers.3.weight"), abs("layers.3.bias"));
        let s = (1.0 + EPS).sqrt();
        let mut expected: f64 = lb.iter().sum();
        for c in 0..2 {
            let a = w[2 * c] + w[2 * c + 1];
            let u = g1[c] * a / s + b1[c];
            let h = g2[c] * u / s + b2[c];
            let v: f64 = (0..3).map(|k| lw[2 * k + c]).sum();
            expected += v * h // linear weights V[·][c]
                + g2[c] * v * u / s // γ₂
                + b2[c] * v // β₂
                + g1[c] * v * g2[c] / s * a / s // γ₁
                + b1[c] * v * g2[c] / s // β₁
                + a * v * g2[c] / s * g1[c] / s; // conv weights w[c][·]
        }
        let got = synflow_of(&m).unwrap();
        assert!(
            (got - expected).abs() < 1e-9 * expected,
            "{got} vs {expected}"
        );
    }

    /// The cross-entropy loss of `m` on a batch, as grad_norm differentiates it.
    fn loss(m: &Model, x: &Tensor, y: &Tensor) -> f64 {
        let out = m
            .forward(
                x,
                Mode::Probe {
                    batch_stats: true,
                    relus: None,
                },
            )
            .unwrap();
        scalar(&cross_entropy(&out.logits, y, 0.0).unwrap()).unwrap()
    }

    /// grad_norm equals the norm of the gradient by central differences over every
    /// parameter value.
    #[test]
    fn grad_norm_matches_finite_differences() {
        let m = model_with_bn(9);
        let x = images(5, &mut 11);
        let y = Tensor::new(&[0u32, 2, 1, 1, 0], &Device::Cpu).unwrap();
        let h = 1e-6;
        let mut sq = 0.0;
        for (name, _) in m.store.params() {
            let theta = param(&m, &name);
            for i in 0..theta.len() {
                let mut t = theta.clone();
                t[i] = theta[i] + h;
                set(&m, &name, &t);
                let up = loss(&m, &x, &y);
                t[i] = theta[i] - h;
                set(&m, &name, &t);
                let down = loss(&m, &x, &y);
                sq += ((up - down) / (2.0 * h)).powi(2);
            }
            set(&m, &name, &theta);
        }
        let fd = sq.sqrt();
        let got = grad_norm(&m, &x, &y).unwrap();
        assert!(fd > 1e-3, "{fd}");
        assert!((got - fd).abs() < 1e-6 * fd.max(1.0), "{got} vs {fd}");
    }

    fn settings(prior: Proxy) -> ZeroCost {
        ZeroCost {
            prior: Spanned::unspanned(prior),
            pool: Spanned::unspanned(4),
            keep: Spanned::unspanned(2),
            batches: Spanned::unspanned(2),
            batch_size: Spanned::unspanned(4),
        }
    }

    /// Each proxy is a function of the seed and the candidate: the same seed scores the same,
    /// another seed's initialisation scores differently.
    #[test]
    fn proxies_are_deterministic_per_seed() {
        let (space, c) = tiny();
        let mut state = 21;
        let batches: Vec<(Tensor, Tensor)> = (0..2)
            .map(|_| {
                let x = images(4, &mut state).to_dtype(DType::F32).unwrap();
                (x, Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu).unwrap())
            })
            .collect();
        let scorer = |seed| {
            Scorer::with_batches(
                space.clone(),
                &Device::Cpu,
                seed,
                batches.clone(),
                settings(Proxy::Naswot),
            )
        };
        let (a, b, other) = (scorer(1), scorer(1), scorer(2));
        let pa = a.proxies(&c).unwrap();
        assert_eq!(pa, b.proxies(&c).unwrap());
        let po = other.proxies(&c).unwrap();
        assert_ne!(pa.synflow, po.synflow);
        assert_ne!(pa.grad_norm, po.grad_norm);
    }
}
