//! Convolution families: DARTS `SepConv` and `DilConv`, `ReluConvBn` (NAS-Bench-201's
//! `nor_conv`), and the conv-BN blocks used by stems and cell preprocessing.

use candle_core::Tensor;

use super::{Applied, BnMode, Cost, OpCtx, Shape, conv_macs, prod, same_window};
use crate::nn::{BatchNorm, Scope, conv_weight};
use crate::onnx::{Conv, Graph};

/// ReLU, depthwise k×k (dilation d, stride s), pointwise c_in → c_out, BN(c_out).
fn dw_pw_bn(
    input: Shape,
    c_out: u64,
    kernel: u32,
    stride: u32,
    dilation: u32,
    bn: BnMode,
) -> Result<Applied, String> {
    let dw = same_window(input, input.c, kernel, stride, dilation)?;
    let pw = Shape { c: c_out, ..dw };
    Ok(Applied {
        output: pw,
        cost: Cost {
            params: prod(&[kernel as u64, kernel as u64, input.c])
                .saturating_add(prod(&[input.c, c_out]))
                .saturating_add(bn.params(c_out)),
            macs: conv_macs(dw, 1, kernel) + conv_macs(pw, input.c, 1),
        },
    })
}

pub(super) fn sep_conv(ctx: &OpCtx, kernel: u32) -> Result<Applied, String> {
    let first = dw_pw_bn(ctx.input, ctx.input.c, kernel, ctx.stride, 1, ctx.bn)?;
    let second = dw_pw_bn(first.output, ctx.c_out, kernel, 1, 1, ctx.bn)?;
    Ok(Applied {
        output: second.output,
        cost: first.cost + second.cost,
    })
}

pub(super) fn dil_conv(ctx: &OpCtx, kernel: u32, dilation: u32) -> Result<Applied, String> {
    dw_pw_bn(ctx.input, ctx.c_out, kernel, ctx.stride, dilation, ctx.bn)
}

pub(super) fn relu_conv_bn(ctx: &OpCtx, kernel: u32) -> Result<Applied, String> {
    relu_conv_bn_cost(ctx.input, ctx.c_out, kernel, ctx.stride, ctx.bn)
}

/// [ReLU,] conv k×k c_in → c_out (stride s, same padding, no bias), BN(c_out). The ReLU adds
/// nothing to the counts, so this also counts a plain conv-BN stem.
pub fn relu_conv_bn_cost(
    input: Shape,
    c_out: u64,
    kernel: u32,
    stride: u32,
    bn: BnMode,
) -> Result<Applied, String> {
    let out = same_window(input, c_out, kernel, stride, 1)?;
    Ok(Applied {
        output: out,
        cost: Cost {
            params: prod(&[kernel as u64, kernel as u64, input.c, c_out])
                .saturating_add(bn.params(c_out)),
            macs: conv_macs(out, input.c, kernel),
        },
    })
}

/// Conv k×k c_in → c_out + BN, as a stem (affine BN).
pub fn conv_bn_cost(input: Shape, c_out: u64, kernel: u32, stride: u32) -> Result<Applied, String> {
    relu_conv_bn_cost(input, c_out, kernel, stride, BnMode::FINAL)
}

// ---- Candle ----

/// ReLU, depthwise k×k (stride, dilation), pointwise 1×1, BN: one half of a SepConv, or a
/// whole DilConv. Parameters `dw.weight` [C_in, 1, k, k], `pw.weight` [C_out, C_in, 1, 1],
/// `bn.*`.
#[derive(Clone)]
pub struct DwPwBn {
    pub dw: Tensor,
    pub pw: Tensor,
    pub bn: BatchNorm,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl DwPwBn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s: &Scope,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        affine: bool,
    ) -> candle_core::Result<Self> {
        Ok(DwPwBn {
            dw: conv_weight(&s.pp("dw"), "weight", c_in, 1, kernel)?,
            pw: conv_weight(&s.pp("pw"), "weight", c_out, c_in, 1)?,
            bn: BatchNorm::new(&s.pp("bn"), c_out, affine)?,
            stride,
            padding: dilation * (kernel - 1) / 2,
            dilation,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_after_relu(&crate::kernels::relu(x)?, train)
    }

    /// [`DwPwBn::forward`] given `relu(x)`.
    pub fn forward_after_relu(&self, r: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = crate::kernels::depthwise_conv2d(
            r,
            &self.dw,
            self.stride,
            self.padding,
            self.dilation,
        )?;
        let y = crate::kernels::conv2d(&y, &self.pw, 1, 0, 1)?;
        self.bn.forward(&y, train)
    }
}

/// ReLU, conv k×k (stride, same padding), BN. Parameters `conv.weight`, `bn.*`.
#[derive(Clone)]
pub struct ReluConvBnModule {
    pub conv: Tensor,
    pub bn: BatchNorm,
    pub stride: usize,
    pub padding: usize,
}

impl ReluConvBnModule {
    pub fn new(
        s: &Scope,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        affine: bool,
    ) -> candle_core::Result<Self> {
        Ok(ReluConvBnModule {
            conv: conv_weight(&s.pp("conv"), "weight", c_out, c_in, kernel)?,
            bn: BatchNorm::new(&s.pp("bn"), c_out, affine)?,
            stride,
            padding: (kernel - 1) / 2,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_after_relu(&crate::kernels::relu(x)?, train)
    }

    /// [`ReluConvBnModule::forward`] given `relu(x)`.
    pub fn forward_after_relu(&self, r: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = crate::kernels::conv2d(r, &self.conv, self.stride, self.padding, 1)?;
        self.bn.forward(&y, train)
    }
}

// ---- ONNX ----

impl DwPwBn {
    /// Relu → Conv (depthwise, group C_in) → Conv 1×1 with BN (folded or a
    /// BatchNormalization node).
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let x = g.relu(x);
        let groups = self.dw.dim(0).map_err(export_err)?;
        let dw = Conv {
            dilation: self.dilation,
            groups,
            ..Conv::new(self.stride, self.padding)
        };
        let y = g.scoped("dw", |g| g.conv(&x, &self.dw, dw))?;
        g.scoped("pw", |g| g.conv_bn(&y, &self.pw, &self.bn, Conv::new(1, 0)))
    }
}

impl ReluConvBnModule {
    /// Relu → Conv with BN.
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let x = g.relu(x);
        g.scoped("conv", |g| {
            g.conv_bn(
                &x,
                &self.conv,
                &self.bn,
                Conv::new(self.stride, self.padding),
            )
        })
    }
}

pub(super) fn export_err(e: candle_core::Error) -> crate::Error {
    crate::Error::Export(crate::error::candle_message(&e))
}
