//! The op vocabulary: the one [`Op`] enum and what each op does to shapes and counts.
//!
//! Each op family lives in one file that owns everything about it: its parameter checks,
//! shape inference and parameter / multiply-add counts ([`Family`]), its Candle forward and
//! ONNX lowering ([`FamilyModule`]). This file dispatches to them through one registry, the
//! `families!` invocation: one line per [`Op`] variant generates every match over [`Op`]
//! and [`OpModule`]. Adding an op family is its file, its variant in `spec::space::Op` (the
//! RON vocabulary), and its registry line. The fixed blocks that wrap cells (stems, cell
//! preprocessing, residual blocks, the classifier head) are counted by helpers in the same
//! family files.
//!
//! Conventions (those of the DARTS and NAS-Bench-201 papers): parameters are every trainable
//! tensor, BN affine weights included; multiply-adds count convolutions and linear layers
//! only. Convolutions have no bias; "same" padding is `dilation * (kernel - 1) / 2`.

mod conv;
mod identity;
mod inverted_residual;
mod pool;
pub mod zero;

use candle_core::{Result as CandleResult, Tensor};

pub use crate::nn::Shape;
use crate::nn::{BatchNorm, Scope};
use crate::onnx::Graph;
pub use crate::spec::space::Op;

pub use conv::{DwPwBn, ReluConvBnModule, SepConvModule, conv_bn_cost, relu_conv_bn_cost};
pub use identity::{FactorizedReduce, IdentityModule, factorized_reduce_cost};
pub use inverted_residual::InvertedResidualModule;
pub use inverted_residual::inverted_residual_hidden;
pub use pool::PoolModule;
pub use zero::ZeroModule;

/// A parameter-free, deterministic op, as far as its output goes: two ops with equal `Pure`
/// values compute the same function of their input, so the edges of a cell that apply them
/// to one state can share one output ([`OpModule::pure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pure {
    Pool {
        max: bool,
        kernel: usize,
        stride: usize,
    },
}

/// How batch norm is built where an op has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnMode {
    /// BN has learnable scale and shift (2·C parameters).
    pub affine: bool,
    /// A pool is followed by BN(C, affine = false), as inside DARTS's mixed ops.
    pub pool_bn: bool,
}

impl BnMode {
    /// The discrete (retrained) network: affine BN everywhere, no BN after pools.
    pub const FINAL: BnMode = BnMode {
        affine: true,
        pool_bn: false,
    };

    /// Parameters of a BN over `c` channels.
    pub fn params(self, c: u64) -> u64 {
        if self.affine { c.saturating_mul(2) } else { 0 }
    }
}

/// Parameter, multiply-add and activation counts. Adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost {
    pub params: u64,
    pub macs: u64,
    /// Elements per image of the tensors a training step's forward pass creates and keeps
    /// for the backward pass (inputs of ReLUs, convolution and BN outputs, BN's normalized
    /// values): what activation memory grows with. An estimate, calibrated against measured
    /// peaks in `crate::space::memory`.
    pub acts: u64,
}

impl Cost {
    /// A cost of `params` parameters, `macs` multiply-adds and `acts` activation elements.
    pub fn new(params: u64, macs: u64, acts: u64) -> Cost {
        Cost { params, macs, acts }
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            params: self.params.saturating_add(o.params),
            macs: self.macs.saturating_add(o.macs),
            acts: self.acts.saturating_add(o.acts),
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

/// Where an op is applied: its input, output channels, stride and BN mode.
#[derive(Debug, Clone, Copy)]
pub struct OpCtx {
    pub input: Shape,
    pub c_out: u64,
    pub stride: u32,
    pub bn: BnMode,
}

/// What applying an op gives: the output shape and its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub output: Shape,
    pub cost: Cost,
}

impl Op {
    /// One instance of each op family with the parameters the shipped spaces use; drives the
    /// per-op tests (shape, gradient, and later Candle/ONNX parity).
    pub const ALL: &'static [Op] = &[
        Op::Zero,
        Op::Identity,
        Op::MaxPool { kernel: 3 },
        Op::AvgPool { kernel: 3 },
        Op::SepConv { kernel: 3 },
        Op::SepConv { kernel: 5 },
        Op::DilConv {
            kernel: 3,
            dilation: 2,
        },
        Op::DilConv {
            kernel: 5,
            dilation: 2,
        },
        Op::ReluConvBn { kernel: 1 },
        Op::ReluConvBn { kernel: 3 },
        Op::InvertedResidual {
            kernel: 3,
            expansion: 6,
        },
    ];

