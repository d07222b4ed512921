//! DARTS (Liu, Simonyan, Yang, ICLR 2019): first and second order, exactly as
//! the paper and its reference code (quark0/darts).
//!
//! Each step draws a validation batch and updates the architecture weights with Adam, then
//! takes an SGD step on the training batch. First order: g_α = ∇_α L_val(w, α). Second
//! order (unrolled): with η the current weight learning rate,
//! w' = w − η·(momentum·buffer + ∇_w L_train(w, α) + wd·w),
//! g_α = ∇_α L_val(w', α) − η·[∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / (2ε),
//! w± = w ± ε·∇_{w'} L_val(w', α), ε = 0.01 / ‖∇_{w'} L_val(w', α)‖₂.

use candle_core::{Result, Tensor, Var};

use crate::nets::optim::{Adam, Sgd};
use crate::nets::supernet::{Arch, Supernet};
use crate::spec::pipeline::Order;

/// Loss and accuracy of one batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchStats {
    pub loss: f64,
    pub correct: usize,
    pub count: usize,
}

/// DARTS state: the network and both optimizers.
pub struct Darts {
    pub net: Supernet,
    pub w_opt: Sgd,
    pub a_opt: Adam,
    pub order: Order,
    /// The differentiable expected-latency term, when the search has one.
    pub latency: Option<LatencyPenalty>,
}

/// `weight` · E[latency]: per cell type a [edges, candidates] matrix of latencies in ms,
/// summed over the layers of that type, and per searchable layer a [candidates] vector, so
/// that E[latency] = Σ softmax(α) ⊙ M over them all.
pub struct LatencyPenalty {
    pub weight: f64,
    pub cells: Vec<Option<Tensor>>,
    pub slots: Vec<Option<Tensor>>,
}

impl LatencyPenalty {
    /// E[latency] in ms under the current architecture weights, as a differentiable scalar.
    pub fn expected(&self, net: &Supernet) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        let mut add = |a: &Tensor, m: &Tensor| -> Result<()> {
            let p = candle_nn::ops::softmax(a, candle_core::D::Minus1)?;
            let e = (p * m.to_dtype(a.dtype())?)?.sum_all()?;
            total = Some(match total.take() {
                None => e,
                Some(t) => (t + e)?,
            });
            Ok(())
        };
        for (a, m) in net.cell_alphas().iter().zip(&self.cells) {
            if let (Some(a), Some(m)) = (a, m) {
                add(a, m)?;
            }
        }
        for (a, m) in net.slot_alphas().iter().zip(&self.slots) {
            if let Some(m) = m {
                add(a, m)?;
            }
        }
        match total {
            Some(t) => Ok(t),
            None => Tensor::zeros((), crate::nn::DTYPE, net.weights.device()),
        }
    }

    /// Adds `weight` · ∇_α E[latency] to the architecture gradients `ga` (in `vars` order).
    fn add_to(&self, net: &Supernet, vars: &[Var], ga: &mut [Tensor]) -> Result<()> {
        let e = self.expected(net)?;
        let store = e.backward()?;
        for (v, g) in vars.iter().zip(ga.iter_mut()) {
            if let Some(d) = store.get(v.as_tensor()) {
                *g = (&*g + d.affine(self.weight, 0.0)?)?;
            }
        }
        Ok(())
    }
}

