//! The fixed blocks around cells, shared by the weight-sharing network ([`crate::nets::supernet`])
//! and the final network ([`crate::nets::model`]): the conv-BN stem, cell-input preprocessing,
//! NAS-Bench-201's residual block, the classifier head and DARTS's auxiliary head, and the
//! tensor steps of a cell walk (node sums, the output concatenation).
//!
//! Every block takes its parameters from a [`Scope`]; the names below are relative to it and
//! are the contract with checkpoints and ONNX initializers.

use candle_core::{Result, Tensor};

use crate::kernels;
use crate::nn::{BatchNorm, Init, Scope, conv_weight};
use crate::onnx::{Conv, Graph};
use crate::ops::{FactorizedReduce, ReluConvBnModule, Shape};
use crate::space::Pre;
use crate::spec::space::Act;

/// Conv k×k (stride, same padding, no bias), BN, then `act`. Parameters `conv.weight`,
/// `bn.*`.
#[derive(Clone)]
pub struct ConvBn {
    pub conv: Tensor,
    pub bn: BatchNorm,
    pub stride: usize,
    pub padding: usize,
    pub act: Act,
}

impl ConvBn {
    pub fn new(
        s: &Scope,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        act: Act,
    ) -> Result<ConvBn> {
        Ok(ConvBn {
            conv: conv_weight(&s.pp("conv"), "weight", c_out, c_in, kernel)?,
            bn: BatchNorm::new(&s.pp("bn"), c_out, true)?,
            stride,
            padding: (kernel - 1) / 2,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = kernels::conv2d(x, &self.conv, self.stride, self.padding, 1)?;
        match self.act {
            Act::None => self.bn.forward(&y, train),
            Act::Relu => self.bn.forward_relu(&y, train),
            Act::Relu6 => self.bn.forward(&y, train)?.clamp(0.0, 6.0),
        }
    }

    /// Conv with BN (folded or a BatchNormalization node), then Relu, Clip(0, 6) or nothing.
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let y = g.scoped("conv", |g| {
            g.conv_bn(
                x,
                &self.conv,
                &self.bn,
                Conv::new(self.stride, self.padding),
            )
        })?;
        Ok(match self.act {
            Act::None => y,
            Act::Relu => g.relu(&y),
            Act::Relu6 => g.relu6(&y),
        })
    }
}

/// How one cell input is brought to the cell's width: ReLU-conv 1×1-BN (parameters under
/// `pre<k>.conv.*`, `pre<k>.bn.*`) or a factorized reduce (`pre<k>.conv1.*`, ...).
#[derive(Clone)]
pub enum Preprocess {
    Conv(ReluConvBnModule),
    Reduce(FactorizedReduce),
}

impl Preprocess {
    /// The block for `pre` from `c_in` to `width` channels (`None` for [`Pre::None`]).
    pub fn new(
        s: &Scope,
        pre: Pre,
        c_in: usize,
        width: usize,
        affine: bool,
    ) -> Result<Option<Preprocess>> {
        Ok(match pre {
            Pre::None => None,
            Pre::ReluConvBn => Some(Preprocess::Conv(ReluConvBnModule::new(
                s, c_in, width, 1, 1, affine,
            )?)),
            Pre::FactorizedReduce => Some(Preprocess::Reduce(FactorizedReduce::new(
                s, c_in, width, affine,
            )?)),
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_after_relu(&kernels::relu(x)?, train)
    }

    /// [`Preprocess::forward`] given `relu(x)` (both blocks begin with a ReLU).
    pub fn forward_after_relu(&self, r: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Preprocess::Conv(m) => m.forward_after_relu(r, train),
            Preprocess::Reduce(m) => m.forward_after_relu(r, train),
        }
    }

    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        match self {
            Preprocess::Conv(m) => m.lower(g, x),
            Preprocess::Reduce(m) => m.lower(g, x),
        }
    }
}

/// A cell's inputs, each through its preprocessing (`None`: as is): the cell's input states.
pub fn preprocess_inputs(
    pre: &[Option<Preprocess>],
    inputs: Vec<Tensor>,
    train: bool,
) -> Result<Vec<Tensor>> {
    inputs
        .into_iter()
        .zip(pre)
        .map(|(x, p)| match p {
            None => Ok(x),
            Some(m) => m.forward(&x, train),
        })
        .collect()
}

/// Adds an edge's output to a node's running sum (`None` until the first edge).
pub fn accumulate(sum: &mut Option<Tensor>, y: Tensor) -> Result<()> {
    *sum = Some(match sum.take() {
        None => y,
        Some(s) => (s + y)?,
    });
    Ok(())
}

/// A cell's output from the values of its states: the `outputs` states concatenated along
/// the channels (the one state as is when there is one).
pub fn concat_states(states: &[Tensor], outputs: &[usize]) -> Result<Tensor> {
    let outs: Vec<Tensor> = outputs.iter().map(|&s| states[s].clone()).collect();
    if outs.len() == 1 {
        Ok(outs[0].clone())
    } else {
        Tensor::cat(&outs, 1)
    }
}

/// NAS-Bench-201's residual block: ReLU-conv 3×3(stride)-BN (`conv_a`), ReLU-conv 3×3-BN
/// (`conv_b`), plus a shortcut: avg pool 2×2 stride 2 then conv 1×1 without BN
/// (`shortcut.weight`) at stride 2, ReLU-conv 1×1-BN (`shortcut.*`) when only the channels
/// change, else the input.
#[derive(Clone)]
pub struct Residual {
    pub a: ReluConvBnModule,
    pub b: ReluConvBnModule,
    pub shortcut: Shortcut,
}

#[derive(Clone)]
pub enum Shortcut {
    None,
    PoolConv(Tensor),
    Conv(ReluConvBnModule),
}

impl Residual {
    pub fn new(s: &Scope, c_in: usize, c_out: usize, stride: usize) -> Result<Residual> {
        let shortcut = if stride == 2 {
            Shortcut::PoolConv(conv_weight(&s.pp("shortcut"), "weight", c_out, c_in, 1)?)
        } else if c_in != c_out {
            Shortcut::Conv(ReluConvBnModule::new(
                &s.pp("shortcut"),
                c_in,
                c_out,
                1,
                1,
                true,
            )?)
        } else {
            Shortcut::None
        };
        Ok(Residual {
            a: ReluConvBnModule::new(&s.pp("conv_a"), c_in, c_out, 3, stride, true)?,
            b: ReluConvBnModule::new(&s.pp("conv_b"), c_out, c_out, 3, 1, true)?,
            shortcut,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.b.forward(&self.a.forward(x, train)?, train)?;
        let s = match &self.shortcut {
            Shortcut::None => x.clone(),
            Shortcut::PoolConv(w) => {
                kernels::conv2d(&kernels::avg_pool2d(x, 2, 2, 0)?, w, 1, 0, 1)?
            }
            Shortcut::Conv(m) => m.forward(x, train)?,
        };
        y + s
    }

    /// `conv_a` → `conv_b`, Add the shortcut: the input, AveragePool 2×2/2 → Conv 1×1, or
    /// Relu → Conv 1×1 with BN.
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let a = g.scoped("conv_a", |g| self.a.lower(g, x))?;
        let y = g.scoped("conv_b", |g| self.b.lower(g, &a))?;
        let s = g.scoped("shortcut", |g| match &self.shortcut {
            Shortcut::None => Ok(x.to_string()),
            Shortcut::PoolConv(w) => {
                let p = g.pool(x, false, 2, 2, 0);
                g.conv(&p, w, Conv::new(1, 0))
            }
            Shortcut::Conv(m) => m.lower(g, x),
        })?;
        Ok(g.add(&y, &s))
    }
}

/// A linear layer with bias, PyTorch's default initialisation. Parameters `weight`
/// [c_out, c_in] and `bias` [c_out].
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(s: &Scope, c_in: usize, c_out: usize) -> Result<Linear> {
        Ok(Linear {
            weight: s.param("weight", &[c_out, c_in], Init::FanIn(c_in))?,
            bias: s.param("bias", &[c_out], Init::FanIn(c_in))?,
        })
    }

