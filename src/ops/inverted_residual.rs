//! MobileNetV2 inverted residual block: expand 1×1 (c_in → t·c_in, BN, ReLU6; absent when
//! t = 1), depthwise k×k at stride s (BN, ReLU6), project 1×1 (→ c_out, BN, no activation);
//! the input is added when s = 1 and c_in = c_out.

use super::{Applied, Cost, OpCtx, Shape, conv_macs, prod, same_window};

/// Hidden width of the block.
pub fn inverted_residual_hidden(c_in: u64, expansion: u32) -> u64 {
    c_in.saturating_mul(expansion as u64)
}

pub(super) fn apply(ctx: &OpCtx, kernel: u32, expansion: u32) -> Result<Applied, String> {
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
    };
    let out = Shape { c: ctx.c_out, ..dw };
    cost += Cost {
        params: prod(&[hidden, ctx.c_out]).saturating_add(ctx.bn.params(ctx.c_out)),
        macs: conv_macs(out, hidden, 1),
    };
    Ok(Applied { output: out, cost })
}
