//! Max and average pooling with same padding (`kernel / 2`), stride 1 or 2. Max pooling pads
//! with −∞; average pooling excludes the padding from the average (`count_include_pad =
//! false`). Inside a DARTS mixed op (the supernet only) a pool is followed by BN(C, affine =
//! false). Channels cannot change.

use super::{Applied, Cost, OpCtx, same_window};

pub(super) fn apply(ctx: &OpCtx, kernel: u32) -> Result<Applied, String> {
    if ctx.input.c != ctx.c_out {
        return Err(format!(
            "a pool cannot change channels ({} → {})",
            ctx.input.c, ctx.c_out
        ));
    }
    Ok(Applied {
        output: same_window(ctx.input, ctx.c_out, kernel, ctx.stride, 1)?,
        cost: Cost::default(),
    })
}
