//! Parameters, buffers and batch norm over Candle: the pieces every op's module shares.
//!
//! A [`Store`] holds trainable parameters and non-trainable buffers (BN running statistics)
//! under hierarchical names (`cells.3.edges.1.sep_conv_3x3.dw1.weight`); a [`Scope`] is a
//! name prefix into it, like candle's `VarBuilder::pp`. Initial values are drawn on the CPU
//! from one seeded stream in creation order, so a network built twice from the same spec
//! and seed is identical on every device. The names are the contract with checkpoints and
//! ONNX initializers.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::kernels::{
    self, batch_norm_eval, batch_norm_relu_eval, batch_norm_relu_train, batch_norm_train,
};

/// Trainable parameters and buffers, in creation order.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    device: Device,
    dtype: DType,
}

struct Inner {
    params: Vec<(String, Var)>,
    buffers: Vec<(String, Var)>,
    rng: ChaCha8Rng,
}

/// How a parameter starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// PyTorch's default for conv and linear weights (kaiming uniform, a = √5): U(−b, b) with
    /// b = 1/√fan_in.
    FanIn(usize),
    /// N(0, std²).
    Normal(f64),
    Const(f64),
}

impl Store {
    /// An empty store whose parameters start from `seed`.
    pub fn new(device: &Device, seed: u64) -> Store {
        Store::with_dtype(device, DTYPE, seed)
    }

