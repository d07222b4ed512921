//! Optimizers and learning-rate schedules, matching PyTorch's update rules.
//!
//! - [`Sgd`]: momentum (dampening 0), optional Nesterov, weight decay added to the
//!   gradient, and gradient-norm clipping over all its parameters (`clip_grad_norm_`).
//! - [`Adam`]: weight decay added to the gradient (coupled, as `torch.optim.Adam`), eps 1e-8.
//! - [`LrSchedule`]: the learning rate of an epoch or a step, from `lr` down to a floor along
//!   a cosine or a line, with an optional linear warm-up.
//!
//! Optimizer state (momentum buffers, Adam moments and step count) can be saved and restored
//! by parameter name, so a resumed run continues exactly.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var, backprop::GradStore};

use crate::spec::pipeline::{Optimizer, Schedule};

/// SGD with momentum.
pub struct Sgd {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this.
    pub grad_clip: Option<f64>,
    params: Vec<(String, Var)>,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(
        params: Vec<(String, Var)>,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
        grad_clip: Option<f64>,
    ) -> Sgd {
        let n = params.len();
        Sgd {
            momentum,
            nesterov,
            weight_decay,
            grad_clip,
            params,
            buffers: vec![None; n],
        }
    }

    /// The global L2 norm of the parameters' gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0f64;
        for (_, p) in &self.params {
            if let Some(g) = grads.get(p.as_tensor()) {
                total += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(total.sqrt())
    }

    /// One step at learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let scale = match self.grad_clip {
            Some(max) => {
                let norm = self.grad_norm(grads)?;
                if norm > max { max / (norm + 1e-6) } else { 1.0 }
            }
            None => 1.0,
        };
        for ((_, p), buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            let mut d = if scale != 1.0 {
                g.affine(scale, 0.0)?
            } else {
                g.clone()
            };
            if self.weight_decay != 0.0 {
                d = (d + p.as_tensor().affine(self.weight_decay, 0.0)?)?;
            }
            if self.momentum != 0.0 {
                // Detached: a buffer must not hold on to this step's graph.
                let b = match buf.take() {
                    None => d.detach(),
                    Some(b) => (b.affine(self.momentum, 0.0)? + &d)?.detach(),
                };
                d = if self.nesterov {
                    (d + b.affine(self.momentum, 0.0)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
            }
            p.set(&(p.as_tensor() - d.affine(lr, 0.0)?)?)?;
        }
        Ok(())
    }

    /// The momentum buffer of each parameter (None before its first step).
    pub fn momentum_buffer(&self, i: usize) -> Option<&Tensor> {
        self.buffers[i].as_ref()
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// State by name: `<param>.momentum`.
    pub fn state(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|((n, _), b)| b.as_ref().map(|b| (format!("{n}.momentum"), b.clone())))
            .collect()
    }

    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        for ((n, p), b) in self.params.iter().zip(self.buffers.iter_mut()) {
            *b = state
                .get(&format!("{n}.momentum"))
                .map(|t| t.to_device(p.device()))
                .transpose()?;
        }
        Ok(())
    }
}

/// Adam with coupled weight decay.
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    params: Vec<(String, Var)>,
    moments: Vec<Option<(Tensor, Tensor)>>,
    t: u64,
}

impl Adam {
    pub fn new(params: Vec<(String, Var)>, lr: f64, betas: (f64, f64), weight_decay: f64) -> Adam {
        let n = params.len();
        Adam {
            lr,
            beta1: betas.0,
            beta2: betas.1,
            weight_decay,
            eps: 1e-8,
            params,
            moments: vec![None; n],
            t: 0,
        }
    }