    /// # Shapes
    /// [N, c_in] → [N, c_out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }

    /// Global average pool, then the linear layer: [N, C, H, W] → [N, c_out].
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(&x.mean((2, 3))?)
    }

    /// Gemm (`transB = 1`): [N, c_in] → [N, c_out].
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        g.gemm(x, &self.weight, &self.bias)
    }

    /// GlobalAveragePool → Flatten → Gemm: [N, C, H, W] → [N, c_out].
    pub fn lower_pooled(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let p = g.global_avg_pool(x);
        self.lower(g, &p)
    }
}

/// Hidden widths of DARTS's CIFAR auxiliary head.
pub const AUX_HIDDEN: [usize; 2] = [128, 768];

/// DARTS's CIFAR auxiliary head: ReLU, avg pool 5×5 stride 3 (no padding), conv 1×1
/// C→128 (`conv1.weight`), BN (`bn1.*`), ReLU, conv 2×2 128→768 (`conv2.weight`), BN
/// (`bn2.*`), ReLU, linear 768→classes (`classifier.*`). Made for an 8×8 input; see
/// [`aux_check`].
#[derive(Clone)]
pub struct AuxHead {
    pub conv1: Tensor,
    pub bn1: BatchNorm,
    pub conv2: Tensor,
    pub bn2: BatchNorm,
    pub classifier: Linear,
}