    /// The op is the identity map at stride 1 with equal channels (a skippable layer).
    pub fn is_identity(&self) -> bool {
        matches!(self, Op::Identity)
    }
}

/// One op family: what an op of a space's `ops` list does, given the fields of its [`Op`]
/// variant. Implemented in the family's file, next to its [`FamilyModule`]; the
/// `families!` registry below dispatches [`Op`] and [`OpModule`] to it.
pub trait Family {
    /// What the op builds into (an [`OpModule`] variant holds it).
    type Module: FamilyModule + Clone;

    /// Checks the op's own parameters (kernel sizes and the like), independent of where it
    /// is used. The message names the field.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// The output shape and cost at `ctx`, whose stride is already known to be 1 or 2, or
    /// why the op cannot be used there.
    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String>;

    /// Builds the op mapping `c_in` to `c_out` channels at `stride`, its parameters under
    /// scope `s`; the combination has passed [`Family::apply`].
    fn build(
        &self,
        s: &Scope,
        c_in: usize,
        c_out: usize,
        stride: usize,
        bn: BnMode,
    ) -> CandleResult<Self::Module>;
}

/// A built op of one family: its Candle forward and ONNX lowering. See the methods of the
/// same names on [`OpModule`].
pub trait FamilyModule {
    /// # Shapes
    /// [N, C_in, H, W] → [N, C_out, H', W'] as [`Family::apply`] says.
    fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor>;

    /// The op begins with a ReLU of its input.
    fn starts_with_relu(&self) -> bool {
        false
    }

    /// [`FamilyModule::forward`] given `r = relu(x)`; errors unless the op
    /// [starts with a ReLU](FamilyModule::starts_with_relu).
    fn forward_after_relu(&self, r: &Tensor, train: bool) -> CandleResult<Tensor> {
        let _ = (r, train);
        no_leading_relu()
    }

    /// For an op that starts with a ReLU and ends in a batch norm: given `r = relu(x)`, the
    /// value that BN normalises and the BN, so that the caller can run the BN fused with
    /// what follows ([`crate::nn::BatchNorm::forward_add`]); `None` for any other op.
    fn forward_after_relu_until_bn(
        &self,
        r: &Tensor,
        train: bool,
    ) -> CandleResult<Option<(Tensor, &BatchNorm)>> {
        let _ = (r, train);
        Ok(None)
    }

    /// The op is the identity (drop path skips it).
    fn is_identity(&self) -> bool {
        false
    }

    /// `Some` when the op has no parameters and no state, so that its output is a function
    /// of its input and the returned value alone.
    fn pure(&self) -> Option<Pure> {
        None
    }

    /// The ONNX lowering of the forward in evaluation mode, reading value `x`: the output
    /// value, or `None` when the op contributes nothing.
    fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>>;
}

/// The error of [`FamilyModule::forward_after_relu`] for an op that does not start with a
/// ReLU.
pub(crate) fn no_leading_relu<T>() -> CandleResult<T> {
    candle_core::bail!("forward_after_relu: the op does not start with a ReLU")
}

/// Checks that `kernel` is odd (same padding needs it).
pub(crate) fn odd_kernel(kernel: u32) -> Result<(), String> {
    if kernel == 0 || kernel.is_multiple_of(2) {
        Err(format!(
            "kernel must be an odd number ≥ 1 for same padding, got {kernel}"
        ))
    } else {
        Ok(())
    }
}