    /// One step with the gradients in `grads`, looked up by parameter.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let gs: Vec<Option<Tensor>> = self
            .params
            .iter()
            .map(|(_, p)| grads.get(p.as_tensor()).cloned())
            .collect();
        self.step_with(&gs)
    }

    /// One step with explicit gradients, one per parameter in order.
    pub fn step_with(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (((_, p), m), g) in self.params.iter().zip(self.moments.iter_mut()).zip(grads) {
            let Some(g) = g else { continue };
            let mut g = g.clone();
            if self.weight_decay != 0.0 {
                g = (g + p.as_tensor().affine(self.weight_decay, 0.0)?)?;
            }
            let (m0, v0) = match m.take() {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            // Detached: the moments must not hold on to this step's graph.
            let m1 = (m0.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?.detach();
            let v1 = (v0.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?.detach();
            let denom = (v1.affine(1.0 / c2, 0.0)?.sqrt()? + self.eps)?;
            let update = m1.affine(self.lr / c1, 0.0)?.div(&denom)?;
            p.set(&(p.as_tensor() - update)?)?;
            *m = Some((m1, v1));
        }
        Ok(())
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// State by name: `<param>.exp_avg`, `<param>.exp_avg_sq`, and the step count as
    /// `step` (a one-element tensor).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for ((n, _), m) in self.params.iter().zip(&self.moments) {
            if let Some((a, b)) = m {
                out.insert(format!("{n}.exp_avg"), a.clone());
                out.insert(format!("{n}.exp_avg_sq"), b.clone());
            }
        }
        out.insert(
            "step".into(),
            Tensor::new(&[self.t as f64], &candle_core::Device::Cpu)?,
        );
        Ok(out)
    }

    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.t = match state.get("step") {
            Some(t) => t.to_vec1::<f64>()?.first().copied().unwrap_or(0.0) as u64,
            None => 0,
        };
        for ((n, p), m) in self.params.iter().zip(self.moments.iter_mut()) {
            *m = match (
                state.get(&format!("{n}.exp_avg")),
                state.get(&format!("{n}.exp_avg_sq")),
            ) {
                (Some(a), Some(b)) => Some((a.to_device(p.device())?, b.to_device(p.device())?)),
                _ => None,
            };
        }
        Ok(())
    }
}

/// A learning-rate schedule: a linear warm-up from lr/W to `lr` over the first W = `warmup`
/// epochs, then a fall from `lr` to `lr_min` over the rest, shaped by `shape`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub lr_min: f64,
    pub warmup: usize,
    pub shape: Schedule,
}

impl LrSchedule {
    /// The schedule of an `Sgd` optimizer; `None` for Adam, whose rate is constant.
    pub fn of(o: &Optimizer) -> Option<LrSchedule> {
        match o {
            Optimizer::Sgd {
                lr,
                lr_min,
                warmup_epochs,
                schedule,
                ..
            } => Some(LrSchedule {
                lr: lr.value,
                lr_min: lr_min.value,
                warmup: *warmup_epochs as usize,
                shape: *schedule,
            }),
            Optimizer::Adam { .. } => None,
        }
    }

    /// The rate `t` into a fall that lasts `span` (both in epochs or both in steps).
    fn fall(&self, t: f64, span: f64) -> f64 {
        match self.shape {
            Schedule::Cosine => {
                self.lr_min
                    + 0.5
                        * (self.lr - self.lr_min)
                        * (1.0 + (std::f64::consts::PI * t / span).cos())
            }
            Schedule::Linear => self.lr_min + (self.lr - self.lr_min) * (1.0 - t / span),
        }
    }

    /// The rate for `epoch` (0-based) of `epochs`, stepped once per epoch (PyTorch's
    /// CosineAnnealingLR with a cosine: the first epoch runs at `lr`).
    pub fn at_epoch(&self, epoch: usize, epochs: usize) -> f64 {
        if epoch < self.warmup {
            return self.lr * (epoch + 1) as f64 / self.warmup as f64;
        }
        let span = (epochs - self.warmup.min(epochs)).max(1) as f64;
        self.fall((epoch - self.warmup) as f64, span)
    }

