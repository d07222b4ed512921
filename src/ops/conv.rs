//! Convolution families: DARTS `SepConv` and `DilConv`, `ReluConvBn` (NAS-Bench-201's
//! `nor_conv`), and the conv-BN blocks used by stems and cell preprocessing.

use candle_core::Tensor;

use super::{
    Applied, BnMode, Cost, Family, FamilyModule, OpCtx, Shape, conv_macs, odd_kernel, prod,
    same_window,
};
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
            macs: conv_macs(dw, 1, kernel).saturating_add(conv_macs(pw, input.c, 1)),
            // ReLU input, depthwise and pointwise outputs, BN's normalized values and output.
            acts: prod(&[3, pw.elems()])
                .saturating_add(input.elems())
                .saturating_add(dw.elems()),
        },
    })
}

/// DARTS `SepConv`: two [`DwPwBn`], the first at the op's stride keeping the channels.
#[derive(Debug, Clone, Copy)]
pub struct SepConv {
    pub kernel: u32,
}

impl Family for SepConv {
    type Module = SepConvModule;

    fn check(&self) -> Result<(), String> {
        odd_kernel(self.kernel)
    }

    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
        let first = dw_pw_bn(ctx.input, ctx.input.c, self.kernel, ctx.stride, 1, ctx.bn)?;
        let second = dw_pw_bn(first.output, ctx.c_out, self.kernel, 1, 1, ctx.bn)?;
        Ok(Applied {
            output: second.output,
            cost: first.cost + second.cost,
        })
    }

    fn build(
        &self,
        s: &Scope,
        c_in: usize,
        c_out: usize,
        stride: usize,
        bn: BnMode,
    ) -> candle_core::Result<SepConvModule> {
        let k = self.kernel as usize;
        Ok(SepConvModule(
            DwPwBn::new(&s.pp("1"), c_in, c_in, k, stride, 1, bn.affine)?,
            DwPwBn::new(&s.pp("2"), c_in, c_out, k, 1, 1, bn.affine)?,
        ))
    }
}

/// DARTS `DilConv`: one [`DwPwBn`].
#[derive(Debug, Clone, Copy)]
pub struct DilConv {
    pub kernel: u32,
    pub dilation: u32,
}

impl Family for DilConv {
    type Module = DwPwBn;

    fn check(&self) -> Result<(), String> {
        odd_kernel(self.kernel)?;
        if self.dilation == 0 {
            return Err("dilation must be ≥ 1, got 0".into());
        }
        Ok(())
    }

    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
        dw_pw_bn(
            ctx.input,
            ctx.c_out,
            self.kernel,
            ctx.stride,
            self.dilation,
            ctx.bn,
        )
    }

    fn build(
        &self,
        s: &Scope,
        c_in: usize,
        c_out: usize,
        stride: usize,
        bn: BnMode,
    ) -> candle_core::Result<DwPwBn> {
        DwPwBn::new(
            s,
            c_in,
            c_out,
            self.kernel as usize,
            stride,
            self.dilation as usize,
            bn.affine,
        )
    }
}

/// `ReluConvBn` (NAS-Bench-201's `nor_conv`): one [`ReluConvBnModule`].
#[derive(Debug, Clone, Copy)]
pub struct ReluConvBn {
    pub kernel: u32,
}

impl Family for ReluConvBn {
    type Module = ReluConvBnModule;

    fn check(&self) -> Result<(), String> {
        odd_kernel(self.kernel)
    }

    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
        relu_conv_bn_cost(ctx.input, ctx.c_out, self.kernel, ctx.stride, ctx.bn)
    }

    fn build(
        &self,
        s: &Scope,
        c_in: usize,
        c_out: usize,
        stride: usize,
        bn: BnMode,
    ) -> candle_core::Result<ReluConvBnModule> {
        ReluConvBnModule::new(s, c_in, c_out, self.kernel as usize, stride, bn.affine)
    }
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
            // ReLU input, conv output, BN's normalized values and output.
            acts: prod(&[3, out.elems()]).saturating_add(input.elems()),
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
        self.bn.forward(&self.convs(r)?, train)
    }

    /// `relu(forward(x))` given `relu(x)`: the BN and the ReLU after it as one op
    /// ([`BatchNorm::forward_relu`]).
    pub fn forward_after_relu_then_relu(
        &self,
        r: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        self.bn.forward_relu(&self.convs(r)?, train)
    }

    /// The depthwise then the pointwise convolution.
    fn convs(&self, r: &Tensor) -> candle_core::Result<Tensor> {
        let y = crate::kernels::depthwise_conv2d(
            r,
            &self.dw,
            self.stride,
            self.padding,
            self.dilation,
        )?;
        crate::kernels::conv2d(&y, &self.pw, 1, 0, 1)
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

/// A built `SepConv`: its two halves (parameters under `1.` and `2.`).
#[derive(Clone)]
pub struct SepConvModule(pub DwPwBn, pub DwPwBn);

impl FamilyModule for SepConvModule {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_after_relu(&crate::kernels::relu(x)?, train)
    }

    fn starts_with_relu(&self) -> bool {
        true
    }

    /// The first half's BN and the second half's leading ReLU run as one op.
    fn forward_after_relu(&self, r: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mid = self.0.forward_after_relu_then_relu(r, train)?;
        self.1.forward_after_relu(&mid, train)
    }

    fn forward_after_relu_until_bn(
        &self,
        r: &Tensor,
        train: bool,
    ) -> candle_core::Result<Option<(Tensor, &BatchNorm)>> {
        let mid = self.0.forward_after_relu_then_relu(r, train)?;
        Ok(Some((self.1.convs(&mid)?, &self.1.bn)))
    }

    fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>> {
        let y = g.scoped("1", |g| self.0.lower(g, x))?;
        g.scoped("2", |g| self.1.lower(g, &y)).map(Some)
    }
}

impl FamilyModule for DwPwBn {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        DwPwBn::forward(self, x, train)
    }

    fn starts_with_relu(&self) -> bool {
        true
    }

    fn forward_after_relu(&self, r: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        DwPwBn::forward_after_relu(self, r, train)
    }

    fn forward_after_relu_until_bn(
        &self,
        r: &Tensor,
        _train: bool,
    ) -> candle_core::Result<Option<(Tensor, &BatchNorm)>> {
        Ok(Some((self.convs(r)?, &self.bn)))
    }

    fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>> {
        DwPwBn::lower(self, g, x).map(Some)
    }
}

impl FamilyModule for ReluConvBnModule {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        ReluConvBnModule::forward(self, x, train)
    }

    fn starts_with_relu(&self) -> bool {
        true
    }

    fn forward_after_relu(&self, r: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        ReluConvBnModule::forward_after_relu(self, r, train)
    }

    fn forward_after_relu_until_bn(
        &self,
        r: &Tensor,
        _train: bool,
    ) -> candle_core::Result<Option<(Tensor, &BatchNorm)>> {
        let y = crate::kernels::conv2d(r, &self.conv, self.stride, self.padding, 1)?;
        Ok(Some((y, &self.bn)))
    }

    fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>> {
        ReluConvBnModule::lower(self, g, x).map(Some)
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