/// The registry: one line per [`Op`] variant, `Variant { fields } => family value`, the
/// value built from the variant's fields. It generates [`OpModule`] (one variant per [`Op`]
/// variant, holding the family's module) and every match over [`Op`] and [`OpModule`]:
/// [`Op::check`], [`Op::apply`], [`Op::describe`], [`Op::build`] and the [`OpModule`]
/// methods. The matches are exhaustive, so an [`Op`] variant without its line does not
/// compile.
macro_rules! families {
    ($($variant:ident $({ $($field:ident),+ })? => $module:ident :: $family:ident { $($init:tt)* }),+ $(,)?) => {
        impl Op {
            /// Checks the op's own parameters (kernel sizes and the like), independent of
            /// where it is used. The message names the field.
            pub fn check(&self) -> Result<(), String> {
                match *self {
                    $(Op::$variant $({ $($field),+ })? => {
                        Family::check(&$module::$family { $($init)* })
                    })+
                }
            }

            /// Applies the op at `ctx`: the output shape and the cost, or why the op cannot
            /// be used there (unsupported channel change, odd size for a factorized reduce,
            /// input too small).
            pub fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
                if ctx.stride != 1 && ctx.stride != 2 {
                    return Err(format!("stride must be 1 or 2, got {}", ctx.stride));
                }
                match *self {
                    $(Op::$variant $({ $($field),+ })? => {
                        Family::apply(&$module::$family { $($init)* }, ctx)
                    })+
                }
            }

            /// A short human description, the op as written in RON, e.g.
            /// `SepConv(kernel: 3)`.
            pub fn describe(&self) -> String {
                match *self {
                    $(Op::$variant $({ $($field),+ })? => {
                        #[allow(unused_mut)]
                        let mut d = String::from(stringify!($variant));
                        $(
                            let fields = [$(format!("{}: {}", stringify!($field), $field)),+];
                            d = format!("{d}({})", fields.join(", "));
                        )?
                        d
                    })+
                }
            }

            /// Builds the op mapping `c_in` to `c_out` channels at `stride`, its parameters
            /// under scope `s`. The combination must have passed [`Op::apply`] (the space
            /// compiler checks every place an op is used).
            pub fn build(
                &self,
                s: &Scope,
                c_in: usize,
                c_out: usize,
                stride: usize,
                bn: BnMode,
            ) -> CandleResult<OpModule> {
                Ok(match *self {
                    $(Op::$variant $({ $($field),+ })? => OpModule::$variant(Family::build(
                        &$module::$family { $($init)* },
                        s,
                        c_in,
                        c_out,
                        stride,
                        bn,
                    )?),)+
                })
            }
        }

        /// An op built with its parameters: what runs on an edge. One variant per [`Op`]
        /// variant, holding its family's module.
        #[derive(Clone)]
        pub enum OpModule {
            $($variant(<$module::$family as Family>::Module),)+
        }

        impl OpModule {
            /// # Shapes
            /// [N, C_in, H, W] → [N, C_out, H', W'] as [`Op::apply`] says.
            pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
                match self {
                    $(OpModule::$variant(m) => FamilyModule::forward(m, x, train),)+
                }
            }

            /// The op begins with a ReLU of its input (FactorizedReduce, SepConv, DilConv,
            /// ReluConvBn): ops reading one input can share `relu(x)` through
            /// [`OpModule::forward_after_relu`].
            pub fn starts_with_relu(&self) -> bool {
                match self {
                    $(OpModule::$variant(m) => FamilyModule::starts_with_relu(m),)+
                }
            }

            /// [`OpModule::forward`] given `r = relu(x)`, for an op that
            /// [starts with a ReLU](OpModule::starts_with_relu); any other op errors.
            pub fn forward_after_relu(&self, r: &Tensor, train: bool) -> CandleResult<Tensor> {
                match self {
                    $(OpModule::$variant(m) => FamilyModule::forward_after_relu(m, r, train),)+
                }
            }

            /// See [`FamilyModule::forward_after_relu_until_bn`].
            pub fn forward_after_relu_until_bn(
                &self,
                r: &Tensor,
                train: bool,
            ) -> CandleResult<Option<(Tensor, &BatchNorm)>> {
                match self {
                    $(OpModule::$variant(m) => FamilyModule::forward_after_relu_until_bn(m, r, train),)+
                }
            }

            /// The op is the identity (drop path skips it).
            pub fn is_identity(&self) -> bool {
                match self {
                    $(OpModule::$variant(m) => FamilyModule::is_identity(m),)+
                }
            }

            /// See [`FamilyModule::pure`].
            pub fn pure(&self) -> Option<Pure> {
                match self {
                    $(OpModule::$variant(m) => FamilyModule::pure(m),)+
                }
            }

            /// The ONNX lowering of [`OpModule::forward`] in evaluation mode, reading value
            /// `x`: the output value, `None` for `Zero` (it contributes nothing;
            /// [`zero::lower`] gives the tensor where one is needed). The identity emits no
            /// node and returns `x`.
            pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>> {
                match self {
                    $(OpModule::$variant(m) => FamilyModule::lower(m, g, x),)+
                }
            }
        }
    };
}

