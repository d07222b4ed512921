//! `Zero` (`none`): outputs zeros; at stride 2 the input is subsampled first, so the output
//! is `ceil(h / 2)` × `ceil(w / 2)`. No parameters, no multiply-adds.

use super::{Applied, Cost, OpCtx, Shape};

pub(super) fn apply(ctx: &OpCtx) -> Result<Applied, String> {
    let s = ctx.stride as u64;
    Ok(Applied {
        output: Shape {
            c: ctx.c_out,
            h: ctx.input.h.div_ceil(s),
            w: ctx.input.w.div_ceil(s),
        },
        cost: Cost::default(),
    })
}