    /// The rate at global step `step` (0-based) of `epochs · steps` steps, updated every
    /// step; the warm-up takes `warmup · steps` steps and the rate reaches `lr_min` after the
    /// last step.
    pub fn at_step(&self, step: usize, steps: usize, epochs: usize) -> f64 {
        let w = self.warmup.min(epochs) * steps;
        if step < w {
            return self.lr * (step + 1) as f64 / w as f64;
        }
        let span = ((epochs * steps).saturating_sub(w)).max(1) as f64;
        self.fall((step - w) as f64, span)
    }

    /// [`Self::at_step`] at `x` epochs into the schedule (any real position, `steps` steps
    /// an epoch for the warm-up's count): equal to it at `x = step / steps` up to rounding.
    pub fn at(&self, x: f64, steps: usize, epochs: usize) -> f64 {
        let w = self.warmup.min(epochs) as f64;
        if x < w {
            let steps = steps.max(1) as f64;
            return self.lr * (x * steps + 1.0) / (w * steps);
        }
        self.fall(x - w, (epochs as f64 - w).max(1e-12))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn schedule(lr: f64, lr_min: f64, warmup: usize, shape: Schedule) -> LrSchedule {
        LrSchedule {
            lr,
            lr_min,
            warmup,
            shape,
        }
    }

    fn cosine(lr: f64, lr_min: f64, warmup: usize) -> LrSchedule {
        schedule(lr, lr_min, warmup, Schedule::Cosine)
    }

    #[test]
    fn the_rate_at_a_position_is_the_rate_at_a_step() {
        for shape in [Schedule::Cosine, Schedule::Linear] {
            for warmup in [0, 1] {
                let s = schedule(0.1, 0.001, warmup, shape);
                for step in 0..30 {
                    let a = s.at_step(step, 10, 3);
                    let b = s.at(step as f64 / 10.0, 10, 3);
                    assert!((a - b).abs() < 1e-12, "{shape:?} {step}: {a} {b}");
                }
            }
            assert!(schedule(0.1, 0.0, 0, shape).at(3.0, 10, 3).abs() < 1e-12);
        }
    }

    fn var(v: &[f32]) -> Var {
        Var::new(v, &Device::Cpu).unwrap()
    }

    /// Hand-computed PyTorch SGD steps: p = 1, grad = 2 (loss = 2p), momentum 0.9, wd 0.1.
    #[test]
    fn sgd_matches_pytorch_rule() {
        let p = var(&[1.0]);
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.9, false, 0.1, None);
        let loss = |p: &Var| p.as_tensor().affine(2.0, 0.0).unwrap().sum_all().unwrap();
        // step 1: d = 2 + 0.1 = 2.1; buf = 2.1; p = 1 - 0.1*2.1 = 0.79
        opt.step(&loss(&p).backward().unwrap(), 0.1).unwrap();
        let v = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((v - 0.79).abs() < 1e-6, "{v}");
        // step 2: d = 2 + 0.079 = 2.079; buf = 0.9*2.1 + 2.079 = 3.969; p = 0.79 - 0.3969
        opt.step(&loss(&p).backward().unwrap(), 0.1).unwrap();
        let v = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((v - (0.79 - 0.3969)).abs() < 1e-6, "{v}");
    }