    /// A store whose tensors have `dtype` (F64 for gradient checks).
    pub fn with_dtype(device: &Device, dtype: DType, seed: u64) -> Store {
        Store {
            inner: Arc::new(Mutex::new(Inner {
                params: Vec::new(),
                buffers: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
            device: device.clone(),
            dtype,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The root scope.
    pub fn root(&self) -> Scope {
        Scope {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means another thread panicked mid-update; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Trainable parameters with their names, in creation order.
    pub fn params(&self) -> Vec<(String, Var)> {
        self.lock().params.clone()
    }

    /// Buffers (BN running statistics) with their names.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.lock().buffers.clone()
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        self.lock().params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn create(&self, name: String, shape: &[usize], init: Init, buffer: bool) -> Result<Var> {
        let mut inner = self.lock();
        let taken = inner
            .params
            .iter()
            .chain(inner.buffers.iter())
            .any(|(n, _)| *n == name);
        if taken {
            candle_core::bail!("parameter {name} is created twice");
        }
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::FanIn(fan_in) => {
                let b = 1.0 / (fan_in.max(1) as f64).sqrt();
                (0..n)
                    .map(|_| inner.rng.random_range(-b..b) as f32)
                    .collect()
            }
            Init::Normal(std) => (0..n)
                .map(|_| {
                    // Box–Muller; two uniforms per value keeps the stream layout simple.
                    let u1: f64 = inner.rng.random_range(f64::EPSILON..1.0);
                    let u2: f64 = inner.rng.random::<f64>();
                    (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                })
                .collect(),
        };
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)?;
        let var = Var::from_tensor(&t)?;
        if buffer {
            inner.buffers.push((name, var.clone()));
        } else {
            inner.params.push((name, var.clone()));
        }
        Ok(var)
    }
}

/// A name prefix into a [`Store`].
#[derive(Clone)]
pub struct Scope {
    store: Store,
    prefix: String,
}

impl Scope {
    /// The sub-scope `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Scope {
            store: self.store.clone(),
            prefix,
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A trainable parameter `prefix.name`.
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        Ok(self
            .store
            .create(self.full(name), shape, init, false)?
            .as_tensor()
            .clone())
    }

    /// A buffer `prefix.name` (saved with the weights, never trained).
    pub fn buffer(&self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        self.store.create(self.full(name), shape, init, true)
    }

    pub fn device(&self) -> &Device {
        self.store.device()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// A conv weight [c_out, c_in / groups, k, k] with PyTorch's default initialisation.
pub fn conv_weight(
    s: &Scope,
    name: &str,
    c_out: usize,
    c_in_per_group: usize,
    k: usize,
) -> Result<Tensor> {
    s.param(
        name,
        &[c_out, c_in_per_group, k, k],
        Init::FanIn(c_in_per_group * k * k),
    )
}

/// Batch norm over NCHW channels: eps 1e-5, momentum 0.1, running statistics kept as
/// buffers (`running_mean`, `running_var`), optional affine `weight` and `bias`.
///
/// Training mode normalises with the batch's mean and biased variance
/// ([`batch_norm_train`]) and updates the running statistics with the unbiased variance, as
/// PyTorch does; evaluation mode uses the running statistics.
#[derive(Clone)]
pub struct BatchNorm {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    pub fn new(s: &Scope, c: usize, affine: bool) -> Result<BatchNorm> {
        let (weight, bias) = if affine {
            (
                Some(s.param("weight", &[c], Init::Const(1.0))?),
                Some(s.param("bias", &[c], Init::Const(0.0))?),
            )
        } else {
            (None, None)
        };
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: s.buffer("running_mean", &[c], Init::Const(0.0))?,
            running_var: s.buffer("running_var", &[c], Init::Const(1.0))?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Training mode (`train`) normalises with the batch's statistics and updates the running
    /// ones; evaluation mode normalises with the running statistics and is not
    /// differentiable ([`batch_norm_eval`]).
    ///
    /// # Shapes
    /// `x`: [N, C, H, W] → [N, C, H, W].
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, false)
    }

    /// [`BatchNorm::forward`] then a ReLU, as one op ([`batch_norm_relu_train`]): the
    /// autograd graph keeps the output only, not the normalised values as well.
    pub fn forward_relu(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, true)
    }

    fn forward_with(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        if !train {
            let (mean, var) = (self.running_mean.as_tensor(), self.running_var.as_tensor());
            return match relu {
                false => batch_norm_eval(x, mean, var, w, b, self.eps),
                true => batch_norm_relu_eval(x, mean, var, w, b, self.eps),
            };
        }
        let (y, mean, var) = match relu {
            false => batch_norm_train(x, w, b, self.eps)?,
            true => batch_norm_relu_train(x, w, b, self.eps)?,
        };
        self.update_running(x, &mean, &var)?;
        Ok(y)
    }

    /// `acc·sa + forward(z)·sb`, `acc = (tensor, sa)` and `sb` per-sample scales (a cell
    /// node's sum whose term ends in this BN, under drop path), in training as one op
    /// ([`kernels::batch_norm_add_train`]): the autograd graph keeps the sum, not the BN's output.
    pub fn forward_add(
        &self,
        z: &Tensor,
        train: bool,
        acc: &kernels::Term,
        sb: Option<&kernels::SampleScales>,
    ) -> Result<Tensor> {
        if !train {
            let y = self.forward(z, false)?;
            return kernels::scaled_sum(&[acc.clone(), (y, sb.cloned())]);
        }
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        let (y, mean, var) = kernels::batch_norm_add_train(z, w, b, self.eps, acc, sb)?;
        self.update_running(z, &mean, &var)?;
        Ok(y)
    }

    /// `running ← (1 − momentum)·running + momentum·batch` for the mean and the unbiased
    /// variance of the batch `x` (given its biased `var`); nothing for one value per channel.
    fn update_running(&self, x: &Tensor, mean: &Tensor, var: &Tensor) -> Result<()> {
        let n = (x.elem_count() / self.running_mean.dim(0)?) as f64;
        if n <= 1.0 {
            return Ok(());
        }
        let unbiased = &var.affine(n / (n - 1.0), 0.0)?;
        let m = self.momentum;
        for (running, batch) in [(&self.running_mean, mean), (&self.running_var, unbiased)] {
            let next = running
                .as_tensor()
                .affine(1.0 - m, 0.0)?
                .add(&batch.affine(m, 0.0)?)?;
            running.set(&next)?;
        }
        Ok(())
    }
}

/// The f32 dtype every parameter uses.
pub const DTYPE: DType = DType::F32;

/// Channels and spatial size of a feature map (batch excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    pub c: u64,
    pub h: u64,
    pub w: u64,
}

impl Shape {
    /// Elements of one image's map, saturating.
    pub fn elems(&self) -> u64 {
        self.c.saturating_mul(self.h).saturating_mul(self.w)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_hierarchical_and_unique() {
        let store = Store::new(&Device::Cpu, 0);
        let s = store.root().pp("cells").pp(3).pp("edges").pp(1);
        conv_weight(&s.pp("sep_conv_3x3").pp("dw1"), "weight", 16, 1, 3).unwrap();
        assert_eq!(
            store.params()[0].0,
            "cells.3.edges.1.sep_conv_3x3.dw1.weight"
        );
        assert!(conv_weight(&s.pp("sep_conv_3x3").pp("dw1"), "weight", 16, 1, 3).is_err());
    }

    #[test]
    fn same_seed_same_values() {
        let a = Store::new(&Device::Cpu, 7);
        let b = Store::new(&Device::Cpu, 7);
        let x = conv_weight(&a.root(), "w", 4, 4, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let y = conv_weight(&b.root(), "w", 4, 4, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(x, y);
        let bound = 1.0 / (36f32).sqrt();
        assert!(x.iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn batch_norm_matches_hand_computation() {
        let store = Store::new(&Device::Cpu, 0);
        let bn = BatchNorm::new(&store.root().pp("bn"), 1, true).unwrap();
        // One channel, values 1..4: mean 2.5, biased var 1.25, unbiased 5/3.
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)
            .unwrap()
            .reshape((4, 1, 1, 1))
            .unwrap();
        let y = bn
            .forward(&x, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let sd = (1.25f32 + 1e-5).sqrt();
        for (got, v) in y.iter().zip([1f32, 2., 3., 4.]) {
            assert!((got - (v - 2.5) / sd).abs() < 1e-6);
        }
        let rm = bn.running_mean.as_tensor().to_vec1::<f32>().unwrap()[0];
        let rv = bn.running_var.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((rm - 0.25).abs() < 1e-6, "{rm}");
        assert!((rv - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "{rv}");
        // Evaluation uses the running statistics.
        let e = bn
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((e[0] - (1.0 - rm) / (rv + 1e-5).sqrt()).abs() < 1e-5);
        assert_eq!(store.buffers().len(), 2);
        assert_eq!(store.param_count(), 2);
    }
}
