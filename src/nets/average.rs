//! An exponential moving average of a model's weights and BN statistics (Polyak averaging,
//! as timm's `ModelEmaV3` keeps it): a second model of the same network whose tensors follow
//! the trained ones, one update per training step. Retraining evaluates, keeps and exports
//! it when the recipe sets `ema`.

use candle_core::Var;

use crate::kernels::lerp_into;
use crate::nets::model::Model;

/// The average and how many updates it has had.
pub struct Ema {
    decay: f64,
    updates: u64,
    model: Model,
    /// Each tensor of the average with the trained tensor it follows, paired once: the
    /// optimizer and a resume write the trained variables in place, so the pairs stay valid.
    pairs: Vec<(Var, Var)>,
}

impl Ema {
    /// An average of `live`'s network with at most `decay` per update, starting at its
    /// values.
    pub fn new(live: &Model, decay: f64) -> candle_core::Result<Ema> {
        let model = Model::new(&live.net, live.store.device(), 0, live.has_aux())?;
        let pairs: Vec<(Var, Var)> = vars(&model).into_iter().zip(vars(live)).collect();
        for (a, b) in &pairs {
            a.set(b.as_tensor())?;
        }
        Ok(Ema {
            decay,
            updates: 0,
            model,
            pairs,
        })
    }

    /// The weight of the average itself in the next update: `min(decay, (1 + t) / (10 + t))`
    /// after `t` updates, so that the starting values are soon forgotten.
    pub fn rate(&self) -> f64 {
        rate(self.decay, self.updates)
    }

    /// One update toward the trained model it was made from (after a training step).
    pub fn update(&mut self) -> candle_core::Result<()> {
        let d = self.rate();
        for (a, b) in &self.pairs {
            lerp_into(a, b.as_tensor(), d)?;
        }
        self.updates += 1;
        Ok(())
    }

    /// The averaged model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Takes up a checkpointed average: its tensors are set through [`Ema::model`], and
    /// this is how many updates it had.
    pub fn resume_at(&mut self, updates: u64) {
        self.updates = updates;
    }
}

/// A model's parameters then its buffers, in the store's order.
fn vars(m: &Model) -> Vec<Var> {
    let mut v: Vec<Var> = m.store.params().into_iter().map(|(_, v)| v).collect();
    v.extend(m.store.buffers().into_iter().map(|(_, v)| v));
    v
}

/// [`Ema::rate`] after `updates` updates.
fn rate(decay: f64, updates: u64) -> f64 {
    let t = updates as f64;
    decay.min((1.0 + t) / (10.0 + t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_warms_up_to_the_decay() {
        assert_eq!(rate(0.999, 0), 0.1);
        assert_eq!(rate(0.999, 8), 0.5);
        assert_eq!(rate(0.999, 80), 0.9);
        assert_eq!(rate(0.9, 1000), 0.9);
        // Never decreasing, and at the decay for good once reached.
        let r: Vec<f64> = (0..20_000).map(|t| rate(0.999, t)).collect();
        assert!(r.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(r[8991..].iter().filter(|&&x| x != 0.999).count(), 0);
    }
}