    #[test]
    fn sgd_nesterov_and_clipping() {
        let p = var(&[3.0, 4.0]);
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.9, true, 0.0, Some(1.0));
        // loss = p·p/2: grad = p = (3, 4), norm 5, clipped to (0.6, 0.8) (up to 1e-6).
        let g = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5)
            .unwrap()
            .backward()
            .unwrap();
        assert!((opt.grad_norm(&g).unwrap() - 5.0).abs() < 1e-6);
        opt.step(&g, 1.0).unwrap();
        // nesterov: d = g + 0.9 * buf where buf = g → 1.9 g.
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - (3.0 - 1.9 * 0.6)).abs() < 1e-5 && (v[1] - (4.0 - 1.9 * 0.8)).abs() < 1e-5,
            "{v:?}"
        );
    }

    /// The first Adam step moves every parameter by lr (times the sign of its gradient).
    #[test]
    fn adam_first_step_and_state_round_trip() {
        let p = var(&[1.0, -2.0]);
        let mut opt = Adam::new(vec![("a".into(), p.clone())], 0.01, (0.5, 0.999), 0.0);
        let g = p.as_tensor().sum_all().unwrap().backward().unwrap();
        opt.step(&g).unwrap();
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.99).abs() < 1e-6 && (v[1] + 2.01).abs() < 1e-6,
            "{v:?}"
        );
        let state = opt.state().unwrap();
        let q = var(&v);
        let mut opt2 = Adam::new(vec![("a".into(), q.clone())], 0.01, (0.5, 0.999), 0.0);
        opt2.load_state(&state).unwrap();
        let g = p.as_tensor().sum_all().unwrap().backward().unwrap();
        opt.step(&g).unwrap();
        let g2 = q.as_tensor().sum_all().unwrap().backward().unwrap();
        opt2.step(&g2).unwrap();
        assert_eq!(
            p.as_tensor().to_vec1::<f32>().unwrap(),
            q.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn cosine_schedule() {
        assert_eq!(cosine(0.025, 0.001, 0).at_epoch(0, 50), 0.025);
        assert!((cosine(0.025, 0.001, 0).at_epoch(25, 50) - 0.013).abs() < 1e-12);
        assert!((cosine(0.1, 0.0, 1).at_epoch(1, 3) - 0.1).abs() < 1e-12);
        assert!((cosine(0.1, 0.0, 2).at_epoch(0, 3) - 0.05).abs() < 1e-12);
        assert!(cosine(0.1, 0.0, 0).at_epoch(49, 50) > 0.0);
    }

    #[test]
    fn cosine_step_warms_up_then_decays_to_the_floor() {
        // 2 epochs of 4 steps, 1 warm-up epoch.
        let lrs: Vec<f64> = (0..8)
            .map(|s| cosine(0.4, 0.0, 1).at_step(s, 4, 2))
            .collect();
        assert_eq!(&lrs[..4], &[0.1, 0.2, 0.30000000000000004, 0.4]);
        assert!((lrs[6] - 0.2).abs() < 1e-12, "{lrs:?}");
        assert!(lrs.windows(2).skip(4).all(|w| w[1] < w[0]));
        assert!((cosine(0.4, 0.01, 0).at_step(0, 4, 2) - 0.4).abs() < 1e-12);
    }

    /// The line falls by equal amounts each step from `lr` to `lr_min`, after the same
    /// warm-up as the cosine, and lies below the cosine in the first half and above it in the
    /// second.
    #[test]
    fn linear_schedule_falls_evenly_to_the_floor() {
        let line = schedule(0.5, 0.1, 1, Schedule::Linear);
        // 3 epochs of 4 steps: 4 warm-up steps, then 8 steps from 0.5 towards 0.1.
        let lrs: Vec<f64> = (0..12).map(|s| line.at_step(s, 4, 3)).collect();
        assert_eq!(&lrs[..4], &[0.125, 0.25, 0.375, 0.5]);
        for (k, lr) in lrs[4..].iter().enumerate() {
            assert!((lr - (0.5 - 0.05 * k as f64)).abs() < 1e-12, "{lrs:?}");
        }
        assert!((line.at(3.0, 4, 3) - 0.1).abs() < 1e-12);
        assert!((line.at_epoch(1, 3) - 0.5).abs() < 1e-12);
        assert!((line.at_epoch(2, 3) - 0.3).abs() < 1e-12);
        let cos = cosine(0.5, 0.1, 0);
        let line = schedule(0.5, 0.1, 0, Schedule::Linear);
        assert!(line.at(0.5, 4, 3) < cos.at(0.5, 4, 3));
        assert!((line.at(1.5, 4, 3) - cos.at(1.5, 4, 3)).abs() < 1e-12);
        assert!(line.at(2.5, 4, 3) > cos.at(2.5, 4, 3));
    }
}
