//! `Zero` (`none`): outputs zeros; at stride 2 the input is subsampled first, so the output
//! is `ceil(h / 2)` × `ceil(w / 2)`. No parameters, no multiply-adds.

use super::{Applied, BnMode, Cost, Family, FamilyModule, OpCtx, Shape};
use crate::nn::Scope;
use crate::onnx::Graph;
use candle_core::Tensor;

/// The `Zero` family.
#[derive(Debug, Clone, Copy)]
pub struct Zero;

impl Family for Zero {
    type Module = ZeroModule;

    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
        let s = ctx.stride as u64;
        let output = Shape {
            c: ctx.c_out,
            h: ctx.input.h.div_ceil(s),
            w: ctx.input.w.div_ceil(s),
        };
        Ok(Applied {
            output,
            // The zeros it writes.
            cost: Cost::new(0, 0, output.elems()),
        })
    }

    fn build(
        &self,
        _: &Scope,
        _: usize,
        c_out: usize,
        stride: usize,
        _: BnMode,
    ) -> candle_core::Result<ZeroModule> {
        Ok(ZeroModule { c_out, stride })
    }
}

// ---- Candle ----

/// A built `Zero`: its output channels and stride.
#[derive(Debug, Clone, Copy)]
pub struct ZeroModule {
    pub c_out: usize,
    pub stride: usize,
}

impl FamilyModule for ZeroModule {
    fn forward(&self, x: &Tensor, _: bool) -> candle_core::Result<Tensor> {
        forward(x, self.c_out, self.stride)
    }

    /// Nothing: see [`lower`].
    fn lower(&self, _: &mut Graph, _: &str) -> crate::Result<Option<String>> {
        Ok(None)
    }
}

/// Zeros of shape [N, C_out, ceil(H/s), ceil(W/s)] in the input's dtype and device.
pub fn forward(x: &Tensor, c_out: usize, stride: usize) -> candle_core::Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    Tensor::zeros(
        (n, c_out, h.div_ceil(stride), w.div_ceil(stride)),
        x.dtype(),
        x.device(),
    )
}

// ---- ONNX ----

/// Inside a network a `Zero` edge emits nothing (the walk leaves it out of its node's sum);
/// alone, it is a constant zero tensor [N, C_out, ceil(H/s), ceil(W/s)] for an input
/// `input`.
pub fn lower(g: &mut Graph, input: Shape, c_out: usize, stride: usize) -> String {
    let s = stride as u64;
    g.zeros(Shape {
        c: c_out as u64,
        h: input.h.div_ceil(s),
        w: input.w.div_ceil(s),
    })
}
