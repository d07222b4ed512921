//! `Identity` (`skip_connect`) and FactorizedReduce.
//!
//! At stride 1 with equal channels the op is the identity (no parameters). At stride 2 it is
//! FactorizedReduce(c_in, c_out): ReLU, then two 1×1 stride-2 convolutions c_in → c_out/2,
//! the second applied to `x[:, :, 1:, 1:]`, concatenated, then BN(c_out). The two halves
//! only line up on even sizes, and `c_out` must be even.

use super::{Applied, BnMode, Cost, OpCtx, Shape, conv_macs, prod};

pub(super) fn apply(ctx: &OpCtx) -> Result<Applied, String> {
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

/// FactorizedReduce(input.c, c_out) applied to `input`; also used to preprocess a cell input
/// that comes from before a reduction.
pub fn factorized_reduce_cost(input: Shape, c_out: u64, bn: BnMode) -> Result<Applied, String> {
    if c_out % 2 != 0 {
        return Err(format!(
            "a factorized reduce needs an even number of output channels, got {c_out}"
        ));
    }
    if input.h % 2 != 0 || input.w % 2 != 0 {
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
        },
    })
}
