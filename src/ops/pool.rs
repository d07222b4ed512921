//! Max and average pooling with same padding (`kernel / 2`), stride 1 or 2. Max pooling pads
//! with −∞; average pooling excludes the padding from the average (`count_include_pad =
//! false`). Inside a DARTS mixed op (the supernet only) a pool is followed by BN(C, affine =
//! false). Channels cannot change.

use candle_core::Tensor;

use super::{Applied, BnMode, Cost, Family, FamilyModule, OpCtx, Pure, odd_kernel, same_window};
use crate::nn::{BatchNorm, Scope};
use crate::onnx::Graph;

/// `MaxPool` (`max`) and `AvgPool`.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub max: bool,
    pub kernel: u32,
}

impl Family for Pool {
    type Module = PoolModule;

    fn check(&self) -> Result<(), String> {
        odd_kernel(self.kernel)
    }

    fn apply(&self, ctx: &OpCtx) -> Result<Applied, String> {
        if ctx.input.c != ctx.c_out {
            return Err(format!(
                "a pool cannot change channels ({} → {})",
                ctx.input.c, ctx.c_out
            ));
        }
        let output = same_window(ctx.input, ctx.c_out, self.kernel, ctx.stride, 1)?;
        // The pooled map and its window bookkeeping; BN's values and output after it.
        let maps = if ctx.bn.pool_bn { 4 } else { 2 };
        Ok(Applied {
            output,
            cost: Cost::new(0, 0, output.elems().saturating_mul(maps)),
        })
    }

    fn build(
        &self,
        s: &Scope,
        _: usize,
        c_out: usize,
        stride: usize,
        bn: BnMode,
    ) -> candle_core::Result<PoolModule> {
        Ok(PoolModule {
            max: self.max,
            kernel: self.kernel as usize,
            stride,
            bn: if bn.pool_bn {
                Some(BatchNorm::new(&s.pp("bn"), c_out, false)?)
            } else {
                None
            },
        })
    }
}

// ---- Candle ----

/// A pool, optionally followed by BN(C, affine = false) (parameters `bn.*`; DARTS's mixed
/// ops).
#[derive(Clone)]
pub struct PoolModule {
    pub max: bool,
    pub kernel: usize,
    pub stride: usize,
    pub bn: Option<BatchNorm>,
}

impl PoolModule {
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let p = self.kernel / 2;
        let y = if self.max {
            crate::kernels::max_pool2d(x, self.kernel, self.stride, p)?
        } else {
            crate::kernels::avg_pool2d(x, self.kernel, self.stride, p)?
        };
        match &self.bn {
            Some(bn) => bn.forward(&y, train),
            None => Ok(y),
        }
    }
}

impl FamilyModule for PoolModule {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        PoolModule::forward(self, x, train)
    }

    /// A pool without BN (a derived network's).
    fn pure(&self) -> Option<Pure> {
        self.bn.is_none().then_some(Pure::Pool {
            max: self.max,
            kernel: self.kernel,
            stride: self.stride,
        })
    }

    fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<Option<String>> {
        PoolModule::lower(self, g, x).map(Some)
    }
}

// ---- ONNX ----

impl PoolModule {
    /// MaxPool (pads `kernel / 2`, padding never wins) or AveragePool (pads `kernel / 2`,
    /// `count_include_pad = 0`), then a BatchNormalization node when the pool has BN.
    pub fn lower(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let y = g.pool(x, self.max, self.kernel, self.stride, self.kernel / 2);
        match &self.bn {
            Some(bn) => g.scoped("bn", |g| g.batch_norm(&y, bn)),
            None => Ok(y),
        }
    }
}
