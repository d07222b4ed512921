//! `Identity` (`skip_connect`) and FactorizedReduce.
//!
//! At stride 1 with equal channels the op is the identity (no parameters). At stride 2 it is
//! FactorizedReduce(c_in, c_out): ReLU, then two 1×1 stride-2 convolutions c_in → c_out/2,
//! the second applied to `x[:, :, 1:, 1:]`, concatenated, then BN(c_out). The two halves
//! only line up on even sizes, and `c_out` must be even.

use candle_core::Tensor;

use super::{
    Applied, BnMode, Cost, Family, FamilyModule, OpCtx, Shape, conv_macs, no_leading_relu, prod,
};
use crate::nn::{BatchNorm, Scope, conv_weight};
use crate::onnx::{Conv, Graph};

/// The `Identity` family.
#[derive(Debug, Clone, Copy)]
pub struct Identity;

impl Family for Identity {
    type Module = IdentityModule;

    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
        match ctx.stride {
            1 if ctx.input.c == ctx.c_out => Ok(Applied {
                output: ctx.input,
                cost: Cost::default(),
            }),
            1 => Err(format!(
                "Identity cannot change channels ({} → {}) at stride 1",
                ctx.input.c, ctx.c_out
            )),
            _ => factorized_reduce_cost(ctx.input, ctx.c_out, ctx.bn),
        }
    }

    fn build(
        &self,
        s: &Scope,
        c_in: usize,
        c_out: usize,
        stride: usize,
        bn: BnMode,
    ) -> candle_core::Result<IdentityModule> {
        Ok(if stride == 1 {
            IdentityModule::Identity
        } else {
            IdentityModule::FactorizedReduce(FactorizedReduce::new(s, c_in, c_out, bn.affine)?)
        })
    }
}

/// FactorizedReduce(input.c, c_out) applied to `input`; also used to preprocess a cell input
/// that comes from before a reduction.
pub fn factorized_reduce_cost(input: Shape, c_out: u64, bn: BnMode) -> Result<Applied, String> {
    if !c_out.is_multiple_of(2) {
        return Err(format!(
            "a factorized reduce needs an even number of output channels, got {c_out}"
        ));
    }
    if !input.h.is_multiple_of(2) || !input.w.is_multiple_of(2) {
        return Err(format!(
            "a factorized reduce needs an even spatial size, got {}x{} (its two halves would be {}x{} and {}x{})",
            input.h,
            input.w,
            input.h.div_ceil(2),
            input.w.div_ceil(2),
            input.h / 2,
            input.w / 2
        ));
    }
    let half = Shape {
        c: c_out / 2,
        h: input.h / 2,
        w: input.w / 2,
    };
    Ok(Applied {
        output: Shape { c: c_out, ..half },
        cost: Cost {
            params: prod(&[2, input.c, half.c]).saturating_add(bn.params(c_out)),
            macs: conv_macs(half, input.c, 1).saturating_mul(2),
            // ReLU input, the two halves, their concatenation, BN's values and output.
            acts: prod(&[4, half.c * 2, half.h, half.w]).saturating_add(input.elems()),
        },
    })
}

// ---- Candle ----

/// A built `Identity`: the identity at stride 1, a FactorizedReduce at stride 2.
#[derive(Clone)]
pub enum IdentityModule {
    Identity,
    FactorizedReduce(FactorizedReduce),
}

impl FamilyModule for IdentityModule {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            IdentityModule::Identity => Ok(x.clone()),
            IdentityModule::FactorizedReduce(m) => m.forward(x, train),
        }
    }

    fn starts_with_relu(&self) -> bool {
        matches!(self, IdentityModule::FactorizedReduce(_))
    }

    fn forward_after_relu(&self, r: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            IdentityModule::Identity => no_leading_relu(),
            IdentityModule::FactorizedReduce(m) => m.forward_after_relu(r, train),
        }
    }

    fn is_identity(&self) -> bool {
        matches!(self, IdentityModule::Identity)
    }

    /// The identity emits no node and returns `x`.
    fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>> {
        Ok(Some(match self {
            IdentityModule::Identity => x.to_string(),
            IdentityModule::FactorizedReduce(m) => m.lower(g, x)?,
        }))
    }
}

/// FactorizedReduce(c_in, c_out): ReLU, conv1 1×1 stride 2 on x and conv2 1×1 stride 2 on
/// `x[:, :, 1:, 1:]`, concatenated on channels, BN. Parameters `conv1.weight`,
/// `conv2.weight` [c_out/2, c_in, 1, 1], `bn.*`.
#[derive(Clone)]
pub struct FactorizedReduce {
    pub conv1: Tensor,
    pub conv2: Tensor,
    pub bn: BatchNorm,
}

impl FactorizedReduce {
    pub fn new(s: &Scope, c_in: usize, c_out: usize, affine: bool) -> candle_core::Result<Self> {
        Ok(FactorizedReduce {
            conv1: conv_weight(&s.pp("conv1"), "weight", c_out / 2, c_in, 1)?,
            conv2: conv_weight(&s.pp("conv2"), "weight", c_out / 2, c_in, 1)?,
            bn: BatchNorm::new(&s.pp("bn"), c_out, affine)?,
        })
    }

    /// # Shapes
    /// [N, C_in, H, W] (H, W even) → [N, C_out, H/2, W/2].
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_after_relu(&crate::kernels::relu(x)?, train)
    }

    /// [`FactorizedReduce::forward`] given `relu(x)`.
    pub fn forward_after_relu(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let a = crate::kernels::conv2d(x, &self.conv1, 2, 0, 1)?;
        let shifted = x.narrow(2, 1, h - 1)?.narrow(3, 1, w - 1)?;
        let b = crate::kernels::conv2d(&shifted, &self.conv2, 2, 0, 1)?;
        self.bn.forward(&Tensor::cat(&[&a, &b], 1)?, train)
    }
}

// ---- ONNX ----

impl FactorizedReduce {
    /// Relu → [Conv 1×1/2, Slice `[:, :, 1:, 1:]` → Conv 1×1/2] → Concat → BN. Folding puts
    /// each half of the BN into its convolution, before the Concat.
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let x = g.relu(x);
        let shifted = g.crop_start(&x, 1);
        let conv = Conv::new(2, 0);
        if g.fold_batch_norm() {
            let half = self.conv1.dim(0).map_err(super::conv::export_err)?;
            let a = g.scoped("conv1", |g| {
                g.conv_folded(&x, &self.conv1, &self.bn, 0..half, conv)
            })?;
            let b = g.scoped("conv2", |g| {
                g.conv_folded(&shifted, &self.conv2, &self.bn, half..2 * half, conv)
            })?;
            Ok(g.concat(&[a, b], 1))
        } else {
            let a = g.scoped("conv1", |g| g.conv(&x, &self.conv1, conv))?;
            let b = g.scoped("conv2", |g| g.conv(&shifted, &self.conv2, conv))?;
            let y = g.concat(&[a, b], 1);
            g.scoped("bn", |g| g.batch_norm(&y, &self.bn))
        }
    }
}
