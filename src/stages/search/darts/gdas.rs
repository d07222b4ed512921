//! GDAS (Dong, Yang, CVPR 2019) as in its paper and code: each forward samples
//! one candidate per edge (and per searchable layer) and runs only that one.
//!
//! Per cell type, with α [edges, candidates] and Gumbel noise g = −log(−log u):
//! probs = softmax((log_softmax(α) + g) / τ) row-wise, pick = argmax(probs) (ties: the
//! earlier candidate), hard = one_hot(pick) − probs.detach() + probs (straight-through: its
//! value is the one-hot, its gradient that of probs). The edge's output is
//! hard_pick · op_pick(x), so every α of the edge gets a gradient through probs. All cells of
//! one type share a forward's sample. τ falls linearly from τ_max at the first epoch to
//! τ_min at the last ([`tau`]). A step is DARTS's first-order step with a fresh sample for
//! each of its two forwards: the architecture update on the validation batch, then the
//! weight update on the training batch.
//!
//! The noise is drawn from a generator rebuilt from (seed, epoch, step, pass), so a resumed
//! search draws what an uninterrupted one would.

use candle_core::{D, Result, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::step::{BatchStats, Darts};
use crate::data::rng;
use crate::nets::supernet::{Arch, Supernet};

/// Stream id of GDAS's noise (the batchers use 1 and 2).
const STREAM: u64 = 0x6764_6173;

/// The temperature at `epoch` of `epochs`: τ_max − (τ_max − τ_min)·epoch/(epochs − 1), and
/// τ_max when there is one epoch.
pub fn tau(tau_max: f64, tau_min: f64, epoch: usize, epochs: usize) -> f64 {
    if epochs <= 1 {
        return tau_max;
    }
    tau_max - (tau_max - tau_min) * epoch as f64 / (epochs - 1) as f64
}

/// A uniform draw in (0, 1), never 0 or 1: (m + ½)/2⁵³ from the top 53 bits.
fn open_unit(r: &mut impl RngCore) -> f64 {
    ((r.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// `n` Gumbel(0, 1) draws.
fn gumbel(r: &mut impl RngCore, n: usize) -> Vec<f64> {
    (0..n).map(|_| -(-open_unit(r).ln()).ln()).collect()
}

/// The generator of one forward's noise.
pub fn noise_rng(seed: u64, epoch: u64, step: u64, pass: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(rng::mix(&[seed, epoch, step, STREAM, pass]))
}

/// Samples the architecture of one forward at temperature `tau`: per cell type in use, then
/// per searchable layer, Gumbel noise for α in row-major order.
pub fn sample(net: &Supernet, tau: f64, r: &mut impl RngCore) -> Result<Arch> {
    let mut one = |a: &Tensor| -> Result<(Tensor, Vec<usize>)> {
        let a2 = if a.rank() == 1 {
            a.unsqueeze(0)?
        } else {
            a.clone()
        };
        let (rows, cols) = a2.dims2()?;
        let g = Tensor::from_vec(gumbel(r, rows * cols), (rows, cols), a.device())?
            .to_dtype(a.dtype())?;
        let logits = (candle_nn::ops::log_softmax(&a2, D::Minus1)? + g)?.affine(1.0 / tau, 0.0)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let values = probs.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        let mut picks = Vec::with_capacity(rows);
        let mut hot = vec![0f64; rows * cols];
        for (i, row) in values.iter().enumerate() {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            picks.push(best);
            hot[i * cols + best] = 1.0;
        }
        let hot = Tensor::from_vec(hot, (rows, cols), a.device())?.to_dtype(a.dtype())?;
        let hard = ((hot - probs.detach())? + probs)?;
        let hard = if a.rank() == 1 {
            hard.squeeze(0)?
        } else {
            hard
        };
        Ok((hard, picks))
    };
    let mut cells = Vec::new();
    let mut cell_picks = Vec::new();
    for a in net.cell_alphas() {
        match a {
            Some(a) => {
                let (h, p) = one(a)?;
                cells.push(Some(h));
                cell_picks.push(Some(p));
            }
            None => {
                cells.push(None);
                cell_picks.push(None);
            }
        }
    }
    let mut slots = Vec::new();
    let mut slot_picks = Vec::new();
    for a in net.slot_alphas() {
        let (h, p) = one(a)?;
        slots.push(h);
        slot_picks.push(Some(p[0]));
    }
    Ok(Arch {
        cells,
        cell_picks,
        slots,
        slot_picks,
        edges: net.edge_scales()?,
    })
}

/// GDAS's state: DARTS's (first order) and the temperature schedule.
pub struct Gdas {
    pub darts: Darts,
    pub tau_max: f64,
    pub tau_min: f64,
    pub epochs: usize,
    pub seed: u64,
}

impl Gdas {
    /// One step `step` of epoch `epoch`: a first-order architecture update on the
    /// validation batch, then the weight update on the training batch at rate `lr`, each
    /// under its own sample. Returns (train, validation) stats.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        xt: &Tensor,
        yt: &Tensor,
        xv: &Tensor,
        yv: &Tensor,
        lr: f64,
        epoch: usize,
        step: usize,
    ) -> Result<(BatchStats, BatchStats)> {
        let t = tau(self.tau_max, self.tau_min, epoch, self.epochs);
        let (e, s) = (epoch as u64, step as u64);
        let a = sample(&self.darts.net, t, &mut noise_rng(self.seed, e, s, 0))?;
        let val = self.darts.arch_step_with(xv, yv, &a)?;
        let b = sample(&self.darts.net, t, &mut noise_rng(self.seed, e, s, 1))?;
        let train = self.darts.weight_step(xt, yt, lr, Some(&b))?;
        Ok((train, val))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::optim::{Adam, Sgd};
    use crate::ops::Op;
    use crate::space::{Candidate, Overrides, Space};
    use crate::spec::Sources;
    use crate::spec::pipeline::Order;
    use candle_core::{DType, Device};

    fn space() -> Space {
        let mut sources = Sources::default();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let ov = Overrides {
            channels: Some((2, Default::default())),
            layers: Some((3, Default::default())),
            input: Some(crate::spec::space::Input {
                channels: 3,
                size: 8,
                classes: 4,
            }),
        };
        crate::space::load(&mut sources, &root.join("schemas/darts.ron"), None, &ov).unwrap()
    }

    #[test]
    fn tau_runs_from_max_to_min() {
        assert_eq!(tau(10.0, 0.1, 0, 50), 10.0);
        assert!((tau(10.0, 0.1, 49, 50) - 0.1).abs() < 1e-12);
        assert!((tau(10.0, 0.1, 1, 3) - 5.05).abs() < 1e-12);
        assert_eq!(tau(10.0, 0.1, 0, 1), 10.0);
    }

    #[test]
    fn gumbel_noise_is_finite_and_seeded() {
        let a = gumbel(&mut noise_rng(1, 2, 3, 0), 1000);
        assert!(a.iter().all(|g| g.is_finite()));
        assert_eq!(a, gumbel(&mut noise_rng(1, 2, 3, 0), 1000));
        assert_ne!(a, gumbel(&mut noise_rng(1, 2, 3, 1), 1000));
        // Gumbel(0, 1) has mean γ ≈ 0.5772 and standard deviation π/√6 ≈ 1.28.
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((mean - 0.5772).abs() < 0.15, "mean {mean}");
    }

    /// The sampled forward runs one candidate per edge: the hard weights are one-hot in value,
    /// the output equals a network whose edges run only the picked candidate, and every α of
    /// every edge gets a gradient.
    #[test]
    fn sampled_forward_runs_one_candidate_and_reaches_every_alpha() {
        let s = space();
        let net = Supernet::with_dtype(&s, &Device::Cpu, DType::F64, 3).unwrap();
        let arch = sample(&net, 1.0, &mut noise_rng(0, 0, 0, 0)).unwrap();
        for (h, p) in arch.cells.iter().zip(&arch.cell_picks) {
            let (Some(h), Some(p)) = (h, p) else { continue };
            let v = h.to_vec2::<f64>().unwrap();
            for (row, &k) in v.iter().zip(p) {
                for (j, &x) in row.iter().enumerate() {
                    let want = if j == k { 1.0 } else { 0.0 };
                    assert!((x - want).abs() < 1e-12, "{row:?} pick {k}");
                }
            }
        }
        let x = Tensor::randn(0f64, 1f64, (2, 3, 8, 8), &Device::Cpu).unwrap();
        let y = net.forward_with(&x, true, &arch).unwrap();
        // The same forward with constant one-hot weights and every candidate running: the
        // others contribute exactly zero, so the picked ones are all that run.
        let hot = Arch {
            cells: arch
                .cells
                .iter()
                .map(|h| h.as_ref().map(|h| h.detach()))
                .collect(),
            cell_picks: vec![None; arch.cells.len()],
            slots: vec![],
            slot_picks: vec![],
            edges: arch.edges.clone(),
        };
        let y_all = net.forward_with(&x, true, &hot).unwrap();
        let diff = (&y - &y_all)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-9, "sampled and one-hot forwards differ by {diff}");
        let loss = y.sqr().unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let mut reached = 0;
        for (a, picks) in net.cell_alphas().iter().zip(&arch.cell_picks) {
            let (Some(a), Some(picks)) = (a, picks) else {
                continue;
            };
            let cands = &s.cells[0].candidates;
            let ga = g
                .get(a)
                .expect("α has a gradient")
                .to_vec2::<f64>()
                .unwrap();
            for (e, (row, &k)) in ga.iter().zip(picks).enumerate() {
                let zero = matches!(cands[k], Candidate::Op(o) if s.ops[o].1 == Op::Zero);
                for (j, &v) in row.iter().enumerate() {
                    // A picked `none` outputs zeros: nothing flows back to that edge's α.
                    assert_eq!(
                        v == 0.0,
                        zero,
                        "edge {e} (pick {k}), candidate {j}: gradient {v}"
                    );
                }
                reached += usize::from(!zero);
            }
        }
        assert!(reached > 10, "only {reached} edges reached");
    }

    fn gdas(seed: u64) -> Gdas {
        let s = space();
        let net = Supernet::new(&s, &Device::Cpu, seed).unwrap();
        let w = Sgd::new(net.weights.params(), 0.9, false, 3e-4, Some(5.0));
        let a = Adam::new(net.alphas.params(), 3e-2, (0.5, 0.999), 1e-3);
        Gdas {
            darts: Darts::new(net, w, a, Order::First),
            tau_max: 10.0,
            tau_min: 0.1,
            epochs: 2,
            seed,
        }
    }

    fn batch() -> (Tensor, Tensor) {
        let v: Vec<f32> = (0..4 * 3 * 8 * 8)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        (
            Tensor::from_vec(v, (4, 3, 8, 8), &Device::Cpu).unwrap(),
            Tensor::new(&[0u32, 1, 2, 3], &Device::Cpu).unwrap(),
        )
    }

    fn alphas_after(seed: u64, noise_seed: u64) -> Vec<f32> {
        let mut g = gdas(seed);
        g.seed = noise_seed;
        let (x, y) = batch();
        for step in 0..3 {
            g.step(&x, &y, &x, &y, 0.05, 1, step).unwrap();
        }
        g.darts
            .net
            .alphas
            .params()
            .iter()
            .flat_map(|(_, v)| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    /// Same seed, same alphas after a few steps; other noise, other alphas.
    #[test]
    fn same_seed_gives_the_same_alphas() {
        let a = alphas_after(5, 5);
        assert_eq!(a, alphas_after(5, 5));
        assert_ne!(a, alphas_after(5, 6));
    }

    /// Sampling covers searchable layers and motifs too: a sampled forward runs on the
    /// chain and NAS-Bench-201 spaces and reaches the layers' α.
    #[test]
    fn sampled_forward_on_the_other_spaces() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["schemas/nas-bench-201.ron", "schemas/mobilenet-chain.ron"] {
            let mut sources = Sources::default();
            let ov = Overrides {
                channels: None,
                layers: None,
                input: Some(crate::spec::space::Input {
                    channels: 3,
                    size: 16,
                    classes: 10,
                }),
            };
            let s = crate::space::load(&mut sources, &root.join(file), None, &ov).unwrap();
            let net = Supernet::new(&s, &Device::Cpu, 0).unwrap();
            let arch = sample(&net, 1.0, &mut noise_rng(0, 0, 0, 0)).unwrap();
            let x = Tensor::randn(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
            let y = net.forward_with(&x, true, &arch).unwrap();
            assert_eq!(y.dims(), &[2, 10], "{file}");
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let reached = net
                .alphas
                .params()
                .iter()
                .filter(|(_, v)| g.get(v.as_tensor()).is_some())
                .count();
            assert!(reached > 0, "{file}: no α reached");
        }
    }
}