// The registry. Adding an op family: its file (the `Family` and `FamilyModule` impls), its
// variant in `spec::space::Op` (the RON vocabulary), and its line here; an instance in
// `Op::ALL` puts it under the per-op tests.
families! {
    Zero => zero::Zero {},
    Identity => identity::Identity {},
    MaxPool { kernel } => pool::Pool { max: true, kernel },
    AvgPool { kernel } => pool::Pool { max: false, kernel },
    SepConv { kernel } => conv::SepConv { kernel },
    DilConv { kernel, dilation } => conv::DilConv { kernel, dilation },
    ReluConvBn { kernel } => conv::ReluConvBn { kernel },
    InvertedResidual { kernel, expansion } => inverted_residual::InvertedResidual { kernel, expansion },
}

/// Output size of a convolution or pooling window along one axis, or an error when the
/// (padded) input is smaller than the window.
pub fn window_out(
    size: u64,
    kernel: u32,
    stride: u32,
    pad: u64,
    dilation: u32,
) -> Result<u64, String> {
    let reach = dilation as u64 * (kernel as u64 - 1) + 1;
    let padded = size.saturating_add(2 * pad);
    if padded < reach {
        return Err(format!(
            "input of size {size} is smaller than the {kernel}x{kernel} window (dilation {dilation}, padding {pad})"
        ));
    }
    Ok((padded - reach) / stride as u64 + 1)
}

/// The largest kernel allowed on any map, however small: the largest in common use, so that
/// one space serves small and large inputs.
pub const ANY_MAP_KERNEL: u64 = 7;

/// Output shape of a same-padded window op with `c_out` channels. A kernel wider than
/// [`ANY_MAP_KERNEL`] reaches at most the map's size from its centre (at most 2·size + 1
/// wide): farther taps would only ever multiply padding, and weights unbounded by the map
/// grow without bound.
pub(crate) fn same_window(
    input: Shape,
    c_out: u64,
    kernel: u32,
    stride: u32,
    dilation: u32,
) -> Result<Shape, String> {
    let most = input
        .h
        .min(input.w)
        .saturating_mul(2)
        .saturating_add(1)
        .max(ANY_MAP_KERNEL);
    if kernel as u64 > most {
        return Err(format!(
            "the {kernel}x{kernel} kernel is too large for the {}x{} feature map it meets here: \
             taps farther from the centre than the map's size only ever see padding; at most \
             {most}x{most} here",
            input.h, input.w,
        ));
    }
    let pad = dilation as u64 * (kernel as u64 - 1) / 2;
    Ok(Shape {
        c: c_out,
        h: window_out(input.h, kernel, stride, pad, dilation)?,
        w: window_out(input.w, kernel, stride, pad, dilation)?,
    })
}

/// The product of `xs`, saturating at `u64::MAX`: counts never wrap or panic, however large
/// the declared sizes.
pub fn prod(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |a, &b| a.saturating_mul(b))
}

/// Multiply-adds of a convolution producing `out` with `c_in / groups` inputs per output
/// channel and a k×k window.
pub(crate) fn conv_macs(out: Shape, c_in_per_group: u64, kernel: u32) -> u64 {
    prod(&[
        out.c,
        out.h,
        out.w,
        c_in_per_group,
        kernel as u64,
        kernel as u64,
    ])
}