/// The input sizes the auxiliary head accepts: the 5×5/3 pool must leave exactly 2×2 for the
/// 2×2 conv to give one 768-vector, as in DARTS (8×8 input at CIFAR size).
pub fn aux_check(input: Shape) -> std::result::Result<(), String> {
    let ok = |s: u64| (8..=10).contains(&s);
    if ok(input.h) && ok(input.w) {
        Ok(())
    } else {
        Err(format!(
            "DARTS's auxiliary head needs an 8x8 to 10x10 input (avg pool 5x5 stride 3 to 2x2, then conv 2x2), \
             but the second reduction cell outputs {}x{}",
            input.h, input.w
        ))
    }
}

/// Parameters of the auxiliary head on `c` channels with `classes` outputs.
pub fn aux_params(c: u64, classes: u64) -> u64 {
    let [h1, h2] = AUX_HIDDEN.map(|v| v as u64);
    c * h1 + 2 * h1 + h1 * h2 * 4 + 2 * h2 + h2 * classes + classes
}

impl AuxHead {
    pub fn new(s: &Scope, c_in: usize, classes: usize) -> Result<AuxHead> {
        let [h1, h2] = AUX_HIDDEN;
        Ok(AuxHead {
            conv1: conv_weight(&s.pp("conv1"), "weight", h1, c_in, 1)?,
            bn1: BatchNorm::new(&s.pp("bn1"), h1, true)?,
            conv2: conv_weight(&s.pp("conv2"), "weight", h2, h1, 2)?,
            bn2: BatchNorm::new(&s.pp("bn2"), h2, true)?,
            classifier: Linear::new(&s.pp("classifier"), h2, classes)?,
        })
    }

    /// # Shapes
    /// [N, C, 8..=10, 8..=10] → [N, classes].
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_after_relu(&kernels::relu(x)?, train)
    }

    /// [`AuxHead::forward`] given `relu(x)`.
    pub fn forward_after_relu(&self, r: &Tensor, train: bool) -> Result<Tensor> {
        let x = kernels::avg_pool2d(r, 5, 3, 0)?;
        let x = (self.bn1).forward_relu(&kernels::conv2d(&x, &self.conv1, 1, 0, 1)?, train)?;
        let x = (self.bn2).forward_relu(&kernels::conv2d(&x, &self.conv2, 1, 0, 1)?, train)?;
        self.classifier.forward(&x.flatten_from(1)?)
    }
}