/// Mean cross-entropy of `logits` [N, K] against `labels` [N] (u32), and the count of
/// correct top-1 predictions.
pub fn loss_and_correct(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, usize)> {
    let loss = candle_nn::loss::cross_entropy(logits, labels)?;
    let pred = logits.argmax(1)?;
    let correct = pred
        .eq(labels)?
        .to_dtype(candle_core::DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as usize;
    Ok((loss, correct))
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
}

impl Darts {
    pub fn new(net: Supernet, w_opt: Sgd, a_opt: Adam, order: Order) -> Darts {
        Darts {
            net,
            w_opt,
            a_opt,
            order,
            latency: None,
        }
    }

    fn weight_vars(&self) -> Vec<Var> {
        self.w_opt.params().iter().map(|(_, v)| v.clone()).collect()
    }

    fn alpha_vars(&self) -> Vec<Var> {
        self.a_opt.params().iter().map(|(_, v)| v.clone()).collect()
    }

    /// Loss on a batch and the gradients of `vars` (zeros where a var does not reach the
    /// loss).
    fn grads(&self, x: &Tensor, y: &Tensor, vars: &[Var]) -> Result<(BatchStats, Vec<Tensor>)> {
        self.grads_with(x, y, vars, None)
    }

    /// As [`Darts::grads`] under `arch` (`None`: the relaxation).
    fn grads_with(
        &self,
        x: &Tensor,
        y: &Tensor,
        vars: &[Var],
        arch: Option<&Arch>,
    ) -> Result<(BatchStats, Vec<Tensor>)> {
        let logits = match arch {
            Some(a) => self.net.forward_with(x, true, a)?,
            None => self.net.forward(x, true)?,
        };
        let (loss, correct) = loss_and_correct(&logits, y)?;
        let store = loss.backward()?;
        let grads = vars
            .iter()
            .map(|v| match store.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<Result<_>>()?;
        Ok((
            BatchStats {
                loss: scalar(&loss)?,
                correct,
                count: y.dim(0)?,
            },
            grads,
        ))
    }

    /// First-order architecture gradient: ∇_α L_val(w, α).
    pub fn arch_grad_first(&self, xv: &Tensor, yv: &Tensor) -> Result<(BatchStats, Vec<Tensor>)> {
        self.grads(xv, yv, &self.alpha_vars())
    }

    /// Second-order (unrolled) architecture gradient at weight learning rate `lr`.
    pub fn arch_grad_second(
        &self,
        xt: &Tensor,
        yt: &Tensor,
        xv: &Tensor,
        yv: &Tensor,
        lr: f64,
    ) -> Result<(BatchStats, Vec<Tensor>)> {
        let wv = self.weight_vars();
        let av = self.alpha_vars();
        let w0: Vec<Tensor> = wv
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<Result<_>>()?;
        // w' = w − η (momentum·buf + g + wd·w)
        let (_, g) = self.grads(xt, yt, &wv)?;
        let (m, wd) = (self.w_opt.momentum, self.w_opt.weight_decay);
        for (i, v) in wv.iter().enumerate() {
            let mut d = (&g[i] + w0[i].affine(wd, 0.0)?)?;
            if let Some(buf) = self.w_opt.momentum_buffer(i) {
                d = (d + buf.affine(m, 0.0)?)?;
            }
            v.set(&(&w0[i] - d.affine(lr, 0.0)?)?)?;
        }
        // The unrolled model is a copy in the reference: its BN statistics are discarded.
        let buffers: Vec<(Var, Tensor)> = self
            .net
            .weights
            .buffers()
            .into_iter()
            .map(|(_, v)| Ok((v.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        let mut all = av.clone();
        all.extend(wv.iter().cloned());
        let (stats, gv) = self.grads(xv, yv, &all)?;
        for (v, t) in &buffers {
            v.set(t)?;
        }
        let (d_alpha, d_w) = gv.split_at(av.len());
        let result = self.hessian_term(xt, yt, &w0, d_w).and_then(|h| {
            d_alpha
                .iter()
                .zip(&h)
                .map(|(a, h)| a - h.affine(lr, 0.0)?)
                .collect::<Result<Vec<_>>>()
        });
        for (v, t) in wv.iter().zip(&w0) {
            v.set(t)?;
        }
        Ok((stats, result?))
    }

    /// [∇_α L_train(w + ε·v) − ∇_α L_train(w − ε·v)] / (2ε) with ε = 0.01 / ‖v‖: the
    /// finite-difference Hessian-vector product ∇²_{α,w} L_train · v. Leaves the weights at
    /// `w0`.
    pub fn hessian_term(
        &self,
        xt: &Tensor,
        yt: &Tensor,
        w0: &[Tensor],
        v: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let norm: f64 = v
            .iter()
            .map(|t| scalar(&t.sqr()?.sum_all()?))
            .sum::<Result<f64>>()?
            .sqrt();
        let eps = 0.01 / norm.max(1e-12);
        self.hessian_term_eps(xt, yt, w0, v, eps)
    }

    /// As [`Darts::hessian_term`] with an explicit step.
    pub fn hessian_term_eps(
        &self,
        xt: &Tensor,
        yt: &Tensor,
        w0: &[Tensor],
        v: &[Tensor],
        eps: f64,
    ) -> Result<Vec<Tensor>> {
        let wv = self.weight_vars();
        let av = self.alpha_vars();
        let at = |sign: f64| -> Result<Vec<Tensor>> {
            for ((var, w), d) in wv.iter().zip(w0).zip(v) {
                var.set(&(w + d.affine(sign * eps, 0.0)?)?)?;
            }
            Ok(self.grads(xt, yt, &av)?.1)
        };
        let plus = at(1.0);
        let minus = at(-1.0);
        for (var, w) in wv.iter().zip(w0) {
            var.set(w)?;
        }
        plus?
            .iter()
            .zip(&minus?)
            .map(|(p, m)| (p - m)?.affine(1.0 / (2.0 * eps), 0.0))
            .collect()
    }

    /// One search step: the architecture update on the validation batch, then the weight
    /// update on the training batch at learning rate `lr`. Returns (train, validation) stats.
    pub fn step(
        &mut self,
        xt: &Tensor,
        yt: &Tensor,
        xv: &Tensor,
        yv: &Tensor,
        lr: f64,
    ) -> Result<(BatchStats, BatchStats)> {
        let val = self.arch_step(xt, yt, xv, yv, lr)?;
        let train = self.weight_step(xt, yt, lr, None)?;
        Ok((train, val))
    }

    /// The architecture update of a step, of the configured order; returns the validation
    /// batch's stats.
    pub fn arch_step(
        &mut self,
        xt: &Tensor,
        yt: &Tensor,
        xv: &Tensor,
        yv: &Tensor,
        lr: f64,
    ) -> Result<BatchStats> {
        let (val, mut ga) = match self.order {
            Order::First => self.arch_grad_first(xv, yv)?,
            Order::Second => self.arch_grad_second(xt, yt, xv, yv, lr)?,
        };
        if let Some(l) = &self.latency {
            l.add_to(&self.net, &self.alpha_vars(), &mut ga)?;
        }
        self.a_opt
            .step_with(&ga.into_iter().map(Some).collect::<Vec<_>>())?;
        Ok(val)
    }

    /// A first-order architecture update with the validation batch's forward under `arch`.
    pub fn arch_step_with(&mut self, xv: &Tensor, yv: &Tensor, arch: &Arch) -> Result<BatchStats> {
        let (val, mut ga) = self.grads_with(xv, yv, &self.alpha_vars(), Some(arch))?;
        if let Some(l) = &self.latency {
            l.add_to(&self.net, &self.alpha_vars(), &mut ga)?;
        }
        self.a_opt
            .step_with(&ga.into_iter().map(Some).collect::<Vec<_>>())?;
        Ok(val)
    }

    /// The validation batch's stats without an architecture update: a training-mode
    /// forward (batch statistics, as the update would see them) whose BN running statistics
    /// are put back afterwards, so the network is as if the batch were never seen.
    pub fn val_stats(&self, xv: &Tensor, yv: &Tensor) -> Result<BatchStats> {
        let buffers: Vec<(Var, Tensor)> = self
            .net
            .weights
            .buffers()
            .into_iter()
            .map(|(_, v)| Ok((v.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        let logits = self.net.forward(xv, true);
        for (v, t) in &buffers {
            v.set(t)?;
        }
        let (loss, correct) = loss_and_correct(&logits?.detach(), yv)?;
        Ok(BatchStats {
            loss: scalar(&loss)?,
            correct,
            count: yv.dim(0)?,
        })
    }

    /// The SGD step on the training batch at learning rate `lr`, under `arch` (`None`: the
    /// relaxation); returns its stats.
    pub fn weight_step(
        &mut self,
        xt: &Tensor,
        yt: &Tensor,
        lr: f64,
        arch: Option<&Arch>,
    ) -> Result<BatchStats> {
        let logits = match arch {
            Some(a) => self.net.forward_with(xt, true, a)?,
            None => self.net.forward(xt, true)?,
        };
        let (loss, correct) = loss_and_correct(&logits, yt)?;
        let grads = loss.backward()?;
        self.w_opt.step(&grads, lr)?;
        Ok(BatchStats {
            loss: scalar(&loss)?,
            correct,
            count: yt.dim(0)?,
        })
    }
}