/// A linear layer `c_in → c_out` with bias.
pub fn linear_cost(c_in: u64, c_out: u64) -> Cost {
    Cost {
        params: prod(&[c_in, c_out]).saturating_add(c_out),
        macs: prod(&[c_in, c_out]),
        acts: c_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_reach_at_most_the_map() {
        let at = ctx(4, 4, 1, true);
        for op in [
            Op::SepConv { kernel: 65 },
            Op::MaxPool { kernel: 65 },
            Op::DilConv {
                kernel: 65,
                dilation: 2,
            },
        ] {
            assert!(op.apply(&at).is_ok(), "{op:?}");
        }
        for kernel in [67, 1001, 65537, u32::MAX] {
            for op in [
                Op::SepConv { kernel },
                Op::ReluConvBn { kernel },
                Op::AvgPool { kernel },
                Op::InvertedResidual {
                    kernel,
                    expansion: 6,
                },
            ] {
                let e = op.apply(&at).unwrap_err();
                assert!(e.contains("too large for the 32x32 feature map"), "{e}");
                assert!(e.contains("at most 65x65"), "{e}");
            }
        }
        let tiny = OpCtx {
            input: Shape { c: 4, h: 1, w: 1 },
            ..at
        };
        assert!(Op::SepConv { kernel: 7 }.apply(&tiny).is_ok());
        let e = Op::SepConv { kernel: 9 }.apply(&tiny).unwrap_err();
        assert!(e.contains("at most 7x7"), "{e}");
    }

    fn ctx(c: u64, c_out: u64, stride: u32, affine: bool) -> OpCtx {
        OpCtx {
            input: Shape { c, h: 32, w: 32 },
            c_out,
            stride,
            bn: BnMode {
                affine,
                pool_bn: true,
            },
        }
    }

    /// The per-op parameter counts of darts.md §1 at C = 16 (affine / non-affine BN).
    #[test]
    fn darts_op_params_at_c16() {
        let cases = [
            (Op::SepConv { kernel: 3 }, 1, 864, 800),
            (Op::SepConv { kernel: 5 }, 1, 1376, 1312),
            (
                Op::DilConv {
                    kernel: 3,
                    dilation: 2,
                },
                1,
                432,
                400,
            ),
            (
                Op::DilConv {
                    kernel: 5,
                    dilation: 2,
                },
                1,
                688,
                656,
            ),
            (Op::Identity, 2, 288, 256),
            (Op::Identity, 1, 0, 0),
            (Op::MaxPool { kernel: 3 }, 2, 0, 0),
            (Op::AvgPool { kernel: 3 }, 1, 0, 0),
            (Op::Zero, 2, 0, 0),
        ];
        for (op, stride, affine, plain) in cases {
            let a = op.apply(&ctx(16, 16, stride, true)).unwrap();
            let p = op.apply(&ctx(16, 16, stride, false)).unwrap();
            assert_eq!(
                (a.cost.params, p.cost.params),
                (affine, plain),
                "{op:?} stride {stride}"
            );
            let expect_h = if stride == 2 { 16 } else { 32 };
            assert_eq!(
                a.output,
                Shape {
                    c: 16,
                    h: expect_h,
                    w: expect_h
                },
                "{op:?}"
            );
        }
    }

    #[test]
    fn every_op_keeps_odd_sizes_consistent_except_factorized_reduce() {
        for op in Op::ALL {
            let c = OpCtx {
                input: Shape { c: 8, h: 7, w: 7 },
                c_out: 8,
                stride: 2,
                bn: BnMode::FINAL,
            };
            match op.apply(&c) {
                Ok(a) => assert_eq!((a.output.h, a.output.w), (4, 4), "{op:?}"),
                Err(e) => {
                    assert_eq!(*op, Op::Identity, "{op:?}: {e}");
                    assert!(e.contains("even spatial size"), "{e}");
                }
            }
        }
    }

    #[test]
    fn pools_and_identity_refuse_channel_changes() {
        for op in [
            Op::MaxPool { kernel: 3 },
            Op::AvgPool { kernel: 3 },
            Op::Identity,
        ] {
            let e = op.apply(&ctx(16, 32, 1, true)).unwrap_err();
            assert!(e.contains("16") && e.contains("32"), "{op:?}: {e}");
        }
    }

    #[test]
    fn op_parameter_checks() {
        assert!(
            Op::SepConv { kernel: 4 }
                .check()
                .unwrap_err()
                .contains("odd")
        );
        assert!(
            Op::DilConv {
                kernel: 3,
                dilation: 0
            }
            .check()
            .is_err()
        );
        assert!(
            Op::InvertedResidual {
                kernel: 3,
                expansion: 0
            }
            .check()
            .is_err()
        );
        for op in Op::ALL {
            op.check().unwrap();
        }
    }

    #[test]
    fn describe_writes_the_op_as_in_ron() {
        let got: Vec<String> = Op::ALL.iter().map(Op::describe).collect();
        assert_eq!(
            got,
            [
                "Zero",
                "Identity",
                "MaxPool(kernel: 3)",
                "AvgPool(kernel: 3)",
                "SepConv(kernel: 3)",
                "SepConv(kernel: 5)",
                "DilConv(kernel: 3, dilation: 2)",
                "DilConv(kernel: 5, dilation: 2)",
                "ReluConvBn(kernel: 1)",
                "ReluConvBn(kernel: 3)",
                "InvertedResidual(kernel: 3, expansion: 6)",
            ]
        );
    }

    #[test]
    fn window_too_small_is_an_error() {
        let e = window_out(1, 5, 1, 0, 1).unwrap_err();
        assert!(e.contains("smaller"), "{e}");
        assert_eq!(window_out(32, 3, 2, 1, 1).unwrap(), 16);
        assert_eq!(window_out(32, 3, 1, 2, 2).unwrap(), 32);
    }

    /// Every op's gradients (input and parameters) against central finite differences in
    /// f64, at stride 1 and 2, BN in training mode with affine parameters, pools followed by
    /// BN as in the supernet: with the CPU kernels, and with the compositions that run off
    /// the CPU.
    #[test]
    fn every_op_gradient_matches_finite_differences() {
        op_gradients_match_finite_differences();
        crate::kernels::with_compositions(op_gradients_match_finite_differences);
    }

    fn op_gradients_match_finite_differences() {
        use crate::nn::Store;
        use candle_core::{DType, Device, Tensor, Var};
        let dev = Device::Cpu;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move |n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect()
        };
        for op in Op::ALL {
            for stride in [1usize, 2] {
                let (c_in, c_out) = (4usize, 4usize);
                let store = Store::with_dtype(&dev, DType::F64, 3);
                let bn = BnMode {
                    affine: true,
                    pool_bn: true,
                };
                let m = op.build(&store.root(), c_in, c_out, stride, bn).unwrap();
                let x = Var::from_tensor(
                    &Tensor::from_vec(rand(2 * c_in * 36), (2, c_in, 6, 6), &dev).unwrap(),
                )
                .unwrap();
                let y0 = m.forward(x.as_tensor(), true).unwrap();
                let r = Tensor::from_vec(rand(y0.elem_count()), y0.shape(), &dev).unwrap();
                let loss = |m: &OpModule| -> f64 {
                    (m.forward(x.as_tensor(), true).unwrap() * &r)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let grads = (y0 * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let mut vars: Vec<(String, Var)> = vec![("x".into(), x.clone())];
                vars.extend(store.params());
                for (name, v) in vars {
                    let g = grads
                        .get(v.as_tensor())
                        .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
                    let base = v
                        .as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap();
                    let n = base.len();
                    for k in [0, n / 3, n / 2, n - 1] {
                        let eps = 1e-6;
                        let at = |d: f64| {
                            let mut b = base.clone();
                            b[k] += d;
                            v.set(&Tensor::from_vec(b, v.shape(), &dev).unwrap())
                                .unwrap();
                            loss(&m)
                        };
                        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                        at(0.0);
                        let ad = g.as_ref().map_or(0.0, |g| g[k]);
                        assert!(
                            (fd - ad).abs() <= 1e-5 * (1.0 + fd.abs()),
                            "{op:?} stride {stride}, d/d{name}[{k}]: autograd {ad}, finite difference {fd}"
                        );
                    }
                }
            }
        }
    }

    /// `forward_after_relu(relu(x))` is `forward(x)` for every op that starts with a ReLU,
    /// bit for bit, and the other ops say they don't.
    #[test]
    fn forward_after_relu_matches_forward() {
        use crate::nn::Store;
        use candle_core::{DType, Device, Tensor};
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (2, 4, 8, 8), &dev).unwrap();
        for stride in [1, 2] {
            for op in Op::ALL {
                let store = Store::with_dtype(&dev, DType::F32, 5);
                let m = op
                    .build(&store.root(), 4, 4, stride, BnMode::FINAL)
                    .unwrap();
                let expect_relu = matches!(
                    op,
                    Op::SepConv { .. } | Op::DilConv { .. } | Op::ReluConvBn { .. }
                ) || (matches!(op, Op::Identity) && stride == 2);
                assert_eq!(m.starts_with_relu(), expect_relu, "{op:?} stride {stride}");
                let r = crate::kernels::relu(&x).unwrap();
                if !expect_relu {
                    assert!(m.forward_after_relu(&r, true).is_err());
                    continue;
                }
                let a = m.forward(&x, true).unwrap().flatten_all().unwrap();
                let b = m
                    .forward_after_relu(&r, true)
                    .unwrap()
                    .flatten_all()
                    .unwrap();
                assert_eq!(
                    a.to_vec1::<f32>().unwrap(),
                    b.to_vec1::<f32>().unwrap(),
                    "{op:?} stride {stride}"
                );
            }
        }
    }
}
