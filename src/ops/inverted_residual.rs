//! MobileNetV2 inverted residual block: expand 1×1 (c_in → t·c_in, BN, ReLU6; absent when
//! t = 1), depthwise k×k at stride s (BN, ReLU6), project 1×1 (→ c_out, BN, no activation);
//! the input is added when s = 1 and c_in = c_out.

use candle_core::Tensor;

use super::{
    Applied, BnMode, Cost, Family, FamilyModule, OpCtx, Shape, conv_macs, odd_kernel, prod,
    same_window,
};
use crate::nn::{BatchNorm, Scope, conv_weight};
use crate::onnx::{Conv, Graph};

/// Hidden width of the block.
pub fn inverted_residual_hidden(c_in: u64, expansion: u32) -> u64 {
    c_in.saturating_mul(expansion as u64)
}

/// The `InvertedResidual` family.
#[derive(Debug, Clone, Copy)]
pub struct InvertedResidual {
    pub kernel: u32,
    pub expansion: u32,
}

impl Family for InvertedResidual {
    type Module = InvertedResidualModule;

    fn check(&self) -> Result<(), String> {
        odd_kernel(self.kernel)?;
        if self.expansion == 0 {
            return Err("expansion must be ≥ 1, got 0".into());
        }
        Ok(())
    }

    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
        apply(ctx, self.kernel, self.expansion)
    }

    fn build(
        &self,
        s: &Scope,
        c_in: usize,
        c_out: usize,
        stride: usize,
        bn: BnMode,
    ) -> candle_core::Result<InvertedResidualModule> {
        InvertedResidualModule::new(
            s,
            c_in,
            c_out,
            self.kernel as usize,
            self.expansion as usize,
            stride,
            bn.affine,
        )
    }
}

fn apply(ctx: &OpCtx, kernel: u32, expansion: u32) -> Result<Applied, String> {
    let hidden = inverted_residual_hidden(ctx.input.c, expansion);
    let mut cost = Cost::default();
    if expansion != 1 {
        let expanded = Shape {
            c: hidden,
            ..ctx.input
        };
        cost += Cost {
            params: prod(&[ctx.input.c, hidden]).saturating_add(ctx.bn.params(hidden)),
            macs: conv_macs(expanded, ctx.input.c, 1),
            // conv, BN's values and output, ReLU6.
            acts: prod(&[4, expanded.elems()]),
        };
    }
    let dw = same_window(
        Shape {
            c: hidden,
            ..ctx.input
        },
        hidden,
        kernel,
        ctx.stride,
        1,
    )?;
    cost += Cost {
        params: prod(&[kernel as u64, kernel as u64, hidden]).saturating_add(ctx.bn.params(hidden)),
        macs: conv_macs(dw, 1, kernel),
        acts: prod(&[4, dw.elems()]),
    };
    let out = Shape { c: ctx.c_out, ..dw };
    cost += Cost {
        params: prod(&[hidden, ctx.c_out]).saturating_add(ctx.bn.params(ctx.c_out)),
        macs: conv_macs(out, hidden, 1),
        acts: prod(&[3, out.elems()]),
    };
    Ok(Applied { output: out, cost })
}

// ---- Candle ----

/// The inverted residual block's modules. Parameters `expand.weight` and `bn1.*` (absent
/// when the expansion is 1), `dw.weight`, `bn2.*`, `project.weight`, `bn3.*`.
#[derive(Clone)]
pub struct InvertedResidualModule {
    pub expand: Option<(Tensor, BatchNorm)>,
    pub dw: Tensor,
    pub bn2: BatchNorm,
    pub project: Tensor,
    pub bn3: BatchNorm,
    pub stride: usize,
    pub padding: usize,
    pub residual: bool,
}

impl InvertedResidualModule {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s: &Scope,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        expansion: usize,
        stride: usize,
        affine: bool,
    ) -> candle_core::Result<Self> {
        let hidden = c_in * expansion;
        let expand = if expansion != 1 {
            Some((
                conv_weight(&s.pp("expand"), "weight", hidden, c_in, 1)?,
                BatchNorm::new(&s.pp("bn1"), hidden, affine)?,
            ))
        } else {
            None
        };
        Ok(InvertedResidualModule {
            expand,
            dw: conv_weight(&s.pp("dw"), "weight", hidden, 1, kernel)?,
            bn2: BatchNorm::new(&s.pp("bn2"), hidden, affine)?,
            project: conv_weight(&s.pp("project"), "weight", c_out, hidden, 1)?,
            bn3: BatchNorm::new(&s.pp("bn3"), c_out, affine)?,
            stride,
            padding: (kernel - 1) / 2,
            residual: stride == 1 && c_in == c_out,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let relu6 = |t: Tensor| t.clamp(0.0, 6.0);
        let mut y = x.clone();
        if let Some((w, bn)) = &self.expand {
            y = relu6(bn.forward(&crate::kernels::conv2d(&y, w, 1, 0, 1)?, train)?)?;
        }
        y = crate::kernels::depthwise_conv2d(&y, &self.dw, self.stride, self.padding, 1)?;
        y = relu6(self.bn2.forward(&y, train)?)?;
        let projected = crate::kernels::conv2d(&y, &self.project, 1, 0, 1)?;
        y = self.bn3.forward(&projected, train)?;
        if self.residual { y + x } else { Ok(y) }
    }
}

impl FamilyModule for InvertedResidualModule {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        InvertedResidualModule::forward(self, x, train)
    }

    fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>> {
        InvertedResidualModule::lower(self, g, x).map(Some)
    }
}

// ---- ONNX ----

impl InvertedResidualModule {
    /// [Conv 1×1 with BN → Clip(0, 6)] → depthwise Conv with BN → Clip(0, 6) → Conv 1×1 with
    /// BN, then Add of the input when the block is residual.
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let mut y = x.to_string();
        if let Some((w, bn)) = &self.expand {
            let e = g.scoped("expand", |g| g.conv_bn(&y, w, bn, Conv::new(1, 0)))?;
            y = g.relu6(&e);
        }
        let groups = self.dw.dim(0).map_err(super::conv::export_err)?;
        let dw = Conv {
            groups,
            ..Conv::new(self.stride, self.padding)
        };
        let d = g.scoped("dw", |g| g.conv_bn(&y, &self.dw, &self.bn2, dw))?;
        y = g.relu6(&d);
        y = g.scoped("project", |g| {
            g.conv_bn(&y, &self.project, &self.bn3, Conv::new(1, 0))
        })?;
        Ok(if self.residual { g.add(&y, x) } else { y })
    }
}
